"""Gaussian mixtures with closed-form perturbed scores and log-densities under any of the linear SDEs.

Under x_t = m(t) x_0 + std(t) z a component N(μ_k, Σ_k) becomes N(m μ_k, m^2 Σ_k + std^2 I), so p_t stays a mixture
with the same weights: its score ∇log p_t, log p_t and class posterior p_t(k | x) are exact. Samplers, likelihoods and
losses are tested against these. Computations run in float64; results come back in the input's dtype.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from pipeline.core import rng


def _sum_last(a: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension as a matrix-vector product (much faster than `sum` for tiny last dims on CPU)."""
    return a @ torch.ones(a.shape[-1], dtype=a.dtype, device=a.device)


def _logsumexp_last(a: torch.Tensor) -> torch.Tensor:
    mx = a.amax(dim=-1, keepdim=True).detach()
    return mx[..., 0] + torch.log(_sum_last(torch.exp(a - mx)))


class GaussianMixture:
    """Σ_k w_k N(μ_k, Σ_k) in D dimensions.

    `covs` is (K,) isotropic variances, (K, D) diagonal variances, or (K, D, D) full covariances (small D only).
    """

    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.dim() != 2 or self.means.shape[0] != self.weights.shape[0]:
            raise ValueError("means must be (K, D) with K = len(weights)")
        K, D = self.means.shape
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.dim() == 1:
            covs = covs[:, None].expand(K, D).clone()
        self.full = covs.dim() == 3
        if covs.shape[:2] != (K, D) or (self.full and covs.shape[2] != D):
            raise ValueError(f"covs of shape {tuple(covs.shape)} do not fit K={K}, D={D}")
        self.covs = covs
        # Σ_k = U_k diag(λ_k) U_k^T: the perturbed covariance m^2 Σ_k + std^2 I is diagonal in the same basis.
        # Rows rotate into all K eigenbases at once with x @ [U_1 ... U_K] (one matmul).
        if self.full:
            self.eigvals, self.eigvecs = torch.linalg.eigh(covs)
            self._rotate = torch.cat(list(self.eigvecs), dim=1)  # (D, K D)
            self._rotated_means = torch.einsum("kd,kde->ke", self.means, self.eigvecs)
        else:
            self.eigvals, self.eigvecs = covs, None

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _full_covs(self) -> torch.Tensor:
        return self.covs if self.full else torch.diag_embed(self.covs)

    # ---- moments and samples of the clean distribution -------------------------------------------------------------
    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Cov = Σ_k w_k (Σ_k + μ_k μ_k^T) - μ̄ μ̄^T."""
        mu = self.mean()
        outer = self.means[:, :, None] * self.means[:, None]
        second = torch.einsum("k,kij->ij", self.weights, self._full_covs() + outer)
        return second - torch.outer(mu, mu)

    def at_time(self, sde, t: float) -> "GaussianMixture":
        """The perturbed marginal p_t as a mixture: means m μ_k, covariances m^2 Σ_k + std^2 I."""
        m, std = (float(v) for v in sde.marginal_coeffs(torch.tensor([float(t)], dtype=torch.float64)))
        if self.full:
            covs = m ** 2 * self.covs + std ** 2 * torch.eye(self.dim, dtype=torch.float64)
        else:
            covs = m ** 2 * self.covs + std ** 2
        return GaussianMixture(self.weights, m * self.means, covs)

    def sample(self, n: int, generator, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(x of shape (n, D), component labels of shape (n,))."""
        u = rng.rand((n,), generator, dtype=torch.float64)
        labels = torch.searchsorted(torch.cumsum(self.weights, 0), u, right=True).clamp(max=len(self.weights) - 1)
        z = rng.randn((n, self.dim), generator, dtype=torch.float64) * torch.sqrt(self.eigvals[labels])
        x = self.means[labels] + (torch.einsum("nij,nj->ni", self.eigvecs[labels], z) if self.full else z)
        return x.to(dtype), labels

    # ---- perturbed densities ---------------------------------------------------------------------------------------
    def _coeffs(self, x: torch.Tensor, t, sde) -> tuple[torch.Tensor, torch.Tensor]:
        b, dev = x.shape[0], x.device
        if t is None or sde is None:
            return torch.ones(b, dtype=torch.float64, device=dev), torch.zeros(b, dtype=torch.float64, device=dev)
        t = torch.as_tensor(t).to(device=dev, dtype=torch.float64).reshape(-1)
        m, std = sde.marginal_coeffs(t.expand(b) if t.numel() == 1 else t)
        return m.to(torch.float64), std.to(torch.float64)

    def log_component_densities(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """log w_k + log N(x; m μ_k, m^2 Σ_k + std^2 I), shape (batch, K). x: (batch, ...) flattened to D."""
        return self._log_components_and_score(x, t, sde, want_score=False)[0]

    def _log_components_and_score(self, x, t, sde, want_score: bool):
        """(log w_k + log N_k (B, K) or None, per-component scores in the eigenbases (B, K, D) or None)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        B, (K, D) = xf.shape[0], self.means.shape
        if xf.shape[1] != D:
            raise ValueError(f"x has {xf.shape[1]} dimensions per sample, the mixture {D}")
        m, std = self._coeffs(xf, t, sde)
        if self.full:  # coordinates in each component's eigenbasis
            rotated = (xf @ self._rotate.to(xf.device)).reshape(B, K, D)
            diff = rotated - m[:, None, None] * self._rotated_means.to(xf.device)
        else:
            diff = xf[:, None, :] - m[:, None, None] * self.means.to(xf.device)
        var = m[:, None, None] ** 2 * self.eigvals.to(xf.device) + std[:, None, None] ** 2
        comp_score = -diff / var if want_score else None
        if want_score and K == 1:  # a single Gaussian: the score needs no responsibilities
            return None, comp_score
        maha = _sum_last(diff ** 2 / var)
        logdet = _sum_last(torch.log(var))
        logc = torch.log(self.weights.to(xf.device)) - 0.5 * (maha + logdet + D * math.log(2 * math.pi))
        return logc, comp_score

    def log_prob(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """log p_t(x) (log p_0 when t is None), shape (batch,), float64."""
        return _logsumexp_last(self.log_component_densities(x, t, sde))

    def log_posterior(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """Exact noise-conditional classifier log p_t(k | x), shape (batch, K), float64."""
        logc = self.log_component_densities(x, t, sde)
        return logc - _logsumexp_last(logc)[:, None]

    def score(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """∇_x log p_t(x) = Σ_k p_t(k | x) (-C_k^{-1} (x - m μ_k)), same shape and dtype as x."""
        logc, comp_score = self._log_components_and_score(x, t, sde, want_score=True)
        if logc is not None:
            comp_score = comp_score * torch.exp(logc - _logsumexp_last(logc)[:, None])[..., None]  # × p_t(k | x)
        B, K, D = comp_score.shape
        if self.full:  # back from the eigenbases, summed over components: one matmul with [U_1 ... U_K]^T
            s = comp_score.reshape(B, K * D) @ self._rotate.to(comp_score.device).T
        else:
            s = comp_score.sum(dim=1) if K > 1 else comp_score[:, 0]
        return s.reshape(x.shape).to(x.dtype)

    def score_fn(self, sde) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """score_fn(x, t) of the perturbed mixture under `sde`: the exact score a perfect model would output."""
        return lambda x, t: self.score(x, t, sde)

    def classifier_logp_fn(self, sde) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """(x, t) -> log p_t(k | x), shape (batch, K): the exact noise-conditional classifier."""
        return lambda x, t: self.log_posterior(x, t, sde).to(x.dtype)


def gaussian_conditional(mean: torch.Tensor, cov: torch.Tensor, known: torch.Tensor,
                         values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of x_u | x_k = values for x ~ N(mean, cov); `known` is a boolean mask over dimensions.

    μ_u + Σ_uk Σ_kk^{-1} (values - μ_k) and Σ_uu - Σ_uk Σ_kk^{-1} Σ_ku.
    """
    known = known.bool()
    u = ~known
    S_uk, S_kk = cov[u][:, known], cov[known][:, known]
    A = torch.linalg.solve(S_kk, S_uk.T).T
    cmean = mean[u] + A @ (values.to(cov.dtype) - mean[known])
    ccov = cov[u][:, u] - A @ S_uk.T
    return cmean, ccov
