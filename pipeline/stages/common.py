"""What every stage shares: its command-line arguments, loading the experiment, resolving its paths, input checks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import outputs
from pipeline.config import DATASETS, Params, ParamsError, load_params
from pipeline.errors import StageError


def add_common_arguments(p, params_required: bool = True) -> None:
    p.add_argument("--params", required=params_required,
                   help="experiment params file (YAML); its stem names the experiment")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted key with a YAML value, e.g. --set model.ch_mult=[1,2,2] (repeatable)")
    p.add_argument("--root", default=None, help="resolve the stage's inputs and outputs under DIR (default: repo root)")
    p.add_argument("--training-seed", type=int, default=None, metavar="S",
                   help="the replica of the experiment with seed S (training.seeds): `seed: S`, run folder <exp>-seedS")


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
        return self.root / outputs.paths(self.suite, self.experiment, self.params.data.dataset, sampler)[key]


def load_context(args) -> Context:
    name, params = load_params(args.params, args.set)
    seed = getattr(args, "training_seed", None)
    if seed is not None:
        if seed < 0:
            raise ParamsError(args.params, "--training-seed", f"must be a non-negative integer, got {seed}")
        name, params = outputs.replica_name(name, seed), params.model_copy(update={"seed": seed})
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


def device() -> str:
    """The stage's device: the first GPU where there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def require(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise StageError(f"{path}: {what} missing; {fix}")
    return path
