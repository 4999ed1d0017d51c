"""Controllable generation with exact scores: inpainting and colorization of Gaussians recover the analytic conditional
laws; class-conditional sampling with the exact noise-conditional classifier draws the requested component."""
import math

import torch
from conftest import assert_close_f32

from pipeline.core.mixtures import GaussianMixture, gaussian_conditional
from pipeline.core.sde import VESDE, VPSDE
from pipeline.samplers.controllable import COLOR_DECOUPLING, conditional_score_fn, couple, decouple, pc_colorize, pc_inpaint


def _correlated_gaussian(d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5
    return torch.randn(d, generator=g, dtype=torch.float64) * 0.5, A @ A.T + 0.1 * torch.eye(d, dtype=torch.float64)


def _assert_conditional(samples, cmean, ccov):
    """Mean within 4 s.e. and covariance entries within 4 s.e. of the analytic conditional law."""
    n = len(samples)
    mean_z = ((samples.mean(0) - cmean).abs() / (ccov.diag() / n).sqrt()).max()
    se = ((ccov ** 2 + torch.outer(ccov.diag(), ccov.diag())) / n).sqrt()
    cov_z = ((torch.cov(samples.T) - ccov).abs() / se).max()
    assert mean_z < 4 and cov_z < 4, (float(mean_z), float(cov_z))


def test_inpainting_a_gaussian_gives_the_conditional_law():
    """4-D correlated Gaussian, entries 0 and 2 known. With Langevin correctors (r = 0.16) the replacement method
    samples p(x_u | x_k). (Predictor-only replacement conditions on a noisy copy of x_k and is biased: one
    conditional mean was off by 0.18, 15 s.e., in a trial run; so the test uses the PC sampler.)"""
    mu, cov = _correlated_gaussian(4, 0)
    data = GaussianMixture([1.0], mu[None], cov[None])
    known = torch.tensor([True, False, True, False])
    value = torch.tensor([1.2, 0.0, -0.4, 0.0])
    cmean, ccov = gaussian_conditional(mu, cov, known, value[known])
    sde, n = VESDE(0.01, 50.0, 500), 2000
    x0 = value.expand(n, 4).clone()
    x, nfe = pc_inpaint(sde, data.score_fn(sde), x0, known.float(), "reverse_diffusion", "langevin", 0.16, 1, 1e-5,
                        torch.Generator().manual_seed(1))
    assert nfe == 1000 and torch.equal(x[:, known], x0[:, known])
    _assert_conditional(x[:, ~known].double(), cmean, ccov)


def test_colorization_decoupling_is_orthonormal_and_round_trips():
    M = COLOR_DECOUPLING
    assert torch.allclose(M.T @ M, torch.eye(3, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(M[:, 0], torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64), atol=1e-15)
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(couple(decouple(x)), x, atol=1e-14)
    assert torch.allclose(decouple(couple(x)), x, atol=1e-14)
    gray = x[:, :1].expand(5, 3, 4, 4)
    y = decouple(gray)
    assert torch.allclose(y[:, 0], math.sqrt(3) * x[:, 0]) and y[:, 1:].abs().max() < 1e-14


def test_colorizing_a_gaussian_gives_the_conditional_colour_law():
    """RGB pixels x ~ N(μ, Σ); the gray level fixes y_0 = (R+G+B)/sqrt(3); (y_1, y_2) | y_0 is the analytic law."""
    mu, cov = _correlated_gaussian(3, 3)
    data = GaussianMixture([1.0], mu[None], cov[None])
    M = COLOR_DECOUPLING
    y_mean, y_cov = M.T @ mu, M.T @ cov @ M
    gray_level = 0.3
    known = torch.tensor([True, False, False])
    cmean, ccov = gaussian_conditional(y_mean, y_cov, known, torch.tensor([math.sqrt(3) * gray_level]))
    sde, n = VESDE(0.01, 50.0, 500), 2000
    gray = torch.full((n, 1, 1, 1), gray_level)
    x, _ = pc_colorize(sde, lambda xx, t: data.score(xx.reshape(-1, 3), t, sde).reshape(xx.shape), gray,
                       "reverse_diffusion", "langevin", 0.16, 1, 1e-5, torch.Generator().manual_seed(4))
    y = decouple(x.double())[:, :, 0, 0]
    # the gray level is kept up to the float32 rounding of the RGB values (scale: their largest magnitude); a
    # gray level left free to move would be off by O(0.1-1)
    assert_close_f32(y[:, 0], torch.full((n,), math.sqrt(3) * gray_level, dtype=torch.float64), 1e-5,
                     scale=float(x.abs().max()), what="gray level")
    _assert_conditional(y[:, 1:], cmean, ccov)


def test_class_conditional_sampling_with_the_exact_classifier():
    """∇log p_t(x) + ∇log p_t(y | x) is the score of component y: samples land in it (≥ 0.95; measured 1.0) and
    match its moments; per-row labels work too."""
    mix = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.4]]])
    sde, n = VPSDE(0.1, 20.0, 500), 1000
    from pipeline.samplers.sampling import pc_sample
    score = conditional_score_fn(mix.score_fn(sde), mix.classifier_logp_fn(sde), 0)
    x, _ = pc_sample(sde, score, (n, 2), "euler_maruyama", "none", eps=1e-3, generator=torch.Generator().manual_seed(5))
    target = mix.at_time(sde, 1e-3)
    hit = (target.log_posterior(x.double()).argmax(1) == 0).double().mean()
    assert hit >= 0.95
    _assert_conditional(x.double(), target.means[0], target.covs[0])
    y = torch.tensor([0, 1] * (n // 2))
    x, _ = pc_sample(sde, conditional_score_fn(mix.score_fn(sde), mix.classifier_logp_fn(sde), y), (n, 2),
                     "euler_maruyama", "none", eps=1e-3, generator=torch.Generator().manual_seed(6))
    assert (target.log_posterior(x.double()).argmax(1) == y).double().mean() >= 0.95


def test_known_entries_follow_the_forward_marginal():
    """After each update the known entries are a fresh draw m(t) x0 + std(t) z (docs/papers.md §5): stopped at t = 0.5
    without denoising they have that mean and std (4 s.e.); the denoised output keeps exactly m(t) x0."""
    sde, n = VPSDE(0.1, 20.0, 100), 20000
    data = GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    x0 = torch.tensor([[1.5, 0.0]]).expand(n, 2).clone()
    mask = torch.tensor([1.0, 0.0])
    m, std = (float(v) for v in sde.marginal_coeffs(torch.tensor([0.5])))
    x, _ = pc_inpaint(sde, data.score_fn(sde), x0, mask, "reverse_diffusion", "none", eps=0.5, denoise=False,
                      generator=torch.Generator().manual_seed(7))
    known = x[:, 0].double()
    assert abs(float(known.mean()) - m * 1.5) < 4 * std / math.sqrt(n)
    assert abs(float(known.std()) / std - 1) < 4 / math.sqrt(2 * n)
    x, _ = pc_inpaint(sde, data.score_fn(sde), x0, mask, "reverse_diffusion", "none", eps=0.5, denoise=True,
                      generator=torch.Generator().manual_seed(7))
    # exactly m(t) x0 up to float32 rounding of exp / multiply (1e-5 relative); the m of a neighbouring step
    # (dt = 0.005) differs by 2.5e-2 relative
    assert_close_f32(x[:, 0], torch.full((n,), m * 1.5), 1e-5, what="known entries")


def test_class_guidance_through_a_fast_sampler_gives_the_component_law():
    """The probability-flow ODE of ∇log p_t(x) + ∇log p_t(y | x) (exact mixture posterior as the classifier) carries
    the prior to component y (DPM-Solver++(2M), 40 steps: hits ≥ 0.95, measured 1.0; moments within 4 s.e.); with
    guidance scale 0 it samples the mixture, whose component-0 weight 0.3 the hits match within 4 s.e."""
    from pipeline.samplers.fast_samplers import dpm_solver_sample

    mix = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.4]]])
    sde, n = VPSDE(0.1, 20.0, 1000), 2000
    target = mix.at_time(sde, 1e-3)
    for y in (0, 1):
        score = conditional_score_fn(mix.score_fn(sde), mix.classifier_logp_fn(sde), y)
        x, _ = dpm_solver_sample(sde, score, (n, 2), num_steps=40, order=2, multistep=True,
                                 generator=torch.Generator().manual_seed(10 + y))
        assert (target.log_posterior(x.double()).argmax(1) == y).double().mean() >= 0.95
        _assert_conditional(x.double(), target.means[y], target.covs[y])
    score = conditional_score_fn(mix.score_fn(sde), mix.classifier_logp_fn(sde), 0, scale=0.0)
    x, _ = dpm_solver_sample(sde, score, (n, 2), num_steps=40, order=2, multistep=True,
                             generator=torch.Generator().manual_seed(12))
    frac = float((target.log_posterior(x.double()).argmax(1) == 0).double().mean())
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n), frac
