"""Snakemake front end of the pipeline: the same stages, commands, inputs and outputs as dvc.yaml.

    snakemake -c 2                                   # the default suite (like `dvc repro`)
    snakemake -c 2 --config suite=smoke              # another suite
    snakemake -c 2 --until train                     # partial reruns; --forcerun sample; or name target files
    snakemake --profile profiles/slurm --config suite=cifar10   # fan out over a SLURM cluster

Both front ends read the DAG from `pipeline.dag`, so they cannot drift (tests/test_dag.py compares them). Each rule
declares its stage's tracked params in `params:` so Snakemake's params trigger fires exactly when DVC's would.
Training snapshots (`runs/<suite>/<exp>/snapshots`, a DVC `persist` output) are not declared here: Snakemake would
delete them before rerunning `train`, and they exist so that a rerun resumes.
"""
import json
from pathlib import Path

import yaml

from pipeline import dag

SUITE = config.get("suite", "default")
STAGES = {s.name: s for s in dag.suite_stages(Path(workflow.basedir), SUITE)}
GPU_KINDS = {"train", "sample", "likelihood"}

wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    suite="[A-Za-z0-9_-]+",
    exp="[A-Za-z0-9_.-]+",
    sampler="[A-Za-z0-9_-]+",


def stage(kind, wc):
    """The DAG stage that a rule's wildcards name."""
    if kind in ("download", "prepare", "evaluator"):
        return STAGES[f"{kind}-{wc.dataset}"]
    if kind in ("train", "likelihood"):
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


rule all:
    input: [o for s in STAGES.values() if s.kind == "report" for o in s.all_outs()]

rule download:
    input: deps("download")
    output: directory("data/raw/{dataset}")
    params: **rule_params("download")
    shell: "{params.cmd}"

rule prepare:
    input: deps("prepare")
    output: directory("data/prepared/{dataset}")
    params: **rule_params("prepare")
    shell: "{params.cmd}"

rule evaluator:
    input: deps("evaluator")
    output: directory("data/evaluator/{dataset}")
    params: **rule_params("evaluator")
    shell: "{params.cmd}"

rule train:
    input: deps("train")
    output: directory("runs/{suite}/{exp}/train"), "runs/{suite}/{exp}/train_metrics.json", "runs/{suite}/{exp}/loss.csv"
    params: **rule_params("train")
    resources: gpu=1
    shell: "{params.cmd}"

rule sample:
    input: deps("sample")
    output: directory("runs/{suite}/{exp}/samples/{sampler}")
    params: **rule_params("sample")
    resources: gpu=1
    shell: "{params.cmd}"

rule evaluate:
    input: deps("evaluate")
    output: "runs/{suite}/{exp}/eval/{sampler}.json"
    params: **rule_params("evaluate")
    shell: "{params.cmd}"

rule likelihood:
    input: deps("likelihood")
    output: "runs/{suite}/{exp}/likelihood.json"
    params: **rule_params("likelihood")
    resources: gpu=1
    shell: "{params.cmd}"

rule report:
    input: deps("report")
    output: directory("reports/{suite}")
    params: **rule_params("report")
    shell: "{params.cmd}"
