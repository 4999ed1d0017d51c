"""pipeline.io.tracking without a server: dataset digests are DVC's own hashes, and tracking never costs a result —
with MLflow unreachable a stage writes its outputs, exits 0 and says tracking was skipped, within seconds."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import yaml
from conftest import ROOT, venv_env

from pipeline.io import tracking


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_dvc_md5_is_the_hash_dvc_records(tmp_path):
    """The same directory through `dvc add` and tracking.dvc_md5: subfolders, CRLF text, a .dvcignore'd file."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("hello\n")
    (d / "sub" / "b.txt").write_bytes(b"x\r\ny\n")  # DVC 3 hashes bytes as they are (no dos2unix)
    (d / "c.npz").write_bytes(os.urandom(50_000))
    (d / "sub" / ".snakemake_timestamp").write_text("")  # ignored by the project's .dvcignore
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    env = venv_env({"DVC_NO_ANALYTICS": "1"})
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "add", "-q", "d"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    out = yaml.safe_load((tmp_path / "d.dvc").read_text())["outs"][0]
    assert out["md5"].endswith(".dir") and out["nfiles"] == 3
    assert tracking.dvc_md5(d, tmp_path) == out["md5"]
    assert tracking.dvc_md5(d / "c.npz") == hashlib.md5((d / "c.npz").read_bytes()).hexdigest()
    digest, origin, locked = tracking.dataset_digest(tmp_path, d)  # no dvc.lock here: computed, and it says so
    assert (digest, locked) == (out["md5"], None) and origin.startswith("computed")


MAKE_OUT = """from pathlib import Path
for rel, text in {"a.txt": "a", "drop.log": "ignored", "keep.log": "kept", "sub/keep.log": "kept too"}.items():
    (Path("out") / rel).parent.mkdir(parents=True, exist_ok=True)
    (Path("out") / rel).write_text(text)
"""


def test_digest_is_what_dvc_repro_locks_with_a_reincluded_file(tmp_path):
    """A one-stage DVC repository whose .dvcignore leaves out *.log but re-includes keep.log (`!keep.log`): the digest
    is the md5 `dvc repro` writes to dvc.lock, and it follows the re-included files, not the ignored one."""
    (tmp_path / ".dvcignore").write_text("*.log\n!keep.log\n")
    (tmp_path / "make.py").write_text(MAKE_OUT)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"make": {"cmd": "python make.py", "deps": ["make.py"], "outs": ["out"]}}}))
    env = venv_env({"DVC_NO_ANALYTICS": "1"})
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    out = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["make"]["outs"][0]
    assert out["nfiles"] == 3  # a.txt, keep.log, sub/keep.log
    assert tracking.dataset_digest(tmp_path, tmp_path / "out") == (out["md5"], "dvc.lock (dvc.lock)", out["md5"])
    (tmp_path / "out" / "drop.log").write_text("changed")  # ignored: the locked content still
    assert tracking.dvc_md5(tmp_path / "out", tmp_path) == out["md5"]
    (tmp_path / "out" / "sub" / "keep.log").write_text("changed")  # re-included: other content now
    digest, origin, locked = tracking.dataset_digest(tmp_path, tmp_path / "out")
    assert digest != out["md5"] and locked == out["md5"] and origin == "computed by DVC (dvc.lock records other content)"


def test_digest_is_unknown_where_dvc_cannot_hash(tmp_path, monkeypatch):
    """DVC unusable (here: not importable): the dataset is still logged, with digest "unknown" and the reason."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.bin").write_bytes(b"abc")
    monkeypatch.setitem(sys.modules, "dvc.repo", None)  # `from dvc.repo import Repo` raises ImportError

    class FakeMlflow:
        inputs = []

        def log_input(self, dataset, context, tags):
            self.inputs.append((dataset.digest, context, tags))

    t = tracking.Tracker(FakeMlflow(), "run-1", tmp_path)
    t.log_dataset("d", "sha", tmp_path / "d", "prepared")
    assert t.active
    [(digest, context, tags)] = FakeMlflow.inputs
    assert digest == "unknown" and tags["dvc.md5"] == "unknown" and tags["sha256"] == "sha"
    assert tags["dvc.md5.source"].startswith("unknown (DVC could not hash it: ModuleNotFoundError: ")


def test_lock_lookup_resolves_wdir(tmp_path, monkeypatch):
    """An out of pipelines/<suite>/dvc.yaml (wdir ../..) is found by its path from the root; $DVC_STAGE wins."""
    (tmp_path / "data/prepared/x").mkdir(parents=True)
    (tmp_path / "data/prepared/x/f.bin").write_bytes(b"abc")
    md5 = tracking.dvc_md5(tmp_path / "data/prepared/x")
    (tmp_path / "pipelines/s").mkdir(parents=True)
    (tmp_path / "pipelines/s/dvc.yaml").write_text(yaml.safe_dump({"stages": {"prep": {"wdir": "../..", "cmd": "x",
                                                                                        "outs": ["data/prepared/x"]}}}))
    (tmp_path / "pipelines/s/dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"prep": {"cmd": "x", "outs": [{"path": "data/prepared/x", "hash": "md5", "md5": md5}]}}}))
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert tracking.lock_file(tmp_path, "s") == tmp_path / "pipelines/s/dvc.lock"
    assert tracking.lock_file(tmp_path, "default") == tmp_path / "dvc.lock"
    assert tracking.dataset_digest(tmp_path, tmp_path / "data/prepared/x", "default") == (md5, "dvc.lock (pipelines/s/dvc.lock)", md5)
    monkeypatch.setenv("DVC_STAGE", "pipelines/s/dvc.yaml:prep")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.lock_file(tmp_path, "default") == tmp_path / "pipelines/s/dvc.lock"
    tags = tracking.lineage_tags(tmp_path, "prep", "default")
    assert tags["dvc.lock.path"] == "pipelines/s/dvc.lock" and tags["dvc.stage"] == "pipelines/s/dvc.yaml:prep"
    (tmp_path / "data/prepared/x/f.bin").write_bytes(b"abcd")  # changed outside DVC: the lock is stale
    digest, origin, locked = tracking.dataset_digest(tmp_path, tmp_path / "data/prepared/x")
    assert digest != md5 and locked == md5 and "other content" in origin
    # dvc.lock rewritten (a commit of the new content): the lookup reads the new file, not the parse of the old one
    (tmp_path / "pipelines/s/dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"prep": {"cmd": "x", "outs": [{"path": "data/prepared/x", "md5": digest}]}}}))
    assert tracking.dataset_digest(tmp_path, tmp_path / "data/prepared/x") == (digest, "dvc.lock (pipelines/s/dvc.lock)",
                                                                               digest)


def test_unreachable_server_is_skipped_in_seconds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    t0 = time.perf_counter()
    with tracking.stage_run(tmp_path, "unit", "exp", "sample/pc", {"a": 1}) as t:
        t.log_metrics({"x": 1.0})
        t.log_artifact(tmp_path / "missing.png")
    seconds = time.perf_counter() - t0
    assert not t.active and t.run_id is None
    assert seconds < tracking.PROBE_TIMEOUT_S + 2, seconds  # MLflow's own retries would take minutes
    err = capsys.readouterr().err
    assert "MLflow tracking skipped" in err and "unreachable" in err and "outputs are written" in err
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"  # later requests give up quickly too


def test_tracking_failure_mid_stage_is_a_warning(capsys):
    class Broken:
        calls = 0

        def log_metrics(self, *a, **kw):
            Broken.calls += 1
            raise ConnectionError("server went away")

    t = tracking.Tracker(Broken(), "run-1")
    t.log_metrics({"a": 1.0})
    t.log_metrics({"b": 2.0})  # a no-op from now on
    assert Broken.calls == 1 and not t.active
    assert "MLflow tracking skipped from here on (ConnectionError: server went away)" in capsys.readouterr().err


def test_stage_writes_outputs_when_mlflow_is_unreachable(tmp_path):
    """The real prepare stage, as DVC would run it, against a tracking URI where nothing listens."""
    from pipeline.io import data

    data.download(tmp_path, "digits")
    env = venv_env({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"})
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipeline", "prepare", "--dataset", "digits", "--root", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "data/prepared/digits/manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 1500 and (tmp_path / "data/prepared/digits/train.npz").stat().st_size > 0
    assert "warning: MLflow tracking skipped" in r.stderr and "unreachable" in r.stderr
    assert "prepared digits" in r.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert seconds < 90, seconds  # start-up only; MLflow's default retries alone would take minutes


def test_stages_started_together_share_one_parent_run(tmp_path, monkeypatch):
    """Snakemake runs independent stages side by side: a stage that searched for its experiment's parent run before
    another stage created one creates a second; it must keep the oldest and delete its own, and creating the MLflow
    experiment that the other stage created a moment ago is no error."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow = tracking._setup(tmp_path, "race")
    other = tracking._parent_run(mlflow, "exp")  # the stage that came first
    real = tracking._parents
    calls = []

    def late_search(m, experiment):  # the first search ran before `other` existed
        calls.append(experiment)
        return [] if len(calls) == 1 else real(m, experiment)

    monkeypatch.setattr(tracking, "_parents", late_search)
    assert tracking._parent_run(mlflow, "exp") == other and len(calls) == 2
    assert [r.info.run_id for r in real(mlflow, "exp")] == [other]  # the duplicate is deleted
    exp_name, looked = mlflow.get_experiment_by_name, []

    def late_lookup(name):  # the first lookup ran before the other stage created the experiment
        looked.append(name)
        return None if len(looked) == 1 else exp_name(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", late_lookup)
    assert tracking._setup(tmp_path, "race") is mlflow and len(looked) == 2  # create fails, found again: no error


STAGE = """import json, os, sys, time
from pathlib import Path
import mlflow  # imported before the start signal: the stages then reach the store together
from pipeline.io import tracking
root, experiment, stage = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(root / f"ready-{stage}").touch()
while not (root / "go").exists():
    time.sleep(0.002)
with tracking.stage_run(root, "together", experiment, stage) as t:
    t.log_metrics({"value": float(stage)})
    print(json.dumps(t.record()))
"""


def test_stages_started_together_on_a_new_store_are_all_tracked(tmp_path):
    """8 stage processes (2 experiments) released at one moment on a SQLite store that does not exist yet: without
    the store lock, racing alembic migrations leave most of them untracked or the store broken; with it each stage
    gets its run, under the one parent run of its experiment, and says so in its record."""
    env = venv_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    experiments = {str(i): "exp-a" if i % 2 else "exp-b" for i in range(8)}
    procs = [subprocess.Popen([sys.executable, "-c", STAGE, str(tmp_path), exp, stage], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for stage, exp in experiments.items()]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [err for _, err in results]
    records = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert [r["mlflow_status"] for r in records] == ["logged"] * len(procs) and all(r["mlflow_run_id"] for r in records)
    assert not any("tracking skipped" in err for _, err in results)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("score-repro/together").experiment_id
    runs = client.search_runs([exp_id], max_results=100)  # active runs only: a deleted duplicate parent is not counted
    parents = {r.data.tags["pipeline.experiment"]: r.info.run_id for r in runs if r.data.tags["pipeline.kind"] == "parent"}
    assert len(parents) == 2 and len([r for r in runs if r.data.tags["pipeline.kind"] == "parent"]) == 2
    stages = {r.info.run_name.split(tracking.SEP)[1]: r for r in runs if r.data.tags["pipeline.kind"] == "stage"}
    assert sorted(stages) == sorted(experiments) and len(runs) == 11  # + the suite's run, the parents' parent
    (suite,) = [r for r in runs if r.data.tags["pipeline.kind"] == "suite"]
    assert all(runs_.data.tags["mlflow.parentRunId"] == suite.info.run_id for runs_ in runs
               if runs_.data.tags["pipeline.kind"] == "parent")
    for stage, r in stages.items():
        assert r.info.status == "FINISHED" and r.data.metrics == {"value": float(stage)}
        assert r.data.tags["mlflow.parentRunId"] == parents[experiments[stage]]
    assert sorted(r["mlflow_run_id"] for r in records) == sorted(r.info.run_id for r in stages.values())


def test_record_says_why_tracking_was_skipped(tmp_path, monkeypatch):
    """The record a stage writes into its outputs: the reason when MLflow is unreachable, and `off` when disabled."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    with tracking.stage_run(tmp_path, "unit", "exp", "sample/pc") as t:
        record = t.record()
    assert record["mlflow_run_id"] is None
    assert record["mlflow_status"].startswith("skipped: ConnectionError: MLflow server http://127.0.0.1:")
    assert "unreachable" in record["mlflow_status"]
    monkeypatch.setenv("PIPELINE_TRACKING", "off")
    with tracking.stage_run(tmp_path, "unit", "exp", "sample/pc") as t:
        assert t.record() == {"mlflow_run_id": None, "mlflow_status": "off (PIPELINE_TRACKING=off)"}
    monkeypatch.setenv("PIPELINE_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracking.stage_run(tmp_path, "unit", "exp", "sample/pc") as t:
        assert t.record() == {"mlflow_run_id": t.run_id, "mlflow_status": "logged"} and t.run_id

    class Gone:
        def log_metrics(self, *a, **kw):
            raise ConnectionError("went away\nmore")

    t = tracking.Tracker(Gone(), "run-1")
    t.log_metrics({"x": 1.0})  # the run keeps what came before: its id stays in the record
    assert t.record() == {"mlflow_run_id": "run-1",
                          "mlflow_status": "skipped: an MLflow call failed mid-stage (ConnectionError: went away)"}
