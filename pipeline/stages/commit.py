"""`stale` and `commit`: DVC and the outputs' provenance stamps decide what is stale; Snakemake executes; only
outputs made by the current inputs reach dvc.lock.

    python -m pipeline stale [--suite S]    # the outputs of every stale stage, for `snakemake --forcerun`
    python -m pipeline commit [--suite S]   # `dvc commit` the stages whose stamp equals their inputs' fingerprint

A stage is stale when `dvc status` names it (a dep, param or out differs from dvc.lock) or when an output's stamp
(`pipeline.io.provenance`) differs from the fingerprint of its inputs as they are now: Snakemake decides by file
times, which miss an edit made while a stage ran and outputs restored from elsewhere. `commit` refuses, by name and
with exit status 1, every stage whose outputs were not made by its current code, params and data.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.errors import StageError
from pipeline.io import provenance
from pipeline.stages.common import check_name_arg
from pipeline.workflow import dag

SPECS = [  # these commands' declarations, read by the CLI (pipeline/workflow/commands.py)
    dict(command="stale", order=140, help="print the outputs of every stale stage (dvc status, or a provenance stamp "
                                          "that differs) for snakemake --forcerun"),
    dict(command="commit", order=150,
         help="record in dvc.lock the stages whose outputs were made by their current code, params and data"),
]


def add_arguments(p, name: str) -> None:
    p.add_argument("--suite", default="default", help="suite name (the `suite:` key of the params files)")
    p.add_argument("--root", default=None)
    if name == "stale":
        p.add_argument("--names", action="store_true", help="print stage names instead of their outputs")


def verdicts(root: Path, suite: str) -> list[tuple[dag.Stage, str | None]]:
    """(stage, why its outputs are not the current inputs' or None) for every stage of the suite."""
    stages = dag.suite_stages(root, suite)
    raws = {e.path: e.raw for e in dag.experiments(root, suite)}
    out = []
    for s in stages:
        current = provenance.fingerprint(root, s.cmd, s.deps, dag.tracked_params(s, raws))
        why = None
        for o in provenance.stamped_outs(s.outs + s.metrics + s.uncached):
            if not (root / o).exists():
                why = f"{o} missing"
            else:
                moved = provenance.differs(provenance.read_stamp(root, o), current)
                why = f"{o}: {moved}" if moved else None
            if why:
                break
        out.append((s, why))
    return out


def dvc_changed(root: Path, suite: str) -> set[str]:
    """The stages `dvc status` names as changed (deps, params or outs differ from dvc.lock)."""
    r = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", dag.dvc_yaml_path(suite)], cwd=root,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise StageError(f"{dag.dvc_yaml_path(suite)}: `dvc status` failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return {name.rsplit(":", 1)[-1] for name in json.loads(r.stdout or "{}")}


def stage_targets(suite: str, names: list[str]) -> list[str]:
    """The stages' DVC target names: bare in the default suite's dvc.yaml, `pipelines/<suite>/dvc.yaml:<name>` else."""
    prefix = "" if suite == "default" else f"{dag.dvc_yaml_path(suite)}:"
    return [prefix + n for n in names]


def commit_targets(suite: str, todo: list[str], refused: list) -> list[str]:
    """`dvc commit`'s targets: the suite's whole dvc.yaml when no stage is refused, else the stages to commit by name.

    With one target per stage DVC parses dvc.yaml and dvc.lock and rewrites dvc.lock once per stage, which grows
    with the square of the suite (the default suite's 38 stages after a fresh run: 136 s of one core,
    benchmarks/bench_commit.py); with the file as the target it reads and writes them once (7 s) and records the same
    dvc.lock. Committing the whole file also rewrites the entries of stages dvc.lock already records as they are: no
    change. A refused stage must not be recorded, so then the targets are the stages by name."""
    return [dag.dvc_yaml_path(suite)] if not refused else stage_targets(suite, todo)


def run(args) -> int:
    check_name_arg("--suite", "suite", args.suite)
    root, suite = Path(args.root), args.suite
    marks = verdicts(root, suite)
    if args.stage == "stale":
        changed = dvc_changed(root, suite)
        stale = [s for s, why in marks if why or s.name in changed]
        if args.names:
            print(" ".join(s.name for s in stale))
        else:  # Snakemake's targets: every output it knows (training snapshots are not declared to it)
            print(" ".join(o for s in stale for o in s.all_outs() if o not in s.persist))
        return 0
    written = root / dag.dvc_yaml_path(suite)
    if not written.is_file() or written.read_text() != dag.render_dvc_yaml(root, suite):  # DVC would hash other deps
        raise StageError(f"{written}: out of date with params/ and the code's imports; run `python -m pipeline dag` "
                         "(then rerun what it makes stale) before committing")
    good = [s.name for s, why in marks if why is None]
    refused = [(s.name, why) for s, why in marks if why]
    # `dvc commit` only the good stages `dvc status` names: dvc.lock already records the others as they are, and DVC
    # takes about 0.6 s a stage to find that out (7 s for the smoke suite's 11 after a rerun of 3).
    changed = dvc_changed(root, suite)
    todo = [n for n in good if n in changed]
    if todo:
        r = subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", *commit_targets(suite, todo, refused)],
                           cwd=root, capture_output=True, text=True)
        if r.returncode != 0:
            raise StageError(f"{dag.dvc_yaml_path(suite)}: `dvc commit` failed: {(r.stderr or r.stdout).strip()[-500:]}")
    print(f"committed {len(good)} of {len(marks)} stages of {dag.dvc_yaml_path(suite)} to dvc.lock "
          f"({len(todo)} changed, {len(good) - len(todo)} already recorded)")
    for name, why in refused:
        print(f"error: {name}: not committed: {why}", file=sys.stderr)
    return 1 if refused else 0
