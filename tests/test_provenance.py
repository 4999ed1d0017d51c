"""Provenance: a stage's fingerprint (code, params, data, command) moves exactly with what made its outputs; training
resumes only a snapshot made by the same code, params and data (a changed one is set aside, kept); a stage whose
inputs change while it runs fails and says what moved."""
import json
import subprocess
import sys
import time

from conftest import venv_env
from test_train import _same, _setup, _train, _weights, digits_root  # noqa: F401 - digits_root is a fixture

from pipeline.io import provenance


def _tree(root):
    (root / "pipeline").mkdir(parents=True)
    (root / "pipeline/a.py").write_text("x = 1\n")
    (root / "data/d").mkdir(parents=True)
    (root / "data/d/f.npz").write_bytes(b"\0" * 100)
    (root / ".dvcignore").write_text("# comment\n__pycache__/\n.snakemake_timestamp\n")
    return lambda params: provenance.fingerprint(root, "python -m pipeline x", ["pipeline/a.py", "data/d"], params)


def test_each_part_moves_with_its_input_only(tmp_path):
    fp = _tree(tmp_path)
    base = fp({"p.yaml": {"k": 1}})
    (tmp_path / "data/d/.snakemake_timestamp").write_text("")  # what .dvcignore leaves out of DVC's hash
    (tmp_path / "data/d/__pycache__").mkdir()
    (tmp_path / "data/d/__pycache__/m.pyc").write_bytes(b"1")
    assert fp({"p.yaml": {"k": 1}}) == base
    moved = {}
    (tmp_path / "pipeline/a.py").write_text("x = 2\n")
    moved["code"] = fp({"p.yaml": {"k": 1}})
    (tmp_path / "pipeline/a.py").write_text("x = 1\n")
    moved["params"] = fp({"p.yaml": {"k": 2}})
    (tmp_path / "data/d/g.npz").write_bytes(b"1")
    moved["data"] = fp({"p.yaml": {"k": 1}})
    for part, now in moved.items():
        assert [k for k in provenance.PARTS if now[k] != base[k]] == [part]
        assert now["fingerprint"] != base["fingerprint"]
        assert provenance.differs(base, now) == f"changed since it ran: {part}"
    assert provenance.differs(base, base) is None
    assert provenance.differs(None, base) == "no provenance record"


def test_stamps_round_trip_in_folders_and_json(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "m.json").write_text(json.dumps({"fd": 1.5}))
    (tmp_path / "loss.csv").write_text("step,loss\n")
    rec = {"fingerprint": "f", "code": "c"}
    outs = provenance.stamped_outs(["out", "m.json", "loss.csv"])
    assert outs == ["out", "m.json"]
    provenance.stamp(tmp_path, outs, rec)
    assert provenance.read_stamp(tmp_path, "out") == rec == provenance.read_stamp(tmp_path, "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["fd"] == 1.5
    assert provenance.read_stamp(tmp_path, "missing") is None


def _edit(f, old, new):
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))


def test_changed_params_restart_training_and_keep_the_old_snapshots(tmp_path, digits_root):  # noqa: F811
    root, f = _setup(tmp_path, digits_root)
    _train(root, f)
    first = _weights(root)
    metrics = json.loads((root / "runs/unit/unit/train_metrics.json").read_text())
    assert metrics["provenance"]["stage"] == "train-unit" and metrics["resumed_from"] == 0
    assert json.loads((root / "runs/unit/unit/train/provenance.json").read_text()) == metrics["provenance"]

    r = _train(root, f)  # unchanged: resumes the last snapshot, computes no step, same weights
    assert "resuming from snapshot" in r.stdout + r.stderr
    assert json.loads((root / "runs/unit/unit/train_metrics.json").read_text())["resumed_from"] == 20
    assert all(_same(a, b) for a, b in zip(_weights(root), first))

    _edit(f, "lr: 0.001", "lr: 0.002")
    r = _train(root, f)
    out = r.stdout + r.stderr
    assert "moved to" in out and "training starts at step 0" in out and "resuming" not in out
    after = json.loads((root / "runs/unit/unit/train_metrics.json").read_text())
    assert after["resumed_from"] == 0 and after["snapshot_fingerprint"] != metrics["snapshot_fingerprint"]
    assert after["provenance"]["params"] != metrics["provenance"]["params"]
    assert not _same(_weights(root)[0], first[0])
    (kept,) = (root / "runs/unit/unit/snapshots.superseded").iterdir()
    assert sorted(p.name for p in kept.glob("step_*")) == ["step_000000015", "step_000000020"]


def test_a_set_override_is_another_training(tmp_path, digits_root):  # noqa: F811
    """`--set training.sde=subvpsde` after a VP run: VP weights are not resumed under a sub-VP label."""
    root, f = _setup(tmp_path, digits_root, n_iters=10)
    _train(root, f)
    env = venv_env({"OMP_NUM_THREADS": "1", "PIPELINE_TRACKING": "off"})
    r = subprocess.run([sys.executable, "-m", "pipeline", "train", "--params", str(f), "--root", str(root),
                        "--no-progress", "--set", "training.sde=subvpsde"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "training starts at step 0" in r.stdout + r.stderr
    assert json.loads((root / "runs/unit/unit/train_metrics.json").read_text())["resumed_from"] == 0


def test_raising_n_iters_continues_the_same_steps(tmp_path, digits_root):  # noqa: F811
    """training.n_iters is resume-safe (stages/train.py RESUME_SAFE): 10 steps then 20 equal 20 steps at once."""
    root, f = _setup(tmp_path / "a", digits_root, n_iters=10)
    _train(root, f)
    _edit(f, "n_iters: 10", "n_iters: 20")
    r = _train(root, f)
    assert "(step 10)" in r.stdout + r.stderr
    root2, f2 = _setup(tmp_path / "b", digits_root, n_iters=20)
    _train(root2, f2)
    assert all(_same(a, b) for a, b in zip(_weights(root), _weights(root2)))


def test_an_edit_while_the_stage_runs_fails_it(tmp_path, digits_root):  # noqa: F811
    root, f = _setup(tmp_path, digits_root, n_iters=300)
    env = venv_env({"OMP_NUM_THREADS": "1", "PIPELINE_TRACKING": "off"})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "train", "--params", str(f), "--root", str(root),
                             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = root / "runs/unit/unit/snapshots/step_000000005"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:
        time.sleep(0.05)
    _edit(f, "lr: 0.001", "lr: 0.003")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    assert "train-unit: its inputs changed while it ran (params)" in err
    stamp = json.loads((root / "runs/unit/unit/train_metrics.json").read_text())["provenance"]
    _edit(f, "lr: 0.003", "lr: 0.001")  # the stamp names the inputs it started with
    from pipeline.workflow import dag
    stage, raws = dag.stage_of(root, "train", str(f))
    assert provenance.fingerprint(root, stage.cmd, stage.deps, dag.tracked_params(stage, raws)) == {
        k: v for k, v in stamp.items() if k != "stage"}
