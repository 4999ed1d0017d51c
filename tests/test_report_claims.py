"""The claims table: the verdict rule on exact intervals, and each claim's finder on hand-made experiment records."""
from types import SimpleNamespace

import pytest

from pipeline.config import ModelConfig, SamplingConfig, TrainingConfig
from pipeline.report import claims as rc

V = rc.Value


@pytest.mark.parametrize("a, b, expected", [
    (V(10, 1, "a"), V(15, 1, "b"), rc.REPRODUCED),        # 10 + 2 = 12 < 13 = 15 - 2
    (V(10, 1, "a"), V(14, 1, "b"), rc.INCONCLUSIVE),      # 12 = 12: touching intervals overlap
    (V(15, 1, "a"), V(10, 1, "b"), rc.NOT_REPRODUCED),    # wholly above
    (V(10, None, "a"), V(50, 1, "b"), rc.INCONCLUSIVE),   # no error bar: never a verdict
    (V(10, 0.1, "a"), V(11, 0.2, "b"), rc.REPRODUCED),    # 10.2 < 10.6
])
def test_verdict_rule(a, b, expected):
    assert rc.verdict(a, b) == expected


def test_combined_needs_every_alternative_beaten():
    assert rc.combined(V(10, 1, "a"), [V(20, 1, "b"), V(30, 1, "c")]) == rc.REPRODUCED
    assert rc.combined(V(10, 1, "a"), [V(20, 1, "b"), V(12, 1, "c")]) == rc.INCONCLUSIVE
    assert rc.combined(V(10, 1, "a"), [V(20, 1, "b"), V(5, 1, "c")]) == rc.NOT_REPRODUCED


def _ev(mean, std, nfe, num_samples=200):
    return {"classifier": {"fd": {"mean": mean, "std": std, "n": 2}}, "nfe": {"mean": nfe}, "num_samples": num_samples}


def _exp(name, samplers, sde="vpsde", curves=(), likelihood=None, model=None):
    params = SimpleNamespace(model=model or ModelConfig(), training=TrainingConfig(sde=sde))
    return {"experiment": name, "sde": sde, "params": params, "default_sampler": next(iter(samplers)),
            "samplers": {n: {"settings": s, "eval": ev} for n, (s, ev) in samplers.items()},
            "curves": {"nfe": {"records": list(curves)}, "ckpt": None}, "likelihood": likelihood}


def _curve(settings: SamplingConfig, nfe, mean, std, num_samples=64):
    return {"curve": settings.method, "setting": settings.model_dump(), "nfe": {"mean": nfe},
            "fd": {"mean": mean, "std": std}, "num_samples": num_samples}  # a record of curves/nfe.json


PC = SamplingConfig(method="pc", predictor="reverse_diffusion", corrector="langevin", num_steps=100)
P = SamplingConfig(method="pc", predictor="reverse_diffusion", corrector="none", num_steps=200)
C = SamplingConfig(method="pc", predictor="none", corrector="langevin", num_steps=200)
ODE = SamplingConfig(method="ode")


def test_pc_claim_uses_equal_nfe_records_and_the_largest_nfe():
    # the sampler's PC (200 samples, FD 10) is not compared with the curves' P and C (64 samples): FD is biased by
    # the sample count, so the curve's own PC point at NFE 200 is the one used
    x = _exp("ve", {"pc": (PC, _ev(10, 1, 200))}, sde="vesde", curves=[
        _curve(P, 200, 90, 2), _curve(C, 200, 300, 5), _curve(PC, 200, 60, 1),
        _curve(PC.model_copy(update={"num_steps": 25}), 50, 80, 1), _curve(P.model_copy(update={"num_steps": 50}), 50, 99, 1),
        _curve(C.model_copy(update={"num_steps": 50}), 50, 400, 1),
        _curve(P.model_copy(update={"num_steps": 100}), 100, 10, 1)])  # NFE 100 has no PC and no C: not used
    values, where = rc.pc_vs_parts(x)
    assert where == "ve" and [v.mean for v in values] == [60, 90, 300]
    row = rc._row(rc.CLAIMS[0], [x])
    assert row[-1] == rc.REPRODUCED and "NFE 200" in row[2]


def test_claims_never_compare_unequal_sample_counts():
    x = _exp("ve", {"pc": (PC, _ev(60, 1, 200))}, sde="vesde", curves=[_curve(P, 200, 90, 2), _curve(C, 200, 300, 5)])
    assert rc.pc_vs_parts(x) is None  # PC from 200 samples, P and C from 64: no equal-count triple
    off = P.model_copy(update={"noise_removal": False})
    x = _exp("vp", {"pc": (P, _ev(55, 0.5, 200)), "ode": (ODE, _ev(120, 5, 81, num_samples=100))},
             curves=[_curve(off, 200, 70, 1)])
    assert rc.ode_vs_pc(x) is None and rc.denoising(x) is None


def test_pc_claim_not_tested_without_the_variants():
    x = _exp("ve", {"pc": (PC, _ev(60, 1, 200))}, sde="vesde", curves=[_curve(P, 200, 90, 2)])
    assert rc.pc_vs_parts(x) is None
    row = rc._row(rc.CLAIMS[0], [x])
    assert row[-1] == rc.NOT_TESTED and row[2].startswith("not measured here: needs")


def test_ode_against_best_pc_and_denoising():
    off = P.model_copy(update={"noise_removal": False})
    x = _exp("vp", {"pc": (P, _ev(55, 0.5, 200)), "ode": (ODE, _ev(120, 5, 81)), "raw": (off, _ev(70, 1, 200))})
    values, _ = rc.ode_vs_pc(x)
    assert [v.mean for v in values] == [55, 120] and rc.verdict(*values) == rc.REPRODUCED
    values, _ = rc.denoising(x)
    assert [v.mean for v in values] == [55, 70]
    lo_on, lo_off = P.model_copy(update={"num_steps": 10}), P.model_copy(update={"num_steps": 10, "noise_removal": False})
    x = _exp("vp", {"ode": (ODE, _ev(120, 5, 81))}, curves=[_curve(lo_on, 10, 300, 9), _curve(lo_off, 10, 290, 9),
                                                             _curve(P, 200, 60, 1), _curve(off, 200, 75, 1)])
    values, _ = rc.denoising(x)
    assert [v.mean for v in values] == [60, 75]  # the pair at the largest NFE, not the first found


def test_subvp_against_vp_needs_the_same_network():
    bpd = lambda m, se: {"bpd": {"mean": m, "stderr": se}}  # noqa: E731
    sub = _exp("sub", {"ode": (ODE, None)}, sde="subvpsde", likelihood=bpd(3.70, 0.02))
    vp = _exp("vp", {"ode": (ODE, None)}, sde="vpsde", likelihood=bpd(3.90, 0.02))
    other = _exp("vp_wide", {"ode": (ODE, None)}, sde="vpsde", likelihood=bpd(3.0, 0.01), model=ModelConfig(nf=64))
    values, where = rc.subvp_vs_vp([other, sub, vp])
    assert where == "sub vs vp" and rc.verdict(*values) == rc.REPRODUCED  # 3.74 < 3.86
    assert rc.subvp_vs_vp([other, sub]) is None


def test_ncsn_levels_pairs_only_experiments_that_differ_in_the_levels():
    ald = SamplingConfig(method="ald")
    big = _exp("big", {"ald": (ald, _ev(80, 2, 106))}, sde="vesde", model=ModelConfig(sigma_max=5, num_scales=15))
    small = _exp("small", {"ald": (ald, _ev(150, 6, 71))}, sde="vesde", model=ModelConfig(sigma_max=1, num_scales=10))
    wider = _exp("wider", {"ald": (ald, _ev(10, 1, 71))}, sde="vesde",
                 model=ModelConfig(sigma_max=1, num_scales=10, nf=64))
    values, where = rc.ncsn_noise_levels([small, wider, big])
    assert where == "big vs small" and [v.mean for v in values] == [80, 150]


def test_claims_table_has_one_row_per_claim_and_states_the_rule():
    t = rc.claims_table([_exp("vp", {"pc": (P, _ev(55, 0.5, 200))})])
    assert len(t.rows) == len(rc.CLAIMS) and "2 std" in t.note
    assert {r[-1] for r in t.rows} == {rc.NOT_TESTED}
