"""The sample stage hands every sampler setting to the sampler: a probability-flow PC variant (Score SDE Table 1,
"probability flow" row) must run the reverse-diffusion discretization of the ODE, not of the reverse SDE."""
import pytest
import torch

from pipeline.config import load_params
from pipeline.models import zoo as models
from pipeline.samplers import sampling
from pipeline.samplers.methods import pc as pc_method
from pipeline.samplers.sampling import draw


@pytest.mark.parametrize("flow", [True, False])
def test_probability_flow_setting_reaches_the_sampler(flow, monkeypatch):
    _, p = load_params("params/smoke.yaml", ["sampling.predictor=reverse_diffusion", "sampling.num_steps=40",
                                             f"sampling.probability_flow={str(flow).lower()}"])
    net = models.build(p).eval()
    seen = {}
    real = pc_method.pc_sample

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(pc_method, "pc_sample", spy)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    with torch.no_grad():
        x, nfe = draw(p, p.sampler_settings()["pc"], net, 3, gens)
    assert seen["probability_flow"] is flow
    assert nfe == 40 and x.shape == (3, 1, 8, 8)


def test_probability_flow_adds_no_noise_after_the_prior_draw():
    """Same x_T, different per-step noise: the probability-flow run is unchanged, the reverse-SDE run is not."""
    _, p = load_params("params/smoke.yaml")
    net = models.build(p).eval()
    from pipeline.core.experiment import make_sde
    from pipeline.core.losses import get_score_fn

    sde = make_sde(p)
    score_fn = get_score_fn(sde, net, continuous=True)
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = {}
    for flow in (True, False):
        runs = [sampling.pc_sample(sde, score_fn, x_T.shape, predictor="reverse_diffusion", num_steps=40,
                                   probability_flow=flow, x_init=x_T.clone(),
                                   generator=[torch.Generator().manual_seed(s + i) for i in range(3)])[0]
                for s in (100, 200)]
        out[flow] = runs
    assert torch.equal(out[True][0], out[True][1])
    assert not torch.allclose(out[False][0], out[False][1])
