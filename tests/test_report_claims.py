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
    assert where == "sub vs vp, both at training step 1,000" and rc.verdict(*values) == rc.REPRODUCED  # 3.74 < 3.86
    assert rc.subvp_vs_vp([other, sub]) is None


def test_subvp_against_vp_is_paired_over_the_same_test_images():
    """Per-image values that share most of their spread: unpaired, the intervals overlap (inconclusive); paired, the
    per-image difference sub - vp = -0.05 ± 0.01 has mean -0.05 and standard error 0.0045, which decides it."""
    base = [3.0, 4.0, 3.5, 4.5, 3.2, 4.2]  # the images' own spread (std 0.58): both models share it
    jitter = [0.01, -0.01, 0.01, -0.01, 0.01, -0.01]
    n = len(base)

    def rec(vals):
        mean = sum(vals) / n
        se = (sum((v - mean) ** 2 for v in vals) / (n - 1) / n) ** 0.5
        return {"bpd": {"mean": mean, "stderr": se, "per_image": vals}}

    def exp(name, sde, vals, seed=2):
        x = _exp(name, {"ode": (ODE, None)}, sde=sde, likelihood=rec(vals))
        x["params"].seed, x["params"].data = seed, {"dataset": "fashion_mnist"}
        return x

    sub_img = [b - 0.05 + j for b, j in zip(base, jitter)]
    sub, vp = exp("sub", "subvpsde", sub_img), exp("vp", "vpsde", base)
    (a, b), where = rc.subvp_vs_vp([sub, vp])
    unpaired = rc.Value(a.mean, a.err, "a"), rc.Value(b.mean, b.err, "b")
    assert rc.verdict(*unpaired) == rc.INCONCLUSIVE  # 3.68 ± 0.24 against 3.73 ± 0.24
    d = rc.paired(a, b)
    diffs = [u - v for u, v in zip(sub_img, base)]
    mean = sum(diffs) / n
    assert d.mean == pytest.approx(mean, abs=1e-12) == pytest.approx(-0.05, abs=1e-12)
    assert d.err == pytest.approx((sum((x - mean) ** 2 for x in diffs) / (n - 1) / n) ** 0.5, rel=1e-12)
    assert rc.verdict(a, b) == rc.REPRODUCED  # -0.05 + 2 x 0.0045 < 0
    row = rc._row(rc.CLAIMS[1], [sub, vp])
    assert row[3] == rc.REPRODUCED and "(paired: difference per image over 6: -0.050 ± 0.004)" in row[2]
    (a, b), _ = rc.subvp_vs_vp([sub, exp("vp", "vpsde", base, seed=3)])  # other dequantization noise: unpaired
    assert rc.paired(a, b) is None and rc.verdict(a, b) == rc.INCONCLUSIVE
    (a, b), _ = rc.subvp_vs_vp([exp("sub", "subvpsde", [v + 0.05 + j for v, j in zip(base, jitter)]), vp])
    assert rc.verdict(a, b) == rc.NOT_REPRODUCED


def test_fds_of_one_experiment_pair_up_seed_by_seed():
    """Two samplers of one experiment draw seed k from the same noise: their FDs pair up. Seeds 0/1 give 70/80 and
    73/83 (unpaired 75 ± 7.1 against 78 ± 7.1: overlap), a difference of -3 on both seeds (std 0): reproduced."""
    def ev(values):
        m = sum(values) / len(values)
        std = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"classifier": {"fd": {"mean": m, "std": std, "n": 2, "values": values}}, "nfe": {"mean": 100},
                "num_samples": 64}
    x = _exp("e", {"pc": (PC, ev([70.0, 80.0])), "ode": (ODE, ev([73.0, 83.0]))})
    x["params"].seed = 2
    (pc, ode), where = rc.ode_vs_pc(x)
    assert rc.verdict(rc.Value(pc.mean, pc.err, "a"), rc.Value(ode.mean, ode.err, "b")) == rc.INCONCLUSIVE
    assert rc.paired(pc, ode).mean == -3.0 and rc.paired(pc, ode).err == 0.0 and rc.verdict(pc, ode) == rc.REPRODUCED
    x["samplers"]["ode"]["eval"]["num_samples"] = 32  # other sample counts never pair (nor compare)
    assert rc.ode_vs_pc(x) is None or rc.paired(*rc.ode_vs_pc(x)[0]) is None


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


def test_subvp_against_vp_pairs_equal_training_steps():
    """A VP run trained longer than its sub-VP partner is compared at the sub-VP run's step, through the weights the
    VP run kept there (eval.bpd_steps: the likelihood record's `at_step`), never at its own final step."""
    bpd = lambda m, se, step, at=None: {"bpd": {"mean": m, "stderr": se}, "step": step,  # noqa: E731
                                        "at_step": {str(k): {"bpd": {"mean": v, "stderr": se}, "step": k}
                                                    for k, v in (at or {}).items()}}
    sub = _exp("sub", {"ode": (ODE, None)}, sde="subvpsde", likelihood=bpd(3.70, 0.02, 1500))
    sub["params"].training = TrainingConfig(sde="subvpsde", n_iters=1500)
    vp = _exp("vp", {"ode": (ODE, None)}, likelihood=bpd(3.10, 0.02, 5400, {1500: 3.90, 3000: 3.50}))
    vp["params"].training = TrainingConfig(sde="vpsde", n_iters=5400, ckpt_freq=1500)
    (a, b), where = rc.subvp_vs_vp([sub, vp])
    assert (a.mean, b.mean) == (3.70, 3.90) and where == "sub vs vp, both at training step 1,500"
    assert rc.verdict(a, b) == rc.REPRODUCED  # at the final steps it would read 3.70 against 3.10: not reproduced
    vp["likelihood"]["at_step"] = {}  # no VP weights scored at step 1,500: no pair, the row says "not tested"
    assert rc.subvp_vs_vp([sub, vp]) is None
    # the latest common step; a record without `step` (older runs) is at training.n_iters
    sub["likelihood"] = bpd(3.40, 0.02, None, {1500: 3.70})
    sub["params"].training = TrainingConfig(sde="subvpsde", n_iters=3000, ckpt_freq=1500)
    vp["likelihood"] = bpd(3.10, 0.02, 5400, {1500: 3.90, 3000: 3.50})
    (a, b), where = rc.subvp_vs_vp([sub, vp])
    assert (a.mean, b.mean) == (3.40, 3.50) and where.endswith("step 3,000")
    # another batch size is another recipe: the same network, but not the same training
    vp["params"].training = TrainingConfig(sde="vpsde", n_iters=5400, ckpt_freq=1500, batch_size=64)
    assert rc.subvp_vs_vp([sub, vp]) is None
