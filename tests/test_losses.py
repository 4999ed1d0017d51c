"""DSM losses at the exact score equal their closed-form noise floor; model → score conventions follow the reference.

Data x ~ N(μ, diag(v)). Under x_t = m x + std z the exact score gives std·s + z = (m^2 v z - m std sqrt(v) w)/(m^2 v
+ std^2) per dimension, whose mean square is m^2 v / (m^2 v + std^2): the loss minimum ("noise floor") in closed form.
A score shifted by a constant c adds exactly E[λ(t)] c^2 (the DSM cross term has zero mean at the exact score).
"""
import math

import pytest
import torch
from scipy import integrate

from pipeline.core.losses import ddpm_loss, dsm_loss, get_loss_fn, get_score_fn, smld_loss
from pipeline.core.mixtures import GaussianMixture
from pipeline.core.sde import VESDE, VPSDE, subVPSDE

MU = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
VAR = torch.tensor([0.25, 1.0, 0.04, 2.25], dtype=torch.float64)
DATA = GaussianMixture([1.0], MU[None], VAR[None])
C = torch.tensor([0.3, -0.2, 0.1, 0.25], dtype=torch.float64)  # a constant score error
SDES = {"vesde": VESDE(0.01, 50.0, 1000), "vpsde": VPSDE(0.1, 20.0, 1000), "subvpsde": subVPSDE(0.1, 20.0, 1000)}


def _floor_per_dim(m, std):
    return float(((m ** 2 * VAR) / (m ** 2 * VAR + std ** 2)).mean())


def _continuous_floor(sde, reduce_mean, likelihood_weighting, eps):
    def integrand(t):
        tt = torch.tensor([t], dtype=torch.float64)
        m, std = (float(v) for v in sde.marginal_coeffs(tt))
        value = _floor_per_dim(m, std) * (1 if reduce_mean else 0.5 * len(MU))
        if likelihood_weighting:
            value *= float(sde.sde(torch.zeros(1, 1, dtype=torch.float64), tt)[1]) ** 2 / std ** 2
        return value
    return integrate.quad(integrand, eps, 1.0, limit=200, points=[10 * eps, 1e-2, 0.1])[0] / (1.0 - eps)


def _batched(loss, batches=20):
    """Mean and standard error of a scalar loss over independent batches."""
    values = torch.tensor([float(loss()) for _ in range(batches)])
    return float(values.mean()), float(values.std() / math.sqrt(batches))


def _data(n, seed):
    return DATA.sample(n, torch.Generator().manual_seed(seed), dtype=torch.float64)[0]


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("reduce_mean,likelihood_weighting", [(True, False), (False, False), (True, True)])
def test_continuous_dsm_at_exact_score_is_the_noise_floor(name, reduce_mean, likelihood_weighting):
    sde = SDES[name]
    eps = 1e-2 if likelihood_weighting else 1e-5  # λ = g^2/std^2 ~ 1/t: keep the MC variance finite and small
    floor = _continuous_floor(sde, reduce_mean, likelihood_weighting, eps)
    x, g = _data(1000, 0), torch.Generator().manual_seed(1)
    exact = DATA.score_fn(sde)
    mean, se = _batched(lambda: dsm_loss(sde, exact, x, g, reduce_mean, likelihood_weighting, eps))
    assert abs(mean - floor) < 4 * se, (mean, floor, se)
    # a score off by a constant c pays exactly E_t[λ] c^2 more (paired draws: same t, z)
    shifted = lambda xx, t: exact(xx, t) + C  # noqa: E731
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    diffs = torch.tensor([float(dsm_loss(sde, shifted, x, g1, reduce_mean, likelihood_weighting, eps)
                                - dsm_loss(sde, exact, x, g2, reduce_mean, likelihood_weighting, eps))
                          for _ in range(20)])

    def weight(t):
        tt = torch.tensor([t], dtype=torch.float64)
        if likelihood_weighting:
            return float(sde.sde(torch.zeros(1, 1, dtype=torch.float64), tt)[1]) ** 2
        return float(sde.marginal_coeffs(tt)[1]) ** 2
    c2 = float((C ** 2).mean()) if reduce_mean else 0.5 * float((C ** 2).sum())
    excess = integrate.quad(weight, eps, 1.0)[0] / (1.0 - eps) * c2
    d_mean, d_se = float(diffs.mean()), float(diffs.std() / math.sqrt(len(diffs)))
    assert d_mean > 10 * d_se and abs(d_mean - excess) < 4 * d_se + 1e-9, (d_mean, excess, d_se)


def _smld_exact_model(sde):
    sig = sde.sigmas_descending.to(torch.float64)
    return lambda x, labels: -(x - MU) / (VAR + sig[labels][:, None] ** 2)


def _ddpm_exact_model(sde):
    abar = sde.alphas_cumprod
    def eps_model(x, labels):
        a = abar[labels][:, None]
        return torch.sqrt(1 - a) * (x - torch.sqrt(a) * MU) / (a * VAR + 1 - a)  # ε̂ = -sqrt(1-ᾱ) · score
    return eps_model


def _paired_excess(loss_a, loss_b, batches=20):
    """Mean and s.e. of loss_a - loss_b on identical draws (both generators seeded alike)."""
    ga, gb = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    d = torch.tensor([float(loss_a(ga) - loss_b(gb)) for _ in range(batches)])
    return float(d.mean()), float(d.std() / math.sqrt(batches))


def test_smld_loss_at_exact_score_is_the_noise_floor():
    """Floor 1/2 Σ_d E_i[v_d / (v_d + σ_i^2)]; a score shifted by c costs 1/2 ||c||^2 E_i[σ_i^2] more."""
    sde = VESDE(0.01, 1.0, 10)  # NCSN v1 levels
    sig = sde.discrete_sigmas
    floor = float(torch.stack([0.5 * (VAR / (VAR + s ** 2)).sum() for s in sig]).mean())
    x, g = _data(2000, 3), torch.Generator().manual_seed(4)
    exact = _smld_exact_model(sde)
    mean, se = _batched(lambda: smld_loss(sde, exact, x, g))
    assert abs(mean - floor) < 4 * se, (mean, floor, se)
    d, d_se = _paired_excess(lambda gg: smld_loss(sde, lambda xx, lab: exact(xx, lab) + C, x, gg),
                             lambda gg: smld_loss(sde, exact, x, gg))
    excess = 0.5 * float((C ** 2).sum()) * float((sig ** 2).mean())
    assert d > 10 * d_se and abs(d - excess) < 4 * d_se, (d, excess, d_se)


def test_ddpm_loss_at_exact_epsilon_is_the_noise_floor():
    """Floor E_i mean_d[ᾱ_i v_d / (ᾱ_i v_d + 1 - ᾱ_i)]; an ε-prediction shifted by c costs mean(c^2) more."""
    sde = VPSDE(0.1, 20.0, 1000)
    a = sde.alphas_cumprod[:, None]
    floor = float((a * VAR / (a * VAR + 1 - a)).mean())
    x, g = _data(2000, 5), torch.Generator().manual_seed(6)
    exact = _ddpm_exact_model(sde)
    mean, se = _batched(lambda: ddpm_loss(sde, exact, x, g))
    assert abs(mean - floor) < 4 * se, (mean, floor, se)
    d, d_se = _paired_excess(lambda gg: ddpm_loss(sde, lambda xx, lab: exact(xx, lab) + C, x, gg),
                             lambda gg: ddpm_loss(sde, exact, x, gg))
    assert d > 10 * d_se and abs(d - float((C ** 2).mean())) < 4 * d_se, (d, d_se)


class Recorder:
    """A fake network returning a fixed output and remembering its labels."""

    def __init__(self, value=2.0):
        self.value, self.labels = value, None

    def __call__(self, x, labels):
        self.labels = labels
        return torch.full_like(x, self.value)


def test_score_conventions():
    t = torch.tensor([1.0, 0.3, 1e-5], dtype=torch.float64)
    x = torch.zeros(3, 2, dtype=torch.float64)
    ve, vp, svp = SDES["vesde"], SDES["vpsde"], SDES["subvpsde"]
    net = Recorder()
    assert torch.allclose(get_score_fn(ve, net, True)(x, t), torch.full_like(x, 2.0))
    assert torch.allclose(net.labels, ve.sigma(t))
    get_score_fn(ve, net, False)(x, t)
    assert net.labels.dtype == torch.long and net.labels.tolist() == [0, 699, 999]  # descending σ: 0 = σmax
    assert torch.equal(net.labels, torch.round((1 - t) * 999).long())
    assert torch.allclose(ve.sigmas_descending[net.labels], ve.sigma(torch.tensor([1.0, 300 / 999, 0.0])).double())
    for sde in (vp, svp):
        s = get_score_fn(sde, net, True)(x, t)
        assert torch.allclose(net.labels, 999 * t)
        assert torch.allclose(s, -2.0 / sde.marginal_coeffs(t)[1][:, None].expand_as(x))
    s = get_score_fn(vp, net, False)(x, t)
    assert net.labels.tolist() == [999, 299, 0]  # DDPM step i ends at t = (i + 1)/N
    assert torch.allclose(s, -2.0 / torch.sqrt(1 - vp.alphas_cumprod[[999, 299, 0]])[:, None].expand_as(x))
    grid = torch.linspace(1, 1e-3, 1000)  # the VP sampling grid: DDPM steps 999..0, once each
    get_score_fn(vp, net, False)(torch.zeros(1000, 2), grid)
    assert torch.equal(net.labels, torch.arange(999, -1, -1))
    with pytest.raises(ValueError, match="sub-VP"):
        get_score_fn(svp, net, False)


@pytest.mark.parametrize("name", list(SDES))
def test_continuous_loss_fn_applies_the_output_convention(name):
    """A network that outputs what the convention expects (σ-score for VE, -std·score for VP) gives dsm_loss of the
    exact score, draw for draw."""
    sde = SDES[name]
    exact = DATA.score_fn(sde)
    if name == "vesde":
        t_of = lambda labels: torch.log(labels / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)  # noqa
        net = lambda x, labels: exact(x, t_of(labels))  # noqa: E731
    else:
        net = lambda x, labels: -sde.marginal_coeffs(labels / 999)[1][:, None] * exact(x, labels / 999)  # noqa
    x = _data(64, 7)
    a = get_loss_fn(sde, True, True, False)(net, x, torch.Generator().manual_seed(8))
    b = dsm_loss(sde, exact, x, torch.Generator().manual_seed(8))
    assert float(a) == pytest.approx(float(b), rel=1e-9)


def test_discrete_loss_fn_dispatch_and_errors():
    ve, vp = VESDE(0.01, 1.0, 10), VPSDE(0.1, 20.0, 1000)
    x = _data(64, 9)
    a = get_loss_fn(ve, False, False, False)(_smld_exact_model(ve), x, torch.Generator().manual_seed(1))
    assert float(a) == float(smld_loss(ve, _smld_exact_model(ve), x, torch.Generator().manual_seed(1)))
    a = get_loss_fn(vp, False, True, False)(_ddpm_exact_model(vp), x, torch.Generator().manual_seed(1))
    assert float(a) == float(ddpm_loss(vp, _ddpm_exact_model(vp), x, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError):
        get_loss_fn(SDES["subvpsde"], False, True, False)
    with pytest.raises(ValueError, match="likelihood weighting"):
        get_loss_fn(vp, False, True, True)
    with pytest.raises(ValueError, match="Generator"):
        dsm_loss(vp, DATA.score_fn(vp), x, None)
