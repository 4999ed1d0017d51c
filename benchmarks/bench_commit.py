"""`make repro`'s commit step after a full run: `dvc commit` with one target per stage against one commit of the suite's
dvc.yaml (pipeline/stages/commit.py's `commit_targets`), side by side on a finished run, each from the run's dvc.lock
(a fresh clone's run commits over the repository's dvc.lock, as long: DVC's time goes to parsing it). Prints each
one's wall seconds, the ratio, and whether both wrote the same dvc.lock; the run's own dvc.lock is put back at the end.

    python benchmarks/bench_commit.py --root /path/to/a/finished/make-repro [--suite default]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stages.commit import stage_targets  # noqa: E402
from pipeline.workflow import dag  # noqa: E402


def commit_seconds(root: Path, lock: Path, kept: bytes, targets: list[str]) -> tuple[float, dict]:
    lock.write_bytes(kept)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", *targets], cwd=root, check=True)
    return time.perf_counter() - t0, yaml.safe_load(lock.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--suite", default="default")
    a = ap.parse_args()
    file = dag.dvc_yaml_path(a.suite)
    lock = a.root / file.replace("dvc.yaml", "dvc.lock")
    if not lock.is_file():
        print(f"{lock}: missing; run `make repro` in {a.root} first (--root)", file=sys.stderr)
        raise SystemExit(2)
    names = list(yaml.safe_load((a.root / file).read_text())["stages"])
    kept = lock.read_bytes()
    try:
        per_stage, lock_a = commit_seconds(a.root, lock, kept, stage_targets(a.suite, names))
        whole, lock_b = commit_seconds(a.root, lock, kept, [file])
    finally:
        lock.write_bytes(kept)
    print(f"{len(names)} stages of {file}: one target per stage {per_stage:.1f} s, the file as one target "
          f"{whole:.1f} s ({per_stage / whole:.1f}x); same dvc.lock: {lock_a == lock_b}")


if __name__ == "__main__":
    main()
