"""profiles/slurm on a real one-node SLURM cluster (tests/slurm/up.sh: munged, slurmctld and slurmd on this machine,
no accounting, no cgroups): the smoke suite runs every stage but `download` (a local rule) as a SLURM job, with
metrics equal to a local run of the same suite; and a training job cancelled mid-run (`scancel`) is resubmitted by the
profile's `retries`, resumes from its snapshot and ends with the same metrics and weights. One SLURM run serves both
tests (tests/slurm/smoke_run.py; under pytest-xdist it runs in the background from the session's start and this file
is collected last); the local run is the session's (test_e2e.py's `dvc repro`, shared through
e2e_util.smoke_reference). Skipped, with one line saying why, where SLURM cannot be started."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import slurm_background
import torch
from conftest import ROOT
from e2e_util import MODEL, SMOKE, smoke_reference, suite_metrics

from pipeline.workflow import dag


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The smoke suite through profiles/slurm, its train job cancelled once mid-run (tests/slurm/smoke_run.py: started
    in the background when the session began, or run here), and the session's local run of the same suite
    (e2e_util.smoke_reference: test_e2e.py's `dvc repro`, or one made here when that file is not run)."""
    out = slurm_background.started(tmp_path_factory)
    if out is None:
        out = tmp_path_factory.mktemp("slurm-run")
        r = subprocess.run([sys.executable, str(ROOT / "tests/slurm/smoke_run.py"), str(out)], capture_output=True,
                           text=True, timeout=1500)
        assert r.returncode == 0 and (out / "result.json").exists(), (r.stdout + r.stderr)[-3000:]
    result = slurm_background.result(out, timeout=1500)
    if "skip" in result:
        pytest.skip(result["skip"])
    assert "error" not in result, f"tests/slurm/smoke_run.py: {result['error']}"
    print(f"\nsmoke suite on SLURM: {result['seconds']:.0f} s (cluster up in {result['cluster_up_seconds']:.1f} s)")
    text = Path(result["log"]).read_text()
    assert result["returncode"] == 0, f"SLURM run failed:\n{text[-3000:]}"
    return {"repo": Path(result["repo"]), "local": smoke_reference(tmp_path_factory), "seen": result["seen"],
            "out": text, "state": Path(result["state"])}


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
