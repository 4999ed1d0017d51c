"""Samplers over the SDE's own time steps: predictor-corrector (Score SDE, Alg. 1–3), the probability-flow ODE with a
black-box solver (Sec. 4.3) and NCSN v1 annealed Langevin dynamics (Song & Ermon 2019, Alg. 1). Each returns
(samples, NFE). The few-step solvers (Heun / EDM, DPM-Solver, DDIM) are in `pipeline.samplers.fast_samplers`; the
methods of `sampling.method` (pipeline/samplers/methods/) call these, and `pipeline.samplers.sampling.draw` runs one.

Time grid and P2000. The PC sampler visits t_k = linspace(T, eps, M)[k], k = 0..M-1, M = `num_steps` (default the
SDE's N), and each predictor step moves from t_k towards t_k - T/M. When M != N (Table 1's "P2000" with models
trained on N = 1000 levels), the *sampler* discretizes the same continuous schedule with M levels instead of N:
VE σ_i = σ(i/(M-1)) (M geometric levels from σmin to σmax, i.e. geometric interpolation between the trained
levels), VP β_i = β(i/(M-1))/M; continuous-time predictors use Δt = T/M. The score function is unchanged: a
discretely trained model is queried at its trained level nearest to t (`SDE.level_index` of the model's SDE, in
`losses.get_score_fn`), a continuous model at t itself. Measured on a 100-level discrete VE model and a Gaussian
target, 200 steps halve the 100-step sample-variance error (tests/test_samplers.py).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from scipy import integrate
from tqdm.auto import tqdm

from pipeline import names
from pipeline.core import rng
from pipeline.core.sde import SDE, VESDE
from pipeline.samplers.correctors import get_corrector
from pipeline.samplers.predictors import ReverseDiffusionPredictor, get_predictor

PC_ORDERS = names.PC_ORDERS
# NCSN v1 step rules, with α_i = ε σ_i^2 / σ_L^2 (docs/papers.md §3). Stages record the name and this text.
ALD_CONVENTIONS = {
    "paper": "x <- x + (a_i/2) s + sqrt(a_i) z, a_i = eps * sigma_i^2 / sigma_L^2 (NCSN paper, Alg. 1)",
    "reference": "x <- x + a_i s + sqrt(2 a_i) z, a_i = eps * sigma_i^2 / sigma_L^2 (ermongroup/ncsn code)",
}
names.check_registry("ALD convention", ALD_CONVENTIONS, names.ALD_CONVENTIONS)
Projection = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], tuple[torch.Tensor, torch.Tensor]]


class CountingScore:
    """Wraps a score function and counts its evaluations (the NFE)."""

    def __init__(self, score_fn):
        self.score_fn, self.calls = score_fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.score_fn(x, t)


@torch.no_grad()
def pc_sample(sde: SDE, score_fn, shape: Sequence[int], predictor: str = "euler_maruyama", corrector: str = "none",
              snr: float = 0.16, n_steps: int = 1, eps: float = 1e-3, denoise: bool = True, generator=None,
              order: str = "reference", num_steps: Optional[int] = None, device="cpu", progress: bool = False,
              probability_flow: bool = False, x_init: Optional[torch.Tensor] = None,
              project: Optional[Projection] = None, dtype=torch.float32) -> tuple[torch.Tensor, int]:
    """Predictor-corrector sampling of the reverse SDE from the prior at T down to `eps`.

    order: "reference" runs the corrector then the predictor at each t_k (score_sde code); "paper" runs the
      predictor at t_k, then the corrector at the time it arrived at, t_{k+1} (Alg. 1 of the paper; no corrector
      after the last predictor step, so NFE = M + (M-1) n_steps). Corrector-only samplers visit every t_k either way.
    denoise: return the last predictor step's noise-free x̄. Corrector-only samplers return x either way (as the
      reference does): a Langevin step's noise belongs to the MCMC target, and dropping it shrinks the variance by
      about 4 r^2 (about 20% at r = 0.22).
    x_init: start here instead of a prior draw; project(x, x_mean, t, generator) -> (x, x_mean) is applied after
      every predictor and corrector update (used by inpainting and colorization).
    NFE counts score evaluations actually made.
    """
    if order not in PC_ORDERS:
        raise ValueError(f"unknown PC order {order!r}; expected one of {PC_ORDERS}")
    M = int(num_steps or sde.N)
    sampling_sde = sde if M == sde.N else sde.with_num_scales(M)
    counted = CountingScore(score_fn)
    P = get_predictor(predictor)(sampling_sde, counted, probability_flow)
    C = get_corrector(corrector)(sampling_sde, counted, snr, n_steps)
    use_p = getattr(P, "uses_score", True)
    use_c = getattr(C, "uses_score", True)
    if x_init is None:
        x = sde.prior_sampling(shape, generator, device=device, dtype=dtype)
    else:
        x = x_init.to(device=device, dtype=dtype)
    x_mean = x
    times = torch.linspace(sde.T, eps, M, dtype=torch.float64)
    b = x.shape[0]

    def step(update, x, t):
        vec_t = torch.full((b,), float(t), device=device, dtype=dtype)
        x, x_mean = update(x, vec_t, generator)
        if project is not None:
            x, x_mean = project(x, x_mean, vec_t, generator)
        return x, x_mean

    paper = order == "paper" and use_p
    for k in tqdm(range(M), disable=not progress, desc="PC sampling", leave=False):
        if use_c and not paper:
            x, x_mean = step(C.update, x, times[k])
        if use_p:
            x, x_mean = step(P.update, x, times[k])
        if use_c and paper and k + 1 < M:
            x, _ = step(C.update, x, times[k + 1])  # the final x_mean stays the last predictor step's
    return (x_mean if denoise and use_p else x), counted.calls


@torch.no_grad()
def ode_sample(sde: SDE, score_fn, shape: Sequence[int], rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-3,
               method: str = "RK45", denoise: bool = False, generator=None, device="cpu",
               z: Optional[torch.Tensor] = None, dtype=torch.float32) -> tuple[torch.Tensor, int]:
    """Probability-flow ODE dx/dt = f - 1/2 g^2 s (Eq. 13) solved with scipy `solve_ivp` from T to eps.

    Starts from `z` or a prior draw. NFE = the solver's function evaluations (+1 for the optional final
    denoising step: one reverse-diffusion step at eps without noise). The solver's adaptive step sees the whole
    batch as one state, so a sample depends on the rest of its batch through the step sizes (within rtol/atol).
    """
    x0 = sde.prior_sampling(shape, generator, device=device, dtype=dtype) if z is None else z.to(device, dtype)
    shape = tuple(x0.shape)
    rsde = sde.reverse(score_fn, probability_flow=True)

    def ode_func(t, y):
        x = torch.from_numpy(y.reshape(shape)).to(device=device, dtype=dtype)
        vec_t = torch.full((shape[0],), float(t), device=device, dtype=dtype)
        return rsde.sde(x, vec_t)[0].detach().cpu().numpy().reshape(-1).astype(np.float64)

    sol = integrate.solve_ivp(ode_func, (sde.T, eps), x0.detach().cpu().numpy().reshape(-1).astype(np.float64),
                              rtol=rtol, atol=atol, method=method)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
    x = torch.from_numpy(sol.y[:, -1].reshape(shape)).to(device=device, dtype=dtype)
    nfe = int(sol.nfev)
    if denoise:
        vec_eps = torch.full((shape[0],), float(eps), device=device, dtype=dtype)
        _, x = ReverseDiffusionPredictor(sde, score_fn).update(x, vec_eps, generator)
        nfe += 1
    return x, nfe


@torch.no_grad()
def ald_sample(sde: VESDE, score_fn, shape: Sequence[int], n_steps_each: int = 100, step_lr: float = 2e-5,
               convention: str = "paper", denoise: bool = False, generator=None, init: str = "uniform",
               device="cpu", progress: bool = False, dtype=torch.float32) -> tuple[torch.Tensor, int]:
    """NCSN v1 annealed Langevin dynamics over the N geometric levels σmax = σ_1 > ... > σ_L = σmin.

    Level i is visited at t_i = linspace(1, 0, N)[i], so σ(t_i) is exactly the i-th level and a discretely trained
    NCSN receives label i (`get_score_fn`). Step rules: `ALD_CONVENTIONS[convention]`. init "uniform": x ~ U[0,1)
    (NCSN v1, data in [0,1]; the caller maps ranges); "prior": x ~ N(0, σmax^2 I). denoise adds σ_L^2 s(x, σ_L)
    (Tweedie's formula, as in NCSNv2) at one extra score evaluation.
    """
    if not isinstance(sde, VESDE):
        raise ValueError("annealed Langevin dynamics runs on the VE SDE's noise levels")
    if convention not in ALD_CONVENTIONS:
        raise ValueError(f"unknown ALD convention {convention!r}; expected one of {sorted(ALD_CONVENTIONS)}")
    if init == "uniform":
        x = rng.rand(shape, generator, device=device, dtype=dtype)
    elif init == "prior":
        x = sde.prior_sampling(shape, generator, device=device, dtype=dtype)
    else:
        raise ValueError(f"unknown ALD init {init!r}; expected 'uniform' or 'prior'")
    times = torch.linspace(sde.T, 0.0, sde.N, dtype=torch.float64)
    sigma_L = sde.sigma_min
    b, nfe = x.shape[0], 0
    for i in tqdm(range(sde.N), disable=not progress, desc="annealed Langevin", leave=False):
        vec_t = torch.full((b,), float(times[i]), device=device, dtype=dtype)
        sigma_i = float(sde.sigma(times[i]))
        alpha = step_lr * (sigma_i / sigma_L) ** 2
        drift_step, noise_std = (alpha / 2, alpha ** 0.5) if convention == "paper" else (alpha, (2 * alpha) ** 0.5)
        for _ in range(n_steps_each):
            grad = score_fn(x, vec_t)
            nfe += 1
            x = x + drift_step * grad + noise_std * rng.randn(x.shape, generator, device=device, dtype=dtype)
    if denoise:
        vec_t = torch.zeros((b,), device=device, dtype=dtype)
        x = x + sigma_L ** 2 * score_fn(x, vec_t)
        nfe += 1
    return x, nfe
