"""Snakemake front end of the pipeline: the same stages, commands, inputs and outputs as dvc.yaml.

    snakemake -c 2                                   # the default suite (like `dvc repro`)
    snakemake -c 2 --config suite=smoke              # another suite
    snakemake -c 2 --until train                     # partial reruns; --forcerun sample; or name target files
    snakemake --profile profiles/slurm --config suite=cifar10   # fan out over a SLURM cluster

Both front ends read the DAG from `pipeline.workflow.dag`, so they cannot drift (tests/test_dag.py compares them). Each rule
declares its stage's tracked params in `params:` so Snakemake's params trigger fires exactly when DVC's would.
`snakemake --report report.html` (after a run, or after `--touch`) collects sample grids, metrics, loss curves and the
suite's report pages into one file (the `report(...)` markers below). Every rule declares `resources: gpu=0|1`.
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
    STAGES = {s.name: s for s in dag.suite_stages(Path(workflow.basedir), SUITE)}
except (ParamsError, ValueError) as e:  # an unknown suite or a bad params file: one line, status 2 (like the CLI)
    print(f"error: {e}".splitlines()[0], file=sys.stderr)
    sys.exit(2)
# Stages that run their network on CUDA when one is visible. `gpu` is what the SLURM executor plugin reads
# (`--gpus=N`); locally it caps concurrent GPU jobs (`--resources gpu=N`, profiles/local sets 1).
GPU_KINDS = {"train", "classifier", "sample", "evaluate", "likelihood", "controllable", "curves"}

wildcard_constraints:  # the one name pattern of params and CLI (pipeline/names.py)
    dataset=NAME_PATTERN,
    suite=NAME_PATTERN,
    exp=NAME_PATTERN,
    sampler=NAME_PATTERN,


def stage(kind, wc):
    """The DAG stage that a rule's wildcards name."""
    if kind in ("download", "prepare", "evaluator"):
        return STAGES[f"{kind}-{wc.dataset}"]
    if kind in ("train", "classifier", "likelihood", "controllable", "curves"):
        return STAGES[f"{kind}-{wc.exp}"]
    if kind in ("sample", "evaluate"):
        return STAGES[f"{kind}-{wc.exp}-{wc.sampler}"]
    return STAGES[f"report-{wc.suite}"]


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


# Which ready stage runs first when cores are short (`snakemake -c N`): training first (the longest stages, each the
# head of its experiment's chain), then the sampling stages that follow it, then the rest. A run on 2 cores that left
# the NCSN training for last spent its last ~8 minutes on that one 1-thread chain.
PRIORITY = {"train": 3, "sample": 2, "curves": 2, "classifier": 1, "likelihood": 1, "evaluator": 1}


def rule_resources(kind):
    """What a stage needs from a cluster node. Sizes (runtime, mem_mb, cpus_per_task) are site-specific and live in
    the profile (profiles/slurm/config.yaml); whether a stage wants a GPU is a property of the stage, and how many is
    its process count (training.num_processes / eval.num_processes: one rank per GPU, started by the stage)."""
    return {"gpu": (lambda wc: stage(kind, wc).processes) if kind in GPU_KINDS else 0}


# `all` only collects; `download` needs the internet, which compute nodes of a cluster often lack.
localrules: all, download


# Every stage's outputs, not only the report's: a committed report (reports/<suite>/ is in git) must not make a fresh
# clone look finished while runs/ is empty. Training snapshots are left out (see the module docstring).
rule all:
    input: [o for s in STAGES.values() for o in s.all_outs() if o not in s.persist]

rule download:
    input: deps("download")
    output: directory("data/raw/{dataset}")
    params: **rule_params("download")
    resources: **rule_resources("download")
    priority: PRIORITY.get("download", 0)
    shell: "{params.cmd}"

rule prepare:
    input: deps("prepare")
    output: directory("data/prepared/{dataset}")
    params: **rule_params("prepare")
    resources: **rule_resources("prepare")
    priority: PRIORITY.get("prepare", 0)
    shell: "{params.cmd}"

rule evaluator:
    input: deps("evaluator")
    output: directory("data/evaluator/{dataset}")
    params: **rule_params("evaluator")
    resources: **rule_resources("evaluator")
    priority: PRIORITY.get("evaluator", 0)
    shell: "{params.cmd}"

rule train:
    input: deps("train")
    output:
        directory("runs/{suite}/{exp}/train"),
        report("runs/{suite}/{exp}/train_metrics.json", category="Training", labels={"experiment": "{exp}", "file": "metrics"}),
        report("runs/{suite}/{exp}/loss.csv", category="Training", labels={"experiment": "{exp}", "file": "loss curve"}),
    params: **rule_params("train")
    resources: **rule_resources("train")
    priority: PRIORITY.get("train", 0)
    shell: "{params.cmd}"

rule sample:
    input: deps("sample")
    output:
        report(directory("runs/{suite}/{exp}/samples/{sampler}"), patterns=["{figure}.png"], category="Samples", labels={"experiment": "{exp}", "sampler": "{sampler}"}),
    params: **rule_params("sample")
    resources: **rule_resources("sample")
    priority: PRIORITY.get("sample", 0)
    shell: "{params.cmd}"

rule evaluate:
    input: deps("evaluate")
    output: report("runs/{suite}/{exp}/eval/{sampler}.json", category="Metrics", labels={"experiment": "{exp}", "metrics": "sample quality ({sampler})"})
    params: **rule_params("evaluate")
    resources: **rule_resources("evaluate")
    priority: PRIORITY.get("evaluate", 0)
    shell: "{params.cmd}"

rule likelihood:
    input: deps("likelihood")
    output: report("runs/{suite}/{exp}/likelihood.json", category="Metrics", labels={"experiment": "{exp}", "metrics": "bits/dim"})
    params: **rule_params("likelihood")
    resources: **rule_resources("likelihood")
    priority: PRIORITY.get("likelihood", 0)
    shell: "{params.cmd}"

rule classifier:
    input: deps("classifier")
    output: directory("runs/{suite}/{exp}/classifier")
    params: **rule_params("classifier")
    resources: **rule_resources("classifier")
    priority: PRIORITY.get("classifier", 0)
    shell: "{params.cmd}"

rule controllable:
    input: deps("controllable")
    output: report(directory("runs/{suite}/{exp}/controllable"), patterns=["{task}.png"], category="Controllable generation", labels={"experiment": "{exp}", "task": "{task}"})
    params: **rule_params("controllable")
    resources: **rule_resources("controllable")
    priority: PRIORITY.get("controllable", 0)
    shell: "{params.cmd}"

rule curves:
    input: deps("curves")
    output:
        report("runs/{suite}/{exp}/curves/nfe.json", category="Metrics", labels={"experiment": "{exp}", "metrics": "FD against NFE"}),
        report("runs/{suite}/{exp}/curves/ckpt.json", category="Metrics", labels={"experiment": "{exp}", "metrics": "FD against training step"}),
    params: **rule_params("curves")
    resources: **rule_resources("curves")
    priority: PRIORITY.get("curves", 0)
    shell: "{params.cmd}"

rule report:
    input: deps("report")
    output: report(directory("reports/{suite}"), patterns=["{page}.html", "figures/{figure}.png"], category="Report")
    params: **rule_params("report")
    resources: **rule_resources("report")
    priority: PRIORITY.get("report", 0)
    shell: "{params.cmd}"
