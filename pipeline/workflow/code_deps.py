"""Each stage's code dependencies, derived from its imports: the source files whose edit must rerun the stage.

The rule: the module that runs the stage (`pipeline.workflow.commands`) and everything it imports within `pipeline/`,
transitively — `import` and `from ... import` statements anywhere in a module (top level or inside a function),
absolute or relative — plus the `__init__.py` of every package on the way, which Python runs on import. Modules in
SIDE_OUTPUT_ONLY are not followed: they write MLflow artifacts only, never a DVC output. Imports outside `pipeline/`
(torch, scipy, ...) are pinned by pyproject.toml, not tracked per stage. A module's C++ source beside it (same
name, COMPILED_SUFFIXES) is compiled and loaded by that module, so it counts as part of it.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

from pipeline.workflow.commands import stage_module

PACKAGE = "pipeline"
CODE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the package: paths are relative to it
COMPILED_SUFFIXES = (".cpp",)  # a module `x.py` that compiles `x.cpp` at run time depends on it too
SIDE_OUTPUT_ONLY = {
    "pipeline.training.snapshot_grid": "sample grids logged to MLflow during training; model.pt does not depend on them",
}


def module_file(name: str, root: Path = CODE_ROOT) -> Path | None:
    """The source file of dotted module `name` under `root` (a package's __init__.py), or None."""
    base = root.joinpath(*name.split("."))
    for f in (base / "__init__.py", base.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def module_name(file: Path, root: Path = CODE_ROOT) -> str:
    parts = list(file.resolve().relative_to(root.resolve()).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def imports_of(file: Path, root: Path = CODE_ROOT) -> frozenset[str]:
    """The modules of the package that `file` imports, at any depth of its syntax tree."""
    st = file.stat()  # every stage's closure shares most files: each version of a file is parsed once per process
    return _imports_of(file, root, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _imports_of(file: Path, root: Path, _mtime_ns: int, _size: int) -> frozenset[str]:
    me = module_name(file, root)
    package = me if file.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if _in_package(a.name)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb level - 1 packages from this module's package
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not _in_package(target):
                continue
            # `from pipeline.models import fir` imports the submodule pipeline.models.fir (its package's __init__
            # runs first: `closure` adds parent packages); any other name is read from `target` itself.
            subs = {f"{target}.{a.name}" for a in node.names if module_file(f"{target}.{a.name}", root)}
            found |= subs
            if len(subs) < len(node.names):
                found.add(target)
    return frozenset(found - {me})  # a package's __init__ importing its own submodules names itself


def closure(module: str, root: Path = CODE_ROOT, skip=tuple(SIDE_OUTPUT_ONLY)) -> set[str]:
    """`module` and every package module it imports, transitively, with their parent packages; `skip` not followed."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        f = module_file(name, root)
        if f is None:
            raise ImportError(f"{name}: imported within {PACKAGE} but no such module under {root}")
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages' __init__.py run first
        todo += sorted(imports_of(f, root))
    return seen


@functools.lru_cache(maxsize=None)
def stage_code(command: str) -> tuple[str, ...]:
    """The source files (relative to the repository root, sorted) that the stage `command` runs: files, never a folder,
    so that Snakemake's mtime trigger sees an edit of any of them as DVC's hash does."""
    modules = [module_file(m) for m in closure(stage_module(command))]
    sources = [f.with_suffix(s) for f in modules for s in COMPILED_SUFFIXES if f.with_suffix(s).is_file()]
    files = {f.relative_to(CODE_ROOT).as_posix() for f in modules + sources}
    return tuple(sorted(files))
