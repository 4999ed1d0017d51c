"""The shape of the code, checked: the library never imports a stage or the CLI, a stage imports only the library
and `pipeline.stages.common`, the math modules do no I/O, the package has no import cycle (so no import hides inside
a function to dodge one), and every module a stage runs is among its DVC/Snakemake code dependencies."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.workflow.code_deps import CODE_ROOT, closure, imports_of, module_file, module_name, stage_code
from pipeline.workflow.commands import COMMANDS, dag_specs, stage_module

PKG = ROOT / "pipeline"
MODULES = {module_name(f): f for f in sorted(PKG.rglob("*.py"))}
CLI = {"pipeline.cli", "pipeline.__main__"}


def folder(module: str) -> str:
    """The layer of a module: its folder under pipeline/, or its own name for a top-level module."""
    return module.split(".")[1] if module != "pipeline" else ""


STAGES = {m for m in MODULES if m.startswith("pipeline.stages")}
LIBRARY = set(MODULES) - CLI - STAGES
# The layers, bottom up (docs/architecture.md): a folder of the package imports only from the folders listed for it
# (and from itself). FOUNDATION (the top-level modules names, errors and config: the params schema) may be imported by
# any folder but config, whose only import is names.
FOUNDATION = {"names", "errors", "config"}
MAY_IMPORT = {
    "core": set(),                                   # SDEs, losses, RNG, scaling, EMA, likelihood, mixtures: the math
    "speed": set(),                                  # CPU layout, dropout masks, fused kernel, compile, allocator
    "models": {"core", "speed"},                     # score networks and the noise-conditional classifier
    "samplers": {"core", "speed"},                   # PC, ODE, ALD, fast samplers, controllable generation
    "metrics": {"core", "samplers"},                 # FD / KD / IS, point metrics, quality curves
    "io": {"models"},                                # files, checkpoints, datasets, MLflow, provenance stamps
    "training": {"core", "speed", "models", "samplers", "io"},
    "workflow": {"models", "io"},                    # the DAG, code deps, output paths, the command table
    "report": {"metrics", "io", "workflow"},
    "stages": {"core", "speed", "models", "samplers", "metrics", "io", "training", "workflow", "report"},
}
# Math on tensors and score functions: no files, no MLflow, no YAML, no params schema. Whole folders, plus the network
# files of models/ and the classifier objective of training/.
PURE_FOLDERS = {"core", "samplers", "speed"}
PURE = {m for m in MODULES if folder(m) in PURE_FOLDERS} | {
    "pipeline.models.layers", "pipeline.models.fir", "pipeline.models.unet", "pipeline.models.ddpm", "pipeline.models.mlp",
    "pipeline.models.refinenet", "pipeline.models.noise_classifier", "pipeline.training.noise_classifier"}
IMPURE_FOLDERS = {"io", "workflow"}
IMPURE_TARGETS = {m for m in MODULES if folder(m) in IMPURE_FOLDERS} | {"pipeline.config"}

GRAPH = {m: imports_of(f) for m, f in MODULES.items()}


def third_party_imports(f: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out - {"pipeline"}


def test_module_sets_are_what_they_claim():
    assert PURE <= LIBRARY and "pipeline.stages.common" in STAGES and len(STAGES) >= 10
    assert {folder(m) for m in MODULES if m.count(".") >= 2} == set(MAY_IMPORT)


def test_each_folder_imports_only_the_layers_below_it():
    bad = set()
    for m in MODULES:
        me = folder(m)
        for t in GRAPH[m]:
            other = folder(t)
            if other in ("", me) or m in CLI:
                continue
            if me in MAY_IMPORT:
                ok = other in MAY_IMPORT[me] or other in FOUNDATION or t in ("pipeline.stages",)
            else:  # a top-level module: config imports names only; names and errors nothing of the package
                ok = me == "config" and other == "names"
            if not ok:
                bad.add((m, t))
    assert not bad, sorted(bad)


def test_the_layers_are_an_order():
    """MAY_IMPORT has no cycle: the folders can be listed bottom up."""
    done: list[str] = []
    todo = dict(MAY_IMPORT)
    while todo:
        ready = [f for f, below in todo.items() if below <= set(done)]
        assert ready, f"a cycle among {sorted(todo)}"
        done += ready
        for f in ready:
            del todo[f]


def test_top_level_modules_are_few_and_init_files_empty():
    top = sorted(f.name for f in PKG.glob("*.py"))
    assert len(top) <= 10, top
    inits = [f for f in PKG.rglob("__init__.py") if f.parent != PKG and f.read_text().strip()]
    assert inits == [], inits


def test_library_never_imports_a_stage_or_the_cli():
    """Not even the command table: `pipeline.workflow.commands` reads each stage's SPEC from its source text
    (tests/test_stage_specs.py), so the DAG, the CLI's help and the Snakefile know every stage without this rule
    needing an exception or a stage's imports (torch) being loaded."""
    bad = {(m, t) for m in LIBRARY for t in GRAPH[m] if t in CLI or t.startswith("pipeline.stages")}
    assert not bad, sorted(bad)


def test_stages_import_only_the_library_and_stages_common():
    allowed = LIBRARY | {"pipeline.stages", "pipeline.stages.common"}
    bad = {(m, t) for m in STAGES for t in GRAPH[m] if t not in allowed}
    assert not bad, sorted(bad)


def test_math_modules_do_no_io():
    bad = {(m, t) for m in PURE for t in GRAPH[m] if t in IMPURE_TARGETS}
    bad |= {(m, t) for m in PURE for t in third_party_imports(MODULES[m]) if t in ("yaml", "mlflow", "dvc")}
    assert not bad, sorted(bad)


def test_no_import_cycles():
    """Depth-first search over every import (top level and inside functions): a back edge is a cycle."""
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m, path):
        state[m] = 1
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                cycle.extend(path[path.index(t):] + [m, t] if t in path else [m, t])
                return True
            if t not in state and visit(t, path + [m]):
                return True
        state[m] = 2
        return False

    for m in sorted(GRAPH):
        if m not in state and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)


def _covered(files: set[str], deps: tuple[str, ...]) -> set[str]:
    """The files that are neither listed nor inside a listed folder."""
    return {f for f in files if f not in deps and not any(f.startswith(d + "/") for d in deps)}


@pytest.mark.parametrize("command", [s.command for s in dag_specs()])  # every stage of the DAG (its spec)
def test_every_module_a_stage_imports_is_a_dependency(command):
    """Import the stage's module in a fresh interpreter and list what Python loaded from the package: the DAG's deps
    (derived statically from the source) must cover every one of those files."""
    probe = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
             "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items()) "
             "if (n == 'pipeline' or n.startswith('pipeline.')) and getattr(m, '__file__', None))))")
    out = subprocess.run([sys.executable, "-c", probe, stage_module(command)], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    loaded = {Path(f).resolve().relative_to(CODE_ROOT).as_posix() for f in json.loads(out)}
    assert loaded and _covered(loaded, stage_code(command)) == set()


def test_sampler_modules_are_not_training_dependencies():
    train, sample, likelihood = stage_code("train"), stage_code("sample"), stage_code("likelihood")
    for f in ("pipeline/samplers/correctors.py", "pipeline/samplers/predictors.py", "pipeline/samplers/sampling.py"):
        assert f in sample and f not in train and f not in likelihood, f
    for f in ("pipeline/core/sde.py", "pipeline/core/losses.py", "pipeline/core/rng.py", "pipeline/core/ema.py",
              "pipeline/training/loop.py",
              "pipeline/stages/train.py", "pipeline/stages/common.py", "pipeline/core/scaling.py"):
        assert f in train, f  # the files issue 12 found missing from the hand-written lists
    assert "pipeline/training/snapshot_grid.py" not in train  # MLflow grids only (code_deps.SIDE_OUTPUT_ONLY)


def test_compiled_sources_are_dependencies_of_the_stages_that_load_them():
    """models/group_norm_act.cpp is compiled by models/group_norm_act.py at run time: an edit to it reruns every stage
    that runs the networks, as an edit to the .py would."""
    sources = sorted(p.relative_to(CODE_ROOT).as_posix() for p in (CODE_ROOT / "pipeline").rglob("*.cpp"))
    assert "pipeline/speed/group_norm_act.cpp" in sources
    for command in ("train", "sample", "likelihood", "report"):
        deps = stage_code(command)
        for src in sources:
            module = src.removesuffix(".cpp") + ".py"
            assert bool(_covered({module}, deps)) == bool(_covered({src}, deps)), (command, src)
    assert not _covered({"pipeline/speed/group_norm_act.cpp"}, stage_code("train"))
    assert _covered({"pipeline/speed/group_norm_act.cpp"}, stage_code("download"))


def test_commands_table_names_real_stage_modules():
    for command in COMMANDS:
        assert module_file(stage_module(command)) is not None, command


def test_the_import_walk_on_a_known_tree(tmp_path):
    """Absolute, relative, `from pkg import submodule`, imports inside functions, parent packages, a skipped module."""
    files = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "import os\n\ndef f():\n    from pipeline import b\n    return b\n",
        "pipeline/b.py": "from . import c\nfrom .sub.d import X\n",
        "pipeline/c.py": "import pipeline.side\n",
        "pipeline/side.py": "import pipeline.e\n",
        "pipeline/e.py": "",
        "pipeline/sub/__init__.py": "from ..c import *\n",
        "pipeline/sub/d.py": "X = 1\n",
        "pipeline/unused.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert imports_of(tmp_path / "pipeline/b.py", tmp_path) == {"pipeline.c", "pipeline.sub.d"}
    got = closure("pipeline.a", tmp_path, skip=("pipeline.side",))
    assert got == {"pipeline", "pipeline.a", "pipeline.b", "pipeline.c", "pipeline.sub", "pipeline.sub.d"}
    assert "pipeline.e" in closure("pipeline.a", tmp_path, skip=())
    (tmp_path / "pipeline/e.py").unlink()
    with pytest.raises(ImportError, match="pipeline.e"):
        closure("pipeline.a", tmp_path, skip=())
    # a file's imports are parsed once per version of it: an edit (another size or time) is read again
    (tmp_path / "pipeline/b.py").write_text("from . import c\nimport pipeline.unused\n")
    assert imports_of(tmp_path / "pipeline/b.py", tmp_path) == {"pipeline.c", "pipeline.unused"}
