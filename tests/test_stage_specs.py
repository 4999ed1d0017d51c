"""A stage declares itself: `SPEC` (or `SPECS`) in its module under pipeline/stages/, which
pipeline/workflow/commands.py reads from the source; the CLI, the code deps, dvc.yaml and the Snakefile follow from it.
A new stage is one new file: the last test adds one to a copy of the repository and finds it in all three front ends."""
import importlib
import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import ROOT
from e2e_util import copy_repo, run
from test_dag import dvc_stages, snakemake_jobs

from pipeline.workflow import commands, dag


def declared(module: str) -> list[dict]:
    m = importlib.import_module(f"pipeline.stages.{module}")
    return [m.SPEC] if hasattr(m, "SPEC") else list(m.SPECS)


def test_the_table_is_what_each_stage_module_declares():
    """Every module under pipeline/stages/ but `common` runs at least one command and declares it; what the table read
    from the source is the module's own SPEC, field for field."""
    modules = sorted(f.stem for f in (ROOT / "pipeline/stages").glob("*.py") if f.stem not in ("__init__", "common"))
    assert sorted({m for m, _ in commands.COMMANDS.values()}) == modules
    specs = commands.specs()
    for module in modules:
        for d in declared(module):
            spec = specs[d["command"]]
            assert commands.stage_module(spec.command) == f"pipeline.stages.{module}"
            assert {k: getattr(spec, k) for k in d} == d, module
            assert commands.COMMANDS[spec.command] == (module, spec.help)
    assert list(specs) == list(commands.COMMANDS)  # --help lists them in `order`
    assert [s.command for s in dag.checked_specs()] == [s.command for s in specs.values() if s.scope]


def test_help_and_the_table_import_no_stage():
    """`python -m pipeline --help` and the command table read the specs without importing a stage module (whose
    imports would load torch, MLflow, ...)."""
    probe = ("import json, sys\nfrom pipeline.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pipeline.stages.') or m == 'torch')))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "download" in r.stdout and "classifier" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1]) == ["pipeline.stages.common"]  # cli.py's name checks


def _module(tmp_path, text: str):
    f = tmp_path / "bad.py"
    f.write_text(textwrap.dedent(text))
    return f


@pytest.mark.parametrize("text, message", [
    ("KEY = 'x'\nSPEC = dict(command='x', help='h', scope='experiment', outs=(KEY,))\n", "literals only"),
    ("SPEC = dict(command='x', help='h', scope='experiment', output=('train',))\n", "unknown stage spec field"),
    ("SPEC = dict(command='x', help='h', scope='weekly', outs=('train',))\n", "scope must be one of"),
    ("SPEC = dict(command='x', help='h', outs=('train',))\n", "outside the DAG"),
    ("SPEC = dict(command='x-y', help='h')\n", "a word of letters"),
    ("SPEC = dict(command='x', help='h', scope='suite', when='eval.enable_bpd', uncached=('report',))\n", "reads no params"),
    ("SPEC = dict(command='x', help='h', scope='experiment', outs=('train',), snakemake_report={'eval': {}})\n",
     "snakemake_report"),
    ("SPECS = dict(command='x', help='h')\n", "SPECS is a list"),
    ("SPEC = dict(command='x', help='h', scope='experiment', outs='train')\n", "must be tuples of strings"),
    ("SPEC = dict(command='x', help='h', scope='experiment', outs=('train',), gpu='yes')\n", r"\['gpu'\]: wrong type"),
])
def test_a_bad_spec_is_one_line_naming_its_file(tmp_path, text, message):
    with pytest.raises(ValueError, match=message) as e:
        commands._module_specs(_module(tmp_path, text))
    assert "bad.py:" in str(e.value)


@pytest.fixture
def stages_dir(tmp_path, monkeypatch):
    """A copy of pipeline/stages/ as the table's source, for one test."""
    d = tmp_path / "pipeline" / "stages"
    d.mkdir(parents=True)
    for f in (ROOT / "pipeline/stages").glob("*.py"):
        (d / f.name).write_text(f.read_text())
    monkeypatch.setattr(commands, "STAGES_DIR", d)
    for cached in (commands._catalog, dag.checked_specs):
        cached.cache_clear()
    yield d
    monkeypatch.undo()
    for cached in (commands._catalog, dag.checked_specs):
        cached.cache_clear()


@pytest.mark.parametrize("fields, message", [
    ("deps=('train',), metrics=('hello',)", r"output keys \['hello'\] are not paths of a stage of scope 'experiment'"),
    ("deps=('samples',), metrics=('hello',), paths={'hello': 'runs/{suite}/{exp}/x.json'}",
     r"\['samples'\] are not paths"),  # a sampler stage's output: an experiment stage has no one sampler
    ("deps=('train',), metrics=('likelihood',)", r"\['likelihood'\] are written by 'likelihood' already"),
    ("metrics=('hello',), paths={'hello': 'runs/{suite}/{sampler}.json'}", "a relative path naming only"),
    ("metrics=('hello',), paths={'train': 'runs/{suite}/{exp}/x'}", "already an output key"),
    ("metrics=('hello',), paths={'hello': 'runs/{suite}/{exp}/x.json'}, when='evall.enable_bpd'", "not a params group"),
    ("metrics=('hello',), paths={'hello': 'runs/{suite}/{exp}/x.json'}, processes='eval.'", "params expression"),
])
def test_the_dag_checks_output_keys_and_expressions(stages_dir, fields, message):
    (stages_dir / "hello.py").write_text(f"SPEC = dict(command='hello', help='h', scope='experiment', {fields})\n")
    with pytest.raises(ValueError, match=message) as e:
        dag.checked_specs()
    assert str(e.value).startswith("pipeline.stages.hello: SPEC of 'hello': ")


def test_a_command_declared_twice_is_refused(stages_dir):
    (stages_dir / "again.py").write_text("SPEC = dict(command='train', help='h')\n")
    with pytest.raises(ValueError, match="'train' declared twice: in again and train"):
        commands.specs()


HELLO = '''\
"""`hello`: a trivial stage, written by tests/test_stage_specs.py into a copy of the repository."""
from __future__ import annotations

import json

from pipeline.io import atomic
from pipeline.stages.common import add_common_arguments, inside_root, load_context

SPEC = dict(
    command="hello", help="write hello.json for each trained experiment", scope="experiment", order=75,
    deps=("train",), metrics=("hello",), paths={"hello": "runs/{suite}/{exp}/hello.json"}, params=("seed",),
    when="eval.enable_bpd", priority=1,
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)


def run(args) -> int:
    ctx = load_context(args)
    out = inside_root(ctx.root, SPEC["paths"]["hello"].format(suite=ctx.suite, exp=ctx.experiment))
    atomic.write_text(out, json.dumps({"experiment": ctx.experiment, "seed": ctx.params.seed}) + "\\n")
    return 0
'''


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_new_stage_is_one_new_file(tmp_path):
    """Write pipeline/stages/hello.py and nothing else: the CLI runs it, `python -m pipeline dag` puts it into the
    suite's dvc.yaml (command, data and code deps, tracked params, metrics), and Snakemake has a rule for it with the
    same command, inputs and outputs."""
    repo = copy_repo(tmp_path / "repo")
    (repo / "pipeline/stages/hello.py").write_text(HELLO)

    assert "write hello.json for each trained experiment" in run([sys.executable, "-m", "pipeline", "--help"], repo).stdout
    run([sys.executable, "-m", "pipeline", "dag", "--suite", "smoke"], repo)
    changed = run(["git", "status", "--porcelain"], repo).stdout.split("\n")
    assert sorted(filter(None, changed)) == [" M pipelines/smoke/dvc.yaml", "?? pipeline/stages/hello.py"]

    stage = yaml.safe_load((repo / "pipelines/smoke/dvc.yaml").read_text())["stages"]["hello-smoke"]
    assert stage["cmd"] == "python -m pipeline hello --params params/smoke.yaml"
    assert stage["deps"][0] == "runs/smoke/smoke/train" and "pipeline/stages/hello.py" in stage["deps"]
    assert "pipeline/io/atomic.py" in stage["deps"] and "pipeline/stages/train.py" not in stage["deps"]
    assert stage["params"] == [{"params/smoke.yaml": ["seed"]}] and stage["metrics"] == ["runs/smoke/smoke/hello.json"]

    r = run(["snakemake", "-n", "-p", "--forceall", "-c1", "--config", "suite=smoke"], repo)
    key = lambda j: (j["rule"], j["cmd"], tuple(j["input"]), tuple(j["output"]))  # noqa: E731
    from_smk = sorted(map(key, snakemake_jobs(r.stdout + r.stderr)))
    assert from_smk == sorted(map(key, dvc_stages(repo / "pipelines/smoke/dvc.yaml")))
    assert [j for j in from_smk if j[0] == "hello"] == [key({"rule": "hello", "cmd": stage["cmd"], "input": sorted(stage["deps"]),
                                                             "output": stage["metrics"]})]

    run([sys.executable, "-m", "pipeline", "hello", "--params", "params/smoke.yaml"], repo)
    written = json.loads((repo / "runs/smoke/smoke/hello.json").read_text())
    assert written["experiment"] == "smoke" and written["provenance"]["stage"] == "hello-smoke"
