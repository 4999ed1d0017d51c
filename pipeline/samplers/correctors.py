"""Correctors of the PC sampler (Score SDE, Algorithms 4–5): score-based MCMC at a fixed time t.

`update` runs `n_steps` Langevin steps and returns (x, x_mean), x_mean being the last step without its noise.
"""
from __future__ import annotations

import torch

from pipeline import names
from pipeline.core import rng
from pipeline.core.sde import SDE, batch_view, langevin_alpha
from pipeline.samplers.steps import NoStep

CORRECTORS = names.Registry("corrector", names.CORRECTORS)


class Corrector:
    uses_score = True

    def __init__(self, sde: SDE, score_fn, snr: float, n_steps: int):
        if n_steps < 1:
            raise ValueError(f"a corrector needs n_steps >= 1, got {n_steps}")
        self.sde, self.score_fn, self.snr, self.n_steps = sde, score_fn, float(snr), int(n_steps)

    def step_size(self, grad: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is abstract")

    def update(self, x: torch.Tensor, t: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        x_mean = x
        for _ in range(self.n_steps):
            grad = self.score_fn(x, t)
            noise = rng.randn(x.shape, generator, device=x.device, dtype=x.dtype)
            step = batch_view(self.step_size(grad, noise, t).to(x.dtype), x)
            x_mean = x + step * grad
            x = x_mean + torch.sqrt(2.0 * step) * noise
        return x, x_mean


@CORRECTORS.register("langevin")
class LangevinCorrector(Corrector):
    """Langevin with the signal-to-noise rule (Alg. 4): ε = 2 α (r ||z|| / ||s||)^2, x ← x + ε s + sqrt(2ε) z.

    ||z|| and ||s|| are batch means of per-sample L2 norms, as in the reference code, so the step size (and hence a
    sample) depends on the other samples of its batch; α = 1 (VE) or 1 - β_i (VP, sub-VP).
    """

    def step_size(self, grad, noise, t):
        b = grad.shape[0]
        grad_norm = torch.linalg.vector_norm(grad.reshape(b, -1), dim=1).mean()
        noise_norm = torch.linalg.vector_norm(noise.reshape(b, -1), dim=1).mean()
        return 2.0 * langevin_alpha(self.sde, t) * (self.snr * noise_norm / grad_norm) ** 2


@CORRECTORS.register("ald")
class AnnealedLangevinCorrector(Corrector):
    """NCSN's annealed Langevin step inside the PC loop (reference `ald` corrector): ε = 2 α (r std(t))^2."""

    def step_size(self, grad, noise, t):
        std = self.sde.marginal_coeffs(t)[1]
        return 2.0 * langevin_alpha(self.sde, t) * (self.snr * std) ** 2


@CORRECTORS.register("none")
class NoneCorrector(NoStep, Corrector):
    """No corrector (predictor-only samplers)."""

    def __init__(self, sde: SDE, score_fn, snr: float = 0.0, n_steps: int = 1):
        self.sde, self.score_fn, self.snr, self.n_steps = sde, score_fn, snr, n_steps


CORRECTORS.check()


def get_corrector(name: str) -> type[Corrector]:
    return CORRECTORS.lookup(name)
