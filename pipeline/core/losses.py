"""Denoising score matching objectives (docs/papers.md §2) and the model-output → score conventions of the reference code.

Models are called `model(x, labels)`. What the labels are and how the output becomes a score depends on the SDE and on
whether the model was trained on continuous times or on the N discrete noise levels (`get_score_fn`).
"""
from __future__ import annotations

from typing import Callable

import torch

from pipeline.core import rng
from pipeline.core.sde import SDE, VESDE, VPSDE, batch_view, subVPSDE

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _reduce(per_element: torch.Tensor, reduce_mean: bool) -> torch.Tensor:
    """Per-sample reduction: mean over dimensions, or 1/2 · sum (docs/papers.md §2)."""
    flat = per_element.reshape(per_element.shape[0], -1)
    return flat.mean(dim=1) if reduce_mean else 0.5 * flat.sum(dim=1)


def get_score_fn(sde: SDE, model: Model, continuous: bool) -> ScoreFn:
    """score_fn(x, t) from a network's output.

    - VE, continuous: labels = σ(t); score = output.
    - VE, discrete (SMLD/NCSN): labels = N - 1 - i, an index into the descending σ list (0 = σmax); score = output.
    - VP / sub-VP, continuous: labels = 999 t; the net predicts ε, score = -output / std(t).
    - VP, discrete (DDPM): labels = i, the DDPM step; score = -output / sqrt(1 - ᾱ_i).
    Here i = `sde.level_index(t)`, the level nearest to t, which the discretization uses too: round(t (N-1)) for
    VE (so labels = round((T - t)(N - 1))), round(t N - 1) for VP, whose step i has ᾱ_i ≈ m((i+1)/N)^2. On the
    sampler grids both give N-1, ..., 0 (the reference truncates t (N-1), the same sequence on its VP grid).
    """
    if isinstance(sde, VESDE):
        if continuous:
            return lambda x, t: model(x, sde.sigma(t))

        def ve_discrete(x, t):
            return model(x, (sde.N - 1) - sde.level_index(t))  # an index into the descending σ list
        return ve_discrete

    if isinstance(sde, (VPSDE, subVPSDE)):
        if continuous:
            def vp_continuous(x, t):
                std = sde.marginal_coeffs(t)[1]
                return -model(x, t * 999) / batch_view(std, x)
            return vp_continuous
        if isinstance(sde, subVPSDE):
            raise ValueError("the sub-VP SDE has no discrete (DDPM) form: use continuous=True")

        def vp_discrete(x, t):
            i = sde.level_index(t)
            std = torch.sqrt(1.0 - sde.alphas_cumprod.to(x.device)[i]).to(x.dtype)
            return -model(x, i) / batch_view(std, x)
        return vp_discrete
    raise ValueError(f"no score convention for {type(sde).__name__}")


def dsm_loss(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, generator, reduce_mean: bool = True,
             likelihood_weighting: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """Continuous-time DSM (Eq. 7): t ~ U(eps, T), x_t = m x + std z.

    λ(t) = std^2: ||std s + z||^2;  likelihood weighting λ(t) = g(t)^2 (Song et al. 2021b): ||s + z / std||^2 g^2.
    """
    b = x.shape[0]
    t = rng.rand((b,), generator, device=x.device, dtype=x.dtype) * (sde.T - eps) + eps
    z = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
    mean, std = sde.marginal_prob(x, t)
    std_b = batch_view(std, x)
    score = score_fn(mean + std_b * z, t)
    if likelihood_weighting:
        g2 = sde.sde(torch.zeros_like(x), t)[1] ** 2
        losses = _reduce((score + z / std_b) ** 2, reduce_mean) * g2
    else:
        losses = _reduce((score * std_b + z) ** 2, reduce_mean)
    return losses.mean()


def smld_loss(sde: VESDE, model: Model, x: torch.Tensor, generator, reduce_mean: bool = False) -> torch.Tensor:
    """NCSN objective (Song & Ermon 2019, Eq. 5-6): level i ~ U{0..N-1} (descending σ), x̃ = x + σ_i z,
    target -(x̃ - x)/σ_i^2, loss 1/2 ||s - target||^2 λ(σ_i) with λ = σ_i^2. `model(x̃, i)` outputs the score."""
    if not isinstance(sde, VESDE):
        raise ValueError("SMLD (NCSN) training needs the VE SDE")
    b = x.shape[0]
    labels = rng.randint(sde.N, (b,), generator, device=x.device)
    sigmas = sde.sigmas_descending.to(x.device)[labels].to(x.dtype)
    noise = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype) * batch_view(sigmas, x)
    score = model(x + noise, labels)
    target = -noise / batch_view(sigmas ** 2, x)
    return (_reduce((score - target) ** 2, reduce_mean) * sigmas ** 2).mean()


def ddpm_loss(sde: VPSDE, model: Model, x: torch.Tensor, generator, reduce_mean: bool = True) -> torch.Tensor:
    """DDPM L_simple (Ho et al. 2020, Eq. 14): step i ~ U{0..N-1}, x_i = sqrt(ᾱ_i) x + sqrt(1-ᾱ_i) ε,
    loss ||ε_θ(x_i, i) - ε||^2."""
    if not isinstance(sde, VPSDE):
        raise ValueError("DDPM training needs the VP SDE")
    b = x.shape[0]
    labels = rng.randint(sde.N, (b,), generator, device=x.device)
    abar = sde.alphas_cumprod.to(x.device)[labels].to(x.dtype)
    noise = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
    x_i = batch_view(torch.sqrt(abar), x) * x + batch_view(torch.sqrt(1.0 - abar), x) * noise
    return _reduce((model(x_i, labels) - noise) ** 2, reduce_mean).mean()


def get_loss_fn(sde: SDE, continuous: bool, reduce_mean: bool, likelihood_weighting: bool, eps: float = 1e-5):
    """loss_fn(model, x, generator) -> scalar: continuous DSM, SMLD (VE, discrete) or DDPM (VP, discrete)."""
    if continuous:
        def continuous_loss(model, x, generator):
            return dsm_loss(sde, get_score_fn(sde, model, continuous=True), x, generator, reduce_mean,
                            likelihood_weighting, eps)
        return continuous_loss
    if likelihood_weighting:
        raise ValueError("likelihood weighting applies to continuous training only")
    if isinstance(sde, VESDE):
        return lambda model, x, generator: smld_loss(sde, model, x, generator, reduce_mean)
    if isinstance(sde, VPSDE):
        return lambda model, x, generator: ddpm_loss(sde, model, x, generator, reduce_mean)
    raise ValueError(f"discrete training is defined for VE (SMLD) and VP (DDPM) only, not {type(sde).__name__}")
