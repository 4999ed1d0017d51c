"""`import`: convert a published reference checkpoint into this project's model.pt, where train would write it."""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import StageError
from pipeline.io import atomic, checkpoint
from pipeline.models import convert
from pipeline.models import zoo as models
from pipeline.models.checkpoint import CheckpointError
from pipeline.stages.common import add_common_arguments, load_context

SPEC = dict(  # this command's declaration, read by the CLI (pipeline/workflow/commands.py)
    command="import", order=120,
    help="convert a reference checkpoint (score_sde, ncsn, ncsnv2) into this project's format",
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)
    p.add_argument("--format", required=True, choices=["score_sde", "ncsn", "ncsnv2"], help="the reference code base")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow arbitrary unpickling (only for files from a source you trust)")
    p.add_argument("checkpoint", help="path of the reference checkpoint file")


def run(args) -> int:
    ctx = load_context(args)
    models.check_params(ctx.params, ctx.params_path)
    src = Path(args.checkpoint)
    converters = {"score_sde": convert.convert_score_sde, "ncsn": convert.convert_ncsn, "ncsnv2": convert.convert_ncsnv2}
    try:
        obj = convert.read_reference_checkpoint(src, trust=args.trust_checkpoint)
        model_sd, ema_sd, step = converters[args.format](obj, models.build(ctx.params))
    except CheckpointError as e:  # includes CheckpointMismatch and UntrustedCheckpoint, each naming the key or the fix
        msg = str(e)
        raise StageError(msg if msg.startswith(str(src)) else f"{src}: {msg}") from None
    out = ctx.path("train") / "model.pt"
    with atomic.atomic_dir(out.parent) as tmp:
        checkpoint.save(tmp / "model.pt", checkpoint.make(ctx.params, model_sd, ema_sd, step))
    print(f"imported {src} ({args.format}, step {step}) -> {out}")
    return 0
