"""pipeline.speed.dropout: inverted dropout with 16-bit CPU masks, against its exact drop probability p'."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from pipeline.speed.dropout import LEVELS, Dropout, keep_mask


def _p_eff(p: float) -> float:
    return round(p * LEVELS) / LEVELS


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_scale_are_exact_in_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(8, 16, 64, 64)
    m = keep_mask(x, p)
    pe = _p_eff(p)
    values = torch.unique(m)
    assert values.numel() == 2 and values[0].item() == 0.0
    assert values[1].item() == pytest.approx(1 / (1 - pe), rel=1e-6)
    n = m.numel()
    dropped = (m == 0).double().mean().item()
    assert abs(dropped - pe) < 5 * math.sqrt(pe * (1 - pe) / n)  # a 5-sigma binomial band around p'
    assert abs(m.double().mean().item() - 1.0) < 5 * math.sqrt(pe / (1 - pe) / n)  # E[mask] = 1


def test_neighbouring_elements_are_independent():
    """Four mask elements share one 64-bit draw: their indicators must still be uncorrelated."""
    torch.manual_seed(1)
    keep = (keep_mask(torch.ones(1 << 20), 0.5) > 0).double().view(-1, 4)
    n = keep.shape[0]
    c = torch.corrcoef(keep.T)
    off = c[~torch.eye(4, dtype=torch.bool)]
    assert off.abs().max().item() < 5 / math.sqrt(n)


def test_layout_gradient_and_determinism():
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    d = Dropout(0.2).train()
    torch.manual_seed(3)
    y = d(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(3)
    y2 = d(x)
    assert torch.equal(y, y2)  # the default generator drives the masks: reseeding (or a resumed snapshot) repeats them
    mask = y.detach() / x.detach()
    y.backward(torch.ones_like(y))
    assert torch.allclose(x.grad, mask, rtol=1e-6, atol=0)  # d(x · m)/dx = m
    kept = mask[mask != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - _p_eff(0.2))), rtol=1e-5)


def test_falls_back_to_nn_dropout_where_the_fast_path_does_not_apply():
    x = torch.randn(3, 5, 7)
    d = Dropout(0.5)
    assert torch.equal(d.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    strided = torch.randn(6, 10)[:, ::2]  # not dense: nn.Dropout's own path
    torch.manual_seed(0)
    a = Dropout(0.5).train()(strided)
    torch.manual_seed(0)
    b = nn.Dropout(0.5).train()(strided)
    assert torch.equal(a, b)
    assert Dropout(0.1).state_dict() == nn.Dropout(0.1).state_dict() == {}


def test_compiles_without_graph_breaks():
    """Under torch.compile the module is nn.Dropout (inductor draws the masks): no graph break, so a compiled
    train step of a net with dropout is one graph (the 16-bit masks broke it at every layer, and the recompilations
    ended in a compile failure)."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(Dropout(0.1).train())(torch.randn(2, 8, 4, 4))
    torch._dynamo.reset()
    assert explained.graph_break_count == 0 and explained.graph_count == 1
