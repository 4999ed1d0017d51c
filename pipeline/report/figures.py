"""Report figures (PNG, written atomically): training and EMA evaluation loss curves, sample quality against NFE."""
from __future__ import annotations

import math
from pathlib import Path

from pipeline.io import atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


KEPT: dict | None = None  # a dict: the figures drawn are kept open in it by file name (the report logs them to MLflow)


def _save(fig, path: Path) -> None:
    plt = _plt()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    if KEPT is not None:
        KEPT[Path(path).name] = fig
    else:
        plt.close(fig)


def read_curve(path: Path) -> dict[str, list[tuple[int, float]]]:
    """A training loss.csv (`step,loss[,ema_eval_loss]`): {"train": [(step, loss)], "eval": [(step, EMA eval loss)]};
    both empty when the file does not exist. Blank eval cells (steps without an evaluation) are skipped."""
    out: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return out
    for ln in lines[1:]:
        parts = ln.split(",")
        if len(parts) < 2 or not parts[0]:
            continue
        out["train"].append((int(parts[0]), float(parts[1])))
        if len(parts) > 2 and parts[2].strip():
            out["eval"].append((int(parts[0]), float(parts[2])))
    return out


def _smooth(values: list[float], k: int) -> list[float]:
    """Trailing moving average over k points (the first points over what there is)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def loss_plot(path: Path, curves: dict[str, dict]) -> None:
    """One panel per experiment: the training loss per step (faint) and its moving average, the EMA evaluation loss
    every eval_freq steps (markers) and the final EMA evaluation loss of train_metrics.json (a star).

    curves[name] = {"train": [(step, loss)], "eval": [(step, loss)], "final": float | None, "title": str,
    "ylabel": str, "weights": "EMA weights" or "weights", "eval_n": int, "final_n": int}."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter

    names = [n for n, c in curves.items() if c["train"]]
    cols = 1 if len(names) == 1 else 2
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        c = curves[name]
        steps, vals = [s for s, _ in c["train"]], [v for _, v in c["train"]]
        k = max(1, len(vals) // 40)
        ax.plot(steps, vals, color="tab:blue", alpha=0.25, lw=0.6, label="training loss, per step")
        if k > 1:
            ax.plot(steps, _smooth(vals, k), color="tab:blue", lw=1.4, label=f"training loss, mean of {k} steps")
        if c["eval"]:
            ax.plot([s for s, _ in c["eval"]], [v for _, v in c["eval"]], "o-", color="tab:orange", ms=3.5, lw=1,
                    label=f"{c.get('weights', 'EMA weights')}, {c.get('eval_n', 64)} test images")
        if c.get("final") is not None and math.isfinite(c["final"]):
            ax.plot([steps[-1]], [c["final"]], "*", color="tab:red", ms=10,
                    label=f"{c.get('weights', 'EMA weights')}, final ({c.get('final_n', 256)} test images)")
        if min(vals) > 0:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            if max(vals) / min(vals) < 30:  # within about a decade: label the minor ticks too
                ax.yaxis.set_minor_formatter(plain)
            ax.tick_params(axis="y", which="both", labelsize=7)
        ax.set_title(c.get("title", name), fontsize=10)
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_ylabel(c.get("ylabel", "loss"), fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def quality_vs_nfe(path: Path, points: list[dict], metric: str) -> None:
    """One scatter of every (experiment, sampler): x = NFE (log scale when it spans a decade), y = FD / FID. Error bars
    are ± 1 std over sampling seeds, vertical for the metric and horizontal for the NFE (adaptive ODE solvers), drawn
    where a point has two or more seeds; one colour per experiment, each point labelled with its sampler."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    experiments = list(dict.fromkeys(p["experiment"] for p in points))
    cmap = plt.get_cmap("tab10")
    for i, exp in enumerate(experiments):
        pts = [p for p in points if p["experiment"] == exp]
        ax.errorbar([p["nfe"] for p in pts], [p["value"] for p in pts], yerr=[p.get("std") or 0.0 for p in pts],
                    xerr=[p.get("nfe_std") or 0.0 for p in pts], fmt="o", color=cmap(i % 10), label=exp, capsize=3,
                    ms=5)
        for p in pts:
            ax.annotate(p["sampler"], (p["nfe"], p["value"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    nfes = [p["nfe"] for p in points]
    if min(nfes) > 0 and max(nfes) / min(nfes) > 10:  # log scale only across decades (its labels need them)
        ax.set_xscale("log")
    seeds = sorted({p.get("seeds") for p in points if p.get("seeds")})
    bars = (f"error bars: ± 1 std over {'/'.join(map(str, seeds))} sampling seeds" if seeds and max(seeds) > 1
            else "one seed each: no error bars")
    ax.set_xlabel("NFE: score-network evaluations per sample (mean over seeds)")
    ax.set_ylabel(f"{metric}, lower is better")
    ax.set_title(f"{metric} against NFE ({bars})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def fd_against_nfe(path: Path, title: str, curves: dict[str, list[dict]], metric: str = "FD (dataset classifier)") -> None:
    """One experiment's FD-vs-NFE curves (pipeline/metrics/curves.py records): one line per sampler, x = measured mean NFE
    (log scale), y = mean FD with ± 1 std over sampling seeds (where there are two or more)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = plt.get_cmap("tab10")
    seeds = set()
    for i, (name, recs) in enumerate(curves.items()):
        recs = sorted(recs, key=lambda r: r["nfe"]["mean"])
        seeds |= {r["fd"]["n"] for r in recs}
        ax.errorbar([r["nfe"]["mean"] for r in recs], [r["fd"]["mean"] for r in recs],
                    yerr=[r["fd"].get("std") or 0.0 for r in recs], fmt="o-", color=cmap(i % 10), label=name,
                    capsize=3, ms=4, lw=1.2)
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("NFE: score-network evaluations per sample (measured)")
    ax.set_ylabel(f"{metric}, lower is better")
    bars = f"± 1 std over {'/'.join(map(str, sorted(seeds)))} seeds" if seeds and max(seeds) > 1 else "one seed"
    ax.set_title(f"{title} ({bars})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def fd_against_step(path: Path, curves: dict[str, dict], metric: str = "FD (dataset classifier)") -> None:
    """FD against training step, one panel per experiment (the checkpoint curve of pipeline/metrics/curves.py): mean ± 1 std
    over seeds per kept checkpoint, the best one starred, and the raw weights' curve dashed where there is one.
    curves[name] = {"records": [...], "best": step, "title": str, "raw_records": [...] (optional)}."""
    plt = _plt()
    names = list(curves)
    cols = 1 if len(names) == 1 else 2
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        c = curves[name]
        recs = sorted(c["records"], key=lambda r: r["checkpoint_step"])
        steps = [r["checkpoint_step"] for r in recs]
        ema = bool(recs) and recs[0].get("weights", "ema") == "ema"
        ax.errorbar(steps, [r["fd"]["mean"] for r in recs], yerr=[r["fd"].get("std") or 0.0 for r in recs],
                    fmt="o-", color="tab:blue", capsize=3, ms=4, label="EMA weights" if ema else "weights")
        raw = sorted(c.get("raw_records") or [], key=lambda r: r["checkpoint_step"])
        if raw:
            ax.errorbar([r["checkpoint_step"] for r in raw], [r["fd"]["mean"] for r in raw],
                        yerr=[r["fd"].get("std") or 0.0 for r in raw], fmt="s--", color="tab:gray", capsize=3, ms=3,
                        label="raw weights")
        best = next(r for r in recs if r["checkpoint_step"] == c["best"])
        ax.plot([best["checkpoint_step"]], [best["fd"]["mean"]], "*", color="tab:red", ms=12,
                label=f"best: step {best['checkpoint_step']}")
        ax.set_title(c.get("title", name), fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{metric}, lower is better", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def points_over_data(path: Path, samples, data, title: str) -> None:
    """2-D samples (blue) drawn over as many training points (grey): where the model puts mass against the data."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(data[:, 0], data[:, 1], s=3, c="0.75", label=f"data ({len(data)})", rasterized=True)
    ax.scatter(samples[:, 0], samples[:, 1], s=3, c="tab:blue", alpha=0.6, label=f"samples ({len(samples)})",
               rasterized=True)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    fig.tight_layout()
    _save(fig, path)
