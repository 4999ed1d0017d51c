"""Report figures (PNG, written atomically): training loss curves and sample quality against NFE."""
from __future__ import annotations

from pathlib import Path

from pipeline import atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _plt()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def read_curve(path: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a training loss.csv (header `step,loss`); [] when it does not exist."""
    try:
        lines = Path(path).read_text().splitlines()[1:]
    except OSError:
        return []
    return [(int(a), float(b)) for a, b in (ln.split(",")[:2] for ln in lines if ln)]


def loss_plot(path: Path, curves: dict[str, list[tuple[int, float]]]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, pts in curves.items():
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], label=name, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def quality_vs_nfe(path: Path, points: list[dict], metric: str) -> None:
    """One scatter of every (experiment, sampler): x = NFE (log scale when it spans a decade), y = FD / FID with its std as an error bar;
    one marker colour per experiment, each point labelled with its sampler."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    experiments = list(dict.fromkeys(p["experiment"] for p in points))
    cmap = plt.get_cmap("tab10")
    for i, exp in enumerate(experiments):
        pts = [p for p in points if p["experiment"] == exp]
        ax.errorbar([p["nfe"] for p in pts], [p["value"] for p in pts],
                    yerr=[p["std"] or 0.0 for p in pts], fmt="o", color=cmap(i % 10), label=exp, capsize=3, ms=5)
        for p in pts:
            ax.annotate(p["sampler"], (p["nfe"], p["value"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    nfes = [p["nfe"] for p in points]
    if min(nfes) > 0 and max(nfes) / min(nfes) > 10:  # log scale only across decades (its labels need them)
        ax.set_xscale("log")
    ax.set_xlabel("NFE (score-function evaluations per sample)")
    ax.set_ylabel(f"{metric} ↓")
    ax.set_title(f"{metric} against NFE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
