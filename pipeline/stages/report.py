"""`report`: the suite's paper-style tables (Markdown, LaTeX), figures and one static, self-contained index.html.

reports/<suite>/: README.md (tables + figure links), tables.tex (booktabs), index.html (tables and every figure
embedded as base64: opens from disk with no server), figures/*.png (sample grids per experiment and sampler,
controllable-generation examples, training loss curves, FD/FID against NFE).
"""
from __future__ import annotations

import base64
import html
import shutil
from pathlib import Path

from pipeline import atomic, figures, outputs, report, tracking
from pipeline.stages.common import add_common_arguments

INTRO = ("Ours: mean ± std over sampling seeds (bits/dim: ± standard error over test images). A comparison cell reads "
         "\"ours; paper P; Δ ours - P\" with the published CIFAR-10 number (docs/papers.md §7); the difference is given only "
         "for CIFAR-10 experiments with Inception-v3 metrics. \"not run\" marks stages without results.")


def add_arguments(p, name: str) -> None:
    add_common_arguments(p, params_required=False)
    p.add_argument("--suite", default="default", help="suite name (the `suite:` key of the params files)")


def _figures(root: Path, exps: list[dict], fig_dir: Path) -> list[tuple[str, str, str]]:
    """Copy / draw the figures into fig_dir; returns (section, caption, file name) in display order."""
    out = []
    for x in exps:
        for sampler, s in x["samplers"].items():
            grid = root / s["samples"] / "grid.png"
            if grid.exists():
                name = f"samples-{x['experiment']}-{sampler}.png"
                shutil.copyfile(grid, fig_dir / name)
                out.append(("Samples", f"{x['experiment']} / {sampler}: {report.sampler_label(s['settings'])}", name))
    for x in exps:
        tasks = (x["controllable"] or {}).get("tasks") or {}
        for task, info in tasks.items():
            src = root / x["controllable_dir"] / f"{task}.png"
            if info.get("status") == "done" and src.exists():
                name = f"{task}-{x['experiment']}.png"
                shutil.copyfile(src, fig_dir / name)
                what = "original | right half hidden | completion" if task == "inpainting" else "original | gray | colorized"
                out.append(("Controllable generation", f"{x['experiment']} / {task} (rows: {what})", name))
    curves = {x["experiment"]: figures.read_curve(root / x["loss_curve"]) for x in exps}
    if any(curves.values()):
        figures.loss_plot(fig_dir / "loss_curves.png", curves)
        out.append(("Training", "training loss against step", "loss_curves.png"))
    metric, pts = report.nfe_points(exps)
    if pts:
        figures.quality_vs_nfe(fig_dir / "quality_vs_nfe.png", pts, metric)
        out.append(("Sample quality against NFE", f"{metric} against NFE, every (experiment, sampler)",
                    "quality_vs_nfe.png"))
    return out


def _page(suite: str, tables: list[report.Table], figs: list[tuple[str, str, str]], fig_dir: Path) -> str:
    body = [f"<h1>Report: suite {html.escape(suite)}</h1>", f"<p>{html.escape(INTRO)}</p>"]
    body += [report.table_html(t) for t in tables]
    for section in dict.fromkeys(s for s, _, _ in figs):
        body.append(f"<h2>{html.escape(section)}</h2>")
        for sec, caption, name in figs:
            if sec != section:
                continue
            data = base64.b64encode((fig_dir / name).read_bytes()).decode()
            cls = "plot" if section in ("Training", "Sample quality against NFE") else "grid"
            body.append(f"<figure><img class='{cls}' alt='{html.escape(caption, quote=True)}' data-file='{name}' "
                        f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:.5em}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px;vertical-align:top}th{background:#f4f4f4}"
             ".note{font-size:12px;color:#555}figure{display:inline-block;margin:8px;vertical-align:top}"
             "figcaption{font-size:12px;max-width:420px}img.grid{width:400px;image-rendering:pixelated}"
             "img.plot{max-width:700px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>score-repro: {html.escape(suite)}</title>"
            f"<style>{style}</style></head><body>" + "".join(body) + "</body></html>\n")


def build(root: Path, suite: str, out: Path) -> dict:
    """Write the report into the (empty) folder `out`; returns what it holds (tables, figures)."""
    root = Path(root)
    exps = report.collect_experiments(root, suite)
    tables = report.tables(exps)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = _figures(root, exps, fig_dir)
    md = [f"# Report: suite `{suite}`\n", INTRO + "\n"] + [report.table_markdown(t) for t in tables]
    md.append("## Figures\n")
    for section in dict.fromkeys(s for s, _, _ in figs):
        md.append(f"### {section}\n")
        md += [f"![{caption}](figures/{name})\n" for sec, caption, name in figs if sec == section]
    if not figs:
        md.append("No figures yet (no sample grids, loss curves or evaluated samplers).\n")
    atomic.write_text(out / "README.md", "\n".join(md))
    tex = [f"% Report: suite {suite}. Generated by `python -m pipeline report --suite {suite}`; needs "
           "\\usepackage{booktabs}.\n"] + [report.table_latex(t) for t in tables]
    atomic.write_text(out / "tables.tex", "\n".join(tex))
    atomic.write_text(out / "index.html", _page(suite, tables, figs, fig_dir))
    return {"tables": tables, "figures": figs}


def run(args) -> int:
    root, suite = args.root, args.suite
    out = root / outputs.paths(suite, "", "")["report"]
    with tracking.stage_run(root, suite, f"report-{suite}", "report") as tracker, atomic.atomic_dir(out) as tmp:
        built = build(root, suite, tmp)
        tracker.log_artifacts(tmp, "report")
    print(f"report written to {out}: {len(built['tables'])} tables, {len(built['figures'])} figures")
    return 0
