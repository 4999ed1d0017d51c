"""The tags that describe a finished stage, set on its MLflow runs once its outputs are written and stamped
(`python -m pipeline` calls `finish` after `provenance.stamp`): what it wrote and what it read, as dvc.lock will
record them, and the state of the code it ran.

- `dvc.out.<path>`: DVC's md5 of each output (a file's md5, or `<md5>.dir` for a folder, .dvcignore honoured): the
  value `dvc repro` writes for it into dvc.lock when the stage ends;
- `dvc.params.<file>`: the md5 of each params file it read;
- `git.dirty`: whether tracked files differ from the commit (`git.commit`), leaving out what stages write (every
  dvc.lock, this stage's outputs): true means the code or params that ran are not the commit's; `git.dirty.files`
  names up to five of them.

Tracking never fails a stage: a failure here is a warning on stderr (the outputs are already stamped and final).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.io import tracking

MAX_DIRTY_LISTED = 5


def dvc_md5s(root: Path, paths: list[str]) -> dict[str, str]:
    """{path: DVC's md5} of paths relative to `root` ("missing" where nothing is), through one DVC repository."""
    from dvc.fs import MemoryFileSystem
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB

    out = {}
    with Repo(str(root), uninitialized=True) as repo:
        odb = repo.cache.local or HashFileDB(MemoryFileSystem(), "/")
        for rel in paths:
            path = (Path(root) / rel).resolve()
            if not path.exists():
                out[rel] = "missing"
                continue
            _, _, obj = build(odb, str(path), repo.fs, "md5", ignore=repo.dvcignore, dry_run=True)
            out[rel] = obj.hash_info.value
    return out


def dirty_files(root: Path, outputs: list[str]) -> list[str]:
    """Tracked files that differ from HEAD, but for dvc.lock files and `outputs` (files or folders)."""
    try:
        text = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    files = [line[3:].split(" -> ")[-1].strip('"') for line in text.splitlines() if len(line) > 3]
    mine = [o.rstrip("/") for o in outputs]
    return [f for f in files if Path(f).name != "dvc.lock" and not any(f == o or f.startswith(o + "/") for o in mine)]


def finish_tags(root: Path, outs: list[str], params_files: list[str]) -> dict[str, str]:
    root = Path(root)
    digests = dvc_md5s(root, list(dict.fromkeys(outs + params_files)))
    dirty = dirty_files(root, outs)
    tags = {f"dvc.out.{o}": digests[o] for o in outs}
    tags.update({f"dvc.params.{f}": digests[f] for f in params_files})
    tags["git.dirty"] = str(bool(dirty)).lower()
    if dirty:
        tags["git.dirty.files"] = ", ".join(dirty[:MAX_DIRTY_LISTED]) + (f" (+{len(dirty) - MAX_DIRTY_LISTED} more)"
                                                                        if len(dirty) > MAX_DIRTY_LISTED else "")
    return tags


def finish(root: Path, outs: list[str], params_files: list[str], run_ids: list[str] | None = None) -> None:
    """Set finish_tags on the runs this process opened (tracking.OPENED), if any."""
    run_ids = list(tracking.OPENED if run_ids is None else run_ids)
    if not run_ids:
        return
    try:
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        tags = [RunTag(k, v) for k, v in finish_tags(root, outs, params_files).items()]
        client = MlflowClient(tracking.tracking_uri(root))
        for rid in run_ids:
            for i in range(0, len(tags), 100):
                client.log_batch(rid, tags=tags[i:i + 100])
    except Exception as e:  # noqa: BLE001 - the outputs are final: say it, never fail the stage for it
        print(f"warning: MLflow lineage tags not set ({tracking._why(e)})", file=sys.stderr)
