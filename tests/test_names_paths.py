"""Names that could leave a folder or end a shell command, from the command line or from params files, exit 2 with one
line before anything is written or deleted, inside the root or outside it."""
import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, venv_env

from pipeline.cli import main
from pipeline.errors import StageError
from pipeline.names import NAME_PATTERN, name_problem
from pipeline.stages.common import inside_root

SMOKE = ROOT / "params" / "smoke.yaml"


def _tree(top: Path) -> dict[str, bytes | None]:
    """Every file and folder under top, with the files' bytes."""
    return {p.relative_to(top).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(top.rglob("*"))}


@pytest.fixture
def world(tmp_path) -> Path:
    """tmp/root: a repository root with params/smoke.yaml; tmp/victim/keep.txt beside it, and tmp/up/victim two
    levels up from root/reports/x."""
    root = tmp_path / "root"
    (root / "params").mkdir(parents=True)
    shutil.copy(SMOKE, root / "params" / "smoke.yaml")
    for v in (tmp_path / "victim", tmp_path / "up" / "victim"):
        v.mkdir(parents=True)
        (v / "keep.txt").write_text("keep\n")
    return tmp_path


def _refused(world: Path, args: list[str], *words: str, process: bool = False) -> str:
    """Run `python -m pipeline ARGS` from the root: exit 2, one line on stderr holding `words`, nothing changed
    anywhere under the test's folder (the root and the victims beside it). In this process (`pipeline.cli.main`, what
    `python -m pipeline` runs; 0.1 s instead of a 2 s interpreter start) unless `process`: a new interpreter, where
    anything its imports print would show too (test_params_file_stem_must_be_a_name)."""
    before = _tree(world)
    if process:
        r = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=world / "root", env=venv_env(),
                           capture_output=True, text=True, timeout=120)
        rc, out, err = r.returncode, r.stdout, r.stderr
    else:
        rc, out, err = _in_process(world / "root", args)
    assert rc == 2, (rc, out[-2000:], err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for w in words:
        assert w in lines[0], lines[0]
    assert _tree(world) == before, "bad input must write and delete nothing"
    return lines[0]


def _in_process(cwd: Path, args: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of pipeline.cli.main(args) run from `cwd`; the working directory and the
    environment (a stage's provenance record) are restored after."""
    out, err, env, here = io.StringIO(), io.StringIO(), dict(os.environ), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(args)
            except SystemExit as e:  # argparse's refusals
                rc = e.code
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("suite", ["../victim", "../../up/victim", "x;touch X", ""])  # the rest: test_name_pattern
def test_report_suite_must_be_a_name(world, suite):
    err = _refused(world, ["report", f"--suite={suite}", "--root", str(world / "root")], "--suite", "suite name")
    assert repr(suite) in err


@pytest.mark.parametrize("suite", ["../victim", "../../victim", "x/y"])
def test_dag_suite_must_be_a_name(world, suite):
    _refused(world, ["dag", "--suite", suite, "--root", str(world / "root")], "--suite", "suite name")


@pytest.mark.parametrize("stage", ["prepare", "download"])
def test_dataset_must_be_a_name(world, stage):
    _refused(world, [stage, "--dataset", "../../victim", "--root", str(world / "root")], "--dataset", "dataset name")


@pytest.mark.parametrize("stage", ["sample", "evaluate"])
def test_sampler_must_be_a_name(world, stage):
    params = str(world / "root" / "params" / "smoke.yaml")
    _refused(world, [stage, "--params", params, "--sampler", "../../victim", "--root", str(world / "root")], "--sampler",
             "sampler name")


def _params(world: Path, name: str, text: str) -> Path:
    f = world / "root" / "params" / name
    f.write_text(text)
    return f


def test_params_suite_outside_the_root(world):
    """`suite: ../../victim` in a params file: `dag` wrote victim/dvc.yaml, `report` wrote into victim/."""
    smoke = SMOKE.read_text()
    f = _params(world, "evil.yaml", smoke.replace("suite: smoke", "suite: ../../victim"))
    root = str(world / "root")
    _refused(world, ["dag", "--root", root], "victim")
    _refused(world, ["train", "--params", str(f), "--root", root], str(f), "suite: suite name '../../victim'")


def test_params_file_stem_must_be_a_name(world):
    """A params file `a;touch X.yaml` went into dvc.yaml's shell commands."""
    f = _params(world, "a;touch X.yaml", SMOKE.read_text())
    root = str(world / "root")
    _refused(world, ["dag", "--root", root], "experiment name 'a;touch X'", "rename the file", process=True)
    _refused(world, ["train", "--params", str(f), "--root", root], str(f), "experiment name 'a;touch X'", process=True)
    _refused(world, ["describe", "--params", str(f)], "experiment name", process=True)


def test_report_of_a_suite_without_experiments(world):
    _refused(world, ["report", "--suite", "nosuch", "--root", str(world / "root")], "nosuch", "no experiments")


@pytest.mark.parametrize("stage", ["dag", "report"])
def test_malformed_yaml_anywhere_under_params(world, stage):
    """A bad file in another suite stops `dag` (every suite) and `report`: one line naming the file and the line."""
    sub = world / "root" / "params" / "other"
    sub.mkdir()
    f = _params(world, "other/broken.yaml", "suite: other\ntraining: {n_iters: 3\nmodel: {name: mlp}\n")
    args = ["dag"] if stage == "dag" else ["report", "--suite", "smoke"]
    _refused(world, [*args, "--root", str(world / "root")], str(f), "not valid YAML", "line 3")


def test_name_pattern():
    assert NAME_PATTERN == r"[A-Za-z0-9_][A-Za-z0-9_-]*"
    for ok in ("smoke", "ncsnpp_cont-seed3", "fm", "cifar10", "P2000", "_x"):
        assert name_problem("suite", ok) is None
    for bad in ("", ".", "..", "../x", "../../victim", "/tmp", "a/b", "a b", "a;b", "-x", "é", "x\n", "a.b", None, 5):
        assert name_problem("suite", bad), bad


def test_inside_root(tmp_path):
    root = tmp_path / "root"
    assert inside_root(root, "runs/smoke/exp/train") == root / "runs/smoke/exp/train"
    for rel in ("reports/../../victim", "../x", "/etc", "runs/a/../../../x"):
        with pytest.raises(StageError, match="outside the root"):
            inside_root(root, rel)
