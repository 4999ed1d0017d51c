"""Shared fixtures: the repository root, an isolated MLflow store, quiet DVC."""
import os
from pathlib import Path

import pytest
import torch

# Small-tensor loops (samplers on analytic scores, per-row generators) run 20-100x slower with several threads on a
# shared 2-core machine; subprocesses (the end-to-end runs) keep the default.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path_factory, monkeypatch):
    """Every test writes MLflow records to its own SQLite store, never to the project's mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    yield


@pytest.fixture
def root() -> Path:
    return ROOT


def venv_env(extra: dict | None = None) -> dict:
    """Environment for subprocesses: the running interpreter's bin/ first on PATH (python, dvc, snakemake)."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env
