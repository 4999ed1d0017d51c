"""MLflow lineage: one experiment per suite; in it a suite run, under it a run per experiment, under that a run per
stage. The evaluate stage's run is the result run of an (experiment, sampler): kind `result`, with the sampler's
settings, its NFE and every metric (pipeline/stages/evaluate.py). Params follow the params files' dotted keys, a
sampler setting's under `sampler.`; tags `pipeline.*` say what a run is (experiment, sde, model, sampler, ...).

Tracking never loses results: if MLflow fails, the stage still writes its outputs and says tracking was skipped.
The tags that describe a stage's outputs (their DVC digests, git's state) are set when it has written them
(pipeline/io/lineage.py, called by `python -m pipeline` after the outputs are stamped).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Iterator

from pipeline.io import provenance

# MLflow's HTTP client retries 7 times with exponential backoff (minutes) before giving up; a stage should find out
# in seconds that its server is gone. Explicit settings in the environment win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PROBE_TIMEOUT_S = 3.0
OFF = "off (PIPELINE_TRACKING=off)"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def store_lock_file(uri: str) -> Path | None:
    """`<db>.lock` beside the file of a SQLite store (sqlite:///<path>), or None: other stores (a server, in-memory
    SQLite) need no lock."""
    m = re.match(r"sqlite(\+\w+)?:///([^?]+)", uri)
    return Path(m.group(2) + ".lock") if m and m.group(2) != ":memory:" else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive flock on the store's lock file (see store_lock_file), so that stages started together create
    a new SQLite store (its alembic migrations), the experiment and the parent run one at a time. Raises OSError when
    the lock file cannot be opened."""
    path = store_lock_file(uri)
    if path is None:
        yield
        return
    with open(path, "a") as f:  # never deleted: unlinking a lock file others wait on would let two processes in
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why an http(s) tracking server cannot be reached (a TCP connect within `timeout`), or None."""
    u = urllib.parse.urlsplit(uri)
    if u.scheme not in ("http", "https"):
        return None
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
        with socket.create_connection((u.hostname or "localhost", port), timeout=timeout):
            return None
    except (OSError, ValueError) as e:
        return f"MLflow server {uri} unreachable ({type(e).__name__}: {e})"


# --- DVC hashes -------------------------------------------------------------------------------------------------

def dvc_md5(path: Path | str, root: Path | str | None = None) -> str:
    """The md5 DVC records for `path` in dvc.lock, computed by DVC itself: a file's md5, or "<md5>.dir" for a directory,
    leaving out what the .dvcignore files of the repository at `root` exclude (`!` re-includes honoured).

    In an initialized repository DVC's state database supplies the md5 of files it has hashed before (by inode, size
    and mtime), so data that `dvc repro` just checked is not read again. Raises whatever DVC raises."""
    from dvc.fs import MemoryFileSystem
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB

    path = Path(path).resolve()
    with Repo(str(root or path.parent), uninitialized=True) as repo:
        odb = repo.cache.local or HashFileDB(MemoryFileSystem(), "/")  # no .dvc folder: nothing is stored either way
        _, _, obj = build(odb, str(path), repo.fs, "md5", ignore=repo.dvcignore, dry_run=True)
    return obj.hash_info.value


def _rel(path: Path, root: Path) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def lock_file(root: Path, suite: str | None = None) -> Path:
    """The dvc.lock of the running stage: beside the dvc.yaml named by $DVC_STAGE (set by `dvc repro`), else the
    suite's (dvc.yaml for `default`, pipelines/<suite>/dvc.yaml for the others), else the root one."""
    root = Path(root)
    stage = os.environ.get("DVC_STAGE", "")
    if ":" in stage:
        base = Path(os.environ.get("DVC_ROOT") or root)
        f = (base / stage.rsplit(":", 1)[0]).parent / "dvc.lock"
        if f.exists():
            return f
    if suite and suite != "default":
        f = root / "pipelines" / suite / "dvc.lock"
        if f.exists():
            return f
    return root / "dvc.lock"


def _lock_files(root: Path, suite: str | None) -> list[Path]:
    first = lock_file(root, suite)
    others = [Path(root) / "dvc.lock", *sorted((Path(root) / "pipelines").glob("*/dvc.lock"))]
    return [f for f in dict.fromkeys([first, *others]) if f.is_file()]


def _stages_of(f: Path) -> dict:
    """The `stages` mapping of a dvc.yaml or dvc.lock ({} when the file is missing), parsed once per version."""
    if not f.exists():
        return {}
    st = f.stat()
    return _parsed_stages(f, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _parsed_stages(f: Path, _mtime_ns: int, _size: int) -> dict:
    import yaml

    # libyaml's parser where PyYAML has it: the default suite's dvc.lock (230 kB) takes 1.6 s in pure Python
    stages = (yaml.load(f.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}).get("stages", {})
    if not isinstance(stages, dict):
        raise AttributeError(f"{f}: stages is not a mapping")
    return stages


def locked_md5(root: Path, path: Path | str, suite: str | None = None) -> tuple[str, Path] | tuple[None, None]:
    """(md5, lock file) of the DVC output `path` as some dvc.lock of the repository records it, or (None, None)."""
    import yaml

    target = Path(path).resolve()
    for lock in _lock_files(Path(root), suite):
        try:
            stages, defs = _stages_of(lock), _stages_of(lock.with_name("dvc.yaml"))
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        for name, entry in stages.items():
            wdir = lock.parent / ((defs.get(name) or {}).get("wdir") or ".")
            for out in (entry or {}).get("outs", []) or []:
                if (wdir / out.get("path", "")).resolve() == target and out.get("md5"):
                    return out["md5"], lock
    return None, None


def dataset_digest(root: Path, path: Path | str, suite: str | None = None) -> tuple[str, str, str | None]:
    """(digest, where it comes from, what dvc.lock records) for the DVC-tracked data at `path`.

    The digest is DVC's md5 of the data as it is now; it equals the dvc.lock entry whenever the lock is current
    ("dvc.lock"); when no lock records the path, or records other content (a stage that has not been committed yet,
    or data changed outside DVC), it is what DVC computes ("computed"). Where DVC cannot hash the data, the digest is
    "unknown" and the source says why: tracking never fails a stage."""
    locked, lock = locked_md5(root, path, suite)
    try:
        digest = dvc_md5(path, root)
    except Exception as e:  # noqa: BLE001 - DVC missing, broken or refusing the folder: say so, lose nothing
        text = str(e).strip()
        return "unknown", f"unknown (DVC could not hash it: {type(e).__name__}: {text.splitlines()[0] if text else ''})", locked
    if locked == digest:
        return digest, f"dvc.lock ({_rel(lock, root)})", locked
    return digest, "computed by DVC (" + ("no dvc.lock records it)" if locked is None else "dvc.lock records other content)"), locked


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def lineage_tags(root: Path, stage: str, suite: str | None = None) -> dict[str, str]:
    """The tags a stage run gets when it starts: the stage, the commit, the dvc.lock that will record it, the
    fingerprint of its inputs. Its outputs' digests and git's dirty state are set when it ends (lineage.py)."""
    lock = lock_file(root, suite)
    tags = {
        "pipeline.stage": stage,
        "git.commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "dvc.lock.path": _rel(lock, root) if lock.exists() else "none",
    }
    if os.environ.get("DVC_STAGE"):
        tags["dvc.stage"] = os.environ["DVC_STAGE"]
    record = provenance.current()  # the fingerprint of the inputs the stage started with (pipeline/io/provenance.py)
    if record:
        tags.update({f"pipeline.fingerprint{'' if k == 'fingerprint' else '.' + k}": v for k, v in record.items()
                     if k in (*provenance.PARTS, "fingerprint")})
    return tags


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


SEP = " · "  # run names: `ncsnpp_cont · heun`, `ncsnpp_cont · train`, `suite · default`
OPENED: list[str] = []  # the stage runs this process opened: `python -m pipeline` tags them when the stage ends


def run_name(experiment: str | None, stage: str) -> str:
    """A stage run's name: `<experiment> · <stage>` (`evaluate/heun` -> the result run `<experiment> · heun`)."""
    kind, _, sampler = stage.partition("/")
    words = [sampler] if kind == "evaluate" else [sampler, kind] if sampler else [kind]
    return SEP.join([experiment, *words] if experiment else words)


def hardware_tags(processes: int = 1) -> dict[str, str]:
    """`hardware.*` tags: CPU model and count, GPU, torch and CUDA versions (torch only where the stage imported it:
    a data stage pays no torch import for its tags)."""
    from pipeline.io import hardware

    if "torch" in sys.modules:
        hw = hardware.describe(processes)
    else:
        hw = {"cpu": hardware.cpu_model(), "cpu_count": os.cpu_count(), "processes": processes}
    return {f"hardware.{k}": "none" if v is None else str(v) for k, v in hw.items()}


class Tracker:
    """A stage's run; every call is a no-op once tracking has failed. `status` is "logged" while the run takes every
    record, else "skipped: <reason>" or OFF. `parent_id` / `suite_id`: the experiment's and the suite's runs."""

    def __init__(self, mlflow_mod=None, run_id: str | None = None, root: Path | None = None, suite: str | None = None,
                 status: str | None = None, parent_id: str | None = None, suite_id: str | None = None):
        self._m, self.run_id, self.root, self.suite = mlflow_mod, run_id, Path(root or "."), suite
        self.parent_id, self.suite_id = parent_id, suite_id
        self.status = status or ("logged" if mlflow_mod is not None else "skipped: no MLflow run")

    @property
    def active(self) -> bool:
        return self._m is not None

    def record(self) -> dict[str, str | None]:
        """What a stage writes into its outputs about its tracking: {"mlflow_run_id": the run's id or None,
        "mlflow_status": status}. After a failed call the id (if any) names the run that holds the earlier records."""
        return {"mlflow_run_id": self.run_id, "mlflow_status": self.status}

    def _safe(self, fn, *a, **kw):
        if self._m is None:
            return None
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - tracking must never break a stage
            print(f"warning: MLflow tracking skipped from here on ({type(e).__name__}: {e})", file=sys.stderr)
            self._m = None
            self.status = f"skipped: an MLflow call failed mid-stage ({_why(e)})"
            return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, run_id: str | None = None) -> None:
        """Numbers of `metrics` (others dropped) at `step`, on this run or on `run_id` (the experiment's, the suite's)."""
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if run_id:
            self._safe(lambda: [self._m.MlflowClient().log_metric(run_id, k, v, step=step or 0) for k, v in clean.items()])
        else:
            self._safe(lambda: self._m.log_metrics(clean, step=step))

    def log_params(self, params: dict[str, Any]) -> None:
        """Nested or dotted params, flattened to dotted keys (values cut to 500 characters), 100 per call."""
        items = [(k, str(v)[:500]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self._safe(lambda: self._m.log_params(dict(items[i:i + 100])))

    def set_tags(self, tags: dict[str, Any], run_id: str | None = None) -> None:
        clean = {k: str(v) for k, v in tags.items() if v is not None}
        if run_id:
            self._safe(lambda: [self._m.MlflowClient().set_tag(run_id, k, v) for k, v in clean.items()])
        else:
            self._safe(lambda: self._m.set_tags(clean))

    def describe(self, text: str, run_id: str | None = None) -> None:
        """The run's description (Markdown), shown on its page and in the runs table's description column."""
        self.set_tags({"mlflow.note.content": text}, run_id)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None, run_id: str | None = None) -> None:
        if run_id:
            self._safe(lambda: self._m.MlflowClient().log_artifact(run_id, str(path), artifact_path))
        else:
            self._safe(lambda: self._m.log_artifact(str(path), artifact_path))

    def experiment_runs(self) -> dict[str, str]:
        """{experiment: its run id} of the runs under this suite's run."""
        runs = self._safe(lambda: _find(self._m, suite=self.suite, kind="parent")) or []
        return {r.data.tags["pipeline.experiment"]: r.info.run_id for r in reversed(runs)}  # the oldest one wins

    def log_artifacts(self, path: Path | str, artifact_path: str | None = None, run_id: str | None = None) -> None:
        if run_id:
            self._safe(lambda: self._m.MlflowClient().log_artifacts(run_id, str(path), artifact_path))
        else:
            self._safe(lambda: self._m.log_artifacts(str(path), artifact_path))

    def log_image(self, png: Path | str, key: str, step: int | None = None) -> None:
        """A PNG as a stepped image (the run's image grid and chart: `key` at `step`, e.g. the training step)."""
        def go():
            from PIL import Image

            with Image.open(png) as im:
                self._m.log_image(im.convert("RGB"), key=key, step=step or 0, synchronous=True)
        self._safe(go)

    def log_figure(self, fig, artifact_file: str, run_id: str | None = None) -> None:
        """A matplotlib figure (left open: the caller closes it), shown on the run's artifacts page."""
        def go():
            if run_id:
                self._m.MlflowClient().log_figure(run_id, fig, artifact_file)
            else:
                self._m.log_figure(fig, artifact_file)
        self._safe(go)

    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        """Columns of equal length as an MLflow table (JSON artifact, shown as a table on the run's page)."""
        self._safe(lambda: self._m.log_table(data=data, artifact_file=artifact_file))

    def log_dataset(self, name: str, sha256: str | None, source: Path | str, context: str) -> None:
        """`log_input` of prepared data at `source` (a DVC output folder such as data/prepared/<ds>, or a file in it).

        The dataset's digest is its DVC hash: the md5 dvc.lock records for the folder ("<md5>.dir"; 36 characters,
        MLflow's limit), computed by DVC when no current lock records it; the input's tags say which, and keep
        `sha256` (the manifest's hash of a split) beside it."""

        def go():
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            digest, origin, locked = dataset_digest(self.root, source, self.suite)
            tags = {"dvc.md5": digest, "dvc.md5.source": origin}
            if locked and locked != digest:
                tags["dvc.lock.md5"] = locked
            if sha256:
                tags["sha256"] = sha256
            with warnings.catch_warnings():  # two registered local sources match a path: "interpreted in multiple ways"
                warnings.simplefilter("ignore", UserWarning)
                src = resolve_dataset_source(Path(source).resolve().as_uri())
            ds = MetaDataset(source=src, name=name, digest=digest)
            self._m.log_input(ds, context=context, tags=tags)

        self._safe(go)


def _why(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _setup(root: Path, suite: str):
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for k, v in HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    why = probe(tracking_uri(root))
    if why:
        raise ConnectionError(why)
    import mlflow

    for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." is not the stage's business
        logging.getLogger(name).setLevel(logging.WARNING)

    mlflow.set_tracking_uri(tracking_uri(root))
    name = f"score-repro/{suite}"
    if mlflow.get_experiment_by_name(name) is None:  # artifacts beside the store, not in the working directory
        try:
            mlflow.create_experiment(name, artifact_location=(Path(root).resolve() / "mlruns").as_uri())
        except Exception:  # noqa: BLE001 - a stage running beside this one created it first (snakemake -c N)
            if mlflow.get_experiment_by_name(name) is None:
                raise
    exp = mlflow.set_experiment(name)
    from pipeline.io import mlflow_view

    missing = {k: v for k, v in mlflow_view.experiment_tags(suite).items() if exp.tags.get(k) != v}
    for k, v in missing.items():  # the "Model training" view and the results view of `make ui`
        mlflow.set_experiment_tag(k, v)
    return mlflow


def _find(mlflow, **tags: str) -> list:
    """Active runs with these `pipeline.*` tags, oldest first (ties: by run id), so concurrent stages agree."""
    where = " and ".join(f"tags.`pipeline.{k}` = '{v}'" for k, v in tags.items())
    runs = mlflow.search_runs(filter_string=where, output_format="list")
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def _parents(mlflow, experiment: str) -> list:
    """The experiment's parent runs, oldest first (ties: by run id), so concurrent stages agree on the first."""
    return _find(mlflow, experiment=experiment, kind="parent")


def _first_or_create(mlflow, find, name: str, tags: dict[str, str]) -> str:
    """The oldest run `find()` returns, created when there is none. Two stages that start together (Snakemake runs
    independent stages side by side, on several machines) may both create one: each then keeps the oldest and
    deletes its own."""
    found = find()
    if found:
        return found[0].info.run_id
    run = mlflow.start_run(run_name=name, tags=tags)
    mlflow.end_run()
    first = find()[0].info.run_id
    if first != run.info.run_id:
        mlflow.delete_run(run.info.run_id)
    return first


def _suite_run(mlflow, suite: str) -> str:
    return _first_or_create(mlflow, lambda: _find(mlflow, suite=suite, kind="suite"), SEP.join(["suite", suite]),
                            {"pipeline.suite": suite, "pipeline.kind": "suite"})


def _parent_run(mlflow, experiment: str, suite_id: str | None = None, suite: str | None = None) -> str:
    """The experiment's run (kind `parent`, under the suite's run), created when missing."""
    tags = {"pipeline.experiment": experiment, "pipeline.kind": "parent"}
    if suite_id:
        tags.update({"mlflow.parentRunId": suite_id, "pipeline.suite": suite or ""})
    return _first_or_create(mlflow, lambda: _parents(mlflow, experiment), experiment, tags)


@contextlib.contextmanager
def stage_run(root: Path, suite: str, experiment: str | None, stage: str, params: dict | None = None, *,
              tags: dict[str, Any] | None = None, kind: str = "stage", system_metrics: bool = False,
              description: str | None = None, processes: int = 1) -> Iterator[Tracker]:
    """Open the stage's run under the experiment's run (the suite's run when `experiment` is None), or a no-op
    tracker if MLflow fails. `params`: nested or dotted params (flattened to dotted keys); `tags`: more `pipeline.*`
    tags; `kind`: "stage" or "result"; `system_metrics`: MLflow's CPU / memory (/ GPU) sampling while it runs.

    With a SQLite store, creating the store, the experiment, the suite, parent and stage runs happen under
    store_lock: stages started side by side on a new store each get their run."""
    mlflow, run, why, parent, suite_run = None, None, None, None, None
    if os.environ.get("PIPELINE_TRACKING", "on") == "off":
        yield Tracker(status=OFF)
        return
    try:
        all_tags = {**lineage_tags(root, stage, suite), **hardware_tags(processes), "pipeline.suite": suite,
                    "pipeline.kind": kind, **{k: str(v) for k, v in (tags or {}).items() if v is not None}}
        if experiment:
            all_tags["pipeline.experiment"] = experiment
        if description:
            all_tags["mlflow.note.content"] = description
        if system_metrics:
            os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "2")
            os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
        with store_lock(tracking_uri(root)):
            mlflow = _setup(root, suite)
            suite_run = _suite_run(mlflow, suite)
            parent = _parent_run(mlflow, experiment, suite_run, suite) if experiment else suite_run
            run = mlflow.start_run(run_name=run_name(experiment or suite, stage),
                                   tags={**all_tags, "mlflow.parentRunId": parent},
                                   log_system_metrics=system_metrics)
        OPENED.append(run.info.run_id)
        if params:
            Tracker(mlflow).log_params(params)
    except Exception as e:  # noqa: BLE001
        why = f"skipped: {_why(e)}"
        print(f"warning: MLflow tracking skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              "the stage's outputs are written as usual", file=sys.stderr)
        if run is not None:
            with contextlib.suppress(Exception):
                mlflow.end_run(status="FAILED")
        mlflow, run = None, None
    tracker = Tracker(mlflow, run.info.run_id if run else None, root, suite, why, parent, suite_run)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if tracker.active:
            tracker._safe(lambda: mlflow.end_run(status=status))
            client = tracker._safe(mlflow.MlflowClient)
            for rid in dict.fromkeys([parent, suite_run]):  # the parents' duration spans their stages
                tracker._safe(lambda: client.set_terminated(rid, "FINISHED"))


def log_dataset_stage(root: Path, dataset: str, stage: str, folder: Path) -> None:
    """Data stages are per dataset: their runs live in the `datasets` experiment."""
    with stage_run(root, "datasets", dataset, stage) as t:
        if provenance.current():  # stamped before its digest is taken, so the digest is dvc.lock's
            provenance.stamp(Path(folder).parent, [Path(folder).name], provenance.current())
        mf = json.loads((folder / "manifest.json").read_text())
        t.log_dataset(dataset, None, folder, "prepared")  # digest: the folder's DVC hash, as in dvc.lock
        for split, info in mf["splits"].items():
            t.log_metrics({f"{split}.count": info["count"]})
            t.log_dataset(f"{dataset}-{split}", info["sha256"], folder / f"{split}.npz", split)  # DVC's file md5
        t.log_artifact(folder / "manifest.json")
