"""Probability-flow likelihoods against closed-form log-densities; Hutchinson estimators; bits/dim conventions."""
import math

import pytest
import torch
from conftest import assert_close_f32

from pipeline.core import rng
from pipeline.core.likelihood import bits_per_dim, bpd_offset, log_likelihood
from pipeline.core.mixtures import GaussianMixture
from pipeline.core.scaling import dequantize
from pipeline.core.sde import VESDE, VPSDE, subVPSDE
from pipeline.samplers.sampling import ode_sample

MIX = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.4]]])
SDES = {"vesde": VESDE(0.01, 50.0, 1000), "vpsde": VPSDE(0.1, 20.0, 1000), "subvpsde": subVPSDE(0.1, 20.0, 1000)}
EPS = 1e-5


@pytest.mark.parametrize("name", list(SDES))
def test_exact_trace_likelihood_equals_the_analytic_density(name):
    """log p(x) = log π(z) + ∫ ∇·f̃ dt. With the SDE's true marginal p_T in place of the prior π the result equals
    the analytic log p_eps(x) to 1e-4 nats (5e-5 per dimension): the ODE and the exact trace are right. The remaining
    difference log π(z) - log p_T(z) is the prior mismatch of the truncated SDE (0.01-0.03 nats here), not an
    error of the method."""
    sde = SDES[name]
    x = MIX.sample(8, torch.Generator().manual_seed(0), dtype=torch.float64)[0]
    logp, z, nfe = log_likelihood(sde, MIX.score_fn(sde), x, eps=EPS, estimator="exact")
    truth = MIX.at_time(sde, EPS).log_prob(x)
    with_true_prior = logp - sde.prior_logp(z) + MIX.at_time(sde, 1.0).log_prob(z)
    assert float((with_true_prior - truth).abs().max()) < 1e-4
    assert 10 < nfe < 1000


@pytest.mark.parametrize("estimator", ["rademacher", "gaussian"])
def test_hutchinson_estimators_are_unbiased(estimator):
    """One point, 1000 rows, one probe per row: the mean estimate is within 3 s.e. of the exact-trace value."""
    sde = SDES["vesde"]
    x = torch.tensor([[-1.2, 0.6]], dtype=torch.float64)
    exact, _, _ = log_likelihood(sde, MIX.score_fn(sde), x, eps=EPS, estimator="exact")
    reps = x.expand(1000, 2).clone()
    est, _, _ = log_likelihood(sde, MIX.score_fn(sde), reps, eps=EPS, estimator=estimator,
                               generator=torch.Generator().manual_seed(1))
    se = float(est.std()) / math.sqrt(len(est))
    assert se > 1e-3  # the estimator really is stochastic here (a non-diagonal Hessian)
    assert abs(float(est.mean()) - float(exact)) < 3 * se, (float(est.mean()), float(exact), se)


def test_rademacher_is_exact_for_an_isotropic_gaussian_in_784d():
    """The probability-flow Jacobian is c(t) I, so ε^T J ε = c D for every ±1 probe: no estimator noise at all."""
    sde = SDES["vpsde"]
    mu = torch.rand(784, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 0.5
    data = GaussianMixture([1.0], mu[None], [0.0625])
    x = data.sample(4, torch.Generator().manual_seed(3), dtype=torch.float64)[0]
    logp, _, _ = log_likelihood(sde, data.score_fn(sde), x, eps=EPS, estimator="rademacher",
                                generator=torch.Generator().manual_seed(4))
    truth = data.at_time(sde, EPS).log_prob(x)
    assert float((logp - truth).abs().max()) / 784 < 1e-3


def test_latent_round_trip_through_the_ode_sampler():
    sde = SDES["vpsde"]
    x = MIX.sample(8, torch.Generator().manual_seed(5), dtype=torch.float64)[0]
    _, z, _ = log_likelihood(sde, MIX.score_fn(sde), x, eps=1e-3, estimator="rademacher",
                             generator=torch.Generator().manual_seed(6))
    back, _ = ode_sample(sde, MIX.score_fn(sde), (8, 2), eps=1e-3, z=z, dtype=torch.float64)
    assert float((back - x).abs().max()) < 1e-3


def test_bits_per_dim_of_a_known_discrete_distribution():
    """8-bit data with level probabilities P_k; model density = P_k × (bins per unit) on the dequantized scale.
    bpd must equal -log2 P_k for every sample, in [0, 1] with offset 8 and in [-1, 1] with offset 7."""
    g = torch.Generator().manual_seed(7)
    levels = torch.arange(256, dtype=torch.float64)
    P = torch.exp(-0.5 * ((levels - 90) / 30) ** 2)
    P = P / P.sum()
    k = torch.multinomial(P, 5000, replacement=True, generator=g)
    x01 = dequantize((k.double() / 255.0)[:, None], g)  # (255 x + u) / 256, x = k / 255
    assert torch.equal(torch.floor(256 * x01[:, 0]).long(), k)  # each sample stays in its own bin
    from_float = dequantize((k.float() / 255.0)[:, None], torch.Generator().manual_seed(8))
    from_uint8 = dequantize(k.to(torch.uint8)[:, None], torch.Generator().manual_seed(8))
    assert from_uint8.dtype == torch.float32
    # float32 along two paths (k / 255 first, or not): rounding only; a 255 vs 256 scale slip would be 4e-3
    assert_close_f32(from_uint8, from_float, 1e-5, what="uint8 vs float dequantization")
    logp01 = torch.log(P[torch.floor(256 * x01[:, 0]).long()] * 256)
    bpd01 = bits_per_dim(logp01, 1, bpd_offset(centered=False))
    assert torch.allclose(bpd01, -torch.log2(P[k]), atol=1e-9)
    y = 2 * x01 - 1  # density on [-1, 1] is halved per dimension
    logp11 = torch.log(P[torch.floor(256 * (y[:, 0] + 1) / 2).long()] * 128)
    assert torch.allclose(bits_per_dim(logp11, 1, bpd_offset(centered=True)), -torch.log2(P[k]), atol=1e-9)
    entropy = float(-(P * torch.log2(P)).sum())
    assert float(bpd01.mean()) == pytest.approx(entropy, abs=4 * float(bpd01.std()) / math.sqrt(5000))
    assert bpd_offset(False) == 8.0 and bpd_offset(True) == 7.0
    # the uniform density on [0,1]^D is exactly 8 bits/dim
    assert float(bits_per_dim(torch.zeros(1), 3 * 32 * 32, 8.0)) == 8.0


def test_errors():
    sde = SDES["vpsde"]
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="unknown divergence estimator"):
        log_likelihood(sde, MIX.score_fn(sde), x, estimator="exactly")
    with pytest.raises(ValueError, match="Generator"):
        log_likelihood(sde, MIX.score_fn(sde), x, estimator="rademacher")
    assert rng.rademacher((1000,), torch.Generator().manual_seed(0)).abs().eq(1).all()
