"""What the training benchmarks read from a finished `make repro` (their --root): the prepared splits and the
evaluator's dataset classifier with its reference statistics."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

from pipeline.io import data


@functools.cache
def read(root: Path, dataset: str):
    """(evaluator folder, (mu, sigma) of the reference statistics, train images, test images), read once per process;
    exit status 2 with one line naming the folder where --root has no evaluator for the dataset."""
    ev_dir = root / "data" / "evaluator" / dataset
    if not (ev_dir / "ref_stats.npz").exists():
        print(f"{ev_dir}: no evaluator; run `make repro` there first (--root)", file=sys.stderr)
        raise SystemExit(2)
    with np.load(ev_dir / "ref_stats.npz") as z:
        ref = z["mu"], z["sigma"]
    x, _ = data.load_split(root, dataset, "train")
    xt, _ = data.load_split(root, dataset, "test")
    return ev_dir, ref, x, xt
