"""The smoke suite through profiles/slurm on a one-node test cluster (up.sh), its train job cancelled once mid-run:
the run that tests/test_slurm.py checks.

    python tests/slurm/smoke_run.py OUT

Writes OUT/result.json: {"skip": why} where the cluster cannot be started, else the run's exit status, its seconds,
the job states seen (squeue) and which train job was cancelled, and the paths of the copy of the repository
(OUT/slurm), of its Snakemake log and of the cluster's state folder (slurmctld.log). The cluster is stopped at the
end, and on SIGTERM.

Most of the run's minutes are waits on SLURM (a job runs Snakemake twice inside it before its stage; the plugin polls
job states at 5, 20, 45 s... after a submission). So under pytest-xdist, tests/conftest.py starts it in the background
when the session begins, and test_slurm.py, collected last, reads its result; run alone, the test runs it itself.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SMOKE = "runs/smoke/smoke"


def squeue(env: dict) -> dict[str, tuple[str, str]]:
    """job id -> (state, comment) of every job SLURM remembers."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%k"], env=env, capture_output=True, text=True).stdout
    return {i: (s, k) for i, s, k in (ln.split("|", 2) for ln in out.splitlines() if ln.count("|") == 2)}


def cancel_train_mid_run(repo: Path, env: dict, seen: dict, done: threading.Event) -> None:
    """Once the train job has written its first snapshot, scancel it (SIGTERM to the stage, as a preemption does).
    squeue is asked only once a snapshot exists, then every 5 s to record the jobs' states (each call is a process and
    an RPC: polling 10 times a second for the whole run took CPU the stages need)."""
    snaps = repo / SMOKE / "snapshots"
    while not done.is_set():
        if "cancelled" in seen:
            seen.update(squeue(env))
            done.wait(5.0)
            continue
        if snaps.is_dir() and any(snaps.glob("step_*")):
            jobs = squeue(env)
            seen.update(jobs)
            running = [i for i, (s, k) in jobs.items() if s == "RUNNING" and k.startswith("rule_train_")]
            if running:
                subprocess.run(["scancel", running[0]], env=env, check=True)
                seen["cancelled"] = (running[0], sorted(p.name for p in snaps.glob("step_*")))
            elif (repo / SMOKE / "train_metrics.json").exists():
                return  # train ended before it was seen running with a snapshot: the test says so
        time.sleep(0.05)


def _write(out: Path, result: dict) -> None:
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.rename(out / "result.json")


def run(out: Path, state: Path) -> dict:
    """Bring the cluster up, run the suite through the profile with the watcher beside it; the result to write."""
    sys.path.insert(0, str(TESTS))
    from e2e_util import copy_repo

    t0 = time.perf_counter()
    up = subprocess.run([str(TESTS / "slurm/up.sh"), str(state)], capture_output=True, text=True, timeout=600)
    if up.returncode:
        why = (up.stderr.strip().splitlines() or [f"tests/slurm/up.sh exited {up.returncode}"])[-1]
        return {"skip": f"no SLURM cluster: {why.removeprefix('error: ')}"}
    up_s = time.perf_counter() - t0
    repo = copy_repo(out / "slurm")
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_TRACKING_URI=f"sqlite:///{repo}/mlflow.db",
               SLURM_CONF=str(state / "slurm.conf"))
    env["PATH"] = os.pathsep.join((str(state / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]))
    seen: dict = {}
    done = threading.Event()
    watcher = threading.Thread(target=cancel_train_mid_run, args=(repo, env, seen, done), daemon=True)
    watcher.start()
    log = out / "slurm.log"
    t1 = time.perf_counter()
    try:
        with open(log, "w") as f:
            slurm = subprocess.run(["snakemake", "--profile", "profiles/slurm", "--config", "suite=smoke",
                                    "--slurm-keep-successful-logs"],
                                   cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    finally:
        done.set()
        watcher.join(timeout=30)
    seen.update(squeue(env))
    return {"returncode": slurm.returncode, "cluster_up_seconds": round(up_s, 1),
            "seconds": round(time.perf_counter() - t1, 1), "seen": seen, "repo": str(repo), "log": str(log),
            "state": str(state)}


def main(out: Path) -> int:
    """Writes OUT/result.json however the run ends (an error or SIGTERM included), after the cluster is stopped."""
    out.mkdir(parents=True, exist_ok=True)
    state = out / "state"
    state.mkdir(exist_ok=True)
    result: dict = {"error": "the run did not finish"}
    try:
        result = run(out, state)
    except BaseException as e:  # noqa: BLE001 (written for the test to report; SIGTERM arrives as SystemExit)
        result = {"error": f"{type(e).__name__}: {e}"}
        raise
    finally:
        subprocess.run([str(TESTS / "slurm/down.sh"), str(state)], capture_output=True, timeout=120)
        _write(out, result)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on the way out (the finally above)
    sys.exit(main(Path(sys.argv[1])))
