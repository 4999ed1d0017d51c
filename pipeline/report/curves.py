"""The report's parts from the curves stage (runs/<suite>/<exp>/curves/{nfe,ckpt}.json): FD-vs-NFE figures, the
FD-vs-training-step figure and the "best checkpoint" column block of the Table 3 layout."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import SamplingConfig
from pipeline.report import figures
from pipeline.report.results import NOT_RUN, Block, number, sampler_label

SECTION_NFE = "Sample quality against NFE, per sampler (curves stage)"
SECTION_STEP = "Sample quality against training step (curves stage)"
BEST = "best checkpoint (step: FD) ↓"


def _own(nfe: dict) -> str:
    """The curves with their own NFE targets (curves.nfe_by_curve), as a caption fragment."""
    own = nfe.get("nfe_by_curve") or {}
    return "".join(f", {name}: {targets}" for name, targets in own.items())


def _done(rec: dict | None) -> bool:
    return bool(rec) and bool(rec.get("records"))


def _fd(stat: dict) -> str:
    return number(stat["mean"], stat.get("std"), 1)


def _missing(x: dict) -> str:
    """The cell of an experiment without a checkpoint curve: not configured in its params, or configured and not run."""
    c = getattr(x.get("params"), "curves", None)
    return NOT_RUN if c is not None and c.checkpoints is not None else "not configured (curves.checkpoints)"


def checkpoint_block(rows: list[dict]) -> tuple[Block, str]:
    """Columns "best checkpoint: step, FD" and "last checkpoint: step, FD" (curve setting) for Table 3's rows, and
    the sentence that says where these numbers come from; a block without columns (left out of the table) and ""
    where no experiment has a checkpoint curve."""
    cks = [(x.get("curves") or {}).get("ckpt") for x in rows]
    if not any(_done(c) for c in cks):
        return Block("checkpoint", "checkpoint"), ""
    best = [f"step {c['best']['checkpoint_step']}: {_fd(c['best']['fd'])}" if _done(c) else _missing(x)
            for x, c in zip(rows, cks)]
    last = [f"step {c['last']['checkpoint_step']}: {_fd(c['last']['fd'])}" if _done(c) else _missing(x)
            for x, c in zip(rows, cks)]
    how = sorted({f"{sampler_label(SamplingConfig(**c['setting']))}, {c['num_samples']} samples x {c['num_seeds']} "
                  f"seed{'s' if c['num_seeds'] > 1 else ''}" for c in cks if _done(c)})
    note = (" Checkpoint columns: classifier FD of the EMA weights kept every training.ckpt_freq steps and of the final "
            "ones, from the curves stage (" + "; ".join(how) + "): the best over training, as Score SDE reports in "
            "Table 3, beside the last checkpoint under the same cheap setting. The FD / IS columns before them are "
            "the last checkpoint's, with the experiment's default sampler.")
    return Block("curves:", "curves stage: dataset classifier, cheap sampler",
                 [(BEST, best), ("last checkpoint (step: FD)", last)]), note


def curve_figures(exps: list[dict], fig_dir: Path) -> list[dict]:
    """Draw the curves' figures into fig_dir; returns their figure records (report_html's format)."""
    figs = []
    for x in exps:
        nfe = (x.get("curves") or {}).get("nfe")
        if not _done(nfe):
            continue
        by_curve: dict[str, list[dict]] = {}
        for r in nfe["records"]:
            by_curve.setdefault(r["curve"], []).append(r)
        name = f"fd_vs_nfe-{x['experiment']}.png"
        figures.fd_against_nfe(fig_dir / name, f"{x['experiment']}: step {nfe['checkpoint_step']}, "
                               f"{nfe['num_samples']} samples/seed", by_curve)
        skipped = [f"{c}: NFE {s['target_nfe']} ({s['reason']})" for c, v in nfe["curves"].items() for s in v["skipped"]]
        figs.append({"section": SECTION_NFE, "kind": "plot", "file": name,
                     "caption": f"{x['experiment']}: classifier FD against measured NFE, one curve per sampler "
                                f"(curves.samplers; NFE targets {nfe['nfe_targets']}{_own(nfe)}, ODE tolerances "
                                f"{nfe['ode_tols']}), {nfe['num_samples']} samples x {nfe['num_seeds']} seeds per "
                                "point, the same noise at every point. Absolute FDs at this sample size are biased "
                                "upwards against the evaluate stage's; compare points within a figure."
                                + (f" Skipped: {'; '.join(skipped)}." if skipped else "")})
    steps = {x["experiment"]: {"records": ck["records"], "best": ck["best"]["checkpoint_step"],
                               "raw_records": ck.get("raw_records") or [],
                               "title": f"{x['experiment']}: {sampler_label(SamplingConfig(**ck['setting']))}"}
             for x in exps if _done(ck := (x.get("curves") or {}).get("ckpt"))}
    if steps:
        figures.fd_against_step(fig_dir / "fd_vs_step.png", steps)
        figs.append({"section": SECTION_STEP, "kind": "plot", "file": "fd_vs_step.png",
                     "caption": "Classifier FD of the weights kept every training.ckpt_freq steps and of the final "
                                "ones (curves stage, one cheap sampler per experiment): the EMA weights, which the "
                                "suite samples with (model.ema_schedule), and the raw weights of the same steps, "
                                "dashed, to show what the average gains or loses; the star marks the best EMA "
                                "checkpoint, reported in the Table 3 layout's checkpoint columns."})
    return figs
