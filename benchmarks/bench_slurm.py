"""What a SLURM job costs beyond its stage: the smoke suite through profiles/slurm on a one-node test cluster
(tests/slurm/up.sh), against `snakemake -c 2` on the same machine.

    python benchmarks/bench_slurm.py [--suite smoke] [--variants before,after] [--no-local]

Variants: `after` is profiles/slurm as it is; `before` is the same with the plugin's default first status poll (40 s).
Prints the cluster's bring-up time, each run's wall time and, per SLURM job, its queue wait (submit -> start), its
overhead inside the job (SLURM's elapsed time minus the stage command's, from the job log's timestamps: two Snakemake
start-ups, srun, teardown) and the delay until Snakemake noticed the job had ended (status polling). Needs root
(the cluster's daemons); exit status 2 with one line when the cluster cannot be started."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from e2e_util import copy_repo  # noqa: E402

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]", re.M)
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


def stamp(text: str) -> float:
    return datetime.strptime(text, "%a %b %d %H:%M:%S %Y").timestamp()


def slurm_times(env: dict) -> dict[str, dict[str, float]]:
    """job id -> submit / start / end (epoch seconds) of every job SLURM still remembers (MinJobAge)."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%V|%S|%e|%T"], env=env, capture_output=True,
                         text=True, check=True).stdout
    times = {}
    for line in out.splitlines():
        jid, *ts, state = line.split("|")
        if state == "COMPLETED":
            times[jid] = dict(zip(("submit", "start", "end"), (datetime.fromisoformat(t).timestamp() for t in ts)))
    return times


def command_seconds(log: Path) -> float:
    """The stage commands' time inside one job: from the innermost Snakemake's job start to its finish stamps."""
    text = log.read_text(errors="replace")
    inner = text.split("SNAKEMAKE\n=========")[-1]  # the Snakemake that srun started
    marks = [stamp(m) for m in STAMP.findall(inner)]
    return marks[-1] - marks[0] if len(marks) >= 2 else float("nan")


def noticed(outer: str) -> dict[str, float]:
    """SLURM job id -> when the submitting Snakemake reported it finished."""
    ids, out, last = {}, {}, None
    for line in outer.splitlines():
        m = re.match(r"Job (\S+) has been submitted with SLURM jobid (\d+)", line)
        if m:
            ids[m.group(1)] = m.group(2)
        m = STAMP.match(line)
        if m:
            last = stamp(m.group(1))
        m = re.match(r"Finished jobid: (\d+)", line)
        if m and m.group(1) in ids and last:
            out[ids[m.group(1)]] = last
    return out


def run_suite(repo: Path, cmd: list[str], env: dict, poll: bool = False) -> tuple[float, str, dict]:
    """Wall time and output of one run; with `poll`, SLURM's job times read every 2 s (it forgets a job MinJobAge
    after its end)."""
    t0, times = time.perf_counter(), {}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        while proc.poll() is None:
            if poll:
                times.update(slurm_times(env))
            time.sleep(2)
        secs = time.perf_counter() - t0
        if poll:
            times.update(slurm_times(env))
        log.seek(0)
        text = log.read()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-2000:]}")
    return secs, text, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--no-local", action="store_true", help="skip the `snakemake -c 2` reference run")
    args = ap.parse_args()
    variants = {"before": ["--slurm-init-seconds-before-status-checks", "40"], "after": []}
    bad = [v for v in args.variants.split(",") if v not in variants]
    if bad:
        print(f"error: --variants: unknown {bad}; choose from {sorted(variants)}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    state = tmp / "cluster"
    t0 = time.perf_counter()
    up = subprocess.run([str(ROOT / "tests/slurm/up.sh"), str(state)], capture_output=True, text=True)
    if up.returncode:
        print(f"error: no SLURM cluster: {(up.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
        return 2
    print(f"cluster bring-up (up.sh, packages already installed): {time.perf_counter() - t0:.1f} s")
    env = dict(os.environ, PATH=f"{state}/bin{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               SLURM_CONF=str(state / "slurm.conf"), DVC_NO_ANALYTICS="1")
    try:
        if not args.no_local:
            repo = copy_repo(tmp / "local")
            env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo}/mlflow.db"
            secs, _, _ = run_suite(repo, ["snakemake", "-c", "2", "--config", f"suite={args.suite}"], env)
            print(f"local snakemake -c 2, suite {args.suite}: {secs:.0f} s")
        for name in args.variants.split(","):
            repo = copy_repo(tmp / name)
            env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo}/mlflow.db"
            cmd = ["snakemake", "--profile", "profiles/slurm", "--config", f"suite={args.suite}",
                   "--slurm-keep-successful-logs", *variants[name]]
            secs, outer, times = run_suite(repo, cmd, env, poll=True)
            seen = noticed(outer)
            rows = []
            for jid, log in SUBMITTED.findall(outer):
                if jid in times:
                    t = times[jid]
                    rows.append((t["start"] - t["submit"], t["end"] - t["start"] - command_seconds(Path(log)),
                                 seen.get(jid, float("nan")) - t["end"]))
            mean = [sum(c) / len(rows) for c in zip(*rows)] if rows else [float("nan")] * 3
            print(f"{name}: SLURM, suite {args.suite}: {secs:.0f} s, {len(rows)} jobs; per job (mean): queue "
                  f"{mean[0]:.1f} s, in-job overhead {mean[1]:.1f} s, noticed {mean[2]:.1f} s after its end")
    finally:
        subprocess.run([str(ROOT / "tests/slurm/down.sh"), str(state)], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
