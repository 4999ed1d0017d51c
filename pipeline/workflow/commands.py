"""The command table, read from the stages: each `python -m pipeline COMMAND`, the module under `pipeline/stages/`
that runs it, and where it sits in the DAG.

A module under `pipeline/stages/` that runs a command declares it beside its code, as a literal:

    SPEC = dict(command="likelihood", help="...", scope="experiment", deps=("train", "prepared"), ...)
    SPECS = [dict(command="download", ...), dict(command="prepare", ...)]   # a module that runs several commands

This module finds those assignments by parsing the stages' source, never by importing them: the library imports no
stage (tests/test_layering.py), and `python -m pipeline --help`, the DAG and the Snakefile need none of the stages'
imports (torch, MLflow). Being a literal, a spec adds no import to its stage, hence no code dependency: it is data
the DAG reads, and a change of it changes dvc.yaml, not the stage's fingerprint. `StageSpec` says what each field
means; `pipeline.workflow.dag` builds the stages from the specs and checks their output keys and conditions; the CLI
(`COMMANDS`), the code deps (`stage_module`) and the Snakefile (one rule per DAG spec) read them from here.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field, fields
from pathlib import Path

STAGES_DIR = Path(__file__).resolve().parents[1] / "stages"
SCOPES = ("dataset", "experiment", "sampler", "suite")


@dataclass(frozen=True)
class StageSpec:
    """One command, and for a stage of the DAG its place there. Output keys name paths of `outputs.paths` (or of a
    spec's `paths`); params expressions (`when`, `deps_if`, `processes`) are Python expressions over the params'
    top-level groups, e.g. `eval.enable_bpd` or `'class_conditional' in eval.controllable`."""

    command: str  # `python -m pipeline COMMAND`; for a DAG stage also its kind, its stage names' prefix, its rule name
    help: str  # one line for --help
    # None: a command outside the DAG. Otherwise one stage per dataset of the suite (`--dataset D`), per experiment
    # (`--params FILE`), per experiment and sampler setting (`--params FILE --sampler S`), or one per suite (`--suite`)
    scope: str | None = None
    order: int = 1000  # its place in --help and among the stages of its scope in dvc.yaml (ties: by command)
    deps: tuple[str, ...] = ()  # output keys of other stages it reads; a suite stage: those of every stage of the suite
    deps_if: dict[str, tuple[str, ...]] = field(default_factory=dict)  # params expression -> more output keys
    # the output keys it writes, by DVC section: outs, persist (kept between runs, not declared to Snakemake), metrics,
    # plots (x: step, y: loss), uncached (tracked by git)
    outs: tuple[str, ...] = ()
    persist: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    uncached: tuple[str, ...] = ()
    paths: dict[str, str] = field(default_factory=dict)  # output keys new to outputs.paths -> "runs/{suite}/{exp}/x.json"
    # the params keys it tracks (experiment and sampler stages), dotted; `{sampler}` stands for the sampler's name.
    # A key the params file does not contain is left out (DVC refuses to track it).
    params: tuple[str, ...] = ()
    when: str | None = None  # params expression: the stage exists for the experiments where it holds (None: all)
    gpu: bool = False  # runs its network on CUDA when there is one (Snakemake `resources: gpu=`)
    processes: str | None = None  # params expression: the ranks it starts, one GPU each (None: 1)
    priority: int = 0  # Snakemake `priority:` when cores are short
    local: bool = False  # Snakemake runs it on the submitting machine (`localrule`), e.g. it needs the internet
    snakemake_report: dict[str, dict] = field(default_factory=dict)  # output key -> `report(...)` keyword arguments

    def writes(self) -> tuple[str, ...]:
        """Every output key it writes, DVC section by section."""
        return self.outs + self.persist + self.metrics + self.plots + self.uncached


FIELDS = {f.name for f in fields(StageSpec)}


def _literal(node: ast.expr, where: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"{where}: a stage spec holds literals only (strings, numbers, tuples, dicts), "
                         f"not `{ast.unparse(node)}`") from None


def _spec(node: ast.expr, where: str) -> StageSpec:
    """StageSpec of `dict(command=..., ...)` or `{"command": ..., ...}`, checked."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(k.arg is None for k in node.keywords):
            raise ValueError(f"{where}: a stage spec spells out its fields (no **)")
        values = {k.arg: _literal(k.value, where) for k in node.keywords}
    elif isinstance(node, ast.Dict):
        values = _literal(node, where)
    else:
        raise ValueError(f"{where}: a stage spec is `dict(command=..., help=..., ...)`")
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown stage spec field(s) {unknown}; the fields are {sorted(FIELDS)}")
    for name in ("deps", "outs", "persist", "metrics", "plots", "uncached", "params"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    if isinstance(values.get("deps_if"), dict):
        values["deps_if"] = {k: tuple(v) if isinstance(v, list) else v for k, v in values["deps_if"].items()}
    try:
        spec = StageSpec(**values)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None
    problem = _problem(spec)
    if problem:
        raise ValueError(f"{where}: {spec.command!r}: {problem}")
    return spec


def _problem(s: StageSpec) -> str | None:
    if not isinstance(s.command, str) or not s.command.isidentifier() or s.command.startswith("_"):
        return "the command must be a word of letters, digits and '_' (it names a Snakemake rule)"
    if not isinstance(s.help, str) or not s.help.strip():
        return "give a one-line `help`"
    if s.scope not in (None, *SCOPES):
        return f"scope must be one of {list(SCOPES)} or None (a command outside the DAG), got {s.scope!r}"
    tuples = {n: getattr(s, n) for n in ("deps", "outs", "persist", "metrics", "plots", "uncached", "params")}
    bad = [n for n, v in tuples.items() if not (isinstance(v, tuple) and all(isinstance(x, str) for x in v))]
    if bad:
        return f"{bad} must be tuples of strings"
    types = {"order": int, "priority": int, "gpu": bool, "local": bool, "when": (str, type(None)),
             "processes": (str, type(None)), "deps_if": dict, "paths": dict, "snakemake_report": dict}
    bad = [n for n, t in types.items() if not isinstance(getattr(s, n), t)]
    bad += [n for n, want in (("deps_if", tuple), ("paths", str), ("snakemake_report", dict))
            if isinstance(getattr(s, n), dict) and not all(isinstance(k, str) and isinstance(v, want)
                                                           for k, v in getattr(s, n).items())]
    if bad:
        return f"{sorted(set(bad))}: wrong type (see pipeline.workflow.commands.StageSpec)"
    if s.scope is None:
        dag_fields = [n for n in ("deps", "deps_if", "paths", "params", "when", "processes", "snakemake_report",
                                  *("outs", "persist", "metrics", "plots", "uncached")) if getattr(s, n)]
        return f"a command outside the DAG (no scope) declares no {dag_fields}" if dag_fields else None
    if not s.writes():
        return "a stage of the DAG writes at least one output (outs, metrics, ...)"
    if len(set(s.writes())) < len(s.writes()):
        return "an output key is listed twice"
    if s.scope in ("dataset", "suite") and (s.params or s.when or s.deps_if or s.processes):
        return f"a {s.scope} stage reads no params (params, when, deps_if, processes are for experiment and sampler stages)"
    if not set(s.snakemake_report) <= set(s.writes()) - set(s.persist):
        return "snakemake_report names outputs the stage does not declare to Snakemake"
    return None


def _module_specs(file: Path) -> list[StageSpec]:
    """The specs a stage module declares (`SPEC = ...` or `SPECS = [...]` at its top level)."""
    text = file.read_text()
    if "SPEC" not in text:
        return []
    found = []
    for node in ast.parse(text, str(file)).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if not isinstance(target, ast.Name) or target.id not in ("SPEC", "SPECS"):
            continue
        shown = file.relative_to(STAGES_DIR.parents[1]) if file.is_relative_to(STAGES_DIR.parents[1]) else file
        where = f"{shown.as_posix()}:{node.lineno}"
        if target.id == "SPEC":
            found.append(_spec(node.value, where))
        elif isinstance(node.value, (ast.List, ast.Tuple)):
            found += [_spec(v, where) for v in node.value.elts]
        else:
            raise ValueError(f"{where}: SPECS is a list of specs")
    return found


@functools.lru_cache(maxsize=None)
def _catalog() -> tuple[tuple[StageSpec, str], ...]:
    """(spec, module) of every command, in `order`."""
    out: dict[str, tuple[StageSpec, str]] = {}
    for f in sorted(STAGES_DIR.glob("*.py")):
        for spec in _module_specs(f):
            if spec.command in out:
                raise ValueError(f"command {spec.command!r} declared twice: in {out[spec.command][1]} and {f.stem}")
            out[spec.command] = (spec, f.stem)
    return tuple(sorted(out.values(), key=lambda sm: (sm[0].order, sm[0].command)))


def specs() -> dict[str, StageSpec]:
    """command -> its spec, every command, in `order`."""
    return {s.command: s for s, _ in _catalog()}


def dag_specs(*scopes: str) -> list[StageSpec]:
    """The specs of the DAG's stages (those with a scope; only `scopes` when given), in `order`."""
    return [s for s in specs().values() if s.scope and (not scopes or s.scope in scopes)]


def stage_module(command: str) -> str:
    """The dotted module that runs `command`, e.g. "pipeline.stages.sample"."""
    return f"pipeline.stages.{dict((s.command, m) for s, m in _catalog())[command]}"


# command -> (module under pipeline.stages, one-line help), in `order`
COMMANDS = {s.command: (module, s.help) for s, module in _catalog()}
