"""Few-step samplers of the probability-flow ODE (and two stochastic variants) for the VE, VP and sub-VP SDEs:
Heun / Euler with the EDM time steps and optional churn (Karras et al. 2022, Alg. 1-2), DPM-Solver 1-3 (Lu et al.
2022a) and DPM-Solver++(2M) (Lu et al. 2022b), DDIM (Song, Meng & Ermon 2021). Each returns (samples, NFE).

Notation (docs/papers.md §3, "Fast samplers"): the perturbation kernel is x_t = α(t) x_0 + σ(t) z, with
α = m(t), σ = std(t) of `SDE.marginal_coeffs` (VE: α = 1; VP: σ = sqrt(1 - α²); sub-VP: σ = 1 - α²), the logSNR
λ(t) = log(α/σ) and the EDM noise level σ̂(t) = σ/α = e^{-λ}. A score s(x, t) gives the noise prediction
ε̂ = -σ s and the data prediction x̂_0 = (x - σ ε̂)/α = (x + σ² s)/α. For every linear SDE the probability-flow ODE
(Eq. 13) is dx/dt = (α'/α) x + (σ' - σ α'/α) ε̂, i.e. d(x/α)/dσ̂ = ε̂ (EDM's ODE in x̂ = x/α, Karras et al. Eq. 4
with s(t) = α) and x_t = (α_t/α_s) x_s - α_t ∫ e^{-λ} ε̂ dλ (DPM-Solver Eq. 3.4), so every solver here
integrates the same ODE and the first-order ones (Euler in σ̂, DDIM with η = 0, DPM-Solver-1) are one update
x_t = (α_t/α_s) x_s - σ_t (e^h - 1) ε̂_s, h = λ_t - λ_s, on different time grids.

Time grids from T to ε with M steps (M + 1 times; the first is T, the last ε, exactly):
- "edm": σ̂_i = (σ̂_max^{1/ρ} + i/M (σ̂_min^{1/ρ} - σ̂_max^{1/ρ}))^ρ (Karras et al. Eq. 5) in σ̂ = σ/α (σ for VE),
  mapped to t through the inverse of σ̂(t);
- "logsnr": λ_i uniform from λ(T) to λ(ε) (DPM-Solver's recommended grid for low resolutions);
- "uniform": t_i uniform (DDIM's linear time subsequence).
Discrete models (`discrete=True`) are queried at their nearest trained level (`losses.get_score_fn`); the grid is
snapped to those levels' times (`nearest_level_time`, the time of `SDE.level_index(t)`; repeats dropped) so each
step starts and ends on a trained level, as EDM rounds σ to a discrete model's levels. Intermediate DPM-Solver
times are not snapped. Schedules are computed in float64 on the host as Python numbers; tensors live on `device` only.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from pipeline import names
from pipeline.core import rng
from pipeline.core.sde import SDE, VESDE, VPSDE, subVPSDE

TIME_GRIDS = names.TIME_GRIDS


class Schedule:
    """α(t), σ(t), λ(t) of an SDE's perturbation kernel as float64 Python numbers, and the inverse t(λ)."""

    def __init__(self, sde: SDE):
        if not isinstance(sde, (VESDE, VPSDE, subVPSDE)):
            raise ValueError(f"no fast-sampler schedule for {type(sde).__name__}")
        self.sde, self.T = sde, sde.T
        self.kind = "ve" if isinstance(sde, VESDE) else "vp" if isinstance(sde, VPSDE) else "subvp"

    def coeffs(self, t: float) -> tuple[float, float]:
        """(α(t), σ(t)), the formulas of `SDE.marginal_coeffs` on a Python float."""
        if self.kind == "ve":
            return 1.0, float(self.sde.sigma(t))
        lmc = float(self.sde.log_mean_coeff(t))
        one_minus_a2 = -math.expm1(2.0 * lmc)
        return math.exp(lmc), (math.sqrt(one_minus_a2) if self.kind == "vp" else one_minus_a2)

    def lam(self, t: float) -> float:
        """λ(t) = log α - log σ."""
        a, s = self.coeffs(t)
        return math.log(a) - math.log(s)

    def sigma_hat(self, t: float) -> float:
        """σ̂(t) = σ/α = e^{-λ}: EDM's noise level of x/α."""
        a, s = self.coeffs(t)
        return s / a

    def t_of_lam(self, lam: float) -> float:
        """The inverse of λ(t). VE: σ = e^{-λ}. VP: α² = 1/(1 + σ̂²). sub-VP: α² + σ̂ α - 1 = 0, -log α = asinh(σ̂/2).
        Then -log α = L = 1/4 (β1 - β0) t² + 1/2 β0 t solved as t = 2L / (sqrt(β0²/4 + (β1 - β0) L) + β0/2)."""
        sde = self.sde
        if self.kind == "ve":
            return (-lam - math.log(sde.sigma_min)) / math.log(sde.sigma_max / sde.sigma_min)
        if self.kind == "vp":
            L = 0.5 * math.log1p(math.exp(-2.0 * lam))
        else:
            L = math.asinh(0.5 * math.exp(-lam))
        a = 0.5 * sde.beta_0
        return 2.0 * L / (math.sqrt(a * a + (sde.beta_1 - sde.beta_0) * L) + a)

    def t_of_sigma_hat(self, sigma_hat: float) -> float:
        return self.t_of_lam(-math.log(sigma_hat))

    def grid(self, kind: str, num_steps: int, eps: float, rho: float = 7.0) -> list[float]:
        """num_steps + 1 times from T down to eps on the grid `kind` (see the module docstring)."""
        M = int(num_steps)
        if M < 1:
            raise ValueError(f"need num_steps >= 1, got {num_steps}")
        if not 0 < eps < self.T:
            raise ValueError(f"need 0 < eps < T, got {eps}")
        frac = [i / M for i in range(M + 1)]
        if kind == "uniform":
            ts = [self.T + f * (eps - self.T) for f in frac]
        elif kind == "logsnr":
            lo, hi = self.lam(self.T), self.lam(eps)
            ts = [self.t_of_lam(lo + f * (hi - lo)) for f in frac]
        elif kind == "edm":
            a, b = self.sigma_hat(self.T) ** (1 / rho), self.sigma_hat(eps) ** (1 / rho)
            ts = [self.t_of_sigma_hat((a + f * (b - a)) ** rho) for f in frac]
        else:
            raise ValueError(f"unknown time grid {kind!r}; expected one of {TIME_GRIDS}")
        ts[0], ts[-1] = self.T, eps
        return ts


def nearest_level_time(sde: SDE, t: float) -> float:
    """The time of the trained level nearest to t. Level times are linear in the index (`SDE.level_time`), so this
    rounds as `SDE.level_index` does, on a Python float."""
    t0, step = float(sde.level_time(0)), float(sde.level_time(1)) - float(sde.level_time(0))
    return float(sde.level_time(min(max(round((t - t0) / step), 0), sde.N - 1)))


def snap_to_levels(sde: SDE, ts: Sequence[float]) -> list[float]:
    """A descending grid moved onto a discrete model's levels (`nearest_level_time`), repeats dropped."""
    out: list[float] = []
    for t in ts:
        lt = nearest_level_time(sde, t)
        if not out or lt < out[-1]:
            out.append(lt)
    if len(out) < 2:
        raise ValueError("the time grid collapses to one trained level: use more levels or a wider [eps, T]")
    return out


class _Model:
    """The score as ε̂ and x̂_0 at scalar times, with the NFE count; every tensor on x's device and dtype."""

    def __init__(self, schedule: Schedule, score_fn):
        self.schedule, self.score_fn, self.nfe = schedule, score_fn, 0

    def eps(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """ε̂ = -σ(t) s(x, t)."""
        self.nfe += 1
        vec_t = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        return self.score_fn(x, vec_t) * (-self.schedule.coeffs(t)[1])

    def data(self, x: torch.Tensor, t: float, eps_hat: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x̂_0 = (x - σ ε̂)/α (Tweedie's formula)."""
        a, s = self.schedule.coeffs(t)
        e = self.eps(x, t) if eps_hat is None else eps_hat
        return (x - s * e) / a


def _start(sde: SDE, shape, generator, device, dtype, z):
    """x_T: `z` if given, else a prior draw N(0, prior_std² I) from the per-row generators."""
    if z is not None:
        return z.to(device=device, dtype=dtype)
    return sde.prior_sampling(shape, generator, device=device, dtype=dtype)


def _times(schedule: Schedule, grid: str, num_steps: int, eps: float, rho: float, discrete: bool) -> list[float]:
    ts = schedule.grid(grid, num_steps, eps, rho)
    return snap_to_levels(schedule.sde, ts) if discrete else ts


def _finish(model: _Model, x: torch.Tensor, t_end: float, denoise: bool) -> tuple[torch.Tensor, int]:
    """Optionally replace x_ε by its data prediction x̂_0(x_ε, ε) (one more NFE)."""
    if denoise:
        x = model.data(x, t_end)
    return x, model.nfe


@torch.no_grad()
def heun_sample(sde: SDE, score_fn, shape: Sequence[int], num_steps: int = 18, order: int = 2, rho: float = 7.0,
                eps: float = 1e-3, time_grid: str = "edm", s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: Optional[float] = None, s_noise: float = 1.0, denoise: bool = False, generator=None,
                device="cpu", dtype=torch.float32, z: Optional[torch.Tensor] = None, discrete: bool = False,
                progress: bool = False) -> tuple[torch.Tensor, int]:
    """EDM's sampler (Karras et al. 2022, Alg. 2; Alg. 1 when s_churn = 0) on dx̂/dσ̂ = ε̂(α x̂, t), x̂ = x/α.

    Step i (σ̂_i = σ̂(t_i)): with churn, γ = min(s_churn/M, √2 - 1) when s_tmin <= σ̂_i <= s_tmax (else 0),
    σ̂' = σ̂_i (1 + γ) (at most σ̂(T): the model is not queried beyond T), x̂' = x̂ + sqrt(σ̂'² - σ̂_i²) s_noise z;
    then Euler x̂_{i+1} = x̂' + (σ̂_{i+1} - σ̂') d, d = ε̂(x', t'), and for order 2 Heun's correction
    x̂_{i+1} = x̂' + (σ̂_{i+1} - σ̂') (d + d')/2, d' = ε̂(x_{i+1}, t_{i+1}). The grid ends at ε > 0, so every step is
    corrected: NFE = order × M (+1 with `denoise`). σ̂ is σ for VE; churn settings are in units of σ̂.
    """
    if order not in (1, 2):
        raise ValueError(f"Heun's sampler has order 1 (Euler) or 2, got {order}")
    sch = Schedule(sde)
    ts = _times(sch, time_grid, num_steps, eps, rho, discrete)
    model = _Model(sch, score_fn)
    x = _start(sde, shape, generator, device, dtype, z)
    M, hat_max = len(ts) - 1, sch.sigma_hat(ts[0])
    gamma_max = min(s_churn / M, math.sqrt(2.0) - 1.0) if s_churn > 0 else 0.0
    xh = x / sch.coeffs(ts[0])[0]  # x̂ = x/α
    for i in tqdm(range(M), disable=not progress, desc="Heun", leave=False):
        t_cur, t_next = ts[i], ts[i + 1]
        sh_cur = sch.sigma_hat(t_cur)
        if gamma_max > 0 and s_tmin <= sh_cur <= (math.inf if s_tmax is None else s_tmax):
            t_hat = sch.t_of_sigma_hat(min(sh_cur * (1.0 + gamma_max), hat_max))
            if discrete:
                t_hat = max(nearest_level_time(sde, t_hat), t_cur)
            sh_hat = sch.sigma_hat(t_hat)
            if sh_hat > sh_cur:
                noise = rng.randn(xh.shape, generator, device=xh.device, dtype=xh.dtype)
                xh = xh + (math.sqrt(sh_hat ** 2 - sh_cur ** 2) * s_noise) * noise
        else:
            t_hat, sh_hat = t_cur, sh_cur
        dsh = sch.sigma_hat(t_next) - sh_hat
        d = model.eps(xh * sch.coeffs(t_hat)[0], t_hat)
        x_next = xh + dsh * d
        if order == 2:
            d2 = model.eps(x_next * sch.coeffs(t_next)[0], t_next)
            x_next = xh + (0.5 * dsh) * (d + d2)
        xh = x_next
    return _finish(model, xh * sch.coeffs(ts[-1])[0], ts[-1], denoise)


def _dpm_step(model: _Model, x: torch.Tensor, s: float, t: float, order: int) -> torch.Tensor:
    """One single-step DPM-Solver-k update from s to t, noise-prediction form (Lu et al. 2022a, Eq. 3.7 for k = 1,
    Alg. 1 with r1 = 1/2 for k = 2, Alg. 2 with r1 = 1/3, r2 = 2/3 for k = 3)."""
    sch = model.schedule
    lam_s, lam_t = sch.lam(s), sch.lam(t)
    h = lam_t - lam_s
    (a_s, _), (a_t, sig_t) = sch.coeffs(s), sch.coeffs(t)
    e_s = model.eps(x, s)
    em1 = math.expm1(h)
    if order == 1:
        return (a_t / a_s) * x - (sig_t * em1) * e_s
    if order == 2:
        r1 = 0.5
        s1 = sch.t_of_lam(lam_s + r1 * h)
        a1, sig1 = sch.coeffs(s1)
        u = (a1 / a_s) * x - (sig1 * math.expm1(r1 * h)) * e_s
        d1 = model.eps(u, s1) - e_s
        return (a_t / a_s) * x - (sig_t * em1) * e_s - (sig_t / (2 * r1) * em1) * d1
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1, s2 = sch.t_of_lam(lam_s + r1 * h), sch.t_of_lam(lam_s + r2 * h)
    (a1, sig1), (a2, sig2) = sch.coeffs(s1), sch.coeffs(s2)
    u1 = (a1 / a_s) * x - (sig1 * math.expm1(r1 * h)) * e_s
    d1 = model.eps(u1, s1) - e_s
    em1_2 = math.expm1(r2 * h)
    u2 = (a2 / a_s) * x - (sig2 * em1_2) * e_s - (sig2 * r2 / r1 * (em1_2 / (r2 * h) - 1.0)) * d1
    d2 = model.eps(u2, s2) - e_s
    return (a_t / a_s) * x - (sig_t * em1) * e_s - (sig_t / r2 * (em1 / h - 1.0)) * d2


LOWER_ORDER_FINAL_BELOW = 15  # steps; diffusers' DPMSolverMultistepScheduler uses the same bound


@torch.no_grad()
def dpm_solver_sample(sde: SDE, score_fn, shape: Sequence[int], num_steps: int = 20, order: int = 3,
                      multistep: bool = False, lower_order_final: bool = True, eps: float = 1e-3,
                      time_grid: str = "logsnr", rho: float = 7.0,
                      denoise: bool = False, generator=None, device="cpu", dtype=torch.float32,
                      z: Optional[torch.Tensor] = None, discrete: bool = False,
                      progress: bool = False) -> tuple[torch.Tensor, int]:
    """DPM-Solver (Lu et al. 2022a): M single steps of order 1-3 on the noise-prediction form (NFE = order × M), or,
    with `multistep`, DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) on the data-prediction form (NFE = M):
    x_{t_i} = (σ_i/σ_{i-1}) x_{t_{i-1}} - α_i (e^{-h_i} - 1) D_i, D_1 = x̂_0(t_0), and for i >= 2
    D_i = (1 + 1/(2 r_i)) x̂_0(t_{i-1}) - 1/(2 r_i) x̂_0(t_{i-2}), r_i = h_{i-1}/h_i (order 1: D_i = x̂_0(t_{i-1})).
    `lower_order_final` (multistep only): the last step is first order when M < LOWER_ORDER_FINAL_BELOW (diffusers'
    DPMSolverMultistepScheduler does the same: the largest step of a short logSNR grid is its last, near the data).
    For VE (α = 1) these are the same exponential integrators in σ. `denoise` adds x̂_0 at ε (one more NFE).
    """
    if order not in (1, 2, 3) or (multistep and order == 3):
        raise ValueError(f"DPM-Solver has single-step orders 1-3 and multistep orders 1-2, got order {order}"
                         f"{' (multistep)' if multistep else ''}")
    sch = Schedule(sde)
    ts = _times(sch, time_grid, num_steps, eps, rho, discrete)
    model = _Model(sch, score_fn)
    x = _start(sde, shape, generator, device, dtype, z)
    M = len(ts) - 1
    if not multistep:
        for i in tqdm(range(M), disable=not progress, desc=f"DPM-Solver-{order}", leave=False):
            x = _dpm_step(model, x, ts[i], ts[i + 1], order)
        return _finish(model, x, ts[-1], denoise)
    prev_d0, prev_h = None, None
    for i in tqdm(range(M), disable=not progress, desc=f"DPM-Solver++({order}M)", leave=False):
        s, t = ts[i], ts[i + 1]
        h = sch.lam(t) - sch.lam(s)
        (_, sig_s), (a_t, sig_t) = sch.coeffs(s), sch.coeffs(t)
        d0 = model.data(x, s)
        last_low = lower_order_final and i == M - 1 and M < LOWER_ORDER_FINAL_BELOW
        if order == 2 and prev_d0 is not None and not last_low:
            r = prev_h / h
            d = (1.0 + 0.5 / r) * d0 - (0.5 / r) * prev_d0
        else:
            d = d0
        x = (sig_t / sig_s) * x - (a_t * math.expm1(-h)) * d
        prev_d0, prev_h = d0, h
    return _finish(model, x, ts[-1], denoise)


@torch.no_grad()
def ddim_sample(sde: SDE, score_fn, shape: Sequence[int], num_steps: int = 50, eta: float = 0.0, eps: float = 1e-3,
                time_grid: str = "uniform", rho: float = 7.0, denoise: bool = False, generator=None, device="cpu",
                dtype=torch.float32, z: Optional[torch.Tensor] = None, discrete: bool = False,
                progress: bool = False) -> tuple[torch.Tensor, int]:
    """DDIM (Song, Meng & Ermon 2021, Eq. 12 and 16) for VP / sub-VP, from s to t < s:
    x_t = α_t x̂_0 + sqrt(σ_t² - c²) ε̂ + c z, x̂_0 = (x_s - σ_s ε̂)/α_s, ε̂ = ε̂(x_s, s),
    c = η σ_t sqrt(1 - e^{-2h}) (h = λ_t - λ_s), which is DDIM's η sqrt((1-ᾱ_t)/(1-ᾱ_s)) sqrt(1 - ᾱ_s/ᾱ_t) for VP
    and, for any (α, σ), η times the std of the forward process's posterior q(x_t | x_s, x_0). η = 0 is the
    deterministic DDIM (= DPM-Solver-1), η = 1 ancestral sampling. NFE = M (+1 with `denoise`).
    """
    if isinstance(sde, VESDE):
        raise ValueError("DDIM is defined for the VP and sub-VP SDEs (use heun or dpm_solver for VE)")
    if eta < 0:
        raise ValueError(f"need eta >= 0, got {eta}")
    sch = Schedule(sde)
    ts = _times(sch, time_grid, num_steps, eps, rho, discrete)
    model = _Model(sch, score_fn)
    x = _start(sde, shape, generator, device, dtype, z)
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc="DDIM", leave=False):
        s, t = ts[i], ts[i + 1]
        (a_s, sig_s), (a_t, sig_t) = sch.coeffs(s), sch.coeffs(t)
        e = model.eps(x, s)
        x0 = (x - sig_s * e) / a_s
        c = eta * sig_t * math.sqrt(-math.expm1(-2.0 * (sch.lam(t) - sch.lam(s))))
        x = a_t * x0 + math.sqrt(max(sig_t ** 2 - c ** 2, 0.0)) * e
        if c > 0:
            x = x + c * rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
    return _finish(model, x, ts[-1], denoise)


__all__ = ["Schedule", "nearest_level_time", "snap_to_levels", "heun_sample", "dpm_solver_sample", "ddim_sample",
           "TIME_GRIDS"]
