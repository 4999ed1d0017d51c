"""Helpers shared by stages: loading the experiment, resolving its paths, seeding."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import dag
from pipeline.config import DATASETS, Params, ParamsError, load_params
from pipeline.errors import StageError


@dataclass
class Context:
    root: Path
    experiment: str
    params_path: str
    params: Params

    @property
    def suite(self) -> str:
        return self.params.suite

    def path(self, key: str, sampler: str | None = None) -> Path:
        return self.root / dag.paths(self.suite, self.experiment, self.params.data.dataset, sampler)[key]


def load_context(args) -> Context:
    name, params = load_params(args.params, args.set)
    return Context(Path(args.root), name, args.params, params)


def dataset_arg(args) -> str:
    """Data stages take `--dataset NAME` (shared by experiments) or the dataset of `--params`."""
    if getattr(args, "dataset", None):
        if args.dataset not in DATASETS:
            raise ParamsError("--dataset", args.dataset, f"unknown dataset; expected one of {list(DATASETS)}")
        return args.dataset
    if not args.params:
        raise StageError("give --dataset NAME or --params FILE")
    return load_params(args.params, args.set)[1].data.dataset


def seed_for(*parts) -> int:
    """A 63-bit seed from (experiment seed, stage, index, ...): draws do not depend on batch or process count."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts, device="cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed_for(*parts))
    return g


def require(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise StageError(f"{path}: {what} missing; {fix}")
    return path
