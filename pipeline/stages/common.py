"""What every stage shares: its command-line arguments, loading the experiment, resolving its paths, input checks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import DATASETS, SEED_LIMIT, Params, ParamsError, load_params
from pipeline.errors import StageError
from pipeline.names import name_problem
from pipeline.workflow import outputs


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
        return inside_root(self.root, outputs.paths(self.suite, self.experiment, self.params.data.dataset, sampler)[key])


def inside_root(root: Path, rel: str) -> Path:
    """root / rel, or a StageError when that path leaves the root (a name with '..' or '/' in it).

    Checked on the normalised path, without following links: a runs/ or data/ folder that the operator made a link to
    another disk stays usable; what a name can add, '..' and '/', cannot leave the root."""
    root = Path(root)
    path = root / rel
    if not Path(os.path.normpath(os.path.abspath(path))).is_relative_to(os.path.normpath(os.path.abspath(root))):
        raise StageError(f"{path}: outside the root {root}; names must be letters, digits, '_' or '-'")
    return path


def check_name_arg(option: str, kind: str, value: str | None) -> None:
    """A name given on the command line (--suite, --dataset, --sampler) matches names.NAME_PATTERN."""
    problem = None if value is None else name_problem(kind, value)
    if problem:
        raise StageError(f"{option}: {problem}")


def check_name_args(args) -> None:
    """Every name option of a parsed command line (--suite, once or repeated, --dataset, --sampler): cli.main checks
    them before a stage starts."""
    for kind in ("suite", "dataset", "sampler"):
        value = getattr(args, kind, None)
        for v in value if isinstance(value, list) else [value]:
            check_name_arg(f"--{kind}", kind, v)


def load_context(args) -> Context:
    name, params = load_params(args.params, args.set)
    seed = getattr(args, "training_seed", None)
    if seed is not None:
        if not 0 <= seed < SEED_LIMIT:
            raise ParamsError(args.params, "--training-seed", f"must be an integer from 0 to {SEED_LIMIT - 1}, got {seed}")
        name, params = outputs.replica_name(name, seed), params.model_copy(update={"seed": seed})
    return Context(Path(args.root), name, args.params, params)


def dataset_arg(args) -> str:
    """Data stages take `--dataset NAME` (shared by experiments) or the dataset of `--params`."""
    if getattr(args, "dataset", None):
        check_name_arg("--dataset", "dataset", args.dataset)
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


# --- what a stage's MLflow run says of it (pipeline.io.tracking) -----------------------------------------------------
def trained(ctx: Context) -> dict:
    """The experiment's train_metrics.json ({} before training): its MLflow run id and step, for the runs' tags. MLflow
    metadata only: no output of the reading stage depends on it."""
    import json

    try:
        return json.loads(ctx.path("train_metrics").read_text())
    except (OSError, ValueError):
        return {}


def run_tags(ctx: Context, sampler: str | None = None, method: str | None = None) -> dict[str, str]:
    """The `pipeline.*` tags a reviewer filters by: dataset, SDE, model, the sampler and its method, and the run of the
    model it used (`pipeline.model_run_id`, when the train stage has run)."""
    p = ctx.params
    tags = {"pipeline.dataset": p.data.dataset, "pipeline.sde": p.training.sde, "pipeline.model": p.model.name,
            "pipeline.continuous": str(p.training.continuous).lower()}
    if sampler:
        tags.update({"pipeline.sampler": sampler, "pipeline.method": method or sampler})
    model_run = trained(ctx).get("mlflow_run_id")
    if model_run:
        tags["pipeline.model_run_id"] = model_run
    return tags


def tracked_params(ctx: Context, keys) -> dict:
    """{dotted key: value} of the params keys a stage tracks (its SPEC's `params`), resolved; the runs' params."""
    from pipeline.io import provenance

    values = provenance.tracked_values(ctx.params.model_dump(mode="json"), [k for k in keys if "{" not in k])
    return {k: v for k, v in values.items() if v is not None}


def sampler_params(settings: dict) -> dict:
    """A sampler setting as params `sampler.<key>`: the keys its method reads (names.SAMPLING_METHOD_TABLE), so every
    stage names a setting the same way and no column holds a key the method ignores."""
    from pipeline.names import COMMON_SAMPLING_KEYS, SAMPLING_METHOD_TABLE

    spec = SAMPLING_METHOD_TABLE.get(settings.get("method"))
    keys = COMMON_SAMPLING_KEYS + (spec.keys if spec else tuple(settings))
    return {f"sampler.{k}": settings[k] for k in keys if k in settings and settings[k] is not None}
