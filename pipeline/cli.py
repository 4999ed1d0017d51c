"""Command line: `python -m pipeline STAGE --params FILE [--set KEY=VALUE ...] [--root DIR]`.

Every stage is a thin function over the library; bad input of any kind exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from pipeline.allocator import retain_freed_memory
from pipeline.commands import COMMANDS, stage_module
from pipeline.config import ParamsError
from pipeline.errors import StageError


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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    retain_freed_memory()  # every stage reuses its freed activation memory (pipeline/allocator.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")  # a typo or --help: no stage module
    args = parser.parse_args(argv)
    args.root = Path(args.root).resolve() if getattr(args, "root", None) else find_root()
    module = importlib.import_module(stage_module(args.stage))
    try:
        return int(module.run(args) or 0)
    except (ParamsError, StageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
