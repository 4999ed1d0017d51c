"""One DAG, two front ends: dvc.yaml and the Snakefile declare the same stages, commands, inputs and outputs."""
import re

import pytest
import yaml
from conftest import ROOT
from e2e_util import copy_repo, run

from pipeline.workflow import dag


def snakemake_jobs(text: str) -> list[dict]:
    """Jobs of a `snakemake -n -p` listing: rule, input, output, shell command."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule )", text):
        m = re.search(r"^rule (\w+):", block, re.M)
        if not m or m.group(1) == "all":
            continue
        field = lambda name: [s for s in (re.search(rf"^\s+{name}: (.*)$", block, re.M) or [None, ""])[1].split(", ") if s]  # noqa: E731
        cmd = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs.append({"rule": m.group(1), "input": sorted(field("input")), "output": sorted(field("output")),
                     "cmd": cmd.group(1).strip() if cmd else None})
    return jobs


def dvc_stages(path) -> list[dict]:
    stages = yaml.safe_load(path.read_text())["stages"]
    out = []
    for name, s in stages.items():
        outs, persist = [], []
        for section in ("outs", "metrics", "plots"):
            for o in s.get(section, []):
                key = o if isinstance(o, str) else next(iter(o))
                (persist if isinstance(o, dict) and o[key].get("persist") else outs).append(key)
        out.append({"rule": name.split("-")[0], "name": name, "input": sorted(s["deps"]), "output": sorted(outs),
                    "persist": persist, "cmd": s["cmd"]})
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("dag") / "repo")


@pytest.mark.parametrize("suite", ["smoke", "default"])
def test_dvc_yaml_equals_snakefile(repo, suite):
    dvc_file = repo / dag.dvc_yaml_path(suite)
    if not dvc_file.exists():
        pytest.skip(f"suite {suite} has no dvc.yaml in this checkout")
    from_dvc = dvc_stages(dvc_file)
    r = run(["snakemake", "-n", "-p", "--forceall", "-c1", "--config", f"suite={suite}"], repo)
    text = r.stdout + r.stderr
    from_smk = snakemake_jobs(text)
    key = lambda j: (j["rule"], j["cmd"], tuple(j["input"]), tuple(j["output"]))  # noqa: E731
    assert sorted(map(key, from_smk)) == sorted(map(key, from_dvc))
    # the only difference is declared and deliberate: training snapshots are a DVC `persist` output only
    assert all(p.endswith("/snapshots") for s in from_dvc for p in s["persist"])
    assert len(from_dvc) == len(from_smk) and len({s["name"] for s in from_dvc}) == len(from_dvc)


def test_committed_dvc_yaml_is_up_to_date():
    r = run(["python", "-m", "pipeline", "dag", "--check"], ROOT, check=False)
    assert r.returncode == 0, r.stderr


def test_parser_reads_rules():
    sample = ("[Sun Nov 29 07:20:44 2026]\nrule prepare:\n    input: a, b\n    output: c\n    jobid: 5\n"
              "Shell command: python -m pipeline prepare --dataset digits\n")
    assert snakemake_jobs("x\n" + sample) == [{"rule": "prepare", "input": ["a", "b"], "output": ["c"],
                                                "cmd": "python -m pipeline prepare --dataset digits"}]


def test_training_seeds_dvc_yaml_equals_snakefile(repo):
    """A suite with `training.seeds`: one replica per seed in both front ends (same stage names, commands, inputs,
    outputs), and DVC accepts the keys each replica tracks."""
    raw = yaml.safe_load((repo / "params/smoke.yaml").read_text())
    raw.update(suite="seeds", training={**raw["training"], "seeds": [3, 5]})
    raw["eval"].pop("controllable")
    (repo / "params/seeds").mkdir(exist_ok=True)
    (repo / "params/seeds/tiny.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(["python", "-m", "pipeline", "dag", "--suite", "seeds"], repo)
    from_dvc = dvc_stages(repo / "pipelines/seeds/dvc.yaml")
    assert {s["name"] for s in from_dvc if s["rule"] == "train"} == {"train-tiny-seed3", "train-tiny-seed5"}
    r = run(["snakemake", "-n", "-p", "--forceall", "-c1", "--config", "suite=seeds"], repo)
    key = lambda j: (j["rule"], j["cmd"], tuple(j["input"]), tuple(j["output"]))  # noqa: E731
    assert sorted(map(key, snakemake_jobs(r.stdout + r.stderr))) == sorted(map(key, from_dvc))
    smoke, aside = repo / "pipelines/smoke/dvc.yaml", repo / "smoke-dvc.yaml.aside"
    smoke.rename(aside)  # the smoke suite declares the same digits data stages; DVC refuses two owners of an output
    try:
        status = run(["dvc", "status", "pipelines/seeds/dvc.yaml:train-tiny-seed5"], repo)
    finally:
        aside.rename(smoke)
    assert "train-tiny-seed5" in status.stdout and "ERROR" not in status.stderr


def test_settings_a_network_refuses_fail_where_a_dag_starts_and_nowhere_else(repo):
    """`pipeline dag` and Snakemake's main process build each network on the meta device: a DDPM `nf` that is not a
    multiple of 32 is exit 2 naming the file and key, before any work. Reading the DAG (the stages' own provenance
    check, `pipeline stale`, `pipeline commit`, a cluster job's Snakemake) skips that build and never imports torch."""
    raw = yaml.safe_load((repo / "params/cifar10/ddpm_cont_vp.yaml").read_text())
    raw["suite"], raw["model"]["nf"] = "badnet", 48
    (repo / "params/badnet").mkdir(exist_ok=True)
    (repo / "params/badnet/bad.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        for cmd in (["python", "-m", "pipeline", "dag", "--suite", "badnet"],
                    ["snakemake", "-n", "-c1", "--config", "suite=badnet"]):
            r = run(cmd, repo, check=False)
            assert r.returncode == 2, (cmd, r.stdout[-2000:], r.stderr[-2000:])
            assert "error: params/badnet/bad.yaml: model: " in r.stderr and "multiple of 32" in r.stderr, r.stderr
        assert not (repo / "pipelines/badnet").exists()
        probe = ("import sys; from pathlib import Path; from pipeline.workflow import dag; "
                 "s = dag.suite_stages(Path('.'), 'badnet'); print(len(s), 'torch' in sys.modules)")
        n, torch_imported = run(["python", "-c", probe], repo).stdout.split()
        assert int(n) == len(dag.suite_stages(repo, "badnet")) > 8 and torch_imported == "False"
    finally:
        (repo / "params/badnet/bad.yaml").unlink()
