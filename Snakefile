"""Snakemake front end of the pipeline: the same stages, commands, inputs and outputs as dvc.yaml.

    snakemake -c 2                                   # the default suite (like `dvc repro`)
    snakemake -c 2 --config suite=smoke              # another suite
    snakemake -c 2 --until train                     # partial reruns; --forcerun sample; or name target files
    snakemake --profile profiles/slurm --config suite=cifar10   # fan out over a SLURM cluster

Both front ends read the DAG from `pipeline.workflow.dag`, so they cannot drift (tests/test_dag.py compares them). The
rules are made in one loop, one per stage spec (`SPEC` in each module under pipeline/stages/, collected by
`pipeline.workflow.commands`): a new stage needs no edit here. Each rule declares its stage's tracked params in
`params:` so Snakemake's params trigger fires exactly when DVC's would.
`snakemake --report report.html` (after a run, or after `--touch`) collects sample grids, metrics, loss curves and the
suite's report pages into one file (the `report(...)` markers: each spec's `snakemake_report`). Every rule declares
`resources: gpu=0|N`.
Training snapshots (`runs/<suite>/<exp>/snapshots`, a DVC `persist` output) are not declared here: Snakemake would
delete them before rerunning `train`, and they exist so that a rerun resumes.
"""
import json
import sys
from pathlib import Path

import yaml

from pipeline.workflow import dag
from pipeline.config import ParamsError
from pipeline.names import NAME_PATTERN

SUITE = str(config.get("suite", "default"))
try:
    # the networks are built on the meta device (bad settings fail before any work) in the main process only: a cluster
    # job's Snakemake (one per job) reads the same DAG without importing torch
    STAGES = {s.name: s for s in dag.suite_stages(Path(workflow.basedir), SUITE, check_models=workflow.is_main_process)}
    SPECS = {s.command: s for s in dag.checked_specs()}
except (ParamsError, ValueError) as e:  # an unknown suite, a bad params file or stage spec: one line, status 2
    print(f"error: {e}".splitlines()[0], file=sys.stderr)
    sys.exit(2)


def switch(key, default: bool) -> bool:
    """A `--config KEY=0|1` switch (also true/false); anything else is bad input: one line, status 2."""
    value = config.get(key, default)
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if str(value).lower() in ("0", "1", "true", "false"):
        return str(value).lower() in ("1", "true")
    print(f"error: --config {key}={value}: expected 0 or 1", file=sys.stderr)
    sys.exit(2)


# What each stage asks of a cluster node, by suite: profiles/sizes.yaml (small suites fit a small CPU node; cifar10 the
# papers' GPU sizes). `--config gpus=0|1` overrides the suite's choice of GPU requests; `--set-resources RULE:KEY=V`
# one size.
_SIZES = yaml.safe_load((Path(workflow.basedir) / "profiles/sizes.yaml").read_text())
SIZES = _SIZES[_SIZES["suites"].get(SUITE, "small")]
GPUS = switch("gpus", SIZES["gpus"])

wildcard_constraints:  # the one name pattern of params and CLI (pipeline/names.py)
    dataset=NAME_PATTERN,
    suite=NAME_PATTERN,
    exp=NAME_PATTERN,
    sampler=NAME_PATTERN,

# The wildcards of a stage's rule, by the spec's scope, in the order of its DAG stage name (`train-{exp}`, ...).
WILDCARDS = {"dataset": ("dataset",), "experiment": ("exp",), "sampler": ("exp", "sampler"), "suite": ("suite",)}


def stage(kind, wc):
    """The DAG stage that a rule's wildcards name."""
    return STAGES["-".join([kind, *(getattr(wc, w) for w in WILDCARDS[SPECS[kind].scope])])]


def tracked(kind, wc):
    """The values of the params the stage tracks (what DVC's `params:` would compare)."""
    values = {}
    for path, keys in stage(kind, wc).params.items():
        raw = yaml.safe_load(Path(path).read_text())
        for key in keys:
            cur = raw
            for part in key.split("."):
                cur = cur[part]
            values[f"{path}:{key}"] = cur
    return json.dumps(values, sort_keys=True)


def deps(kind):
    return lambda wc: stage(kind, wc).deps


def rule_params(kind):
    return {"tracked": lambda wc: tracked(kind, wc), "cmd": lambda wc: stage(kind, wc).cmd}


def rule_outputs(spec):
    """The stage's outputs as wildcard patterns; a path without a suffix is a folder. Training snapshots (persist)
    are left out (see the module docstring)."""
    pattern = dag.where(spec.scope, "{suite}", "{exp}", "{dataset}", "{sampler}")
    out = []
    for key in spec.outs + spec.metrics + spec.plots + spec.uncached:
        path = pattern[key] if Path(pattern[key]).suffix else directory(pattern[key])
        out.append(report(path, **spec.snakemake_report[key]) if key in spec.snakemake_report else path)
    return out


def rule_resources(kind):
    """What a stage asks of a cluster node: the sizes of its suite (profiles/sizes.yaml: runtime, mem_mb,
    cpus_per_task, ...) and `gpu`. Whether a stage can use a GPU is a property of the stage (its spec's `gpu`: it runs
    its network on CUDA when one is visible) and how many is its process count (training.num_processes /
    eval.num_processes: one rank per GPU, started by the stage); whether it asks for them is the suite's `gpus` (or
    `--config gpus=0|1`). `gpu` is what the SLURM executor plugin reads (`--gpus=N`); locally it caps concurrent GPU
    jobs (`--resources gpu=N`, profiles/local sets 1)."""
    sizes = {**SIZES.get("all", {}), **SIZES.get(kind, {})}
    wants = SPECS[kind].gpu and GPUS
    return {**sizes, "gpu": (lambda wc: stage(kind, wc).processes) if wants else 0}


# `all` only collects; a stage whose spec says `local` (download: it needs the internet, which compute nodes of a
# cluster often lack) runs on the submitting machine too.
localrules: all


# Every stage's outputs, not only the report's: a committed report (reports/<suite>/ is in git) must not make a fresh
# clone look finished while runs/ is empty. Training snapshots are left out (see the module docstring).
rule all:
    input: [o for s in STAGES.values() for o in s.all_outs() if o not in s.persist]

# One rule per stage spec. `priority:` (the spec's) decides which ready stage runs first when cores are short
# (`snakemake -c N`): training first (the longest stages, each the head of its experiment's chain), then the sampling
# stages that follow it, then the rest. A run on 2 cores that left the NCSN training for last spent its last ~8
# minutes on that one 1-thread chain.
for spec in SPECS.values():
    rule:
        name: spec.command
        input: deps(spec.command)
        output: *rule_outputs(spec)
        params: **rule_params(spec.command)
        resources: **rule_resources(spec.command)
        priority: spec.priority
        localrule: spec.local
        shell: "{params.cmd}"
