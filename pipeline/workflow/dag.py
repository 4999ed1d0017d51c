"""The one DAG behind both front ends: stages with their commands, deps, outs and tracked params.

A stage's code dependencies are derived from the imports of the module that runs it (`pipeline.workflow.code_deps`), so an
edit reruns exactly the stages whose code it touches.

`dvc.yaml` is written from it (`python -m pipeline dag`) and the Snakefile builds its rules from it, so the two
cannot drift; tests/test_dag.py parses both and compares.
"""
from __future__ import annotations

import ast
import functools
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.config import Params, load_params, read_params_yaml
from pipeline.workflow import commands
from pipeline.workflow.code_deps import stage_code
from pipeline.workflow.outputs import paths, replica_name

PY = "python -m pipeline"
q = shlex.quote  # every name or path in a command is quoted (names are checked against names.NAME_PATTERN too)


@dataclass
class Stage:
    name: str  # DVC stage name, e.g. "sample-ncsnpp_cont-pc"
    kind: str  # the command of its spec (pipeline.workflow.commands): train, sample, ...
    wildcards: dict[str, str]
    cmd: str
    deps: list[str]
    outs: list[str]
    params: dict[str, list[str]] = field(default_factory=dict)  # params file -> tracked keys
    persist: list[str] = field(default_factory=list)  # outs kept between runs (training snapshots)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    uncached: list[str] = field(default_factory=list)  # outs tracked by git (reports)
    # ranks the stage starts (training.num_processes, eval.num_processes; pipeline/training/launch.py): the GPUs the Snakefile
    # asks for. The command is the same for any count: the stage launches its ranks itself.
    processes: int = 1
    written: dict[str, str] = field(default_factory=dict)  # output key -> path, of everything it writes

    def all_outs(self) -> list[str]:
        return self.outs + self.persist + self.metrics + self.plots + self.uncached


@dataclass
class Experiment:
    name: str
    path: str  # params file, relative to the repository root
    params: Params
    raw: dict  # the file as written (tracked keys must exist in it for DVC)
    cli: str = ""  # extra arguments of every stage command (a training-seed replica's `--training-seed S`)


# --- discovery ------------------------------------------------------------------------------------------------
# A generated suite (a dress rehearsal, pipeline/workflow/rehearsal.py) keeps its params files beside its dvc.yaml, out
# of params/: `python -m pipeline dag` and every other suite never see them.
GENERATED_PARAMS = "pipelines/{suite}/params"


def experiments(root: Path, suite: str, check_models: bool = False) -> list[Experiment]:
    """Every params file under params/ (and GENERATED_PARAMS) whose `suite:` is `suite`, sorted by path.

    `check_models`: also build each network on the meta device (`models.zoo.check_params`), so that settings its
    architecture refuses fail here, before any work. That imports torch (1-3 s), so only the commands that generate or
    start a DAG ask for it (`pipeline dag`, `pipeline rehearse`, the Snakefile's main process); the stages, `stale`,
    `commit` and Snakemake's per-job processes (one per cluster job) read the DAG without it."""
    root = Path(root)
    if check_models:
        from pipeline.models.zoo import check_params
    found = []
    generated = root / GENERATED_PARAMS.format(suite=suite)
    for f in sorted((root / "params").rglob("*.yaml")) + sorted(generated.rglob("*.yaml") if generated.is_dir() else []):
        raw = read_params_yaml(f)
        if not isinstance(raw, dict) or raw.get("suite", "default") != suite:
            continue
        rel = f.relative_to(root).as_posix()
        shown = rel if Path(rel).exists() else f
        name, params = load_params(shown)
        if check_models:
            check_params(params, str(shown))
        found.append(Experiment(name, rel, params, raw))
    names = [e.name for e in found]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"suite {suite!r}: experiment names (file stems) must be unique, repeated: {sorted(dupes)}")
    return found


def suites(root: Path) -> list[str]:
    out = set()
    for f in (Path(root) / "params").rglob("*.yaml"):
        raw = read_params_yaml(f)
        if isinstance(raw, dict):
            out.add(raw.get("suite", "default"))
    return sorted(out)


# Keys only the DAG reads: no stage tracks them, so a group that holds one is tracked key by key without it (adding a
# training seed adds that seed's stages and reruns no other).
DAG_ONLY = ("training.seeds",)


def _present(raw: dict, keys: list[str]) -> list[str]:
    """The dotted keys that exist in the file (DVC refuses to track a key the file does not contain)."""
    return [key for key in _without_dag_only(raw, keys) if _present_plain(raw, key)]


def _without_dag_only(raw: dict, keys: list[str]) -> list[str]:
    """`keys` with each group that holds a DAG_ONLY key the file contains replaced by the group's other keys."""
    out = []
    for key in keys:
        inner = [d for d in DAG_ONLY if d.startswith(key + ".") and _present_plain(raw, d)]
        group = raw.get(key) if "." not in key else None
        if inner and isinstance(group, dict):
            out += [f"{key}.{k}" for k in group if f"{key}.{k}" not in inner]
        else:
            out.append(key)
    return out


def _present_plain(raw: dict, key: str) -> bool:
    """Whether the dotted key exists in the mapping (with any value, None included)."""
    cur = raw
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True


def expand_training_seeds(exps: list[Experiment]) -> list[Experiment]:
    """Each experiment with `training.seeds` as one replica per seed: the experiment with `seed: s`, named
    `outputs.replica_name(name, s)` (its run folder and stage names), whose commands take `--training-seed s`.
    A replica does not track `seed` (its command carries it). Experiments without the key are returned unchanged."""
    out = []
    for e in exps:
        seeds = e.params.training.seeds
        if not seeds:
            out.append(e)
            continue
        raw = {k: v for k, v in e.raw.items() if k != "seed"}
        out += [Experiment(replica_name(e.name, s), e.path, e.params.model_copy(update={"seed": s}), raw,
                           cli=f" --training-seed {int(s)}") for s in seeds]
    names = [e.name for e in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"training-seed replicas clash with experiment names (file stems): {clash}; rename the file")
    return out


# --- stages ---------------------------------------------------------------------------------------------------
# Each stage module declares its stage (`SPEC`, read by pipeline.workflow.commands); the DAG is built from those
# specs alone: a stage per dataset, per experiment, per experiment and sampler setting, or per suite (StageSpec.scope).
NAMES = {"dataset": ("dataset",), "experiment": ("suite", "exp", "dataset"), "sampler": ("suite", "exp", "dataset", "sampler"),
         "suite": ("suite",)}  # the names a scope's output paths may contain


@functools.lru_cache(maxsize=None)
def _expression(text: str):
    """A params expression of a spec, compiled; its names must be top-level groups of the params."""
    tree = ast.parse(text, mode="eval")
    unknown = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(Params.model_fields))
    if unknown:
        raise ValueError(f"{unknown}: not a params group ({sorted(Params.model_fields)})")
    return compile(tree, f"<spec: {text}>", "eval")


def value(text: str, p: Params):
    """The value of a spec's params expression (`when`, `deps_if`, `processes`) for params `p`."""
    return eval(_expression(text), {"__builtins__": {}}, {k: getattr(p, k) for k in Params.model_fields})  # noqa: S307


def _declared(scope: str, suite: str, exp: str, dataset: str, sampler: str | None) -> dict[str, str]:
    """The output paths that specs declare (`StageSpec.paths`) and a stage of `scope` can name."""
    names = {"suite": suite, "exp": exp, "dataset": dataset, "sampler": sampler}
    out = {}
    for spec in commands.dag_specs():
        for key, template in spec.paths.items():
            used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            if used <= set(NAMES[scope]):
                out[key] = template.format(**{n: names[n] for n in used})
    return out


def where(scope: str, suite: str = "", exp: str = "", dataset: str = "", sampler: str | None = None) -> dict[str, str]:
    """Output key -> path for a stage of `scope` with these names (outputs.paths and the specs' declared paths).
    With "{suite}", "{exp}", ... as names: the patterns of Snakemake's rules."""
    return {**paths(suite, exp, dataset, sampler), **_declared(scope, suite, exp, dataset, sampler)}


@functools.lru_cache(maxsize=None)
def checked_specs() -> tuple:
    """The DAG's specs, their output keys, paths and params expressions checked (ValueError naming the module)."""
    known = set(paths("s", "e", "d", "x"))
    every = known | {k for s in commands.dag_specs() for k in s.paths}
    writer: dict[str, str] = {}
    for spec in commands.dag_specs():
        try:
            twice = sorted(k for k in spec.writes() if writer.setdefault(k, spec.command) != spec.command)
            if twice:
                raise ValueError(f"output keys {twice} are written by {writer[twice[0]]!r} already")
            for key, template in spec.paths.items():
                used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
                if key in known:
                    raise ValueError(f"paths: {key!r} is already an output key (pipeline/workflow/outputs.py)")
                if not template or template.startswith("/") or ".." in template or not used <= set(NAMES[spec.scope]):
                    raise ValueError(f"paths: {template!r}: a relative path naming only {set(NAMES[spec.scope])}")
            own = _in_scope(spec.scope)
            readable = every if spec.scope == "suite" else own  # a suite stage reads every stage's outputs
            extra = {k for keys in spec.deps_if.values() for k in keys}
            missing = sorted((set(spec.writes()) - own) | ((set(spec.deps) | extra) - readable))
            if missing:
                raise ValueError(f"output keys {missing} are not paths of a stage of scope {spec.scope!r} "
                                 "(pipeline/workflow/outputs.py, or a spec's `paths`)")
            for text in [spec.when, spec.processes, *spec.deps_if]:
                if text:
                    try:
                        _expression(text)
                    except SyntaxError as e:
                        raise ValueError(f"params expression {text!r}: {e.msg}") from None
        except ValueError as e:
            raise ValueError(f"{commands.stage_module(spec.command)}: SPEC of {spec.command!r}: {e}") from None
    return tuple(commands.dag_specs())


def _in_scope(scope: str) -> set[str]:
    """The output keys whose path is set by the names of `scope` alone (a dataset stage: data/*/{dataset}, ...)."""
    a = {"suite": "s1", "exp": "e1", "dataset": "d1", "sampler": "x1"}
    b = {**{"suite": "s2", "exp": "e2", "dataset": "d2", "sampler": "x2"}, **{n: a[n] for n in NAMES[scope]}}
    wa, wb = where(scope, **a), where(scope, **b)
    return {k for k, v in wa.items() if wb.get(k) == v}


def _specs(*scopes: str) -> list:
    return [s for s in checked_specs() if s.scope in scopes]


def _stage(spec, name: str, wildcards: dict, cmd: str, where_: dict[str, str], deps: list[str],
           params: dict | None = None, processes: int = 1) -> Stage:
    pick = lambda keys: [where_[k] for k in keys]  # noqa: E731
    return Stage(name, spec.command, wildcards, cmd, deps=[*deps, *stage_code(spec.command)], outs=pick(spec.outs),
                 params=params or {}, persist=pick(spec.persist), metrics=pick(spec.metrics), plots=pick(spec.plots),
                 uncached=pick(spec.uncached), processes=processes, written={k: where_[k] for k in spec.writes()})


def _experiment_stage(spec, e: Experiment, suite: str, sampler: str | None = None) -> Stage:
    p = e.params
    w = where(spec.scope, suite, e.name, p.data.dataset, sampler)
    deps = [*spec.deps, *(k for text, keys in spec.deps_if.items() if value(text, p) for k in keys)]
    keys = [k.replace("{sampler}", sampler or "") for k in spec.params]
    names = {"suite": suite, "exp": e.name, **({"sampler": sampler} if sampler else {})}
    extra = f" --sampler {q(sampler)}" if sampler else ""
    return _stage(spec, "-".join([spec.command, e.name, *([sampler] if sampler else [])]), names,
                  f"{PY} {spec.command} --params {q(e.path)}{e.cli}{extra}", w, [w[k] for k in deps],
                  params={e.path: _present(e.raw, keys)},
                  processes=int(value(spec.processes, p)) if spec.processes else 1)


def experiment_stages(e: Experiment, suite: str) -> list[Stage]:
    """The experiment's stages in their specs' order; consecutive sampler stages run per sampler setting together
    (sample-E-pc, evaluate-E-pc, sample-E-ode, ...)."""
    p = e.params
    out: list[Stage] = []
    group: list = []  # consecutive sampler-scope specs

    def flush():
        for sampler in p.sampler_settings():
            out.extend(_experiment_stage(s, e, suite, sampler) for s in group if not s.when or value(s.when, p))
        group.clear()

    for spec in _specs("experiment", "sampler"):
        if spec.scope == "sampler":
            group.append(spec)
            continue
        flush()
        if not spec.when or value(spec.when, p):
            out.append(_experiment_stage(spec, e, suite))
    flush()
    return out


def dataset_stages(dataset: str) -> list[Stage]:
    out = []
    for spec in _specs("dataset"):
        w = where("dataset", dataset=dataset)
        out.append(_stage(spec, f"{spec.command}-{dataset}", {"dataset": dataset},
                          f"{PY} {spec.command} --dataset {q(dataset)}", w, [w[k] for k in spec.deps]))
    return out


def suite_stages(root: Path, suite: str, check_models: bool = False) -> list[Stage]:
    exps = experiments(root, suite, check_models)
    if not exps:
        raise ValueError(f"suite {suite!r} has no experiments (no params/**/*.yaml with `suite: {suite}`)")
    stages: list[Stage] = []
    for ds in sorted({e.params.data.dataset for e in exps}):
        stages += dataset_stages(ds)
    for e in expand_training_seeds(exps):
        stages += experiment_stages(e, suite)
    # a suite stage (the report) reads the outputs with its deps' keys of every stage before it: metrics, loss curves,
    # sample folders (grid.png, info.json), controllable examples, the prepared data, the evaluator's metrics.json
    for spec in _specs("suite"):
        read = sorted(path for s in stages for key, path in s.written.items() if key in spec.deps)
        stages.append(_stage(spec, f"{spec.command}-{suite}", {"suite": suite}, f"{PY} {spec.command} --suite {q(suite)}",
                             where("suite", suite), read))
    return stages


def dvc_yaml(stages: list[Stage], wdir: str | None = None) -> dict:
    """dvc.yaml's `stages:` mapping (idiomatic DVC: params per stage, persist snapshots, metrics and plots)."""
    out = {}
    for s in stages:
        d: dict = {"cmd": s.cmd, "deps": list(s.deps)}
        if wdir:
            d = {"wdir": wdir, **d}
        tracked = {f: keys for f, keys in s.params.items() if keys}
        if tracked:
            d["params"] = [{f: keys} for f, keys in tracked.items()]
        outs = list(s.outs) + [{o: {"persist": True}} for o in s.persist] + [{o: {"cache": False}} for o in s.uncached]
        if outs:
            d["outs"] = outs
        # Metrics and plots go to DVC's cache (runs/ is not in git), so that `dvc metrics diff`, `dvc plots diff`
        # and `dvc exp show` can read them at any commit or experiment from its dvc.lock.
        if s.metrics:
            d["metrics"] = list(s.metrics)
        if s.plots:
            d["plots"] = [{pl: {"x": "step", "y": "loss"}} for pl in s.plots]
        out[s.name] = d
    return {"stages": out}


def render_dvc_yaml(root: Path, suite: str) -> str:
    header = (f"# Generated by `python -m pipeline dag --suite {suite}` from params/**/*.yaml (suite: {suite}).\n"
              "# Do not edit by hand: edit the params files or pipeline/workflow/dag.py and regenerate.\n")
    wdir = None if suite == "default" else "../.."  # pipelines/<suite>/dvc.yaml runs from the repository root
    return header + yaml.safe_dump(dvc_yaml(suite_stages(root, suite, check_models=True), wdir), sort_keys=False, width=120)


def dvc_yaml_path(suite: str) -> str:
    return "dvc.yaml" if suite == "default" else f"pipelines/{suite}/dvc.yaml"


# --- the stage a command runs -------------------------------------------------------------------------------------
def _repo_path(root: Path, path: str) -> str:
    """A params path as the DAG writes it: relative to the root where the file is inside it."""
    p = Path(path).resolve()
    return p.relative_to(Path(root).resolve()).as_posix() if p.is_relative_to(Path(root).resolve()) else str(path)


def raw_with_overrides(path: str, overrides: list[str]) -> dict:
    from pipeline.config import parse_override, set_dotted

    raw = read_params_yaml(path)
    for text in overrides or []:
        key, value = parse_override(text, str(path))
        set_dotted(raw, key, value, str(path))
    return raw


def stage_of(root: Path, command: str, params: str | None = None, overrides: list[str] | None = None,
             training_seed: int | None = None, sampler: str | None = None, dataset: str | None = None,
             suite: str | None = None) -> tuple[Stage, dict] | None:
    """(the DAG stage that `python -m pipeline COMMAND ...` runs, {params file: raw mapping with the overrides}), or
    None for a command that is not a stage of the DAG (dag, describe, import). With `--set` overrides the stage's
    tracked values are the overridden ones, so its fingerprint (`pipeline.io.provenance`) differs from the file's."""
    root = Path(root)
    spec = commands.specs().get(command)
    scope = spec.scope if spec else None
    if scope == "dataset":
        if dataset is None:
            dataset = load_params(params, overrides)[1].data.dataset
        return next(s for s in dataset_stages(dataset) if s.kind == command), {}
    if scope == "suite":
        found = [s for s in suite_stages(root, suite or "default") if s.kind == command]
        raws = {e.path: e.raw for e in experiments(root, suite or "default")}
        return found[0], raws
    if scope not in ("experiment", "sampler") or not params:
        return None
    name, p = load_params(params, overrides)
    rel = _repo_path(root, params)
    e = Experiment(name, rel, p, raw_with_overrides(params, overrides or []))
    if training_seed is not None:
        e = expand_training_seeds([Experiment(name, rel, p.model_copy(update={"training": p.training.model_copy(
            update={"seeds": [training_seed]})}), e.raw)])[0]
    wanted = f"{command}-{e.name}" + (f"-{sampler}" if scope == "sampler" else "")
    found = [s for s in experiment_stages(e, p.suite) if s.name == wanted]
    return (found[0], {rel: e.raw}) if found else None


def tracked_params(stage: Stage, raws: dict[str, dict]) -> dict[str, dict]:
    """{params file: {key: value}} of the keys `stage` tracks, read from `raws` (params file -> mapping)."""
    from pipeline.io.provenance import tracked_values

    return {f: tracked_values(raws.get(f) or {}, keys) for f, keys in stage.params.items()}
