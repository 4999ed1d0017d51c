"""`describe`: an experiment's resolved params, parameter count and stages (cmd, deps, outs) as JSON."""
from __future__ import annotations

import json

import torch

from pipeline.models import zoo as models
from pipeline.stages.common import add_common_arguments, load_context
from pipeline.workflow import dag

SPEC = dict(  # this command's declaration, read by the CLI (pipeline/workflow/commands.py)
    command="describe", order=130,
    help="print an experiment's resolved params, parameter count and stages as JSON",
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)


def run(args) -> int:
    ctx = load_context(args)
    models.check_params(ctx.params, ctx.params_path)
    with torch.device("meta"):
        count = models.count_parameters(models.build(ctx.params))
    exp = dag.Experiment(ctx.experiment, ctx.params_path, ctx.params, {})
    stages = dag.dataset_stages(ctx.params.data.dataset) + dag.experiment_stages(exp, ctx.suite)
    root = ctx.root

    def where(p: str) -> str:
        return p if p.startswith("pipeline/") else str(root / p)

    out = {"experiment": ctx.experiment, "suite": ctx.suite, "parameters": count, "params": ctx.params.model_dump(mode="json"),
           "stages": {s.name: {"cmd": s.cmd + (f" --root {root}" if args.root else ""), "deps": [where(d) for d in s.deps],
                               "outs": [where(o) for o in s.all_outs()]} for s in stages}}
    print(json.dumps(out, indent=2))
    return 0
