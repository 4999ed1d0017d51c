"""SDEs against their closed forms: marginals vs simulation, vs the moment ODE, vs the discretizations; priors."""
import math

import pytest
import torch

from pipeline.core import rng
from pipeline.core.sde import VESDE, VPSDE, get_sde, subVPSDE

SDES = {
    "vesde": lambda N=1000: VESDE(0.01, 50.0, N),
    "vpsde": lambda N=1000: VPSDE(0.1, 20.0, N),
    "subvpsde": lambda N=1000: subVPSDE(0.1, 20.0, N),
}


def _t(v, n=1):
    return torch.full((n,), float(v), dtype=torch.float64)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_prob_matches_euler_maruyama_simulation(name):
    """20,000 forward EM paths (2,000 steps) from x0 = (1.5, -0.5): mean and std at t = 0.3 and 1 within 4 s.e.
    plus the O(dt) EM bias allowance of 1% of the std."""
    sde = SDES[name]()
    n, steps = 20_000, 2_000
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64).expand(n, 2)
    x, dt = x0.clone(), 1.0 / steps
    checks = {int(0.3 * steps): 0.3, steps: 1.0}
    for k in range(steps):
        t = _t(k * dt, n)
        drift, diff = sde.sde(x, t)
        x = x + drift * dt + diff[:, None] * math.sqrt(dt) * rng.randn(x.shape, g, dtype=torch.float64)
        if k + 1 in checks:
            mean, std = sde.marginal_prob(x0[:1], _t(checks[k + 1]))
            std = float(std)
            mean_err = (x.mean(0) - mean[0]).abs().max().item()
            std_err = (x.std(0) / std - 1).abs().max().item()
            assert mean_err < 4 * std / math.sqrt(n) + 0.01 * std, (name, checks[k + 1], mean_err)
            assert std_err < 4 / math.sqrt(2 * n) + 0.01, (name, checks[k + 1], std_err)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_solves_the_moment_equations(name):
    """For dx = a(t) x dt + g(t) dw: d m/dt = a m and d var/dt = 2 a var + g^2 (central differences, 1e-6 rel)."""
    sde = SDES[name]()
    h = 1e-5
    for t in (0.05, 0.3, 0.7, 0.95):
        a = float(sde.sde(torch.ones(1, 1, dtype=torch.float64), _t(t))[0])
        g2 = float(sde.sde(torch.ones(1, 1, dtype=torch.float64), _t(t))[1]) ** 2
        (m_lo, s_lo), (m, s), (m_hi, s_hi) = (tuple(float(v) for v in sde.marginal_coeffs(_t(u))) for u in
                                              (t - h, t, t + h))
        dm, dvar = (m_hi - m_lo) / (2 * h), (s_hi ** 2 - s_lo ** 2) / (2 * h)
        assert dm == pytest.approx(a * m, rel=1e-6)
        assert dvar == pytest.approx(2 * a * s ** 2 + g2, rel=1e-6)


@pytest.mark.parametrize("name,mean_tol,std_tol", [("vesde", 1e-12, 1e-12), ("vpsde", 1.5e-3, 2e-3),
                                                    ("subvpsde", 2e-3, 3e-3)])
def test_discretization_reaches_the_marginal(name, mean_tol, std_tol):
    """Exact moments of the chain x_{i+1} = x_i + f_i + G_i z (f_i linear in x) after levels 0..i vs
    marginal_prob(level_time(i)). SMLD telescopes to σ_i^2 exactly; DDPM (level time (i+1)/N) and Euler–Maruyama
    (sub-VP) agree to O(1/N): measured 1.0e-3 / 1.4e-3 in the mean, 1.3e-3 / 2.4e-3 in the std."""
    sde = SDES[name]()
    one = torch.ones(1, 1, dtype=torch.float64)
    mean, var = 1.0, 0.0
    worst_mean = worst_std = 0.0
    for i in range(sde.N):
        t = _t(sde.level_time(i))
        f, G = sde.discretize(one, t)
        c = float(f)
        mean, var = mean * (1 + c), var * (1 + c) ** 2 + float(G) ** 2
        m, s = (float(v) for v in sde.marginal_coeffs(t))
        worst_mean, worst_std = max(worst_mean, abs(mean - m)), max(worst_std, abs(math.sqrt(var) - s))
    assert worst_mean < mean_tol and worst_std < std_tol, (worst_mean, worst_std)


def test_closed_forms_of_papers_table():
    ve, vp, svp = SDES["vesde"](), SDES["vpsde"](), SDES["subvpsde"]()
    t = _t(0.4)
    x = torch.full((1, 3), 2.0, dtype=torch.float64)
    sigma = 0.01 * (50 / 0.01) ** 0.4
    assert float(ve.sde(x, t)[1]) == pytest.approx(sigma * math.sqrt(2 * math.log(5000)), rel=1e-12)
    assert float(ve.marginal_prob(x, t)[1]) == pytest.approx(sigma, rel=1e-12)
    beta = 0.1 + 0.4 * 19.9
    lmc = -0.25 * 0.16 * 19.9 - 0.5 * 0.4 * 0.1
    assert torch.allclose(vp.sde(x, t)[0], -0.5 * beta * x)
    assert float(vp.marginal_prob(x, t)[1]) == pytest.approx(math.sqrt(1 - math.exp(2 * lmc)), rel=1e-12)
    assert float(svp.marginal_prob(x, t)[1]) == pytest.approx(1 - math.exp(2 * lmc), rel=1e-12)
    assert float(svp.sde(x, t)[1]) == pytest.approx(math.sqrt(beta * (1 - math.exp(-2 * 0.1 * 0.4 - 19.9 * 0.16))),
                                                    rel=1e-12)
    assert torch.allclose(vp.marginal_prob(x, t)[0], math.exp(lmc) * x)
    # discrete tables: geometric σ from σmin to σmax; β_i = β(i/(N-1))/N
    assert float(ve.discrete_sigmas[0]) == pytest.approx(0.01) and float(ve.discrete_sigmas[-1]) == pytest.approx(50)
    assert float(ve.sigmas_descending[0]) == pytest.approx(50)
    i = torch.arange(vp.N, dtype=torch.float64)
    assert torch.allclose(vp.discrete_betas, vp.beta(i / (vp.N - 1)) / vp.N)
    assert torch.allclose(ve.discrete_sigmas, ve.sigma(i / (ve.N - 1)))


def test_level_index_on_sampler_grids():
    """Every reference grid (VE eps 1e-5, VP eps 1e-3, ALD's linspace(1, 0, N), P2000) visits N-1..0 once each."""
    for name, eps in (("vesde", 1e-5), ("vpsde", 1e-3), ("vesde", 0.0)):
        sde = SDES[name]()
        for grid in (torch.linspace(1, eps, 1000, dtype=torch.float32), torch.linspace(1, eps, 1000).double()):
            assert torch.equal(sde.level_index(grid), torch.arange(999, -1, -1)), (name, eps, grid.dtype)
    p2000 = SDES["vesde"]().with_num_scales(2000)
    assert p2000.N == 2000 and type(p2000) is VESDE
    assert torch.equal(p2000.level_index(torch.linspace(1, 1e-5, 2000)), torch.arange(1999, -1, -1))
    ve, vp = SDES["vesde"](), SDES["vpsde"]()
    assert ve.level_index(torch.tensor([0.4 / 999, 1.6 / 999, 998.7 / 999])).tolist() == [0, 2, 999]  # nearest
    assert vp.level_index(torch.tensor([0.0, 1e-3, 0.4994, 1.0])).tolist() == [0, 0, 498, 999]  # t_i = (i+1)/N
    assert vp.level_time(0) == 1e-3 and ve.level_time(999) == 1.0


@pytest.mark.parametrize("name", list(SDES))
def test_prior_sampling_and_logp(name):
    sde = SDES[name]()
    z = sde.prior_sampling((4000, 1, 5, 5), torch.Generator().manual_seed(3), dtype=torch.float64)
    s = sde.prior_std()
    assert float(z.std()) == pytest.approx(s, rel=4 / math.sqrt(2 * z.numel()))
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(s, dtype=torch.float64))
    ref = normal.log_prob(z).reshape(4000, -1).sum(1)
    assert torch.allclose(sde.prior_logp(z), ref, rtol=1e-10)


def test_prior_sampling_rows_do_not_depend_on_batch_size():
    sde = SDES["vpsde"]()
    a = sde.prior_sampling((4, 3), [rng.generator(7, i) for i in range(4)])
    b = sde.prior_sampling((8, 3), [rng.generator(7, i) for i in range(8)])
    assert torch.equal(a, b[:4])


@pytest.mark.parametrize("name", list(SDES))
def test_reverse_drifts(name):
    sde = SDES[name]()
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = _t(0.6, 3)
    score = lambda x, t: -x * 0.7 + 0.1  # noqa: E731
    f, g = sde.sde(x, t)
    rev, rev_g = sde.reverse(score).sde(x, t)
    ode, ode_g = sde.reverse(score, probability_flow=True).sde(x, t)
    assert torch.allclose(rev, f - g[:, None] ** 2 * score(x, t)) and torch.equal(rev_g, g)
    assert torch.allclose(ode, f - 0.5 * g[:, None] ** 2 * score(x, t)) and torch.all(ode_g == 0)
    fd, Gd = sde.discretize(x, t)
    rf, rG = sde.reverse(score).discretize(x, t)
    assert torch.allclose(rf, fd - Gd[:, None] ** 2 * score(x, t)) and torch.equal(rG, Gd)


def test_get_sde_factory():
    assert isinstance(get_sde("vesde", sigma_min=0.1, sigma_max=10, N=7), VESDE)
    vp = get_sde("vpsde", beta_min=0.2, beta_max=10, N=50)
    assert isinstance(vp, VPSDE) and vp.N == 50 and vp.beta_0 == 0.2 and vp.T == 1.0
    assert isinstance(get_sde("subvpsde"), subVPSDE)
    with pytest.raises(ValueError, match="unknown SDE"):
        get_sde("edm")
    with pytest.raises(ValueError):
        VESDE(1.0, 0.5)
