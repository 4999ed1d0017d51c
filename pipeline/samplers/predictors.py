"""Predictors of the PC sampler (Score SDE, Sec. 4.2 and App. E–F), registered by the reference code's names.

A predictor takes one step of a numerical reverse-SDE solver from time t towards t - T/N. `update` returns
(x, x_mean): the next state and the same step without its noise (the "denoised" state returned at the last step).
"""
from __future__ import annotations

import math

import torch

from pipeline import names
from pipeline.core import rng
from pipeline.core.sde import SDE, VESDE, VPSDE, batch_view
from pipeline.samplers.steps import NoStep

PREDICTORS = names.Registry("predictor", names.PREDICTORS)


class Predictor:
    """Base: holds the forward SDE (its N sets the step size), the score and the reverse SDE / ODE."""

    uses_score = True

    def __init__(self, sde: SDE, score_fn, probability_flow: bool = False):
        self.sde, self.score_fn, self.probability_flow = sde, score_fn, probability_flow
        self.rsde = sde.reverse(score_fn, probability_flow)

    def update(self, x: torch.Tensor, t: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} is abstract")


@PREDICTORS.register("euler_maruyama")
class EulerMaruyamaPredictor(Predictor):
    """x̄ = x + [f - g^2 s] Δt, x = x̄ + g sqrt(|Δt|) z, Δt = -T/N (reverse-time Euler–Maruyama)."""

    def update(self, x, t, generator):
        dt = -self.sde.T / self.sde.N
        drift, g = self.rsde.sde(x, t)
        x_mean = x + drift * dt
        if self.probability_flow:
            return x_mean, x_mean
        z = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
        return x_mean + batch_view(g, x) * math.sqrt(-dt) * z, x_mean


@PREDICTORS.register("reverse_diffusion")
class ReverseDiffusionPredictor(Predictor):
    """Reverse diffusion (Eq. 46): x̄ = x - f_i + G_i^2 s, x = x̄ + G_i z, from the SDE's own discretization."""

    def update(self, x, t, generator):
        rev_f, rev_G = self.rsde.discretize(x, t)
        x_mean = x - rev_f
        if self.probability_flow:
            return x_mean, x_mean
        z = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
        return x_mean + batch_view(rev_G, x) * z, x_mean


@PREDICTORS.register("ancestral_sampling")
class AncestralSamplingPredictor(Predictor):
    """Ancestral sampling of SMLD / DDPM (App. F; for DDPM it is Eq. 4 / 47); VE and VP only, no probability flow.

    VE: x̄ = x + (σ_i^2 - σ_{i-1}^2) s, noise std sqrt(σ_{i-1}^2 (σ_i^2 - σ_{i-1}^2) / σ_i^2).
    VP: x̄ = (x + β_i s) / sqrt(1 - β_i), noise std sqrt(β_i).
    """

    def __init__(self, sde: SDE, score_fn, probability_flow: bool = False):
        if not isinstance(sde, (VESDE, VPSDE)):
            raise ValueError(f"ancestral sampling is defined for the VE and VP SDEs, not {type(sde).__name__}")
        if probability_flow:
            raise ValueError("ancestral sampling has no probability-flow form")
        super().__init__(sde, score_fn, probability_flow)

    def update(self, x, t, generator):
        sde = self.sde
        i = sde.level_index(t)
        score = self.score_fn(x, t)
        if isinstance(sde, VESDE):
            sigmas = sde.discrete_sigmas.to(x.device)
            s2 = sigmas[i] ** 2
            prev2 = torch.where(i == 0, torch.zeros_like(s2), sigmas[(i - 1).clamp(min=0)] ** 2)
            x_mean = x + batch_view((s2 - prev2).to(x.dtype), x) * score
            std = torch.sqrt(prev2 * (s2 - prev2) / s2).to(x.dtype)
        else:
            sde.check_discrete_betas()
            beta = sde.discrete_betas.to(x.device)[i].to(x.dtype)
            x_mean = (x + batch_view(beta, x) * score) / batch_view(torch.sqrt(1.0 - beta), x)
            std = torch.sqrt(beta)
        z = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
        return x_mean + batch_view(std, x) * z, x_mean


@PREDICTORS.register("none")
class NonePredictor(NoStep, Predictor):
    """No predictor (corrector-only "C2000" samplers)."""

    def __init__(self, sde: SDE, score_fn, probability_flow: bool = False):
        self.sde, self.score_fn, self.probability_flow = sde, score_fn, probability_flow


PREDICTORS.check()


def get_predictor(name: str) -> type[Predictor]:
    return PREDICTORS.lookup(name)
