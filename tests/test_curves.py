"""Quality curves (pipeline/metrics/curves.py, the curves stage): the NFE -> setting rule against the samplers' measured NFE,
the best-checkpoint choice, the weights kept during training, params validation, and the stage end to end on digits
with FD-vs-NFE and FD-vs-step records the report draws."""
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_close_f32

from pipeline.cli import main
from pipeline.config import ParamsError, SamplingConfig, validate
from pipeline.core.rng import generator
from pipeline.io import data
from pipeline.metrics import curves
from pipeline.models import zoo as models
from pipeline.samplers import sampling
from pipeline.workflow import outputs

BASE = {"suite": "unit", "seed": 0, "data": {"dataset": "digits", "image_size": 8, "num_channels": 1},
        "model": {"name": "mlp", "hidden": 32, "num_layers": 2, "num_scales": 100, "dropout": 0.0},
        "training": {"sde": "vpsde", "continuous": True}}


def _params(**over):
    raw = json.loads(json.dumps(BASE))
    for k, v in over.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    return validate(raw, "test.yaml")


S = lambda **kw: SamplingConfig(**kw)  # noqa: E731

# (setting, num_scales, target NFE -> expected knob value; None: skipped): the module docstring's rules, by hand
EXACT = [
    (S(method="pc", predictor="euler_maruyama"), 100, {10: 10, 20: 20, 200: 200}),
    (S(method="pc", predictor="reverse_diffusion", corrector="langevin"), 100, {10: 5, 20: 10, 50: 25}),
    (S(method="pc", predictor="reverse_diffusion", corrector="langevin", n_steps_each=2), 100, {10: 3, 20: 7, 50: 17}),
    # paper order: NFE = 2M - 1, so 10 lies between M = 5 (9) and 6 (11): the tie goes to the smaller
    (S(method="pc", predictor="reverse_diffusion", corrector="langevin", order="paper"), 100, {10: 5, 20: 10, 51: 26}),
    (S(method="pc", predictor="none", corrector="langevin"), 100, {10: 10, 20: 20}),
    (S(method="heun", num_steps=1), 100, {10: 4, 20: 9, 50: 24, 2: None}),  # 2 M + 1 (noise_removal)
    (S(method="heun", num_steps=1, noise_removal=False), 100, {10: 5, 20: 10, 1: None}),
    (S(method="heun", num_steps=1, solver_order=1, noise_removal=False), 100, {10: 10}),
    (S(method="dpm_solver", num_steps=1, solver_order=3), 100, {10: 3, 20: 6, 50: 16}),  # 3 M + 1
    (S(method="dpm_solver", num_steps=1, solver_order=2, multistep=True), 100, {10: 9, 20: 19}),  # M + 1
    (S(method="ddim", num_steps=1, noise_removal=False), 100, {10: 10, 50: 50}),
    (S(method="ald", n_steps_each=1), 15, {10: 1, 50: 3, 100: 7, 200: 13, 5: None}),  # 15 n + 1
]


@pytest.mark.parametrize("s,num_scales,expected", EXACT)
def test_setting_for_nfe_exact(s, num_scales, expected):
    knob = "n_steps_each" if s.method == "ald" else "num_steps"
    for target, k in expected.items():
        t = curves.setting_for_nfe(s, target, num_scales)
        assert (None if t is None else getattr(t, knob)) == k, (s.method, target)
        if t is not None:  # the chosen knob's NFE is the nearest achievable to the target
            nfe = curves.nfe_of(t, num_scales)
            for other in (k - 1, k + 1):
                if other >= 1:
                    assert abs(nfe - target) <= abs(curves.nfe_of(t.model_copy(update={knob: other}), num_scales) - target)


def test_sweep_dedupes_skips_and_sweeps_ode_tolerances():
    ald = S(method="ald", n_steps_each=1)
    points, skipped = curves.sweep(ald, [5, 10, 20, 50], [1e-2], 15)
    assert [(t, s.n_steps_each) for t, s in points] == [(10, 1), (50, 3)]
    assert [s["target_nfe"] for s in skipped] == [5, 20] and "smallest NFE (16)" in skipped[0]["reason"]
    ode, _ = curves.sweep(S(method="ode"), [10], [1e-1, 1e-3], 100)
    assert [(t, s.rtol, s.atol) for t, s in ode] == [(None, 1e-1, 1e-1), (None, 1e-3, 1e-3)]
    assert curves.nfe_of(S(method="ode"), 100) is None
    with pytest.raises(ValueError, match="adaptive"):
        curves.setting_for_nfe(S(method="ode"), 10, 100)


def test_sweep_skips_points_the_sde_rejects():
    """VP reverse diffusion + Langevin needs more than beta_max = 20 steps (DDPM betas < 1): NFE 20 -> 10 steps."""
    from pipeline.config import check_setting

    p = _params(curves={"samplers": {"pc": {"predictor": "reverse_diffusion", "corrector": "langevin"}}})

    def problem(s):
        try:
            check_setting(p, s, "curves.samplers.pc", "test.yaml")
        except ParamsError as e:
            return e.message
    points, skipped = curves.sweep(p.curve_settings()["pc"], [20, 50, 100], [], 100, problem)
    assert [s.num_steps for _, s in points] == [25, 50]
    assert skipped[0]["target_nfe"] == 20 and "DDPM betas" in skipped[0]["reason"]


@pytest.mark.parametrize("sde", ["vpsde", "vesde"])
def test_nfe_of_equals_the_samplers_count(sde):
    """The forward rule against what `sampling.draw` counts, for every method on a tiny network."""
    # beta_max 1: the VP DDPM table of reverse diffusion and the Langevin α allows any number of steps
    p = _params(training={"sde": sde, "continuous": True},
                model={"num_scales": 15 if sde == "vesde" else 100, "beta_max": 1.0})
    torch.manual_seed(0)
    net = models.build(p).eval()
    settings = [S(method="pc", predictor="euler_maruyama"),
                S(method="pc", predictor="reverse_diffusion", corrector="langevin", n_steps_each=2),
                S(method="pc", predictor="reverse_diffusion", corrector="langevin", order="paper"),
                S(method="pc", predictor="none", corrector="langevin"),
                S(method="heun", num_steps=1), S(method="heun", num_steps=1, solver_order=1, noise_removal=False),
                S(method="dpm_solver", num_steps=1, solver_order=3),
                S(method="dpm_solver", num_steps=1, solver_order=2, multistep=True)]
    settings += [S(method="ald", n_steps_each=1, noise_removal=True)] if sde == "vesde" else [S(method="ddim", num_steps=1)]
    for s in settings:
        checked = 0
        for target in (7, 12, 40):
            t = curves.setting_for_nfe(s, target, p.model.num_scales)
            if t is None:  # ALD: 7 is below its 16
                continue
            gens = [generator(0, "t", i) for i in range(2)]
            _, measured = sampling.draw(p, t, net, 2, gens)
            assert measured == curves.nfe_of(t, p.model.num_scales), (t.method, target)
            checked += 1
        assert checked >= 2


def test_best_checkpoint_lowest_fd_ties_to_later():
    recs = [{"checkpoint_step": s, "fd": {"mean": v}} for s, v in [(100, 5.0), (200, 3.0), (300, 3.0), (400, 4.0)]]
    assert curves.best_checkpoint(recs)["checkpoint_step"] == 300
    assert curves.best_checkpoint(recs[:2])["checkpoint_step"] == 200
    with pytest.raises(ValueError):
        curves.best_checkpoint([])


def test_fd_point_seeding_and_exact_zero():
    """Seed k's samples are the sample stage's (generator(seed, "sample", k, i)), whatever the batch size; FD against
    the statistics of seed 0's own features is 0 and the other seed's is not."""
    p = _params()
    torch.manual_seed(0)
    net = models.build(p).eval()
    s = S(method="ddim", num_steps=3)
    a, nfe_a = curves.draw_samples(p, s, net, 7, [0], batch_size=3)
    b, nfe_b = curves.draw_samples(p, s, net, 7, [1, 0], batch_size=5)  # seeds share batches: rows are unchanged
    assert a.shape == (1, 7, 1, 8, 8) and np.array_equal(a[0], b[1]) and not np.array_equal(b[0], b[1])
    assert nfe_a == [4.0] and nfe_b == [4.0, 4.0]
    gens = [generator(p.seed, "sample", 1, i) for i in range(7)]  # the sample stage's generators
    from pipeline.core.scaling import to_uint8
    assert np.array_equal(b[0], to_uint8(sampling.draw(p, s, net, 7, gens)[0], p.data.centered))
    feats = lambda x: x.reshape(len(x), -1)[:, :6].astype(np.float64)  # noqa: E731
    from pipeline.metrics.distances import feature_stats
    ref = feature_stats(feats(a[0]))
    rec = curves.fd_point(p, s, net, feats, ref, num_samples=7, num_seeds=2, batch_size=4)
    assert rec["fd"]["n"] == 2 and len(rec["fd"]["values"]) == 2
    assert_close_f32(rec["fd"]["values"][0], 0.0, scale=float(np.trace(ref[1])))
    assert rec["fd"]["values"][1] > 1e-3 * float(np.trace(ref[1]))
    assert rec["nfe"]["values"] == [4.0, 4.0] and rec["num_samples"] == 7


@pytest.mark.parametrize("over,key", [
    ({"curves": {"checkpoints": {}}}, "curves.checkpoints"),
    ({"curves": {"samplers": {"x": {"bogus": 1}}}}, "curves.samplers.x.bogus"),
    ({"curves": {"samplers": {"x": {"method": "ald"}}}}, "curves.samplers.x.method"),
    ({"curves": {"nfe": [20, 10]}}, "curves.nfe"),
    ({"curves": {"samplers": {"x": {}}, "nfe_by_curve": {"y": [10]}}}, "curves"),  # no curve y
    ({"curves": {"samplers": {"x": {}}, "nfe_by_curve": {"x": [10, 10]}}}, "curves"),
    ({"curves": {"samplers": {"x": {}, "y": {}}, "nfe": [], "nfe_by_curve": {"y": [10]}}}, "curves.nfe"),  # x: none
    ({"curves": {"ode_tols": [2.0]}}, "curves.ode_tols"),
    ({"curves": {"num_samples": 1}}, "curves.num_samples"),
    ({"training": {"ckpt_freq": 500, "n_iters": 500}, "curves": {"checkpoints": {}}}, "training.ckpt_freq"),
])
def test_params_validation(over, key):
    with pytest.raises(ParamsError) as e:
        _params(**over)
    assert e.value.key == key, e.value


def test_params_accept_a_curves_block():
    p = _params(training={"ckpt_freq": 10, "n_iters": 40},
                curves={"samplers": {"em": {}, "heun": {"method": "heun"}, "ode": {"method": "ode"}},
                        "checkpoints": {"sampler": {"method": "ddim", "num_steps": 10}}})
    assert set(p.curve_settings()) == {"em", "heun", "ode"} and p.curve_settings()["heun"].method == "heun"
    assert p.checkpoint_curve_setting().method == "ddim"
    assert _params().checkpoint_curve_setting() is None and _params().curve_settings() == {}


# --- the stage, end to end on digits --------------------------------------------------------------------------------
STAGE_PARAMS = {
    "suite": "unit", "seed": 1,
    "data": {"dataset": "digits", "image_size": 8, "num_channels": 1, "centered": True},
    "model": {"name": "mlp", "hidden": 64, "num_layers": 2, "ema_rate": 0.9, "num_scales": 100},
    "training": {"sde": "vpsde", "n_iters": 40, "batch_size": 32, "snapshot_freq": 20, "log_freq": 10,
                 "eval_freq": 20, "ckpt_freq": 10, "snapshot_sampling": False},
    "optim": {"lr": 0.002, "warmup": 5},
    "sampling": {"method": "pc", "predictor": "euler_maruyama", "corrector": "none"},
    "eval": {"num_samples": 16, "batch_size": 64, "num_seeds": 1, "enable_bpd": False},
    "curves": {"num_samples": 40, "num_seeds": 2, "nfe": [5, 10, 30], "ode_tols": [1e-1, 1e-2],
               "samplers": {"em": {}, "dpm2m": {"method": "dpm_solver", "multistep": True}, "ode": {"method": "ode"}},
               "nfe_by_curve": {"dpm2m": [10]},  # its own targets, in place of curves.nfe
               "checkpoints": {"sampler": {"method": "ddim", "num_steps": 10}, "num_seeds": 1}},
}


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    data.download(root, "digits")
    data.prepare(root, "digits")
    assert main(["evaluator", "--dataset", "digits", "--root", str(root)]) == 0
    f = root / "curvy.yaml"
    f.write_text(yaml.safe_dump(STAGE_PARAMS))
    assert main(["train", "--params", str(f), "--root", str(root), "--no-progress"]) == 0
    assert main(["curves", "--params", str(f), "--root", str(root)]) == 0
    paths = outputs.paths("unit", "curvy", "digits")
    return root, paths


def test_train_keeps_both_weight_sets_before_the_last_step(stage_run):
    root, paths = stage_run
    from pipeline.io.checkpoint import kept_weights
    from pipeline.models.checkpoint import read_project_checkpoint
    kept = kept_weights(root / paths["ckpts"])
    assert [s for s, _ in kept] == [10, 20, 30]  # step 40 is model.pt
    last = read_project_checkpoint(root / paths["snapshots"] / "weights" / "step_000000040.pt")
    final = read_project_checkpoint(root / paths["train"] / "model.pt")
    assert final["step"] == 40
    for key in ("model", "ema"):  # the kept weights of the last step are model.pt's, both sets, bit for bit
        assert last[key].keys() == final[key].keys()
        for k, v in final[key].items():
            assert torch.equal(last[key][k], v), (key, k)
    assert any(not torch.equal(last["model"][k], v) for k, v in last["ema"].items())  # two different sets


def test_checkpoint_curve_has_the_raw_weights_beside_the_ema(stage_run):
    root, paths = stage_run
    ck = json.loads((root / paths["curve_ckpt"]).read_text())
    ema, raw = ck["records"], ck["raw_records"]
    assert ck["weights"] == "ema" and [r["weights"] for r in ema] == ["ema"] * 4 and [r["weights"] for r in raw] == ["raw"] * 4
    assert [r["checkpoint_step"] for r in ema] == [r["checkpoint_step"] for r in raw] == [10, 20, 30, 40]
    assert all(a["fd"]["values"] != b["fd"]["values"] for a, b in zip(ema, raw))  # other weights, other samples
    assert ck["raw_last"]["fd"] == raw[-1]["fd"] and ck["raw_best"]["fd"]["mean"] == min(r["fd"]["mean"] for r in raw)


def test_stage_records(stage_run):
    root, paths = stage_run
    nfe = json.loads((root / paths["curve_nfe"]).read_text())
    recs = nfe["records"]
    by = {}
    for r in recs:
        by.setdefault(r["curve"], []).append(r)
        assert r["checkpoint_step"] == 40 and r["num_samples"] == 40 and len(r["fd"]["values"]) == 2
        assert r["fd"]["mean"] == pytest.approx(np.mean(r["fd"]["values"])) and r["fd"]["std"] is not None
        if r["expected_nfe"] is not None:  # fixed-step samplers: the rule's NFE is what ran
            assert r["nfe"]["values"] == [r["expected_nfe"]] * 2
    assert [r["setting"]["num_steps"] for r in by["em"]] == [5, 10, 30]
    assert [r["setting"]["num_steps"] for r in by["dpm2m"]] == [9]  # M + 1 (noise_removal), curves.nfe_by_curve
    assert [r["setting"]["rtol"] for r in by["ode"]] == [1e-1, 1e-2] and by["ode"][0]["target_nfe"] is None
    assert by["ode"][0]["nfe"]["mean"] < by["ode"][1]["nfe"]["mean"]  # tighter tolerance, more evaluations
    ck = json.loads((root / paths["curve_ckpt"]).read_text())
    steps = [r["checkpoint_step"] for r in ck["records"]]
    assert steps == [10, 20, 30, 40] and ck["last"]["checkpoint_step"] == 40
    fds = [r["fd"]["mean"] for r in ck["records"]]
    assert ck["best"]["checkpoint_step"] == steps[int(np.argmin(fds))]
    assert all(r["setting"]["method"] == "ddim" and r["fd"]["n"] == 1 for r in ck["records"])


def test_report_parts(stage_run, tmp_path):
    from pipeline.report.curves import checkpoint_block, curve_figures
    from pipeline.report.results import collect_experiments

    root, _ = stage_run
    (root / "params").mkdir(exist_ok=True)
    (root / "params" / "curvy.yaml").write_text((root / "curvy.yaml").read_text())
    exps = collect_experiments(root, "unit")
    block, note = checkpoint_block(exps)
    ck = json.loads((root / outputs.paths("unit", "curvy", "digits")["curve_ckpt"]).read_text())
    assert block.columns[0][1][0].startswith(f"step {ck['best']['checkpoint_step']}: ")
    assert "best over training" in note
    from pipeline.report.curves import BEST
    from pipeline.report.tables import table3
    t3 = table3(exps)
    col = t3.columns.index(BEST)
    assert t3.rows[0][col] == block.columns[0][1][0] and "best over training" in t3.note
    figs = curve_figures(exps, tmp_path)
    assert [f["file"] for f in figs] == ["fd_vs_nfe-curvy.png", "fd_vs_step.png"]
    assert all((tmp_path / f["file"]).stat().st_size > 1000 for f in figs)


def test_draw_samples_runs_on_the_requested_device(monkeypatch):
    """The sweep's sampling on the meta device (a GPU stand-in without values): every batch reaches the image
    conversion on that device; only the conversion moves samples to the host."""
    p = _params()
    net = models.build(p).to("meta")
    seen = []

    def to_uint8(x, centered):
        seen.append(x.device.type)
        return np.zeros(tuple(x.shape), np.uint8)

    monkeypatch.setattr(curves, "to_uint8", to_uint8)
    for s in (S(method="ddim", num_steps=3), S(method="pc", num_steps=3)):
        seen.clear()
        x, nfe = curves.draw_samples(p, s, net, 5, [0], batch_size=2, device="meta")
        assert seen == ["meta"] * 3 and x.shape == (1, 5, 1, 8, 8) and nfe == [curves.nfe_of(s, 100)]


def test_stage_without_kept_weights_exits_2_naming_the_folder(stage_run, capsys):
    root, paths = stage_run
    raw = json.loads(json.dumps(STAGE_PARAMS))
    f = root / "nockpt.yaml"
    f.write_text(yaml.safe_dump(raw))
    (root / outputs.paths("unit", "nockpt", "digits")["train"]).mkdir(parents=True)
    import shutil
    shutil.copyfile(root / paths["train"] / "model.pt", root / outputs.paths("unit", "nockpt", "digits")["train"] / "model.pt")
    assert main(["curves", "--params", str(f), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "runs/unit/nockpt/train/ckpts: no kept weights" in err and "training.ckpt_freq" in err
    assert not (root / outputs.paths("unit", "nockpt", "digits")["curve_nfe"]).exists()
