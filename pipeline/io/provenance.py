"""Fingerprints: the digest of the code, params and data a stage ran with, recorded in its outputs.

A stage's fingerprint is the sha256 of four parts, each a digest of its own (so a mismatch says which part moved):
- `code`: every code dependency of the stage (`pipeline.workflow.code_deps`: the files it imports), path and content;
- `params`: the values of the keys the stage tracks (`Stage.params`, what DVC's `params:` compares), read from the
  params file with the `--set` overrides applied, so an output made with an override never passes for the file's;
- `data`: every other dependency (prepared data, a model, sample folders), path and content, minus what .dvcignore
  leaves out of DVC's own hashes (`__pycache__`, Snakemake's `.snakemake_timestamp`);
- `cmd`: the stage's command line (a training-seed replica differs from its experiment only there).

`python -m pipeline` computes it when a stage starts, stamps it into the stage's outputs when the stage ends
(`provenance.json` in a folder output, a `provenance` key in a JSON output) and fails the stage when its inputs
changed while it ran. `python -m pipeline commit` records in dvc.lock only stages whose stamp equals the fingerprint
of the inputs as they are now (docs/architecture.md, "Provenance").
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any

ENV = "PIPELINE_PROVENANCE"  # the running stage's record (JSON), set by `python -m pipeline` when the stage starts
RECORD = "provenance.json"  # the stamp inside a folder output
KEY = "provenance"  # the stamp inside a JSON output
PARTS = ("code", "params", "data", "cmd")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


_SEEN: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> sha256: a file read once per process (as DVC's state)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SEEN:
        _SEEN[key] = _read_sha256(path, chunk)
    return _SEEN[key]


def _read_sha256(path: Path, chunk: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def ignored_names(root: Path) -> list[str]:
    """The plain name patterns of the repository's .dvcignore (DVC leaves them out of a folder's hash, so do we)."""
    f = Path(root) / ".dvcignore"
    lines = f.read_text().splitlines() if f.is_file() else []
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "!"))]


def tree_digest(path: Path, ignore: list[str] = ()) -> str:
    """Digest of a file, or of a folder's files (relative path and content), skipping names matching `ignore`;
    "missing" where nothing is there."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return "missing"
    files = []
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path)
        if f.is_file() and not any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in ignore):
            files.append((rel.as_posix(), file_sha256(f)))
    return _sha(files)


def tracked_values(raw: dict, keys: list[str]) -> dict[str, Any]:
    """{dotted key: value} of `keys` in the params mapping `raw` (None where a key is absent)."""
    out = {}
    for key in keys:
        cur: Any = raw
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        out[key] = cur
    return out


def fingerprint(root: Path, cmd: str, deps: list[str], params: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{part: digest} for PARTS and `fingerprint`, the digest of them all.

    `deps`: the stage's dependencies relative to `root` (those under `pipeline/` are code); `params`: {params file:
    {dotted key: value}} of the tracked keys with the values the stage runs with."""
    root = Path(root)
    ignore = ignored_names(root)
    code = [d for d in deps if d.startswith("pipeline/")]
    data = [d for d in deps if not d.startswith("pipeline/")]
    parts = {
        "code": _sha([(d, tree_digest(root / d, ignore)) for d in sorted(code)]),
        "params": _sha(params),
        "data": _sha([(d, tree_digest(root / d, ignore)) for d in sorted(data)]),
        "cmd": _sha(cmd),
    }
    return {**parts, "fingerprint": _sha([parts[k] for k in PARTS])}


def differs(recorded: dict | None, current: dict[str, str]) -> str | None:
    """Why the stamp `recorded` is not the fingerprint `current` (the parts that moved), or None when it is."""
    if not recorded or "fingerprint" not in recorded:
        return "no provenance record"
    if recorded["fingerprint"] == current["fingerprint"]:
        return None
    moved = [k for k in PARTS if recorded.get(k) != current.get(k)]
    return "changed since it ran: " + (", ".join(moved) or "fingerprint")


def current() -> dict | None:
    """The record of the stage this process runs (`python -m pipeline` sets it before the stage starts), or None."""
    try:
        return json.loads(os.environ[ENV])
    except (KeyError, ValueError):
        return None


# --- stamps in outputs -----------------------------------------------------------------------------------------
def stamp(root: Path, outs: list[str], record: dict) -> None:
    """Write `record` into each output: `provenance.json` in a folder, a `provenance` key in a JSON file (other files,
    such as loss.csv, are covered by their stage's JSON or folder output)."""
    from pipeline.io import atomic

    for out in outs:
        p = Path(root) / out
        if p.is_dir():
            atomic.write_json(p / RECORD, record)
        elif p.is_file() and p.suffix == ".json":
            obj = json.loads(p.read_text())
            if isinstance(obj, dict):
                atomic.write_json(p, {**obj, KEY: record})


def read_stamp(root: Path, out: str) -> dict | None:
    """The stamp an output carries, or None (missing output, unstamped, unreadable)."""
    p = Path(root) / out
    try:
        if p.is_dir():
            return json.loads((p / RECORD).read_text())
        if p.is_file() and p.suffix == ".json":
            obj = json.loads(p.read_text())
            return obj.get(KEY) if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None
    return None


def stamped_outs(outs: list[str]) -> list[str]:
    """The outputs that carry a stamp: folders and JSON files (paths without a suffix are folders in this DAG)."""
    return [o for o in outs if o.endswith(".json") or not Path(o).suffix]
