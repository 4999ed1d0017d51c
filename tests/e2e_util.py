"""Helpers for end-to-end tests: a temporary copy of the repository, running its front ends, and one local run of the
smoke suite shared by the test files that compare another run with it."""
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from conftest import ROOT, venv_env
from filelock import FileLock

SMOKE = "runs/smoke/smoke"
# Keys whose values differ between two runs of the same stage by design: timings, MLflow run ids, what a resumed run
# started from. Everything else (every metric, the hardware, the provenance stamps' code, params and command parts)
# must be equal. A stamp's `data` part (and so its fingerprint) hashes input files byte for byte, and a resumed
# train writes model.pt with the same tensors but other pickle bytes: tests compare those tensors instead.
VOLATILE = {"seconds", "classifier_seconds", "images_per_s", "seconds_per_sample", "mlflow_run_id", "resumed_from",
            "data", "fingerprint"}
# What a run of the smoke suite is compared on: every JSON output (metrics, sample and stage info, provenance stamps)
# of these folders but the training snapshots, and the trained model's tensors.
COMPARED = ("runs/smoke", "data/evaluator", "data/prepared")
MODEL = f"{SMOKE}/train/model.pt"


def copy_repo(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files (what a fresh clone of this working tree would hold)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


def run(cmd: list[str], cwd: Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=venv_env())
    r.seconds = time.perf_counter() - t0
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def python() -> str:
    return sys.executable


def suite_metrics(repo: Path) -> dict[str, dict]:
    """Every JSON output of the smoke suite under COMPARED, volatile keys left out, by path relative to `repo`."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
        return [strip(v) for v in x] if isinstance(x, list) else x
    files = [p for d in COMPARED for p in (repo / d).rglob("*.json") if "snapshots" not in p.parts]
    return {str(p.relative_to(repo)): strip(json.loads(p.read_text())) for p in files}


# --- one local run of the smoke suite per test session ----------------------------------------------------------------
# test_e2e.py runs the smoke suite through `dvc repro` and then changes its copy (edits, reruns, commits);
# test_slurm.py compares a SLURM run with a local run of the same suite. Rather than a second local run, the e2e run
# publishes its outputs (the COMPARED JSON files and the model) before it changes anything, into a folder that every
# pytest-xdist worker of the session sees; a file lock makes the other file wait for it. A session without test_e2e.py
# (test_slurm.py alone) makes its own local run, once, the same way.
def _shared(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: basetemp/popen-gwN per worker


@contextmanager
def smoke_reference_lock(tmp_path_factory):
    """Held by whoever makes the reference run, so that a file asking for it meanwhile waits instead of making one."""
    with FileLock(str(_shared(tmp_path_factory) / "smoke-reference.lock")):
        yield


def publish_smoke_reference(repo: Path, tmp_path_factory) -> Path:
    """Copy the finished run's COMPARED JSON files and its model into the shared folder (a temporary folder renamed
    into place: a reader finds all of it or nothing); call with smoke_reference_lock held."""
    ref = _shared(tmp_path_factory) / "smoke-reference"
    tmp = ref.with_name(ref.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in [*suite_metrics(repo), MODEL]:
        (tmp / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / f, tmp / f)
    tmp.rename(ref)
    return ref


def smoke_reference(tmp_path_factory) -> Path:
    """The folder of the session's reference run of the smoke suite (laid out as a repository's outputs): the one
    test_e2e.py published, or else one made here with `snakemake -c 2` in a copy of the repository."""
    with smoke_reference_lock(tmp_path_factory):
        ref = _shared(tmp_path_factory) / "smoke-reference"
        if not ref.is_dir():
            repo = copy_repo(tmp_path_factory.mktemp("smoke-local") / "repo")
            env = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"}
            r = subprocess.run(["snakemake", "-c", "2", "--config", "suite=smoke"], cwd=repo, env=venv_env(env),
                               capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, f"the local run of the smoke suite failed:\n{(r.stdout + r.stderr)[-3000:]}"
            publish_smoke_reference(repo, tmp_path_factory)
        return ref
