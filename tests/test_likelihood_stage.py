"""The likelihood stage's eval.bpd_steps on digits: the weights the train stage kept at step k score what a k-step
run's final weights score (same images, same dequantization noise), so the claims table can pair two SDEs at equal
training when one of them trains longer (pipeline/report/claims.py)."""
import json

import pytest
import yaml

from pipeline.cli import main
from pipeline.io import data
from pipeline.workflow import outputs

PARAMS = {
    "suite": "unit", "seed": 1,
    "data": {"dataset": "digits", "image_size": 8, "num_channels": 1, "centered": True},
    "model": {"name": "mlp", "hidden": 32, "num_layers": 2, "num_scales": 100},
    "training": {"sde": "vpsde", "n_iters": 20, "batch_size": 16, "snapshot_freq": 10, "log_freq": 10,
                 "ckpt_freq": 10, "snapshot_sampling": False},
    "optim": {"lr": 0.002, "warmup": 5},
    "sampling": {"method": "pc", "predictor": "euler_maruyama", "corrector": "none"},
    "eval": {"num_samples": 8, "batch_size": 4, "enable_bpd": True, "bpd_max_images": 6, "bpd_num_repeats": 2,
             "bpd_rtol": 1e-3, "bpd_atol": 1e-3, "bpd_steps": [10]},
}


def _run(root, params, *sets):
    f = root / "lik.yaml"
    f.write_text(yaml.safe_dump(params))
    args = ["--params", str(f), "--root", str(root), *[a for s in sets for a in ("--set", s)]]
    assert main(["train", *args, "--no-progress"]) == 0
    assert main(["likelihood", *args]) == 0
    return json.loads((root / outputs.paths("unit", "lik", "digits")["likelihood"]).read_text())


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = []
    for name in ("long", "short"):
        root = tmp_path_factory.mktemp(name)
        data.download(root, "digits")
        data.prepare(root, "digits")
        out.append(root)
    return out


def test_kept_weights_score_as_the_shorter_run(roots):
    long_root, short_root = roots
    long = _run(long_root, PARAMS)
    short = _run(short_root, PARAMS, "training.n_iters=10", "eval.bpd_steps=[]")
    assert long["step"] == 20 and short["step"] == 10 and short["at_step"] == {}
    at10 = long["at_step"]["10"]
    assert at10["step"] == 10 and at10["bpd"]["n_images"] == 6 and at10["bpd"]["num_repeats"] == 2
    # the same weights, images and noise: the same numbers (one process, one machine: equal to float64 rounding)
    assert at10["bpd"]["per_image"] == pytest.approx(short["bpd"]["per_image"], rel=1e-9, abs=0)
    assert at10["bpd"]["mean"] == pytest.approx(short["bpd"]["mean"], rel=1e-9)
    assert long["bpd"]["per_image"] != at10["bpd"]["per_image"]  # the final weights are other weights
    assert 0 < at10["bpd"]["mean"] < 30 and at10["bpd"]["stderr"] > 0


def test_a_step_that_was_not_kept_exits_2(roots, capsys, tmp_path):
    f = tmp_path / "lik.yaml"
    f.write_text(yaml.safe_dump(PARAMS))
    assert main(["likelihood", "--params", str(f), "--root", str(tmp_path), "--set", "eval.bpd_steps=[15]"]) == 2
    err = capsys.readouterr().err
    assert "eval.bpd_steps.0" in err and "multiple of training.ckpt_freq (10)" in err
    long_root = roots[0]
    ckpts = long_root / outputs.paths("unit", "lik", "digits")["ckpts"]
    hidden = ckpts.with_name("ckpts-hidden")
    ckpts.rename(hidden)  # the train stage's kept weights gone: the stage names the folder, writes nothing
    lik = long_root / outputs.paths("unit", "lik", "digits")["likelihood"]
    before = lik.read_bytes()
    try:
        assert main(["likelihood", "--params", str(long_root / "lik.yaml"), "--root", str(long_root)]) == 2
    finally:
        hidden.rename(ckpts)
    err = capsys.readouterr().err
    assert str(ckpts) in err and "no weights kept at step 10" in err and len(err.strip().splitlines()) == 1
    assert lik.read_bytes() == before


def test_report_counts_the_kept_weights_seconds():
    """The report's stage time adds the bits/dim of eval.bpd_steps' weights to the final weights' seconds."""
    from pipeline.report.summary import timing
    x = {"train": None, "samplers": {}, "controllable": None, "curves": None,
         "likelihood": {"seconds": 30.0, "at_step": {"1500": {"seconds": 12.0}, "3000": {"seconds": 8.0}}}}
    assert timing([x], {}).startswith("50 s (0.8 min) of stage time: likelihood 50 s.")
