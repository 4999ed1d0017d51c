"""Exact likelihoods through the probability-flow ODE (Score SDE, Sec. 4.3 and App. D.2) and bits/dim (docs/papers.md §4).

log p_0(x) = log p_T(x_T) + ∫_0^T ∇·f̃(x_t, t) dt, with f̃ = f - 1/2 g^2 s the probability-flow drift, integrated
from eps to T; the divergence is exact (small D) or a Hutchinson–Skilling estimate with one probe per integration.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import integrate

from pipeline import names
from pipeline.core import rng
from pipeline.core.sde import SDE

ESTIMATORS = names.BPD_ESTIMATORS


def _divergence(drift_fn, x: torch.Tensor, t: torch.Tensor, estimator: str, probe) -> tuple[torch.Tensor, torch.Tensor]:
    """(drift, ∇·drift per sample). Hutchinson: E_ε[ε^T (∂f/∂x) ε] = tr(∂f/∂x) for E[ε ε^T] = I."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        drift = drift_fn(x, t)
        b = x.shape[0]
        if estimator == "exact":
            flat = drift.reshape(b, -1)
            div = torch.zeros(b, dtype=x.dtype, device=x.device)
            for j in range(flat.shape[1]):
                grad = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=True)[0]
                div = div + grad.reshape(b, -1)[:, j]
        else:
            grad = torch.autograd.grad((drift * probe).sum(), x)[0]
            div = (grad * probe).reshape(b, -1).sum(dim=1)
    return drift.detach(), div.detach()


def log_likelihood(sde: SDE, score_fn, x: torch.Tensor, eps: float = 1e-5, rtol: float = 1e-5, atol: float = 1e-5,
                   estimator: str = "rademacher", generator=None,
                   method: str = "RK45") -> tuple[torch.Tensor, torch.Tensor, int]:
    """(log p(x) in nats per sample [float64, (batch,)], prior latent z = x_T, NFE).

    `x` is the data as the model sees it (already dequantized and scaled). The Hutchinson probe ε (Rademacher or
    Gaussian) is drawn once per call, one per batch row, and held fixed along the trajectory; "exact" computes the
    full Jacobian trace with D backward passes per evaluation (for small D).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown divergence estimator {estimator!r}; expected one of {ESTIMATORS}")
    shape, device, dtype = tuple(x.shape), x.device, x.dtype
    b = shape[0]
    probe = None
    if estimator == "rademacher":
        probe = rng.rademacher(shape, generator, device=device, dtype=dtype)
    elif estimator == "gaussian":
        probe = rng.randn(shape, generator, device=device, dtype=dtype)
    rsde = sde.reverse(score_fn, probability_flow=True)

    def drift_fn(xx, tt):
        return rsde.sde(xx, tt)[0]

    def ode_func(t, y):
        xx = torch.from_numpy(y[:-b].reshape(shape)).to(device=device, dtype=dtype)
        vec_t = torch.full((b,), float(t), device=device, dtype=dtype)
        drift, div = _divergence(drift_fn, xx, vec_t, estimator, probe)
        return np.concatenate([drift.cpu().numpy().reshape(-1), div.cpu().numpy()]).astype(np.float64)

    y0 = np.concatenate([x.detach().cpu().numpy().reshape(-1).astype(np.float64), np.zeros(b)])
    sol = integrate.solve_ivp(ode_func, (eps, sde.T), y0, rtol=rtol, atol=atol, method=method)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
    yT = sol.y[:, -1]
    z = torch.from_numpy(yT[:-b].reshape(shape)).to(device=device, dtype=dtype)
    delta_logp = torch.from_numpy(yT[-b:]).to(device=device)
    logp = sde.prior_logp(torch.from_numpy(yT[:-b].reshape(shape)).to(device)) + delta_logp
    return logp, z, int(sol.nfev)


def bpd_offset(centered: bool) -> float:
    """Offset converting a continuous density on the model's scale into bits/dim of 8-bit data.

    Data k/255 are dequantized to (k + u)/256 in [0, 1): one bin of width 1/256 per level, so P(k) ≈ p(x)/256 and
    bpd = -log2 p(x)/D + 8. Data scaled to [-1, 1] by y = 2x - 1 have p_y = p_x / 2^D, hence offset 8 - 1 = 7.
    """
    return 7.0 if centered else 8.0


def bits_per_dim(logp_nats: torch.Tensor, dims: int, offset: float) -> torch.Tensor:
    """bpd = -log p / (D ln 2) + offset (docs/papers.md §4); `offset` from `bpd_offset`."""
    return -logp_nats / (dims * math.log(2.0)) + offset
