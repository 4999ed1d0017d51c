"""Snakemake profiles: profiles/local runs the suite on one machine; profiles/slurm fans it out over SLURM, sized per
suite by profiles/sizes.yaml (cifar10: the papers' sizes and one GPU for each stage that runs a network; the small
suites: 1 CPU, 2 GB, no GPU), and the executor plugin turns that into the sbatch request. tests/test_slurm.py runs it
on a real cluster."""
import re
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT
from e2e_util import copy_repo, run
from test_dag import snakemake_jobs

from pipeline.workflow import dag
from pipeline.workflow.commands import dag_specs

GPU_RULES = {"train", "classifier", "sample", "evaluate", "likelihood", "controllable", "curves"}


def _value(v: str):
    return int(v) if re.fullmatch(r"-?\d+", v) else v


def job_resources(text: str) -> list[tuple[str, dict]]:
    """(rule, resources) of every job in a `snakemake -n` listing, `all` left out."""
    out = []
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule )", text):
        m = re.search(r"^rule (\w+):", block, re.M)
        if not m or m.group(1) == "all":
            continue
        line = re.search(r"^\s+resources: (.*)$", block, re.M)
        pairs = [p.split("=", 1) for p in line.group(1).split(", ")] if line else []
        out.append((m.group(1), {k: _value(v) for k, v in pairs}))
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("profiles") / "repo")


@pytest.fixture(scope="module")
def slurm_dry_run(repo) -> str:
    r = run(["snakemake", "--profile", "profiles/slurm", "-n", "--config", "suite=cifar10"], repo)
    return r.stdout + r.stderr


def test_profiles_parse():
    local = yaml.safe_load((ROOT / "profiles/local/config.yaml").read_text())
    slurm = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    sizes = yaml.safe_load((ROOT / "profiles/sizes.yaml").read_text())
    assert local["cores"] >= 1 and local["resources"]["gpu"] >= 1
    assert slurm["executor"] == "slurm" and slurm["jobs"] > 1
    assert slurm["latency-wait"] >= 30 and slurm["retries"] >= 1
    # job states from squeue (sacct needs accounting); no mapping that a command-line flag would replace whole
    assert slurm["slurm-status-command"] == "squeue" and 0 < slurm["slurm-init-seconds-before-status-checks"] <= 40
    assert "set-resources" not in slurm and "default-resources" not in slurm
    # per-suite sizes only name rules the Snakefile has: one per stage spec (pipeline/workflow/commands.py)
    rules = {s.command for s in dag_specs()}
    assert sizes["suites"] == {"cifar10": "paper"}
    for size in ("small", "paper"):
        assert isinstance(sizes[size]["gpus"], bool) and set(sizes[size]) - {"gpus", "all"} <= rules
    assert sizes["paper"]["gpus"] and not sizes["small"]["gpus"]


def test_local_profile_dry_run(repo):
    r = run(["snakemake", "--profile", "profiles/local", "-n", "--config", "suite=smoke", "gpus=1"], repo)
    text = r.stdout + r.stderr
    assert "Using profile profiles/local" in text
    jobs = job_resources(text)
    stages = dag.suite_stages(repo, "smoke")
    assert sorted(rule for rule, _ in jobs) == sorted(s.kind for s in stages)
    for rule, res in jobs:  # `gpus=1`: the network stages ask for a GPU even in a small suite
        assert res["gpu"] == (1 if rule in GPU_RULES else 0), (rule, res)
    # printshellcmds from the profile: every job shows its pipeline command
    assert all(j["cmd"] and j["cmd"].startswith("python -m pipeline ") for j in snakemake_jobs(text))


def test_slurm_profile_small_suite_fits_a_small_cpu_node(repo):
    """smoke (like toy and default) asks for no GPU and 1 CPU / 2 GB a job; --set-resources changes one key only."""
    r = run(["snakemake", "--profile", "profiles/slurm", "-n", "--config", "suite=smoke",
             "--set-resources", "train:runtime=5"], repo)
    jobs = job_resources(r.stdout + r.stderr)
    assert len(jobs) == len(dag.suite_stages(repo, "smoke"))
    for rule, res in jobs:
        assert res["gpu"] == 0 and res["cpus_per_task"] == 1 and res["mem_mb"] <= 2000, (rule, res)
        assert res["runtime"] == (5 if rule == "train" else 60), (rule, res)


def test_bad_gpus_switch_is_one_line_status_2(repo):
    r = run(["snakemake", "-n", "--config", "suite=smoke", "gpus=many"], repo, check=False)
    assert r.returncode == 2
    assert [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()] == ["error: --config gpus=many: expected 0 or 1"]


def test_slurm_profile_dry_run(repo, slurm_dry_run):
    """The SLURM profile loads and each job carries what sbatch needs (a dry run calls no sbatch)."""
    text = slurm_dry_run
    assert "Using profile profiles/slurm" in text
    jobs = job_resources(text)
    stages = dag.suite_stages(repo, "cifar10")
    assert sorted(rule for rule, _ in jobs) == sorted(s.kind for s in stages)
    trains = [res for rule, res in jobs if rule == "train"]
    assert len(trains) == len(dag.experiments(repo, "cifar10")) > 1
    for res in trains:
        assert res["gpu"] == 1 and res["runtime"] == 2880 and res["mem_mb"] == 64000 and res["cpus_per_task"] == 8
    for rule, res in jobs:
        assert res["gpu"] == (1 if rule in GPU_RULES else 0), (rule, res)
        assert {"runtime", "mem_mb", "cpus_per_task"} <= set(res)


def test_slurm_plugin_turns_gpu_into_sbatch_request(repo, slurm_dry_run):
    """What the plugin would submit for a train job and a download job, from the resources the dry run printed."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    jobs = dict(job_resources(slurm_dry_run))  # one job per rule is enough
    params = {"run_uuid": "x", "slurm_logfile": "log", "comment_str": "c", "account": "-A proj", "partition": "-p gpu",
              "workdir": str(repo)}
    calls = {}
    for rule in ("train", "download"):
        job = SimpleNamespace(resources=Resources(jobs[rule]), threads=1)
        calls[rule] = get_submit_command(job, params) + set_gres_string(job)
    assert "--gpus=1" in calls["train"] and "--cpus-per-task=8" in calls["train"]
    assert "--mem 64000" in calls["train"] and "-t 2880" in calls["train"]
    assert "--gpus" not in calls["download"] and "--gres" not in calls["download"]


def test_unknown_suite_is_one_line_status_2(repo):
    r = run(["snakemake", "-n", "--config", "suite=nope"], repo, check=False)
    assert r.returncode == 2
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert lines == ["error: suite 'nope' has no experiments (no params/**/*.yaml with `suite: nope`)"]
