"""Shared fixtures: the repository root, an isolated MLflow store, quiet DVC."""
import os
from pathlib import Path

import pytest
import slurm_background
import torch

# Small-tensor loops (samplers on analytic scores, per-row generators) run 20-100x slower with several threads on a
# shared 2-core machine, where the pytest workers and their subprocesses already fill every core: one thread each, in
# the workers and in the subprocesses they start (stages, benchmarks; a Snakemake job gets its rule's one thread anyway).
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

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


def assert_close_f32(actual, expected, rtol: float = 1e-4, *, scale: float | None = None, floor: float = 1e-12,
                     what: str = "") -> float:
    """max|actual - expected| <= rtol * max(scale, tiny) + floor, with scale = max|expected| unless given.

    For float32 results compared with stored outputs or with another computation path (batched vs unbatched,
    1 vs 2 processes, a reference implementation). Their difference is rounding, and rounding depends on the CPU's
    kernels (AVX-512, AVX2 or plain loops, oneDNN or not, FMA contraction, how a reduction or a batch is split): a few
    ulp of the largest values involved, about 1e-7 relative per operation, grown by a network's depth. An absolute
    bound such as 1e-5 therefore holds on one machine and not on another; a bound relative to the output's
    magnitude does not depend on the kernels. The default 1e-4 is far below what a real bug (a wrong weight mapping,
    scaling, or formula) produces, an O(1) relative error; a call site with a smaller-effect bug to catch passes a
    smaller rtol or says why 1e-4 still separates it. float64 comparisons keep their own tight absolute bounds.
    Returns the measured error / bound ratio. Works on tensors, NumPy arrays and numbers; shapes must match exactly
    and a NaN or inf anywhere fails."""
    a = torch.as_tensor(actual).detach().cpu().double()
    e = torch.as_tensor(expected).detach().cpu().double()
    label = f"{what}: " if what else ""
    assert a.shape == e.shape, f"{label}shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    assert torch.isfinite(a).all() and torch.isfinite(e).all(), f"{label}non-finite values"
    err = float((a - e).abs().max()) if a.numel() else 0.0
    ref = float(e.abs().max()) if scale is None and e.numel() else float(scale or 0.0)
    bound = rtol * max(ref, torch.finfo(torch.float32).tiny) + floor
    assert err <= bound, (f"{label}max|actual - expected| = {err:.3e} > bound {bound:.3e} = {rtol:g} x "
                          f"{'max|expected|' if scale is None else 'scale'} {ref:.3e} + {floor:g} "
                          f"(error / bound = {err / bound:.3g})")
    return err / bound


# `make test-fast` leaves these files out (`-m "not slow"`): each takes from tens of seconds to minutes on 2 cores
# (end-to-end DAG runs, real trainings, stage subprocesses, MLflow servers, the browser). `make test` runs them all.
SLOW_FILES = {
    "test_e2e.py", "test_provenance.py", "test_train.py", "test_toy.py", "test_training_seeds.py",
    "test_mlflow_server.py", "test_report_page.py", "test_tracking.py", "test_class_conditional_stage.py",
    "test_controllable_stage.py", "test_dag.py", "test_launch.py", "test_device.py", "test_speed_switches.py",
    "test_group_norm_act.py", "test_names_paths.py", "test_atomic.py", "test_layering.py", "test_profiles.py",
    "test_slurm.py",
    "test_rehearsal_run.py",
}


# The longest files (seconds of one worker on 2 cores, measured with --durations): started first, so that under
# `-n N --dist loadfile` no worker is left with one of them while the others idle at the end (pytest-xdist hands
# files out in collection order).
LONGEST_FIRST = ("test_e2e.py", "test_rehearsal_run.py", "test_launch.py", "test_device.py",
                 "test_train.py", "test_evaluate_stage.py", "test_names_paths.py")


# Collected last: test_slurm.py reads the result of a SLURM run that under pytest-xdist runs in the background from
# the session's start (tests/slurm_background.py), its minutes of waiting on SLURM beside the other files.
LAST = ("test_slurm.py",)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    rank.update({name: len(rank) + 1 + k for k, name in enumerate(LAST)})
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest keep their order


def pytest_collection_finish(session):
    slurm_background.start(session)


def pytest_sessionfinish(session):
    slurm_background.stop(session)
