"""MLflow lineage: one experiment per suite, a parent run per experiment, a child run per stage.

Tracking never loses results: if MLflow fails, the stage still writes its outputs and says tracking was skipped.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def lineage_tags(root: Path, stage: str) -> dict[str, str]:
    lock = Path(root) / "dvc.lock"
    return {
        "pipeline.stage": stage,
        "git.commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "git.dirty": str(bool(_git(root, "status", "--porcelain", "--untracked-files=no"))).lower(),
        "dvc.lock.sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.exists() else "none",
    }


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """A child run of one stage; every call is a no-op once tracking has failed."""

    def __init__(self, mlflow_mod=None, run_id: str | None = None):
        self._m, self.run_id = mlflow_mod, run_id

    @property
    def active(self) -> bool:
        return self._m is not None

    def _safe(self, fn, *a, **kw):
        if self._m is None:
            return None
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - tracking must never break a stage
            print(f"warning: MLflow tracking skipped from here on ({type(e).__name__}: {e})", file=sys.stderr)
            self._m = None
            return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._safe(lambda: self._m.log_metrics(clean, step=step))

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self._safe(lambda: self._m.log_artifact(str(path), artifact_path))

    def log_artifacts(self, path: Path | str, artifact_path: str | None = None) -> None:
        self._safe(lambda: self._m.log_artifacts(str(path), artifact_path))

    def log_dataset(self, name: str, digest: str, source: str, context: str) -> None:
        """`log_input` of a prepared split; its digest is the split's sha256 (recorded in the DVC-tracked manifest)."""

        def go():
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            ds = MetaDataset(source=resolve_dataset_source(str(source)), name=name, digest=digest[:36])
            self._m.log_input(ds, context=context)

        self._safe(go)


def _setup(root: Path, suite: str):
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import mlflow

    for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." is not the stage's business
        logging.getLogger(name).setLevel(logging.WARNING)

    mlflow.set_tracking_uri(tracking_uri(root))
    name = f"score-repro/{suite}"
    if mlflow.get_experiment_by_name(name) is None:  # artifacts beside the store, not in the working directory
        mlflow.create_experiment(name, artifact_location=(Path(root).resolve() / "mlruns").as_uri())
    mlflow.set_experiment(name)
    return mlflow


def _parent_run(mlflow, experiment: str) -> str:
    found = mlflow.search_runs(filter_string=f"tags.`pipeline.experiment` = '{experiment}' and tags.`pipeline.kind` = 'parent'",
                               max_results=1, output_format="list")
    if found:
        return found[0].info.run_id
    run = mlflow.start_run(run_name=experiment, tags={"pipeline.experiment": experiment, "pipeline.kind": "parent"})
    mlflow.end_run()
    return run.info.run_id


@contextlib.contextmanager
def stage_run(root: Path, suite: str, experiment: str, stage: str, params: dict | None = None) -> Iterator[Tracker]:
    """Open the stage's child run under the experiment's parent run (or a no-op tracker if MLflow fails)."""
    mlflow, run = None, None
    if os.environ.get("PIPELINE_TRACKING", "on") == "off":
        yield Tracker()
        return
    try:
        mlflow = _setup(root, suite)
        parent = _parent_run(mlflow, experiment)
        tags = {**lineage_tags(root, stage), "pipeline.experiment": experiment, "pipeline.kind": "stage",
                "mlflow.parentRunId": parent}
        run = mlflow.start_run(run_name=f"{experiment}/{stage}", tags=tags)
        if params:
            flat = {k: str(v)[:500] for k, v in flatten(params).items()}
            items = list(flat.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i:i + 100]))
    except Exception as e:  # noqa: BLE001
        print(f"warning: MLflow tracking skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
        if run is not None:
            with contextlib.suppress(Exception):
                mlflow.end_run(status="FAILED")
        mlflow, run = None, None
    tracker = Tracker(mlflow, run.info.run_id if run else None)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if tracker.active:
            tracker._safe(lambda: mlflow.end_run(status=status))


def log_dataset_stage(root: Path, dataset: str, stage: str, folder: Path) -> None:
    """Data stages are per dataset: their runs live in the `datasets` experiment."""
    import json

    with stage_run(root, "datasets", dataset, stage) as t:
        mf = json.loads((folder / "manifest.json").read_text())
        for split, info in mf["splits"].items():
            t.log_metrics({f"{split}.count": info["count"]})
            t.log_dataset(f"{dataset}-{split}", info["sha256"], str(folder / f"{split}.npz"), split)
        t.log_artifact(folder / "manifest.json")
