"""The EMA schedules of pipeline/core/ema.py against closed forms: the decay of each schedule, and the weight the
average gives each update, which for the reference warm-up telescopes to a product of nine ratios."""
import math

import pytest
import torch

from pipeline.config import ParamsError, load_params
from pipeline.core.ema import EMA, decay_of, ema_decay


def test_reference_schedule_is_the_warm_up_then_the_rate():
    assert [ema_decay(n, "reference", 0.999) for n in (1, 2, 90)] == [2 / 11, 3 / 12, 91 / 100]
    end = round((10 * 0.999 - 1) / (1 - 0.999))  # (1 + n) / (10 + n) = rate at n = 8,990
    assert end == 8990 and ema_decay(end + 1, "reference", 0.999) == 0.999
    assert ema_decay(end - 1, "reference", 0.999) < 0.999


def test_constant_schedule_is_the_rate_from_the_first_update():
    assert {ema_decay(n, "constant", 0.999) for n in (1, 10, 10 ** 6)} == {0.999}


def test_edm_schedule_has_the_half_life_of_a_fraction_of_the_images_seen():
    B = 32
    for n in (1, 100, 1000):
        h = 0.05 * n * B  # images
        beta = ema_decay(n, "edm", 0.0, batch_size=B, halflife_kimg=500, rampup_ratio=0.05)
        assert beta == pytest.approx(0.5 ** (B / h), rel=1e-15)
        assert beta ** (h / B) == pytest.approx(0.5, rel=1e-12)  # h / B updates halve an old weight
    capped = ema_decay(10 ** 7, "edm", 0.0, batch_size=B, halflife_kimg=500, rampup_ratio=0.05)
    assert capped == pytest.approx(0.5 ** (B / 500_000), rel=1e-15)
    assert ema_decay(1, "edm", 0.0, batch_size=B, halflife_kimg=500, rampup_ratio=None) == capped


def test_bad_schedules_and_update_numbers_are_refused():
    with pytest.raises(ValueError, match="unknown EMA schedule"):
        ema_decay(1, "polyak", 0.9)
    with pytest.raises(ValueError, match="count from 1"):
        ema_decay(0, "reference", 0.9)


def _average_of_updates(decay, n_updates: int) -> torch.Tensor:
    """EMA of a 1-parameter model whose value at update m is the one-hot e_m: the shadow is the weight vector."""
    model = torch.nn.Linear(n_updates + 1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0] = 1.0  # the initial weights: e_0
    ema = EMA(model, 0.999, decay)
    for m in range(1, n_updates + 1):
        with torch.no_grad():
            model.weight.zero_()
            model.weight[0, m] = 1.0
        ema.update(model)
    return ema.shadow["weight"][0].double()


def test_reference_average_weights_telescope_to_a_product_of_nine_ratios():
    """With β_k = (1 + k)/(10 + k), the weight of update m in the average after N updates is
    (1 - β_m) Π_{k=m+1}^{N} β_k = 9/(10 + m) · Π_{j=0}^{8} (m + 2 + j)/(N + 2 + j): mostly the last ~10%."""
    N = 1000
    w = _average_of_updates(lambda n: ema_decay(n, "reference", 0.999), N)
    exact = [9 / (10 + m) * math.prod((m + 2 + j) / (N + 2 + j) for j in range(9)) for m in range(1, N + 1)]
    assert torch.allclose(w[1:], torch.tensor(exact, dtype=torch.float64), rtol=1e-5, atol=1e-9)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(w[900:].sum()) > 0.6  # the last 10% of updates hold most of the weight


def test_constant_average_keeps_rate_to_the_n_on_the_start():
    N, rate = 1000, 0.999
    w = _average_of_updates(lambda n: rate, N)
    assert float(w[0]) == pytest.approx(rate ** N, rel=1e-4)  # the initial weights: 37% after 1,000 updates
    assert float(w[1:501].sum()) == pytest.approx(rate ** 500 - rate ** N, rel=1e-4)


def test_params_select_the_schedule():
    _, p = load_params("params/smoke.yaml", ["model.ema_schedule=edm", "model.ema_rampup_ratio=0.1"])
    f = decay_of(p.model, p.training.batch_size)
    B = p.training.batch_size
    assert f(10) == pytest.approx(0.5 ** (B / (0.1 * 10 * B)), rel=1e-15)
    with pytest.raises(ParamsError, match="ema_schedule"):
        load_params("params/smoke.yaml", ["model.ema_schedule=polyak"])
