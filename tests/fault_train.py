"""Run the train stage with a fault injected through the training loop's hooks (tests/test_train.py):
`python tests/fault_train.py FAULT -- <train stage arguments>` with FAULT one of
  kill@N      SIGKILL right after optimizer step N (before that step's snapshot),
  snapkill@N  SIGKILL while snapshot N is half-written,
  nan@N       the loss of step N replaced by NaN.
"""
import os
import signal
import sys
from pathlib import Path

from pipeline.cli import build_parser, find_root
from pipeline.errors import StageError
from pipeline.stages import train as train_stage


def main(argv: list[str]) -> int:
    fault, rest = argv[0], argv[argv.index("--") + 1:]
    kind, at = fault.split("@")
    at = int(at)

    def on_step(step, loss):
        if kind == "kill" and step == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return float("nan") if kind == "nan" and step == at else None

    def on_snapshot_write(step, folder):
        if kind == "snapkill" and step == at:
            os.kill(os.getpid(), signal.SIGKILL)

    args = build_parser("train").parse_args(["train", *rest])
    args.root = find_root() if args.root is None else Path(args.root).resolve()
    try:
        return train_stage.run(args, on_step=on_step, on_snapshot_write=on_snapshot_write)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
