"""Lineage through a real `mlflow server`: a tiny DVC pipeline (the real `prepare` stage of digits, then a stage
that tracks like sample and evaluate do) runs under `dvc repro` in a temporary git + DVC repository; an
`mlflow server` on loopback serves its SQLite store, and its REST API must show the parent run, the child stage runs
linked to it, the lineage tags, the dataset input whose digest is dvc.lock's md5 of the prepared data, the logged
grid, and the run id written into the stage's DVC output. The server is then stopped by its PID."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, venv_env

from pipeline.report.mlflow_page import stop_server as stop

MLFLOW = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")

# What the sample and evaluate stages do with pipeline.io.tracking, minus the model (see pipeline/stages/sample.py and
# evaluate.py); one process opens both runs, which saves a Python + MLflow start-up on a busy machine.
STAGE_SCRIPT = '''
import json, struct, sys, zlib
from pathlib import Path
from pipeline.io import tracking

def png(path):  # an 8x8 grey image
    raw = b"".join(b"\\0" + bytes(range(0, 256, 32)) for _ in range(8))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    path.write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

root = Path(".").resolve()
with tracking.stage_run(root, "mini", "toy", "sample/pc", {"method": "pc", "snr": 0.16}) as t:
    out = Path("runs/mini/toy/samples/pc")
    out.mkdir(parents=True, exist_ok=True)
    png(out / "grid.png")
    t.log_dataset("digits-train", None, root / "data/prepared/digits", "training")
    t.log_metrics({"nfe": 42.0})
    t.log_artifact(out / "grid.png")
    (out / "info.json").write_text(json.dumps({"nfe": 42.0, "mlflow_run_id": t.run_id}))
with tracking.stage_run(root, "mini", "toy", "evaluate/pc") as t:
    out = Path("runs/mini/toy/eval")
    out.mkdir(parents=True, exist_ok=True)
    t.log_metrics({"classifier.fd.mean": 1.5})
    (out / "pc.json").write_text(json.dumps({"fd": 1.5, "mlflow_run_id": t.run_id}))
    t.log_artifact(out / "pc.json")
'''

DVC_YAML = {"stages": {
    "prepare-digits": {"wdir": "../..", "cmd": "python -m pipeline prepare --dataset digits",
                       "deps": ["data/raw/digits"], "outs": ["data/prepared/digits"]},
    "track-toy": {"wdir": "../..", "cmd": "python stage.py", "deps": ["data/prepared/digits", "stage.py"],
                  "outs": ["runs/mini/toy"]},
}}


def sh(cmd, cwd, env=None, timeout=300):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or venv_env())
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A git + DVC repository in which `dvc repro` has run the mini pipeline, tracked into repo/mlflow.db."""
    from pipeline.io import data

    repo = tmp_path_factory.mktemp("lineage") / "repo"
    repo.mkdir()
    data.download(repo, "digits")
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    (repo / "stage.py").write_text(STAGE_SCRIPT)
    (repo / "pipelines/mini").mkdir(parents=True)
    (repo / "pipelines/mini/dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / ".gitignore").write_text("mlflow.db\nmlruns/\nmlartifacts/\n")
    t0 = time.perf_counter()
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "mini"], repo)
    env = venv_env({"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1"})
    r = sh(["dvc", "repro", "pipelines/mini/dvc.yaml"], repo, env=env)
    assert "tracking skipped" not in r.stdout + r.stderr, r.stderr
    print(f"\nmini pipeline through dvc repro: {time.perf_counter() - t0:.1f} s")
    return repo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 over the store; yields (base URL, process, port), stops it by its PID afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "mlflow-server.log"
    cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
           "--default-artifact-root", (store / "mlartifacts").as_uri()]
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=store, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=venv_env())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server not healthy in 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        print(f"\nmlflow server healthy after {time.perf_counter() - t0:.1f} s (pid {proc.pid}, port {port})")
        yield url, proc, port
    finally:
        stop(proc)


def api(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    full = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    req = urllib.request.Request(full, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def runs_of(url: str, experiment: str) -> list[dict]:
    exp = api(url, "experiments/get-by-name", experiment_name=experiment)["experiment"]
    return api(url, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}).get("runs", [])


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def locked_out(repo: Path, path: str) -> str:
    lock = yaml.safe_load((repo / "pipelines/mini/dvc.lock").read_text())
    return next(o["md5"] for st in lock["stages"].values() for o in st.get("outs", []) if o["path"] == path)


@pytest.mark.skipif(MLFLOW is None, reason="the `mlflow` executable is not installed (pip install mlflow)")
@pytest.mark.timeout(300)
def test_runs_and_lineage_over_rest(store, server):
    url, proc, port = server
    t0 = time.perf_counter()
    head = sh(["git", "rev-parse", "HEAD"], store).stdout.strip()
    runs = runs_of(url, "score-repro/mini")
    parents = [r for r in runs if tags(r).get("pipeline.kind") == "parent"]
    children = [r for r in runs if tags(r).get("pipeline.kind") == "stage"]
    assert len(parents) == 1 and tags(parents[0])["pipeline.experiment"] == "toy"
    parent_id = parents[0]["info"]["run_id"]
    by_stage = {tags(r)["pipeline.stage"]: r for r in children}
    assert set(by_stage) == {"sample/pc", "evaluate/pc"}
    for stage, run in by_stage.items():
        t = tags(run)
        assert t["mlflow.parentRunId"] == parent_id, stage
        assert t["git.commit"] == head and "git.dirty" not in t, t  # set when a `python -m pipeline` stage ends
        assert "dvc.lock.sha256" not in t  # the lock before the stage names no output of it (lineage.py tags those)
        assert t["dvc.lock.path"] == "pipelines/mini/dvc.lock"
        assert t["dvc.stage"] == "pipelines/mini/dvc.yaml:track-toy"
        assert run["info"]["status"] == "FINISHED"

    # the dataset input's digest is the DVC hash of the prepared data, exactly as dvc.lock records it
    sample = by_stage["sample/pc"]
    prepared_md5 = locked_out(store, "data/prepared/digits")
    inputs = sample["inputs"]["dataset_inputs"]
    assert [i["dataset"]["name"] for i in inputs] == ["digits-train"]
    assert inputs[0]["dataset"]["digest"] == prepared_md5 and prepared_md5.endswith(".dir")
    input_tags = {t["key"]: t["value"] for t in inputs[0]["tags"]}
    assert input_tags["dvc.md5.source"] == "dvc.lock (pipelines/mini/dvc.lock)"
    assert input_tags["mlflow.data.context"] == "training"
    assert {m["key"]: m["value"] for m in sample["data"]["metrics"]} == {"nfe": 42.0}
    assert {p["key"] for p in sample["data"]["params"]} == {"method", "snr"}

    # the grid is an artifact of the sample run, and the stage's DVC output names that run
    files = api(url, "artifacts/list", run_id=sample["info"]["run_id"]).get("files", [])
    assert "grid.png" in {f["path"] for f in files}
    info = json.loads((store / "runs/mini/toy/samples/pc/info.json").read_text())
    assert info["mlflow_run_id"] == sample["info"]["run_id"]
    files = api(url, "artifacts/list", run_id=by_stage["evaluate/pc"]["info"]["run_id"]).get("files", [])
    assert "pc.json" in {f["path"] for f in files}
    ev = json.loads((store / "runs/mini/toy/eval/pc.json").read_text())
    assert ev["mlflow_run_id"] == by_stage["evaluate/pc"]["info"]["run_id"]

    # the prepare stage (pipeline.stages.data_stages) tracks into the `datasets` experiment
    prep = [r for r in runs_of(url, "score-repro/datasets") if tags(r).get("pipeline.stage") == "prepare"]
    assert len(prep) == 1 and tags(prep[0])["dvc.stage"] == "pipelines/mini/dvc.yaml:prepare-digits"
    digests = {i["dataset"]["name"]: i["dataset"]["digest"] for i in prep[0]["inputs"]["dataset_inputs"]}
    manifest = json.loads((store / "data/prepared/digits/manifest.json").read_text())
    assert digests.keys() == {"digits", "digits-train", "digits-test"}
    assert digests["digits"] == prepared_md5  # the producer sees the same hash dvc.lock records afterwards
    for split in ("train", "test"):  # each split: DVC's md5 of the file (its entry in the .dir listing)
        assert digests[f"digits-{split}"] == hashlib.md5((store / f"data/prepared/digits/{split}.npz").read_bytes()).hexdigest()
        assert manifest["splits"][split]["count"] > 0

    print(f"\nREST queries: {time.perf_counter() - t0:.1f} s")
    # stopped by its PID: the process and its workers are gone and the port is closed
    t0 = time.perf_counter()
    stop(proc)
    print(f"\nmlflow server stopped in {time.perf_counter() - t0:.1f} s")
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert not port_open(port)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
