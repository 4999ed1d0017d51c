"""Command line: `python -m pipeline STAGE --params FILE [--set KEY=VALUE ...] [--root DIR]`.

Every stage is a thin function over the library; bad input of any kind exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from pipeline.config import ParamsError
from pipeline.errors import StageError
from pipeline.speed.allocator import retain_freed_memory
from pipeline.stages.common import check_name_args
from pipeline.workflow.commands import COMMANDS, specs, stage_module


def find_root() -> Path:
    """The repository root: the nearest folder upwards holding dvc.yaml or .dvc (else the working directory)."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").exists() or (d / ".dvc").is_dir():
            return d
    return here


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command; only `only`'s module is imported for its arguments (all when None)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True, help="one of: " + ", ".join(COMMANDS))
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):
            importlib.import_module(stage_module(name)).add_arguments(p, name)
    return parser


def begin(args):
    """(stage, params mappings, fingerprint record) of the DAG stage this command runs, computed before it runs
    (`pipeline.io.provenance`); None for commands outside the DAG."""
    from pipeline.io import provenance
    from pipeline.workflow import dag

    try:
        found = dag.stage_of(args.root, args.stage, getattr(args, "params", None), getattr(args, "set", None),
                             getattr(args, "training_seed", None), getattr(args, "sampler", None),
                             getattr(args, "dataset", None), getattr(args, "suite", None))
    except ValueError as e:  # a suite without experiments, clashing names: what the stage itself would refuse
        raise StageError(str(e)) from None
    if found is None:
        return None
    stage, raws = found
    record = {"stage": stage.name, **provenance.fingerprint(args.root, stage.cmd, stage.deps, dag.tracked_params(stage, raws))}
    os.environ[provenance.ENV] = json.dumps(record)  # for the stage's MLflow tags (pipeline.io.tracking) and its ranks
    return stage, raws, record


def end(args, begun) -> int:
    """Stamp the stage's outputs with the fingerprint it started with; exit 1, naming what moved, when its inputs
    changed while it ran (the outputs then say what made them, and `python -m pipeline commit` refuses them)."""
    if begun is None or os.environ.get("RANK", "0") != "0":  # Accelerate's other ranks: rank 0 stamps
        return 0
    from pipeline.io import lineage, provenance
    from pipeline.workflow import dag

    stage, raws, record = begun
    provenance.stamp(args.root, provenance.stamped_outs(stage.outs + stage.metrics + stage.uncached), record)
    lineage.finish(args.root, stage.all_outs(), list(stage.params))  # its MLflow runs: what it wrote, as written
    if specs()[stage.kind].scope == "suite":  # the params files may have been edited: read them again
        raws = {e.path: e.raw for e in dag.experiments(args.root, args.suite or "default")}
    elif raws:
        raws = {f: dag.raw_with_overrides(args.root / f, getattr(args, "set", None) or []) for f in raws}
    now = provenance.fingerprint(args.root, stage.cmd, stage.deps, dag.tracked_params(stage, raws))
    why = provenance.differs(record, now)
    if why:
        print(f"error: {stage.name}: its inputs changed while it ran ({why.removeprefix('changed since it ran: ')}); its "
              "outputs record the inputs it started with: rerun the stage", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    retain_freed_memory()  # every stage reuses its freed activation memory (pipeline/speed/allocator.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")  # a typo or --help: no stage module
    args = parser.parse_args(argv)
    args.root = Path(args.root).resolve() if getattr(args, "root", None) else find_root()
    module = importlib.import_module(stage_module(args.stage))
    try:
        check_name_args(args)  # --suite, --dataset, --sampler: names (pipeline.names.NAME_PATTERN) before anything runs
        stage = begin(args)
        rc = int(module.run(args) or 0)
        return end(args, stage) if rc == 0 else rc
    except (ParamsError, StageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """A rank launched through Accelerate (eval.num_processes, training.num_processes > 1) leaves its process group
    before the interpreter exits: left to interpreter teardown, gloo's threads were seen to abort a rank under load
    ("terminate called without an active exception", exit -6)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
