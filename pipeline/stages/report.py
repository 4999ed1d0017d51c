"""`report`: the suite's tables (Markdown, LaTeX), sample grids, loss curves, and one static index.html."""
from __future__ import annotations

import base64
import shutil

from pipeline import atomic, dag, report, tracking
from pipeline.cli import common


def add_arguments(p, name: str) -> None:
    common(p, params_required=False)
    p.add_argument("--suite", default="default", help="suite name (the `suite:` key of the params files)")


def loss_plot(path, curves: dict[str, list[tuple[int, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, pts in curves.items():
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], label=name, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def read_curve(path) -> list[tuple[int, float]]:
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return []
    return [(int(a), float(b)) for a, b in (ln.split(",") for ln in lines if ln)]


def run(args) -> int:
    root, suite = args.root, args.suite
    rows = report.collect(root, suite)
    tables = {"Sample quality (Score SDE Table 3 layout)": report.quality_table(rows),
              "Likelihood (Score SDE Table 2 layout)": report.likelihood_table(rows)}
    out = root / dag.paths(suite, "", "")["report"]
    with tracking.stage_run(root, suite, f"report-{suite}", "report") as tracker, atomic.atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        curves = {}
        figures = []
        for r in rows:
            grid = root / r["samples"] / "grid.png"
            if grid.exists():
                name = f"{r['experiment']}-{r['sampler']}.png"
                shutil.copyfile(grid, tmp / "figures" / name)
                figures.append((f"{r['experiment']} / {r['sampler']}", name))
            curves[r["experiment"]] = read_curve(root / dag.paths(suite, r["experiment"], r["dataset"])["loss_curve"])
        if any(curves.values()):
            loss_plot(tmp / "figures" / "loss_curves.png", curves)
            figures.append(("training loss", "loss_curves.png"))
        md = [f"# Report: suite `{suite}`\n", "Ours: mean ± std over sampling seeds (bits/dim: ± standard error). "
              "Paper columns are the published CIFAR-10 numbers (PAPERS.md §7); \"not run\" marks stages without results.\n"]
        tex = []
        body_html = []
        for title, (head, body) in tables.items():
            md += [f"## {title}\n", report.markdown(head, body)]
            tex += [f"% {title}", report.latex(head, body)]
            body_html += [f"<h2>{title}</h2>", report.html_table(head, body)]
        md += ["## Figures\n"] + [f"![{t}](figures/{f})\n" for t, f in figures]
        atomic.write_text(tmp / "README.md", "\n".join(md))
        atomic.write_text(tmp / "tables.tex", "\n".join(tex))
        imgs = "".join(f"<figure><img alt='{t}' src='data:image/png;base64,"
                       f"{base64.b64encode((tmp / 'figures' / f).read_bytes()).decode()}'><figcaption>{t}</figcaption></figure>"
                       for t, f in figures)
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>score-repro: " + suite + "</title>"
                "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
                "padding:3px 6px;font-size:13px}figure{display:inline-block;margin:8px}img{max-width:320px}</style></head>"
                f"<body><h1>Report: suite {suite}</h1>" + "".join(body_html) + "<h2>Figures</h2>" + imgs + "</body></html>")
        atomic.write_text(tmp / "index.html", page)
        tracker.log_artifacts(tmp, "report")
    print(f"report written to {out}")
    return 0
