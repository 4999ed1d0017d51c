"""The MLflow UI's results view of a suite as a reviewer's browser shows it: `mlflow server` on a free loopback port
over the store, headless Chromium on the view's URL (pipeline/io/mlflow_view.py): a screenshot and the rendered DOM."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from pipeline.io import mlflow_view
from pipeline.report import browser

SIZE = (1920, 1000)
BUDGET_MS = 20000  # Chromium's virtual time for the single-page app to fetch and draw the runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(uri: str, timeout: float = 90) -> Iterator[str]:
    """`mlflow server` over the store `uri` on 127.0.0.1 (its artifacts served from the store's own locations); yields
    its base URL, stops its process group afterwards."""
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow") or "mlflow"
    port = _free_port()
    proc = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", uri], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode})")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy in {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to a server's process group (started with start_new_session: uvicorn / gunicorn workers included),
    SIGKILL after 20 s; returns once the whole group is gone (workers leave after their parent), SIGKILL to what is
    left after 10 s more."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def experiment_id(uri: str, suite: str) -> str:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_experiment_by_name(f"score-repro/{suite}")
    if exp is None:
        raise LookupError(f"no MLflow experiment score-repro/{suite} in {uri}: run the suite first")
    return exp.experiment_id


def render(url: str, png: Path | None = None, size: tuple[int, int] = SIZE, exe: str | None = None) -> str:
    """The DOM of `url` after the app has drawn it (its visible text, tags stripped); with `png`, a screenshot too."""
    exe = exe or browser.find()
    if exe is None:
        raise FileNotFoundError(f"Chromium not found (apt-get install chromium, or set {browser.ENV_VAR})")
    args = [f"--virtual-time-budget={BUDGET_MS}"]
    if png is not None:
        tmp = Path(png).with_name(f".{Path(png).name}.tmp.png")
        browser._run(exe, [*args, f"--screenshot={tmp}", url], *size)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise RuntimeError(f"Chromium wrote no screenshot of {url}")
        os.replace(tmp, png)
    r = browser._run(exe, [*args, "--dump-dom", url], *size)
    dom = r.stdout if r else ""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def results_view(uri: str, suite: str, png: Path | None = None) -> tuple[str, str]:
    """(the view's URL on a temporary server, the rendered text) of the suite's results view; `png`: its screenshot."""
    exp = experiment_id(uri, suite)
    with server(uri) as base:
        url = mlflow_view.runs_url(base, exp)
        return url, render(url, png)
