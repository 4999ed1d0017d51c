"""`dag`: write (or check) the dvc.yaml of a suite from params/**/*.yaml."""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.errors import StageError
from pipeline.io import atomic
from pipeline.stages.common import check_name_arg, inside_root
from pipeline.workflow import dag

SPEC = dict(  # this command's declaration, read by the CLI (pipeline/workflow/commands.py)
    command="dag", order=160, help="write dvc.yaml for a suite from params/ (the Snakefile reads the same DAG)",
)


def add_arguments(p, name: str) -> None:
    p.add_argument("--suite", action="append", help="suite(s) to write (default: every suite found in params/)")
    p.add_argument("--check", action="store_true", help="exit 1 if a dvc.yaml is out of date instead of writing it")
    p.add_argument("--root", default=None)


def run(args) -> int:
    root: Path = args.root
    for suite in args.suite or []:
        check_name_arg("--suite", "suite", suite)
    rendered = []  # every suite's text first: a bad params file in any suite writes nothing
    for suite in args.suite or dag.suites(root):
        target = inside_root(root, dag.dvc_yaml_path(suite))
        try:
            rendered.append((target, dag.render_dvc_yaml(root, suite)))
        except ValueError as e:
            raise StageError(str(e)) from None
    stale = []
    for target, text in rendered:
        if target.exists() and target.read_text() == text:
            continue
        if args.check:
            stale.append(str(target))
        else:
            atomic.write_text(target, text)
            print(f"wrote {target}")
    if stale:
        print("out of date (run `python -m pipeline dag`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
