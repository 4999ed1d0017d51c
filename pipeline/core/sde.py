"""Forward SDEs of Score SDE (Song et al. 2021, Sec. 3.4 and App. B): VE, VP and sub-VP, with their discretizations.

Notation follows docs/papers.md §1: t in [0, T], T = 1; x_t = m(t) x_0 + std(t) z is the perturbation kernel.
Time-dependent quantities take `t` of shape (batch,) and broadcast over the other dimensions of `x`, whatever they are.
"""
from __future__ import annotations

import abc
import math
from typing import Callable, Sequence

import torch

from pipeline import names
from pipeline.core import rng

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batch_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (batch,) to (batch, 1, ..., 1) so it broadcasts against `x`."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _sum_except_batch(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).sum(dim=1)


class SDE(abc.ABC):
    """dx = f(x, t) dt + g(t) dw on [0, T], with N discretization steps (Eq. 5)."""

    def __init__(self, N: int):
        if int(N) < 2:
            raise ValueError(f"an SDE needs N >= 2 discretization steps, got {N}")
        self.N = int(N)

    @property
    def T(self) -> float:
        return 1.0

    @abc.abstractmethod
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift f(x, t), diffusion g(t)); g has shape (batch,)."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m(t), std(t)) of the perturbation kernel p_0t(x_t | x_0) = N(m(t) x_0, std(t)^2 I), each (batch,)."""

    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior p_T."""

    @abc.abstractmethod
    def with_num_scales(self, N: int) -> "SDE":
        """The same SDE with N discretization steps (used for P2000-style samplers on N != training N)."""

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of p_0t(x_t | x_0 = x): mean = m(t) x, std of shape (batch,)."""
        m, std = self.marginal_coeffs(t)
        return batch_view(m, x) * x, std

    def prior_sampling(self, shape: Sequence[int], generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        """x_T ~ N(0, prior_std^2 I)."""
        return rng.randn(shape, generator, device=device, dtype=dtype) * self.prior_std()

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I), summed over all but the batch dimension."""
        d = z[0].numel()
        s2 = self.prior_std() ** 2
        return -0.5 * d * math.log(2 * math.pi * s2) - _sum_except_batch(z ** 2) / (2 * s2)

    def level_time(self, i) -> float:
        """The time of discrete level i: t_i = i T / (N - 1) (SMLD's σ_i = σ(t_i))."""
        return i * self.T / (self.N - 1)

    def level_index(self, t: torch.Tensor) -> torch.Tensor:
        """Index in 0..N-1 of the discrete level nearest to t (the inverse of `level_time`, rounded).

        Rounding makes the map immune to float error in t. On the reference grids linspace(T, eps, N) it visits
        N-1, ..., 0 once each (VE with eps = 1e-5; VP with eps = 1e-3 = 1/N, see `VPSDE.level_time`).
        """
        i = torch.round(t.double() / self.T * (self.N - 1)).long()
        return i.clamp(0, self.N - 1)

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_{i+1} = x_i + f_i(x_i) + G_i z_i. Default: Euler–Maruyama, f_i = f dt, G_i = g sqrt(dt), dt = T/N."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (Eq. 6) or, with `probability_flow`, the probability-flow ODE (Eq. 13)."""
        return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
    """dx = [f - c g^2 ∇log p_t] dt + (c == 1) g dw̄, with c = 1 (reverse SDE) or 1/2 (probability flow ODE)."""

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool):
        self.forward, self.score_fn, self.probability_flow = forward, score_fn, probability_flow
        self.N, self.T = forward.N, forward.T
        self._c = 0.5 if probability_flow else 1.0

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drift, g = self.forward.sde(x, t)
        drift = drift - batch_view(g ** 2, x) * self.score_fn(x, t) * self._c
        return drift, torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse of the forward discretization (App. E, Eq. 45-46): rev_f = f_i - c G_i^2 s, rev_G = G_i."""
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_view(G ** 2, x) * self.score_fn(x, t) * self._c
        return rev_f, torch.zeros_like(G) if self.probability_flow else G


def _ascending(lo: float, hi: float, name: str) -> tuple[float, float]:
    """A schedule's (min, max) as floats, checked 0 < min < max."""
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < {name}_min < {name}_max, got {lo}, {hi}")
    return float(lo), float(hi)


def _ddpm_betas(beta_min: float, beta_max: float, N: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(β0, β1, β_i, α_i) of the VP and sub-VP SDEs. DDPM: β_i = β(t_i) / N at t_i = i / (N-1), i.e.
    linspace(β0/N, β1/N, N); α_i = 1 - β_i (the reference code's convention; ᾱ_i = Π_{j<=i} α_j)."""
    beta_0, beta_1 = _ascending(beta_min, beta_max, "beta")
    betas = torch.linspace(beta_0 / N, beta_1 / N, N, dtype=torch.float64)
    return beta_0, beta_1, betas, 1.0 - betas


class VESDE(SDE):
    """Variance exploding SDE (SMLD): dx = sqrt(d[σ^2(t)]/dt) dw, σ(t) = σmin (σmax/σmin)^t (Eq. 30)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        self.sigma_min, self.sigma_max = _ascending(sigma_min, sigma_max, "sigma")
        # SMLD noise levels, ascending: σ_i = σ(i / (N-1)), a geometric sequence from σmin to σmax.
        self.discrete_sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), self.N,
                                                        dtype=torch.float64))

    @property
    def sigmas_descending(self) -> torch.Tensor:
        """The NCSN ordering σ_1 > ... > σ_L: index 0 is σmax (the label convention of discrete NCSN models)."""
        return torch.flip(self.discrete_sigmas, dims=(0,))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g

    def marginal_coeffs(self, t):
        return torch.ones_like(t), self.sigma(t)

    def prior_std(self) -> float:
        return self.sigma_max

    def with_num_scales(self, N: int) -> "VESDE":
        return VESDE(self.sigma_min, self.sigma_max, N)

    def discretize(self, x, t):
        """SMLD (App. B, Eq. 18 read forward): f_i = 0, G_i = sqrt(σ_i^2 - σ_{i-1}^2), σ_{-1} = 0."""
        i = self.level_index(t)
        sigmas = self.discrete_sigmas.to(device=x.device)
        sigma = sigmas[i]
        prev = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        G = torch.sqrt(sigma ** 2 - prev ** 2).to(x.dtype)
        return torch.zeros_like(x), G


class VPSDE(SDE):
    """Variance preserving SDE (DDPM): dx = -1/2 β(t) x dt + sqrt(β(t)) dw, β(t) = β0 + t (β1 - β0) (Eq. 32)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self.beta_0, self.beta_1, self.discrete_betas, self.alphas = _ddpm_betas(beta_min, beta_max, self.N)
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log m(t) = -1/2 ∫_0^t β(s) ds = -1/4 t^2 (β1 - β0) - 1/2 t β0."""
        return -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def sde(self, x, t):
        beta = self.beta(t)
        return -0.5 * batch_view(beta, x) * x, torch.sqrt(beta)

    def marginal_coeffs(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), torch.sqrt(-torch.expm1(2.0 * lmc))  # expm1: exact near t = 0

    def prior_std(self) -> float:
        return 1.0

    def with_num_scales(self, N: int) -> "VPSDE":
        return VPSDE(self.beta_0, self.beta_1, N)

    def level_time(self, i) -> float:
        """DDPM step i ends at ᾱ_i = Π_{j<=i} (1 - β_j) ≈ exp(-∫_0^{(i+1)/N} β) = m((i+1)/N)^2: t_i = (i+1) T / N."""
        return (i + 1) * self.T / self.N

    def level_index(self, t: torch.Tensor) -> torch.Tensor:
        """The DDPM step nearest to t: round(t N / T - 1), clamped to 0..N-1."""
        i = torch.round(t.double() / self.T * self.N - 1.0).long()
        return i.clamp(0, self.N - 1)

    def check_discrete_betas(self) -> None:
        """The DDPM table needs β_i = β(t_i)/N < 1, i.e. N > β1 (continuous-time samplers do not)."""
        if self.beta_1 / self.N >= 1:
            raise ValueError(f"N = {self.N} steps give DDPM betas up to {self.beta_1 / self.N:.3g} >= 1: the "
                             "DDPM discretization (reverse diffusion, ancestral sampling, the Langevin α) "
                             "needs N > beta_max")

    def discretize(self, x, t):
        """DDPM (Eq. 21 read forward): x_{i+1} = sqrt(1 - β_i) x_i + sqrt(β_i) z, so f_i = (sqrt(1-β_i) - 1) x."""
        self.check_discrete_betas()
        i = self.level_index(t)
        beta = self.discrete_betas.to(device=x.device)[i].to(x.dtype)
        return batch_view(torch.sqrt(1.0 - beta) - 1.0, x) * x, torch.sqrt(beta)


class subVPSDE(SDE):
    """sub-VP SDE: dx = -1/2 β(t) x dt + sqrt(β(t) (1 - exp(-2 ∫_0^t β))) dw (Eq. 12 / 27; its perturbation kernel
    is Eq. 34), discretized by Euler–Maruyama.

    It carries the VP table of β_i / α_i = 1 - β_i only for the Langevin corrector's α factor (docs/papers.md §3).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self.beta_0, self.beta_1, self.discrete_betas, self.alphas = _ddpm_betas(beta_min, beta_max, self.N)

    beta = VPSDE.beta
    log_mean_coeff = VPSDE.log_mean_coeff
    check_discrete_betas = VPSDE.check_discrete_betas
    level_time = VPSDE.level_time
    level_index = VPSDE.level_index

    def sde(self, x, t):
        beta = self.beta(t)
        discount = -torch.expm1(4.0 * self.log_mean_coeff(t))  # 1 - exp(-2 β0 t - (β1 - β0) t^2) = 1 - m(t)^4
        return -0.5 * batch_view(beta, x) * x, torch.sqrt(beta * discount)

    def marginal_coeffs(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), -torch.expm1(2.0 * lmc)  # std = 1 - exp(2 lmc): the variance is its square

    def prior_std(self) -> float:
        return 1.0

    def with_num_scales(self, N: int) -> "subVPSDE":
        return subVPSDE(self.beta_0, self.beta_1, N)


SDE_NAMES = names.SDES


def get_sde(name: str, sigma_min: float = 0.01, sigma_max: float = 50.0, beta_min: float = 0.1,
            beta_max: float = 20.0, N: int = 1000) -> SDE:
    """Build an SDE by its params name (`training.sde`)."""
    if name == "vesde":
        return VESDE(sigma_min, sigma_max, N)
    if name == "vpsde":
        return VPSDE(beta_min, beta_max, N)
    if name == "subvpsde":
        return subVPSDE(beta_min, beta_max, N)
    raise ValueError(f"unknown SDE {name!r}; expected one of {SDE_NAMES}")


def langevin_alpha(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """α of the Langevin step rule (docs/papers.md §3): 1 for VE, α_i = 1 - β_i at the nearest level for VP / sub-VP."""
    if isinstance(sde, VESDE) or not hasattr(sde, "alphas"):
        return torch.ones_like(t)
    sde.check_discrete_betas()
    return sde.alphas.to(device=t.device)[sde.level_index(t)].to(t.dtype)


__all__ = ["SDE", "ReverseSDE", "VESDE", "VPSDE", "subVPSDE", "get_sde", "SDE_NAMES", "batch_view", "langevin_alpha"]
