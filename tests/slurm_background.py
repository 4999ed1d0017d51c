"""tests/test_slurm.py's SLURM run in the background of a pytest-xdist session.

The run (tests/slurm/smoke_run.py) is about three minutes, most of them waits on SLURM: a job runs Snakemake twice
inside it before its stage, and the plugin polls job states seconds apart. Run by the test, those minutes held one of
the two workers. Instead, the first worker to finish collecting starts it, detached, in a folder that every worker
sees, when test_slurm.py is among the selected tests; test_slurm.py is collected last (tests/conftest.py) and reads the
run's result.json, by then long written. The controller terminates a run still going when the session ends (the
driver then stops the cluster). Without pytest-xdist the test runs it itself.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock

HERE = Path(__file__).resolve().parent
NAME = "slurm-run"


def _wanted(session) -> bool:
    return any(item.path.name == "test_slurm.py" for item in session.items)


def start(session) -> None:
    """In a pytest-xdist worker, after collection and deselection: start the run once per session."""
    config = session.config
    if not hasattr(config, "workerinput") or config.option.collectonly or not _wanted(session):
        return
    shared = config._tmp_path_factory.getbasetemp().parent  # a worker's basetemp is <session's>/popen-gwN
    out = shared / NAME
    with FileLock(str(shared / f"{NAME}.lock")):
        if out.exists():
            return
        out.mkdir()
        with open(out / "driver.log", "w") as log:
            proc = subprocess.Popen([sys.executable, str(HERE / "slurm/smoke_run.py"), str(out)], cwd=HERE.parent,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (out / "pid").write_text(str(proc.pid))


def started(tmp_path_factory) -> Path | None:
    """The run's folder when a worker of this session started it, else None."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    out = tmp_path_factory.getbasetemp().parent / NAME
    return out if (out / "pid").exists() else None


def result(out: Path, timeout: float) -> dict:
    """The run's result.json, waiting for it (the driver writes one however it ends)."""
    f, deadline = out / "result.json", time.monotonic() + timeout
    while not f.exists():
        if time.monotonic() > deadline:
            log = out / "driver.log"
            raise AssertionError(f"no {f} after {timeout:.0f} s:\n{log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(1.0)
    return json.loads(f.read_text())


def stop(session) -> None:
    """In the pytest-xdist controller when the session ends: terminate a run still going (a session stopped early)."""
    config = session.config
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    out = config._tmp_path_factory.getbasetemp() / NAME
    if not (out / "pid").exists() or (out / "result.json").exists():
        return
    pid = int((out / "pid").read_text())
    try:  # the driver only (the cluster's daemons share its process group): it cancels the jobs, then stops them
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 120  # the driver stops the cluster's daemons (tests/slurm/down.sh)
    while time.monotonic() < deadline and not (out / "result.json").exists():
        time.sleep(0.5)
