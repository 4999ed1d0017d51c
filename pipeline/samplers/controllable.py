"""Controllable generation with an unconditional score (Score SDE, Sec. 5 and App. I): inpainting, colorization and
class-conditional sampling with a noise-conditional classifier.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from pipeline.core import rng
from pipeline.core.sde import SDE, batch_view
from pipeline.samplers.sde_samplers import pc_sample

# Orthonormal decoupling for colorization (App. I.2): column 0 = (1,1,1)/sqrt(3) is the gray level; columns 1 and 2
# span the colour plane. decouple(x)_d = Σ_c x_c M[c, d]; M is orthogonal, so couple = decouple^{-1} uses M^T.
COLOR_DECOUPLING = torch.tensor([
    [1 / math.sqrt(3), -2 / math.sqrt(6), 0.0],
    [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
    [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)],
], dtype=torch.float64)


def decouple(x: torch.Tensor) -> torch.Tensor:
    """RGB (batch, 3, ...) → decoupled channels; channel 0 is sqrt(3) × the gray level."""
    return torch.einsum("bc...,cd->bd...", x, COLOR_DECOUPLING.to(x.device, x.dtype))


def couple(y: torch.Tensor) -> torch.Tensor:
    """Decoupled channels → RGB (the inverse of `decouple`: M^{-1} = M^T)."""
    return torch.einsum("bd...,cd->bc...", y, COLOR_DECOUPLING.to(y.device, y.dtype))


def _known_replacement(sde: SDE, known: torch.Tensor, mask: torch.Tensor, to_space, from_space):
    """Projection keeping the known entries at their forward-diffused value mean_t(known) + std_t z (App. I.2)."""

    def project(x, x_mean, t, generator):
        mean_t, std_t = sde.marginal_prob(known, t)
        noisy = mean_t + batch_view(std_t, known) * rng.randn(known.shape, generator, device=known.device,
                                                               dtype=known.dtype)
        x = from_space(to_space(x) * (1.0 - mask) + noisy * mask)
        x_mean = from_space(to_space(x_mean) * (1.0 - mask) + mean_t * mask)
        return x, x_mean

    return project


def pc_inpaint(sde: SDE, score_fn, x0: torch.Tensor, mask: torch.Tensor, predictor="reverse_diffusion",
               corrector="langevin", snr: float = 0.16, n_steps: int = 1, eps: float = 1e-5, generator=None,
               denoise: bool = True, num_steps: Optional[int] = None, order: str = "reference",
               progress: bool = False) -> tuple[torch.Tensor, int]:
    """Fill the entries where mask == 0 given x0 where mask == 1. Returns (samples, NFE).

    Starts from x0·mask + prior·(1 - mask); after every predictor and corrector update the known entries are replaced
    by a fresh forward-diffused copy of x0 (docs/papers.md §5). `mask` broadcasts against x0 (1 = known).
    """
    x0 = x0.float() if not x0.is_floating_point() else x0
    mask = mask.to(device=x0.device, dtype=x0.dtype).expand_as(x0)
    prior = sde.prior_sampling(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    x_init = x0 * mask + prior * (1.0 - mask)
    project = _known_replacement(sde, x0, mask, lambda v: v, lambda v: v)
    return pc_sample(sde, score_fn, x0.shape, predictor, corrector, snr, n_steps, eps, denoise, generator,
                     order=order, num_steps=num_steps, device=x0.device, progress=progress, x_init=x_init,
                     project=project, dtype=x0.dtype)


def pc_colorize(sde: SDE, score_fn, gray: torch.Tensor, predictor="reverse_diffusion", corrector="langevin",
                snr: float = 0.16, n_steps: int = 1, eps: float = 1e-5, generator=None, denoise: bool = True,
                num_steps: Optional[int] = None, order: str = "reference",
                progress: bool = False) -> tuple[torch.Tensor, int]:
    """Colorize gray images (batch, 1 or 3, ...): impute decoupled channels 1-2 given channel 0. Returns (RGB, NFE)."""
    if gray.shape[1] == 1:
        gray = gray.expand(gray.shape[0], 3, *gray.shape[2:])
    if gray.shape[1] != 3:
        raise ValueError(f"colorization needs 1 or 3 channels, got {gray.shape[1]}")
    gray = gray.contiguous()
    known = decouple(gray)
    mask = torch.zeros_like(known)
    mask[:, 0] = 1.0
    prior = sde.prior_sampling(gray.shape, generator, device=gray.device, dtype=gray.dtype)
    x_init = couple(known * mask + decouple(prior) * (1.0 - mask))
    project = _known_replacement(sde, known, mask, decouple, couple)
    return pc_sample(sde, score_fn, gray.shape, predictor, corrector, snr, n_steps, eps, denoise, generator,
                     order=order, num_steps=num_steps, device=gray.device, progress=progress, x_init=x_init,
                     project=project, dtype=gray.dtype)


def conditional_score_fn(score_fn, classifier_logp_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         y, scale: float = 1.0):
    """∇_x log p_t(x | y) = ∇_x log p_t(x) + scale · ∇_x log p_t(y | x) (Eq. 14 / App. I.1).

    classifier_logp_fn(x, t) returns log-probabilities of shape (batch, classes); y is an int or a (batch,) tensor.
    """

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(y, device=x.device, dtype=torch.long).reshape(-1).expand(x.shape[0])
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = classifier_logp_fn(xg, t).gather(1, labels[:, None]).sum()
            grad = torch.autograd.grad(logp, xg)[0]
        return score_fn(x, t) + scale * grad.to(x.dtype)

    return fn
