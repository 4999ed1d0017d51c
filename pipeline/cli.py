"""Command line: `python -m pipeline STAGE --params FILE [--set KEY=VALUE ...] [--root DIR]`.

Every stage is a thin function over the library; bad input of any kind exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from pipeline.config import ParamsError
from pipeline.errors import StageError

# stage name -> (module under pipeline.stages, one-line help)
STAGES = {
    "download": ("data_stages", "fetch a dataset's raw files (torchvision layout; offline sources first)"),
    "prepare": ("data_stages", "raw files -> uint8 NCHW arrays per split + manifest with sha256"),
    "evaluator": ("evaluator", "train the dataset classifier (offline FD/KD/IS) and cache reference statistics"),
    "train": ("train", "train the experiment's score model with Accelerate (resumable snapshots, EMA)"),
    "sample": ("sample", "draw eval.num_samples samples with one sampler setting (.npz + grid PNG)"),
    "evaluate": ("evaluate", "FD/KD/IS on the classifier; FID/KID/IS on Inception-v3 when its weights exist"),
    "likelihood": ("likelihood", "test-set bits/dim with the probability-flow ODE"),
    "controllable": ("controllable", "inpainting / colorization examples from a few test images (PNG grids)"),
    "report": ("report", "paper-style tables beside the published numbers (Markdown, LaTeX, HTML)"),
    "import": ("import_ckpt", "convert a reference checkpoint (score_sde, ncsn, ncsnv2) into this project's format"),
    "describe": ("describe", "print an experiment's resolved params, parameter count and stages as JSON"),
    "dag": ("dag_cmd", "write dvc.yaml for a suite from params/ (the Snakefile reads the same DAG)"),
}


def find_root() -> Path:
    """The repository root: the nearest folder upwards holding dvc.yaml or .dvc (else the working directory)."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").exists() or (d / ".dvc").is_dir():
            return d
    return here


def common(p: argparse.ArgumentParser, params_required: bool = True) -> None:
    p.add_argument("--params", required=params_required, help="experiment params file (YAML); its stem names the experiment")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted key with a YAML value, e.g. --set model.ch_mult=[1,2,2] (repeatable)")
    p.add_argument("--root", default=None, help="resolve the stage's inputs and outputs under DIR (default: repo root)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True,
                                help="one of: " + ", ".join(STAGES))
    for name, (module, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(f"pipeline.stages.{module}")
        mod.add_arguments(p, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.root = Path(args.root).resolve() if getattr(args, "root", None) else find_root()
    module = importlib.import_module(f"pipeline.stages.{STAGES[args.stage][0]}")
    try:
        return int(module.run(args) or 0)
    except (ParamsError, StageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
