"""The one DAG behind both front ends: stages with their commands, deps, outs and tracked params.

A stage's code dependencies are derived from the imports of the module that runs it (`pipeline.workflow.code_deps`), so an
edit reruns exactly the stages whose code it touches.

`dvc.yaml` is written from it (`python -m pipeline dag`) and the Snakefile builds its rules from it, so the two
cannot drift; tests/test_dag.py parses both and compares.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.config import Params, load_params, read_params_yaml
from pipeline.models.zoo import check_params
from pipeline.workflow.code_deps import stage_code
from pipeline.workflow.outputs import paths, replica_name

PY = "python -m pipeline"
q = shlex.quote  # every name or path in a command is quoted (names are checked against names.NAME_PATTERN too)


@dataclass
class Stage:
    name: str  # DVC stage name, e.g. "sample-ncsnpp_cont-pc"
    kind: str  # download | prepare | evaluator | train | classifier | sample | evaluate | likelihood | controllable | curves | report
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
def experiments(root: Path, suite: str) -> list[Experiment]:
    """Every params file under params/ whose `suite:` is `suite`, sorted by path."""
    root = Path(root)
    found = []
    for f in sorted((root / "params").rglob("*.yaml")):
        raw = read_params_yaml(f)
        if not isinstance(raw, dict) or raw.get("suite", "default") != suite:
            continue
        rel = f.relative_to(root).as_posix()
        shown = rel if Path(rel).exists() else f
        name, params = load_params(shown)
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
    out = []
    for key in _without_dag_only(raw, keys):
        cur = raw
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                break
            cur = cur[part]
        else:
            out.append(key)
    return out


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
def experiment_stages(e: Experiment, suite: str) -> list[Stage]:
    p, ds = e.params, e.params.data.dataset
    base = paths(suite, e.name, ds)
    cmd = lambda stage, extra="": f"{PY} {stage} --params {q(e.path)}{e.cli}{extra}"  # noqa: E731
    out = [
        Stage(f"train-{e.name}", "train", {"suite": suite, "exp": e.name}, cmd("train"),
              deps=[base["prepared"], *stage_code("train")], outs=[base["train"]],
              params={e.path: _present(e.raw, ["seed", "data", "model", "training", "optim"])},
              persist=[base["snapshots"]], metrics=[base["train_metrics"]], plots=[base["loss_curve"]],
              processes=p.training.num_processes),
    ]
    sample_keys = ["seed", "sampling", "eval.num_samples", "eval.num_seeds", "eval.batch_size"]
    eval_keys = ["eval.feature_net", "eval.inception_weights", "eval.fid_mode", "eval.is_splits"]
    for sampler in p.sampler_settings():
        sp = paths(suite, e.name, ds, sampler)
        variant = [f"samplers.{sampler}"] if sampler in p.samplers else []
        out.append(Stage(f"sample-{e.name}-{sampler}", "sample", {"suite": suite, "exp": e.name, "sampler": sampler},
                         cmd("sample", f" --sampler {q(sampler)}"), deps=[base["train"], *stage_code("sample")],
                         outs=[sp["samples"]], params={e.path: _present(e.raw, sample_keys + variant)},
                         processes=p.eval.num_processes))
        out.append(Stage(f"evaluate-{e.name}-{sampler}", "evaluate", {"suite": suite, "exp": e.name, "sampler": sampler},
                         cmd("evaluate", f" --sampler {q(sampler)}"),
                         deps=[sp["samples"], base["evaluator"], *stage_code("evaluate")], outs=[],
                         params={e.path: _present(e.raw, eval_keys)}, metrics=[sp["eval"]],
                         processes=p.eval.num_processes))
    if p.eval.enable_bpd:
        out.append(Stage(f"likelihood-{e.name}", "likelihood", {"suite": suite, "exp": e.name}, cmd("likelihood"),
                         deps=[base["train"], base["prepared"], *stage_code("likelihood")], outs=[],
                         params={e.path: _present(e.raw, ["seed", "eval.bpd_num_repeats", "eval.bpd_max_images",
                                                          "eval.bpd_estimator", "eval.bpd_rtol", "eval.bpd_atol",
                                                          "eval.batch_size"])},
                         metrics=[base["likelihood"]]))
    if p.eval.controllable:
        conditional = "class_conditional" in p.eval.controllable
        out.append(Stage(f"controllable-{e.name}", "controllable", {"suite": suite, "exp": e.name}, cmd("controllable"),
                         deps=[base["train"], base["prepared"],
                               *([base["classifier"], base["evaluator"]] if conditional else []),
                               *stage_code("controllable")], outs=[base["controllable"]],
                         params={e.path: _present(e.raw, ["seed", "sampling", "eval.controllable",
                                                          "eval.controllable_images", "eval.controllable_steps",
                                                          "eval.class_conditional"])}))
        if conditional:
            out.append(classifier_stage(e, suite))
    return out + curve_stages(e, suite)


def curve_stages(e: Experiment, suite: str) -> list[Stage]:
    """`curves-{exp}`: FD against NFE and against training step, from the train outputs and the evaluator."""
    c = e.params.curves
    if c is None or not (c.samplers or c.checkpoints):
        return []
    base = paths(suite, e.name, e.params.data.dataset)
    metrics = [base["curve_nfe"], base["curve_ckpt"]]  # both written; a curve not asked for says so in its file
    return [Stage(f"curves-{e.name}", "curves", {"suite": suite, "exp": e.name},
                  f"{PY} curves --params {q(e.path)}", deps=[base["train"], base["evaluator"], *stage_code("curves")],
                  outs=[], params={e.path: _present(e.raw, ["seed", "sampling", "eval.batch_size", "curves"])},
                  metrics=metrics)]


def classifier_stage(e: Experiment, suite: str) -> Stage:
    """The noise-conditional classifier of class-conditional sampling: it needs the prepared data and the SDE, not the
    score model, so it runs beside `train`."""
    base = paths(suite, e.name, e.params.data.dataset)
    return Stage(f"classifier-{e.name}", "classifier", {"suite": suite, "exp": e.name},
                 f"{PY} classifier --params {q(e.path)}", deps=[base["prepared"], *stage_code("classifier")],
                 outs=[base["classifier"]],
                 params={e.path: _present(e.raw, ["seed", "data", "training.sde", "model.sigma_min", "model.sigma_max",
                                                  "model.beta_min", "model.beta_max", "eval.classifier"])})


def dataset_stages(dataset: str) -> list[Stage]:
    p = paths("", "", dataset)
    w = {"dataset": dataset}
    return [
        Stage(f"download-{dataset}", "download", w, f"{PY} download --dataset {q(dataset)}",
              deps=list(stage_code("download")), outs=[p["raw"]]),
        Stage(f"prepare-{dataset}", "prepare", w, f"{PY} prepare --dataset {q(dataset)}",
              deps=[p["raw"], *stage_code("prepare")], outs=[p["prepared"]]),
        Stage(f"evaluator-{dataset}", "evaluator", w, f"{PY} evaluator --dataset {q(dataset)}",
              deps=[p["prepared"], *stage_code("evaluator")], outs=[p["evaluator"]]),
    ]


def suite_stages(root: Path, suite: str) -> list[Stage]:
    exps = experiments(root, suite)
    if not exps:
        raise ValueError(f"suite {suite!r} has no experiments (no params/**/*.yaml with `suite: {suite}`)")
    stages: list[Stage] = []
    for ds in sorted({e.params.data.dataset for e in exps}):
        stages += dataset_stages(ds)
    for e in expand_training_seeds(exps):
        stages += experiment_stages(e, suite)
    # the report reads the metrics, loss curves, sample folders (grid.png, info.json), controllable examples, the
    # prepared training split (its grid of real images) and the evaluator's metrics.json (its time and accuracy)
    metric_files = [m for s in stages if s.kind in ("train", "evaluate", "likelihood", "curves") for m in s.metrics + s.plots]
    folders = [o for s in stages if s.kind in ("sample", "controllable", "prepare", "evaluator") for o in s.outs]
    stages.append(Stage(f"report-{suite}", "report", {"suite": suite}, f"{PY} report --suite {q(suite)}",
                        deps=sorted(metric_files + folders) + list(stage_code("report")), outs=[],
                        uncached=[paths(suite, "", "")["report"]]))
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
    return header + yaml.safe_dump(dvc_yaml(suite_stages(root, suite), wdir), sort_keys=False, width=120)


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
    if command in ("download", "prepare", "evaluator"):
        if dataset is None:
            dataset = load_params(params, overrides)[1].data.dataset
        return next(s for s in dataset_stages(dataset) if s.kind == command), {}
    if command == "report":
        found = [s for s in suite_stages(root, suite or "default") if s.kind == "report"]
        raws = {e.path: e.raw for e in experiments(root, suite or "default")}
        return found[0], raws
    if command not in ("train", "sample", "evaluate", "likelihood", "controllable", "curves", "classifier") or not params:
        return None
    name, p = load_params(params, overrides)
    rel = _repo_path(root, params)
    e = Experiment(name, rel, p, raw_with_overrides(params, overrides or []))
    if training_seed is not None:
        e = expand_training_seeds([Experiment(name, rel, p.model_copy(update={"training": p.training.model_copy(
            update={"seeds": [training_seed]})}), e.raw)])[0]
    wanted = f"{command}-{e.name}" + (f"-{sampler}" if command in ("sample", "evaluate") else "")
    found = [s for s in experiment_stages(e, p.suite) if s.name == wanted]
    return (found[0], {rel: e.raw}) if found else None


def tracked_params(stage: Stage, raws: dict[str, dict]) -> dict[str, dict]:
    """{params file: {key: value}} of the keys `stage` tracks, read from `raws` (params file -> mapping)."""
    from pipeline.io.provenance import tracked_values

    return {f: tracked_values(raws.get(f) or {}, keys) for f, keys in stage.params.items()}
