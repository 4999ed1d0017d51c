"""profiles/slurm on a real one-node SLURM cluster (tests/slurm/up.sh: munged, slurmctld and slurmd on this machine,
no accounting, no cgroups): the smoke suite runs every stage but `download` (a local rule) as a SLURM job, with
metrics equal to a local run of the same suite; and a training job cancelled mid-run (`scancel`) is resubmitted by the
profile's `retries`, resumes from its snapshot and ends with the same metrics and weights. One SLURM run serves both
tests; the local run is the session's (test_e2e.py's `dvc repro`, shared through e2e_util.smoke_reference). Skipped,
with one line saying why, where SLURM cannot be started."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from e2e_util import MODEL, SMOKE, copy_repo, smoke_reference, suite_metrics

from pipeline.workflow import dag


def _env(extra: dict) -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", **extra)
    env["PATH"] = os.pathsep.join(p for p in (extra.get("PATH"), str(Path(sys.executable).parent), os.environ["PATH"]) if p)
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    t0 = time.perf_counter()
    up = subprocess.run([str(ROOT / "tests/slurm/up.sh"), str(state)], capture_output=True, text=True, timeout=600)
    if up.returncode:
        why = (up.stderr.strip().splitlines() or [f"tests/slurm/up.sh exited {up.returncode}"])[-1]
        pytest.skip(f"no SLURM cluster: {why.removeprefix('error: ')}")
    print(f"\nSLURM cluster up in {time.perf_counter() - t0:.1f} s")
    yield {"PATH": f"{state}/bin", "SLURM_CONF": str(state / "slurm.conf"), "state": state}
    subprocess.run([str(ROOT / "tests/slurm/down.sh"), str(state)], capture_output=True, timeout=120)


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


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The smoke suite through profiles/slurm, its train job cancelled once mid-run, and the session's local run of
    the same suite (e2e_util.smoke_reference: test_e2e.py's `dvc repro`, or one made here when that file is not run)."""
    repo = copy_repo(tmp_path_factory.mktemp("slurm-run") / "slurm")
    env = _env({"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db", **{k: cluster[k] for k in ("PATH", "SLURM_CONF")}})
    seen, done = {}, threading.Event()
    watcher = threading.Thread(target=cancel_train_mid_run, args=(repo, env, seen, done))
    watcher.start()
    t0 = time.perf_counter()
    log = repo.parent / "slurm.log"
    try:
        # The first status poll 1 s after a submission (the profile's 5 s suits a real cluster's queue); the plugin
        # waits 10 s longer after each poll that finds nothing ended: polls at 1, 12 and 33 s. A smoke job takes 13-22 s
        # here (the job runs Snakemake again inside it, then the stage), so each level of the DAG costs about 33 s.
        with open(log, "w") as f:
            slurm = subprocess.run(["snakemake", "--profile", "profiles/slurm", "--config", "suite=smoke",
                                    "--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", "1"],
                                   cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    finally:
        done.set()
        watcher.join()
    seen.update(squeue(env))
    print(f"\nsmoke suite on SLURM: {time.perf_counter() - t0:.0f} s")
    out = log.read_text()
    assert slurm.returncode == 0, f"SLURM run failed:\n{out[-3000:]}"
    return {"repo": repo, "local": smoke_reference(tmp_path_factory), "seen": seen, "out": out,
            "state": cluster["state"]}


def job_logs(repo: Path) -> dict[str, str]:
    """SLURM job id -> its log (the profile's run keeps every job's log)."""
    return {p.stem: p.read_text(errors="replace") for p in (repo / ".snakemake/slurm_logs").rglob("*.log")}


@pytest.mark.timeout(1500)
def test_smoke_suite_runs_as_slurm_jobs_with_local_metrics(runs):
    repo, local = runs["repo"], runs["local"]
    stages = dag.suite_stages(repo, "smoke")
    on_cluster = {s.cmd for s in stages if s.kind != "download"}
    assert len(on_cluster) == 10
    # each stage's command ran inside a job that slurmctld allocated and saw complete
    ctld = (runs["state"] / "slurmctld.log").read_text()
    ran = {}
    for jid, log in job_logs(repo).items():
        if f"_job_complete: JobId={jid} WEXITSTATUS 0" in ctld and f"sched: Allocate JobId={jid} " in ctld:
            for cmd in on_cluster:
                if f"Shell command: {cmd}\n" in log and "Finished jobid" in log:
                    ran.setdefault(cmd, jid)
    assert set(ran) == on_cluster, f"not run as a SLURM job: {sorted(on_cluster - set(ran))}"
    assert "localrule download:" in runs["out"]  # the one local rule ran on the submitting machine
    mine, theirs = suite_metrics(repo), suite_metrics(local)
    assert set(mine) == set(theirs) and f"{SMOKE}/eval/pc.json" in mine and f"{SMOKE}/likelihood.json" in mine
    for name in sorted(mine):
        assert mine[name] == theirs[name], f"{name}: SLURM run differs from the local run"


@pytest.mark.timeout(1500)
def test_cancelled_train_job_resumes_with_same_metrics(runs):
    repo, local = runs["repo"], runs["local"]
    assert "cancelled" in runs["seen"], "the train job was never seen running with a snapshot"
    jid, snaps = runs["seen"]["cancelled"]
    assert snaps, "cancelled before the first snapshot"
    assert runs["seen"].get(jid, ("?",))[0] in ("CANCELLED", "FAILED"), runs["seen"].get(jid)
    # the profile's retries resubmitted it; the new job resumed from the snapshot and finished
    later = [i for i, (s, k) in runs["seen"].items() if i != "cancelled" and k.startswith("rule_train_")
             and s == "COMPLETED" and int(i) > int(jid)]
    assert later, f"no completed train job after the cancelled {jid}"
    assert "resuming from snapshot" in job_logs(repo)[later[0]]
    train = json.loads((repo / SMOKE / "train_metrics.json").read_text())
    assert train["step"] == 300 and train["resumed_from"] >= 100
    ref = json.loads((local / SMOKE / "train_metrics.json").read_text())
    assert ref["resumed_from"] == 0
    for key in ("final_loss", "ema_eval_loss", "snapshot_fingerprint", "provenance"):
        assert train[key] == ref[key], key
    mine, theirs = (torch.load(r / MODEL, weights_only=False) for r in (repo, local))
    assert mine.keys() == theirs.keys()
    for part in mine:  # plain and EMA weights bit for bit, and the params and step they record
        a, b = (x[part] if isinstance(x[part], dict) else {"": x[part]} for x in (mine, theirs))
        assert a.keys() == b.keys(), part
        assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a), part
