"""Params validation: every kind of bad input gives exit 2, one line naming file and key, and no outputs."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import ParamsError, load_params, read_params_yaml

ROOT = Path(__file__).resolve().parents[1]
GOOD = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())


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
    ("bpd step the train stage does not keep", _with("eval.bpd_steps", [7]), [], "eval.bpd_steps.0",
     "step 7 is not kept by the train stage"),
    ("bpd step listed twice", _with("eval.bpd_steps", [2, 2]), ["training.ckpt_freq=2"], "eval.bpd_steps",
     "a step is listed twice"),
    ("malformed YAML", "training: [1, 2\n", [], "", "not valid YAML"),
    ("not a mapping", "- 1\n- 2\n", [], "", "mapping"),
    ("bad --set type", GOOD, ["eval.num_samples=lots"], "eval.num_samples", "integer"),
    ("--set without =", GOOD, ["eval.num_samples"], "eval.num_samples", "KEY=VALUE"),
    ("--set unknown key", GOOD, ["optim.learning_rate=0.1"], "optim.learning_rate", "unknown key"),
    # names (pipeline.names.NAME_PATTERN): they become folders and words of dvc.yaml's shell commands
    ("suite leaving the root", _with("suite", "../../victim"), [], "suite", "suite name '../../victim' must be letters"),
    ("suite with a slash", _with("suite", "a/b"), [], "suite", "suite name 'a/b'"),
    ("suite not a string", _with("suite", 5), [], "suite", "suite name 5"),
    ("--set suite", GOOD, ["suite=x;touch X"], "suite", "suite name 'x;touch X'"),
    ("sampler name with ..", _with("samplers", {"../x": {"method": "ode"}}), [], "samplers", "sampler name '../x'"),
    ("sampler name with a space", _with("samplers", {"a b": {"method": "ode"}}), [], "samplers", "sampler name 'a b'"),
    ("sampler name starting with -", _with("samplers", {"-x": {"method": "ode"}}), [], "samplers", "not starting with '-'"),
    ("curve name with a slash", _with("curves", {"samplers": {"a/b": {}}}), [], "curves.samplers", "curve name 'a/b'"),
    # bounds
    ("negative seed", _with("seed", -1), [], "seed", "from 0 to 2147483647 (2**31 - 1), got -1"),
    ("seed of 2**31", _with("seed", 2 ** 31), [], "seed", "got 2147483648"),
    ("--set seed of 2**64", GOOD, ["seed=18446744073709551616"], "seed", "from 0 to 2147483647"),
    ("training seed of 2**31", _with("training.seeds", [0, 2 ** 31]), [], "training.seeds", "from 0 to 2147483647"),
    ("num_samples above 1,000,000", _with("eval.num_samples", 1_000_001), [], "eval.num_samples",
     "at most 1,000,000 samples (the papers' FID uses 50,000), got 1000001"),
    ("curves num_samples above 1,000,000", _with("curves", {"num_samples": 10 ** 9}), [], "curves.num_samples", "at most"),
    # empty and malformed files: what is missing, and where the YAML breaks
    ("empty file", "", [], "", "the file is empty (no keys); an experiment needs at least model.name"),
    ("comments only", "# an experiment\n\n", [], "", "the file is empty"),
    ("empty mapping", "{}\n", [], "", "see params/README.md"),
    ("tab indentation", "data:\n\tdataset: digits\n", [], "", "not valid YAML: line 2, column 1: found character '\\t'"),
    ("unclosed flow mapping", "seed: 1\ntraining: {n_iters: 3\nmodel: {name: mlp}\n", [], "", "not valid YAML: line 3"),
    ("impossible date", "seed: 1\nnote: 2020-13-45\n", [], "", "line 2, column 7: cannot read '2020-13-45': month"),
    ("python tag", "seed: !!python/object/apply:os.system [ls]\n", [], "", "not valid YAML: line 1"),
    ("non-string key", "1: 2\n", [], "1", "a top-level key must be a group or key name"),
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


@pytest.mark.parametrize("stem", ["a;touch X", "a b", "-x", "a.b"])
def test_params_file_stem_is_a_name(tmp_path, capsys, stem):
    """The stem names the experiment (runs/<suite>/<stem>, DAG stage names, dvc.yaml commands)."""
    f = tmp_path / f"{stem}.yaml"
    f.write_text(yaml.safe_dump(GOOD))
    out_root = tmp_path / "root"
    out_root.mkdir()
    assert main(["train", "--params", str(f), "--root", str(out_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {f}: experiment name {stem!r} must be letters, digits, '_' or '-', not starting with '-' "
                   "([A-Za-z0-9_][A-Za-z0-9_-]*): the file's stem names the experiment (its run folder and DAG stages); "
                   "rename the file"), err
    assert list(out_root.iterdir()) == [] and not (tmp_path / "X").exists()


def test_bounds_accept_their_limits_and_the_presets():
    _, p = load_params(ROOT / "params" / "smoke.yaml", [f"seed={2 ** 31 - 1}", "eval.num_samples=1000000",
                                                          f"training.seeds=[0,{2 ** 31 - 1}]"])
    assert p.seed == 2 ** 31 - 1 and p.eval.num_samples == 1_000_000
    for f in sorted((ROOT / "params").rglob("*.yaml")):  # CIFAR-10 presets: 50,000 samples
        assert load_params(f)[1].eval.num_samples <= 50_000


def test_not_utf8(tmp_path, capsys):
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"seed: 1\n\xff\xfe\n")
    assert main(["describe", "--params", str(f)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {f}: not UTF-8 text (byte 8); a params file is YAML"


def test_read_params_yaml(tmp_path):
    """The one reader of params files (load_params and pipeline.workflow.dag's discovery)."""
    f = tmp_path / "x.yaml"
    f.write_text("suite: fm\nseed: 3\n")
    assert read_params_yaml(f) == {"suite": "fm", "seed": 3}
    f.write_text("# nothing yet\n")
    assert read_params_yaml(f) == {}
    for text, message in [("a: [1,\n", f"{f}: not valid YAML: line 2, column 1: "),
                          ("- 1\n", f"{f}: expected a YAML mapping of groups (data, model, training, ...), got a list"),
                          ("suite: ../../victim\n", f"{f}: suite: suite name '../../victim' must be letters")]:
        f.write_text(text)
        with pytest.raises(ParamsError) as e:
            read_params_yaml(f)
        assert str(e.value).startswith(message), str(e.value)
        assert "\n" not in str(e.value)
