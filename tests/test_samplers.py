"""Samplers driven by exact scores reproduce their targets: a 2-D two-component mixture and a 784-D Gaussian.

Targets are the perturbed marginals p_eps (closed form). Tolerances (n = samples):
- 2-D (n = 2000): component weight within 4 binomial s.e. (0.041); each component's mean and covariance entries
  within 4 s.e. of its target (s.e. from the target covariance and the component count); MMD^2 (RBF, bandwidths
  0.5 and 1, 1000 points) to an independent exact sample below the null bound = mean + 4 std of MMD^2 over 8
  exact-vs-exact pairs (corrector-only samplers: twice that).
- 784-D N(μ, 0.25^2 I) (n = 64, 50,176 coordinates): pooled mean error within 3% of the std; pooled variance ratio
  within 0.05 of its expected value: 1, or 1/(1 - r^2) when a Langevin corrector with snr r runs (the unadjusted
  Langevin step's own stationary bias). Corrector-only samplers get 0.12: they lag the annealing.
"""
import math

import pytest
import torch
from conftest import assert_close_f32

from pipeline.core import rng
from pipeline.core.mixtures import GaussianMixture
from pipeline.core.sde import VESDE, VPSDE, subVPSDE
from pipeline.samplers.correctors import CORRECTORS
from pipeline.samplers.predictors import PREDICTORS
from pipeline.samplers.sampling import ALD_CONVENTIONS, ald_sample, ode_sample, pc_sample

MIX = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.4]]])
_MU = torch.rand(784, generator=torch.Generator().manual_seed(5), dtype=torch.float64) - 0.5
GAUSS = GaussianMixture([1.0], _MU[None], [0.25 ** 2])
SDES = {"vesde": (lambda N: VESDE(0.01, 50.0, N), 1e-5), "vpsde": (lambda N: VPSDE(0.1, 20.0, N), 1e-3),
        "subvpsde": (lambda N: subVPSDE(0.1, 20.0, N), 1e-3)}
N_2D, N_784 = 2000, 64


def mmd2(x, y, bandwidths=(0.5, 1.0)):
    """Unbiased MMD^2 with a sum of RBF kernels."""
    n, m = len(x), len(y)
    dxx, dyy, dxy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    total = 0.0
    for h in bandwidths:
        k = lambda d: torch.exp(-d / (2 * h * h))  # noqa: E731
        total += (k(dxx).sum() - n) / (n * (n - 1)) + (k(dyy).sum() - m) / (m * (m - 1)) - 2 * k(dxy).mean()
    return float(total)


N_MMD = 1000  # MMD^2 on the first 1000 samples against 1000 exact ones


@pytest.fixture(scope="module")
def mmd_null_bound():
    """mean + 4 std of MMD^2 between two independent exact samples of N_MMD points (8 pairs): about 0.009."""
    vals = torch.tensor([mmd2(MIX.sample(N_MMD, torch.Generator().manual_seed(100 + 2 * i))[0].double(),
                              MIX.sample(N_MMD, torch.Generator().manual_seed(101 + 2 * i))[0].double())
                         for i in range(8)])
    return float(vals.mean() + 4 * vals.std())


def mixture_errors(x, target):
    """Worst |error| / s.e. over weights, component means and covariances, and the MMD^2 to an exact sample."""
    x = x.double()
    labels = target.log_posterior(x).argmax(1)
    out = {"weight_z": 0.0, "mean_z": 0.0, "cov_z": 0.0}
    for k in range(2):
        w = float(target.weights[k])
        xk = x[labels == k]
        nk = len(xk)
        out["weight_z"] = max(out["weight_z"], abs(nk / len(x) - w) / math.sqrt(w * (1 - w) / len(x)))
        cov = target.covs[k]
        mean_z = (xk.mean(0) - target.means[k]).abs() / (cov.diag() / nk).sqrt()
        out["mean_z"] = max(out["mean_z"], float(mean_z.max()))
        se = ((cov ** 2 + torch.outer(cov.diag(), cov.diag())) / nk).sqrt()  # s.e. of sample covariance entries
        out["cov_z"] = max(out["cov_z"], float(((torch.cov(xk.T) - cov).abs() / se).max()))
    out["mmd2"] = mmd2(x[:N_MMD], target.sample(N_MMD, torch.Generator().manual_seed(99))[0].double())
    return out


def gaussian_errors(x, target):
    """(pooled mean error / std, pooled variance / target variance) for the 784-D Gaussian."""
    d = x.double() - target.means[0]
    var = float(target.covs[0, 0])
    return float(d.mean()) / math.sqrt(var), float((d ** 2).mean()) / var


def assert_mixture(x, target, bound):
    e = mixture_errors(x, target)
    assert e["weight_z"] < 4 and e["mean_z"] < 4 and e["cov_z"] < 4 and e["mmd2"] < bound, (e, bound)


def assert_gaussian(x, target, expected_ratio=1.0, ratio_tol=0.05):
    mean_err, ratio = gaussian_errors(x, target)
    assert abs(mean_err) < 0.03 and abs(ratio - expected_ratio) < ratio_tol, (mean_err, ratio, expected_ratio)


PC_CASES = [  # (sde, predictor, corrector, snr, steps)
    ("vesde", "euler_maruyama", "none", 0.16, 500), ("vesde", "reverse_diffusion", "none", 0.16, 500),
    ("vesde", "ancestral_sampling", "none", 0.16, 500), ("vpsde", "euler_maruyama", "none", 0.16, 500),
    ("vpsde", "reverse_diffusion", "none", 0.16, 500), ("vpsde", "ancestral_sampling", "none", 0.16, 500),
    ("subvpsde", "euler_maruyama", "none", 0.16, 500), ("subvpsde", "reverse_diffusion", "none", 0.16, 500),
    ("vesde", "reverse_diffusion", "langevin", 0.16, 500), ("vpsde", "euler_maruyama", "langevin", 0.16, 500),
    ("subvpsde", "reverse_diffusion", "langevin", 0.16, 500), ("vpsde", "ancestral_sampling", "langevin", 0.16, 500),
    ("vesde", "euler_maruyama", "ald", 0.16, 500), ("vpsde", "reverse_diffusion", "ald", 0.16, 500),
    ("subvpsde", "euler_maruyama", "ald", 0.16, 500),
    ("vesde", "none", "langevin", 0.16, 1000), ("vpsde", "none", "langevin", 0.16, 1000),
    ("subvpsde", "none", "langevin", 0.16, 1000),
]


def _expected_ratio(predictor, corrector, snr):
    return 1.0 / (1.0 - snr ** 2) if corrector == "langevin" else 1.0


@pytest.mark.parametrize("name,predictor,corrector,snr,steps", PC_CASES)
def test_pc_sampler_on_2d_mixture(name, predictor, corrector, snr, steps, mmd_null_bound):
    make, eps = SDES[name]
    sde = make(steps)
    x, nfe = pc_sample(sde, MIX.score_fn(sde), (N_2D, 2), predictor, corrector, snr, 1, eps, True,
                       torch.Generator().manual_seed(1))
    assert nfe == steps * ((predictor != "none") + (corrector != "none"))
    if predictor == "none":  # corrector-only samplers lag the annealing: weights and the MMD get twice the room
        e = mixture_errors(x, MIX.at_time(sde, eps))
        assert e["weight_z"] < 4 and e["mean_z"] < 4 and e["cov_z"] < 4 and e["mmd2"] < 2 * mmd_null_bound, e
    else:
        assert_mixture(x, MIX.at_time(sde, eps), mmd_null_bound)


@pytest.mark.parametrize("name,predictor,corrector,snr,steps", PC_CASES)
def test_pc_sampler_on_784d_gaussian(name, predictor, corrector, snr, steps):
    make, eps = SDES[name]
    sde = make(steps)
    x, _ = pc_sample(sde, GAUSS.score_fn(sde), (N_784, 784), predictor, corrector, snr, 1, eps, True,
                     torch.Generator().manual_seed(1))
    assert_gaussian(x, GAUSS.at_time(sde, eps), _expected_ratio(predictor, corrector, snr),
                    0.12 if predictor == "none" else 0.05)


@pytest.mark.parametrize("name", list(SDES))
def test_ode_sampler(name, mmd_null_bound):
    make, eps = SDES[name]
    sde = make(1000)
    x, nfe = ode_sample(sde, MIX.score_fn(sde), (N_2D, 2), eps=eps, generator=torch.Generator().manual_seed(2))
    assert 20 < nfe < 500
    assert_mixture(x, MIX.at_time(sde, eps), mmd_null_bound)
    x, nfe_d = ode_sample(sde, GAUSS.score_fn(sde), (N_784, 784), eps=eps, denoise=True,
                          generator=torch.Generator().manual_seed(2))
    assert_gaussian(x, GAUSS.at_time(sde, eps))


def test_ode_sampler_maps_latent_deterministically():
    sde = VPSDE(0.1, 20.0, 1000)
    z = sde.prior_sampling((8, 2), torch.Generator().manual_seed(3))
    a, _ = ode_sample(sde, MIX.score_fn(sde), (8, 2), z=z)
    b, _ = ode_sample(sde, MIX.score_fn(sde), (8, 2), z=z)
    assert torch.equal(a, b)


def test_probability_flow_predictor_is_a_first_order_discretization():
    """Table 1's "probability flow" predictor: deterministic, with an O(1/N) bias that shrinks from N = 500 to 2000
    (measured variance ratios 1.092 and 1.027)."""
    ratios = {}
    for steps in (500, 2000):
        sde = VPSDE(0.1, 20.0, steps)
        x, nfe = pc_sample(sde, GAUSS.score_fn(sde), (32, 784), "reverse_diffusion", "none", eps=1e-3,
                           generator=torch.Generator().manual_seed(4), probability_flow=True)
        assert nfe == steps
        mean_err, ratios[steps] = gaussian_errors(x, GAUSS.at_time(sde, 1e-3))
        assert abs(mean_err) < 0.03
    assert abs(ratios[2000] - 1) < 0.05 and abs(ratios[2000] - 1) < abs(ratios[500] - 1) / 2.5, ratios


def test_paper_order(mmd_null_bound):
    ve = VESDE(0.01, 50.0, 500)
    x, nfe = pc_sample(ve, MIX.score_fn(ve), (N_2D, 2), "reverse_diffusion", "langevin", 0.16, 2, 1e-5,
                       generator=torch.Generator().manual_seed(5), order="paper")
    assert nfe == 500 + 499 * 2  # no corrector after the last predictor step
    assert_mixture(x, MIX.at_time(ve, 1e-5), mmd_null_bound)


def test_p2000_interpolates_noise_scales_for_a_discrete_model():
    """A discretely trained VE model with L = 100 levels (labels = descending index), sampled with 100 and 200 steps:
    the 200-level sampler discretizes σ(t) more finely while the model is queried at its nearest trained level;
    its variance error is below 0.06 and at most 0.6 times the 100-step one (measured 0.04 vs 0.08-0.09)."""
    from pipeline.core.losses import get_score_fn
    train_sde = VESDE(0.01, 50.0, 100)
    sig = train_sde.sigmas_descending
    seen = []

    def discrete_model(x, labels):  # the exact score at the trained level σ_labels
        seen.append(labels.clone())
        return GAUSS.score(x, torch.log(sig[labels] / 0.01) / math.log(5000), train_sde)

    score = get_score_fn(train_sde, discrete_model, continuous=False)
    for predictor in ("reverse_diffusion", "ancestral_sampling"):
        errors = {}
        for steps in (100, 200):
            seen.clear()
            x, nfe = pc_sample(train_sde, score, (N_784, 784), predictor, "none", eps=1e-5,
                               generator=torch.Generator().manual_seed(6), num_steps=steps)
            assert nfe == steps and all(0 <= int(lab[0]) < 100 for lab in seen)
            assert int(seen[0][0]) == 0 and int(seen[-1][0]) == 99  # from σmax down to σmin
            mean_err, ratio = gaussian_errors(x, GAUSS.at_time(train_sde, 1e-5))
            assert abs(mean_err) < 0.03
            errors[steps] = abs(ratio - 1)
        assert errors[200] < 0.06 and errors[200] < 0.6 * errors[100], (predictor, errors)


def test_per_row_generators_make_rows_independent_of_batch_size():
    """The noise draws are identical (one generator per row); the float32 arithmetic on 4 vs 8 rows may take a
    vectorized or a scalar-tail kernel, so rounding is allowed (1e-5 of max|x|; measured identical under AVX-512,
    AVX2 and ATEN_CPU_CAPABILITY=default). A row fed another row's noise is off by O(1)."""
    sde = VPSDE(0.1, 20.0, 50)
    for pred, corr in (("reverse_diffusion", "none"), ("euler_maruyama", "ald"), ("ancestral_sampling", "none")):
        a, _ = pc_sample(sde, MIX.score_fn(sde), (4, 2), pred, corr, generator=[rng.generator(11, i) for i in range(4)])
        b, _ = pc_sample(sde, MIX.score_fn(sde), (8, 2), pred, corr, generator=[rng.generator(11, i) for i in range(8)])
        assert_close_f32(a, b[:4], 1e-5, what=f"{pred} + {corr}")
    ve = VESDE(0.01, 1.0, 5)
    a, _ = ald_sample(ve, MIX.score_fn(ve), (4, 2), n_steps_each=5, generator=[rng.generator(3, i) for i in range(4)])
    b, _ = ald_sample(ve, MIX.score_fn(ve), (8, 2), n_steps_each=5, generator=[rng.generator(3, i) for i in range(8)])
    assert_close_f32(a, b[:4], 1e-5, what="ald")


def _ald_moments(sde, mu, var, steps, lr, convention):
    """Exact ALD moments for N(μ, var I) from U[0,1): x' - μ = (1 - c/v_i)(x - μ) + sqrt(q) z, v_i = var + σ_i^2."""
    dev, second = 0.5 - mu, 1.0 / 12.0
    for sigma in sde.sigmas_descending.tolist():
        alpha = lr * (sigma / sde.sigma_min) ** 2
        c, q = (alpha / 2, alpha) if convention == "paper" else (alpha, 2 * alpha)
        a = 1 - c / (var + sigma ** 2)
        for _ in range(steps):
            dev, second = a * dev, a * a * second + q
    return mu + dev, second


@pytest.mark.parametrize("convention", sorted(ALD_CONVENTIONS))
def test_ald_matches_its_exact_gaussian_recursion(convention):
    """NCSN v1 settings (10 levels 1 → 0.01, 100 steps each, ε = 2e-5) on N(μ, 0.1^2 I), μ in [0.3, 0.7]^784."""
    sde = VESDE(0.01, 1.0, 10)
    mu = 0.3 + 0.4 * (_MU + 0.5)
    data = GaussianMixture([1.0], mu[None], [0.01])
    x, nfe = ald_sample(sde, data.score_fn(sde), (N_784, 784), 100, 2e-5, convention,
                        generator=torch.Generator().manual_seed(7))
    assert nfe == 1000
    mean, var = _ald_moments(sde, mu, 0.01, 100, 2e-5, convention)
    d = x.double() - mean
    assert abs(float(d.mean())) < 4 * math.sqrt(var / d.numel())
    assert float((d ** 2).mean()) / var == pytest.approx(1.0, abs=4 * math.sqrt(2 / d.numel()))


def test_ald_on_2d_mixture_recovers_weights_and_means():
    sde = VESDE(0.01, 1.0, 10)
    mix = GaussianMixture([0.3, 0.7], [[0.3, 0.3], [0.7, 0.65]], [0.01, 0.008])
    x, _ = ald_sample(sde, mix.score_fn(sde), (N_2D, 2), 100, 2e-5, "reference",
                      generator=torch.Generator().manual_seed(8), denoise=True)
    e = mixture_errors(x, GaussianMixture(mix.weights, mix.means, torch.diag_embed(mix.covs)))
    assert e["weight_z"] < 4 and e["mean_z"] < 4, e


def test_nfe_counts_progress_and_errors(capsys):
    sde = VPSDE(0.1, 20.0, 40)
    score = MIX.score_fn(sde)
    g = torch.Generator().manual_seed(0)
    assert pc_sample(sde, score, (3, 2), "euler_maruyama", "langevin", n_steps=2, generator=g)[1] == 120
    assert pc_sample(sde, score, (3, 2), "euler_maruyama", "langevin", n_steps=2, generator=g, order="paper")[1] == 118
    assert pc_sample(sde, score, (3, 2), "none", "langevin", n_steps=3, generator=g)[1] == 120
    x, nfe = pc_sample(sde, score, (3, 2), "euler_maruyama", "none", generator=g, num_steps=10)  # EM needs no table
    assert nfe == 10 and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="N > beta_max"):
        pc_sample(sde, score, (3, 2), "reverse_diffusion", "none", generator=g, num_steps=10)
    assert pc_sample(sde, score, (3, 2), "none", "none", generator=g, progress=True)[1] == 0
    assert "PC sampling" in capsys.readouterr().err
    assert set(PREDICTORS) == {"euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none"}
    assert set(CORRECTORS) == {"langevin", "ald", "none"}
    with pytest.raises(ValueError, match="unknown predictor"):
        pc_sample(sde, score, (3, 2), "heun", "none", generator=g)
    with pytest.raises(ValueError, match="ancestral"):
        pc_sample(subVPSDE(N=10), score, (3, 2), "ancestral_sampling", "none", generator=g)
    with pytest.raises(ValueError, match="Generator"):
        pc_sample(sde, score, (3, 2))
    with pytest.raises(ValueError, match="VE SDE"):
        ald_sample(sde, score, (3, 2), generator=g)


def _draw_like(generator_seed, shape, dtype=torch.float64):
    """The z a component draws first from a generator seeded with `generator_seed`."""
    return rng.randn(shape, torch.Generator().manual_seed(generator_seed), dtype=dtype)


@pytest.mark.parametrize("name", list(SDES))
def test_predictor_updates_follow_the_papers_equations(name):
    """One step of each predictor against docs/papers.md §1/§3 written out by hand, with the same noise draw."""
    N, t0 = 40, 0.37  # level i = round(0.37 * 39) = 14
    sde = SDES[name][0](N)
    i = round(t0 * (N - 1))
    x = torch.tensor([[0.3, -1.1], [2.0, 0.4], [-0.7, 0.9]], dtype=torch.float64)
    t = torch.full((3,), t0, dtype=torch.float64)
    s = MIX.score_fn(sde)(x, t)
    z = _draw_like(0, x.shape)
    tt = torch.tensor(t0, dtype=torch.float64)
    if name == "vesde":
        sig = lambda u: 0.01 * (50 / 0.01) ** u  # noqa: E731
        f, g = torch.zeros_like(x), sig(tt) * math.sqrt(2 * math.log(5000))
        s_i, s_prev = sig(torch.tensor(i / (N - 1))), sig(torch.tensor((i - 1) / (N - 1)))
        f_i, G_i = torch.zeros_like(x), torch.sqrt(s_i ** 2 - s_prev ** 2)
    else:
        beta = 0.1 + tt * 19.9
        f = -0.5 * beta * x
        g = torch.sqrt(beta) if name == "vpsde" else torch.sqrt(beta * (1 - torch.exp(-2 * 0.1 * tt - 19.9 * tt ** 2)))
        beta_i = (0.1 + i / (N - 1) * 19.9) / N
        if name == "vpsde":
            f_i, G_i = (math.sqrt(1 - beta_i) - 1) * x, math.sqrt(beta_i)
        else:
            f_i, G_i = f / N, g / math.sqrt(N)
    expected = {
        "euler_maruyama": (x - (f - g ** 2 * s) / N, g * math.sqrt(1 / N)),
        "reverse_diffusion": (x - f_i + G_i ** 2 * s, G_i),
    }
    if name == "vesde":
        expected["ancestral_sampling"] = (x + (s_i ** 2 - s_prev ** 2) * s,
                                          torch.sqrt(s_prev ** 2 * (s_i ** 2 - s_prev ** 2) / s_i ** 2))
    elif name == "vpsde":
        expected["ancestral_sampling"] = ((x + beta_i * s) / math.sqrt(1 - beta_i), math.sqrt(beta_i))
    for pred, (mean, std) in expected.items():
        out, out_mean = PREDICTORS[pred](sde, MIX.score_fn(sde)).update(x, t, torch.Generator().manual_seed(0))
        assert torch.allclose(out_mean, mean, atol=1e-12), pred
        assert torch.allclose(out, mean + std * z, atol=1e-12), pred


@pytest.mark.parametrize("name", ["vesde", "vpsde"])
def test_corrector_updates_follow_the_papers_equations(name):
    """Two Langevin steps: ε = 2 α (r mean||z|| / mean||s||)^2 (langevin) or 2 α (r std_t)^2 (ald), α = 1 (VE) or
    1 - β_i (VP); x̄ = x + ε s, x = x̄ + sqrt(2ε) z."""
    N, r = 40, 0.2
    sde = SDES[name][0](N)
    x0 = torch.tensor([[0.3, -1.1], [2.0, 0.4], [-0.7, 0.9]], dtype=torch.float64)
    t = torch.full((3,), 0.37, dtype=torch.float64)
    alpha = 1.0 if name == "vesde" else 1 - (0.1 + 14 / 39 * 19.9) / N  # level round(0.37 * 39) = 14
    std_t = float(sde.marginal_coeffs(t[:1])[1])
    score = MIX.score_fn(sde)
    for corr in ("langevin", "ald"):
        g = torch.Generator().manual_seed(1)
        x = x0
        for _ in range(2):
            s, z = score(x, t), rng.randn(x.shape, g, dtype=torch.float64)
            if corr == "langevin":
                eps = 2 * alpha * (r * z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
            else:
                eps = 2 * alpha * (r * std_t) ** 2
            x_mean = x + eps * s
            x = x_mean + math.sqrt(2 * eps) * z
        out, out_mean = CORRECTORS[corr](sde, score, r, 2).update(x0, t, torch.Generator().manual_seed(1))
        assert torch.allclose(out_mean, x_mean, atol=1e-12) and torch.allclose(out, x, atol=1e-12), corr


@pytest.mark.parametrize("convention", sorted(ALD_CONVENTIONS))
def test_ald_update_rule(convention):
    """Two levels (σ = 1, 0.01), two steps each, from U[0,1): the step rule of ALD_CONVENTIONS[convention]."""
    sde = VESDE(0.01, 1.0, 2)
    score = MIX.score_fn(sde)
    g = torch.Generator().manual_seed(2)
    x = rng.rand((3, 2), g, dtype=torch.float64)
    for t, sigma in ((1.0, 1.0), (0.0, 0.01)):
        a = 2e-3 * (sigma / 0.01) ** 2
        for _ in range(2):
            s, z = score(x, torch.full((3,), t, dtype=torch.float64)), rng.randn((3, 2), g, dtype=torch.float64)
            x = x + a / 2 * s + math.sqrt(a) * z if convention == "paper" else x + a * s + math.sqrt(2 * a) * z
    out, nfe = ald_sample(sde, score, (3, 2), 2, 2e-3, convention, generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64)
    assert nfe == 4 and torch.allclose(out, x, atol=1e-12)
