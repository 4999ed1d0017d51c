"""Params validation: every kind of bad input gives exit 2, one line naming file and key, and no outputs."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_params

GOOD = yaml.safe_load((Path(__file__).resolve().parents[1] / "params" / "smoke.yaml").read_text())


def _write(tmp_path, raw) -> Path:
    f = tmp_path / "bad.yaml"
    f.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return f


def _with(path: str, value):
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    cur = raw
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return raw


# (what is wrong, file content, --set overrides, expected key in the message, expected words)
CASES = [
    ("unknown top-level key", _with("trainin", {"n_iters": 3}), [], "trainin", "unknown key"),
    ("unknown nested key", _with("training.n_iter", 3), [], "training.n_iter", "unknown key"),
    ("wrong type", _with("training.n_iters", "many"), [], "training.n_iters", "integer"),
    ("negative lr", _with("optim.lr", -1e-3), [], "optim.lr", "greater than 0"),
    ("sigma_min >= sigma_max", _with("model.sigma_min", 100.0), [], "model", "sigma_min"),
    ("beta_min >= beta_max", _with("model.beta_min", 30.0), [], "model", "beta_min"),
    ("unknown predictor", _with("sampling.predictor", "heun"), [], "sampling.predictor", "euler_maruyama"),
    ("unknown model", _with("model.name", "resnet9000"), [], "model.name", "unknown model"),
    ("unknown dataset", _with("data.dataset", "imagenet"), [], "data.dataset", "fashion_mnist"),
    ("zero batch", _with("training.batch_size", 0), [], "training.batch_size", "greater than or equal to 1"),
    ("bad sampler override", _with("samplers.ode.rtoll", 1e-3), [], "samplers.ode.rtoll", "unknown key"),
    ("ALD on a VP SDE", _with("sampling.method", "ald"), [], "sampling.method", "vesde"),
    ("DDPM table with N <= beta_max", _with("samplers.rd", {"predictor": "reverse_diffusion", "num_steps": 20}), [],
     "samplers.rd.num_steps", "more than model.beta_max = 20"),
    ("controllable steps <= beta_max", _with("eval.controllable_steps", 10), ["sampling.predictor=reverse_diffusion"],
     "eval.controllable_steps", "more than model.beta_max"),
    ("malformed YAML", "training: [1, 2\n", [], "", "not valid YAML"),
    ("not a mapping", "- 1\n- 2\n", [], "", "mapping"),
    ("bad --set type", GOOD, ["eval.num_samples=lots"], "eval.num_samples", "integer"),
    ("--set without =", GOOD, ["eval.num_samples"], "eval.num_samples", "KEY=VALUE"),
    ("--set unknown key", GOOD, ["optim.learning_rate=0.1"], "optim.learning_rate", "unknown key"),
]


@pytest.mark.parametrize("what,raw,sets,key,words", CASES, ids=[c[0] for c in CASES])
def test_bad_params_exit_2_with_file_and_key(tmp_path, capsys, what, raw, sets, key, words):
    f = _write(tmp_path, raw)
    out_root = tmp_path / "root"
    out_root.mkdir()
    argv = ["train", "--params", str(f), "--root", str(out_root)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {f}: "), err
    if key:
        assert f": {key}: " in err or f": {key}:" in err, err
    assert words in err, err
    assert list(out_root.iterdir()) == [], "bad params must write nothing"


def test_missing_params_file(tmp_path, capsys):
    assert main(["describe", "--params", str(tmp_path / "nope.yaml")]) == 2
    assert "params file not found" in capsys.readouterr().err


def test_exit_status_from_a_real_process(tmp_path):
    f = _write(tmp_path, _with("optim.lr", -1))
    r = subprocess.run([sys.executable, "-m", "pipeline", "train", "--params", str(f), "--root", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {f}: optim.lr: Input should be greater than 0 (got -1)"


def test_set_overrides_are_yaml_and_validated():
    name, p = load_params(Path(__file__).resolve().parents[1] / "params" / "smoke.yaml",
                          ["model.ch_mult=[1,2,2]", "training.n_iters=7", "samplers.ode.rtol=0.01"])
    assert name == "smoke"
    assert p.model.ch_mult == (1, 2, 2) and p.training.n_iters == 7
    assert p.sampler_settings()["ode"].rtol == 0.01 and p.sampler_settings()["ode"].method == "ode"
    assert p.sampler_settings()["pc"].method == "pc"


def test_help_lists_stages(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for stage in ("download", "prepare", "train", "sample", "evaluate", "likelihood", "report", "describe", "import"):
        assert stage in out
