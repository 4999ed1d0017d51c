"""`report`: the suite's paper-style tables (Markdown, LaTeX), figures, one self-contained index.html and its preview.

reports/<suite>/: README.md (summary, tables, figure links, the browser check), tables.tex (booktabs), index.html
(summary first; tables and every figure embedded as base64: opens from disk with no server), figures/*.png (a grid
of training images per dataset beside the sample grids of every experiment and sampler, controllable-generation
examples, training and EMA evaluation loss curves, FD/FID against NFE), and, where headless Chromium is installed,
preview.png (the top of index.html at 1280 px) and render_check.json (the page measured at 1280 and 800 px: page
width against window width, tables overflowing their box, images decoded, console errors).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.errors import StageError
from pipeline.io import atomic, data, grids, tracking
from pipeline.names import DATASET_TABLE
from pipeline.report import browser, figures, to_mlflow
from pipeline.report import html as report_html
from pipeline.report import results as report
from pipeline.report import summary as report_summary
from pipeline.report import tables as report_tables
from pipeline.report.curves import curve_figures
from pipeline.stages.common import add_common_arguments, check_name_arg, inside_root
from pipeline.workflow import outputs

WIDTHS = (1280, 800)
PREVIEW = (1280, 1800)
REAL_SEED = 0  # the training images of the real-data grid: a fixed draw from the prepared training split


SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="report", help="paper-style tables beside the published numbers (Markdown, LaTeX, HTML)",
    # what it reads of every stage of the suite: metrics, loss curves, sample folders (grid.png, info.json),
    # controllable examples, the prepared training split (its grid of real images), the evaluator's metrics.json
    scope="suite", order=110,
    deps=("train_metrics", "loss_curve", "eval", "likelihood", "curve_nfe", "curve_ckpt", "samples", "controllable",
          "prepared", "evaluator"),
    uncached=("report",),
    snakemake_report={"report": {"patterns": ["{page}.html", "figures/{figure}.png"], "category": "Report"}},
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p, params_required=False)
    p.add_argument("--suite", default="default", help="suite name (the `suite:` key of the params files)")


def real_grid(root: Path, dataset: str, png: Path, n_points: int) -> str:
    """64 training images (8 per row, like the sample grids) drawn with REAL_SEED, or n_points 2-D points; returns
    the caption. Raises StageError when the prepared data is missing."""
    x, _ = data.load_split(root, dataset, "train")
    points = x.dtype != np.uint8
    n = min(len(x), n_points if points else 64)
    idx = np.sort(np.random.default_rng(REAL_SEED).choice(len(x), size=n, replace=False))
    grids.save_grid(png, x[idx], points)
    what = "points" if points else "images"
    return (f"training data: {n} {what} of the {report.dataset_name(dataset)} training split ({len(x):,}), drawn with "
            f"seed {REAL_SEED}")


def _loss_label(p) -> str:
    t = p.training
    dims = 2 if DATASET_TABLE[p.data.dataset].kind == "points" else p.data.num_channels * p.data.image_size ** 2
    how = "mean" if t.reduce_mean else "½ × sum"
    return f"{'DSM' if t.continuous else 'discrete'} loss per sample\n({how} over {dims} dims, unitless)"


def _points_over_data(root: Path, x: dict, sampler: str, s: dict, png: Path) -> bool:
    """For 2-D points: the first seed's samples over as many training points (REAL_SEED), with the point metrics
    of the evaluate stage in the title. False for images (or unreadable samples): the sample grid is used."""
    try:
        with np.load(root / s["samples"] / "samples.npz") as z:
            if "points" not in z:
                return False
            pts = z["points"][0]
        train, _ = data.load_split(root, x["dataset"], "train")
    except (OSError, ValueError, KeyError, StageError):
        return False
    idx = np.random.default_rng(REAL_SEED).choice(len(train), size=min(len(train), len(pts)), replace=False)
    pm = (s["eval"] or {}).get("points") or {}
    q = ", ".join(f"{label} {report.ours(pm[k])[2]}" for k, label in (("mmd2", "MMD²"), ("sw2", "SW₂")) if k in pm)
    figures.points_over_data(png, pts, train[np.sort(idx)], f"{x['experiment']} / {sampler}" + (f": {q}" if q else ""))
    return True


def _figures(root: Path, exps: list[dict], datasets: dict, fig_dir: Path) -> tuple[list[dict], list[str]]:
    """Copy / draw the figures into fig_dir; returns (figures in display order, notes on what is missing)."""
    figs, missing = [], []
    for ds in datasets:
        name = f"real-{ds}.png"
        n_points = max(x["params"].eval.num_samples for x in exps if x["dataset"] == ds)
        try:
            caption = real_grid(root, ds, fig_dir / name, n_points)
            figs.append({"section": report_html.SAMPLES, "kind": "real", "dataset": ds, "file": name, "caption": caption})
        except StageError:
            missing.append(f"No training-data grid for {report.dataset_name(ds)}: {datasets[ds]['prepared']} is missing "
                           f"(run `python -m pipeline prepare --dataset {ds}`).")
    for x in exps:
        for sampler, s in x["samplers"].items():
            grid = root / s["samples"] / "grid.png"
            if grid.exists():
                name = f"samples-{x['experiment']}-{sampler}.png"
                ev = s["eval"]
                if not _points_over_data(root, x, sampler, s, fig_dir / name):
                    shutil.copyfile(grid, fig_dir / name)
                fd, fid = report.dataset_classifier(ev, "fd"), report.inception(ev, "fid")
                q = (f"; FID {report.ours(fid)[2]}" if isinstance(fid, dict) else
                     f"; FD {report.ours(fd)[2]}" if isinstance(fd, dict) else "")
                pm = (ev or {}).get("points") or {}
                q += "".join(f"; {label} {report.ours(pm[k])[2]}" for k, label in
                             (("mmd2", "MMD²"), ("sw2", "sliced W₂"), ("mode_weight_max_dev", "max |mode weight − 1/8|"))
                             if isinstance(pm.get(k), dict))
                figs.append({"section": report_html.SAMPLES, "kind": "grid", "dataset": x["dataset"],
                             "experiment": x["experiment"], "file": name,
                             "caption": f"{report.sampler_text(sampler, s['settings'])}; NFE {report.nfe_text(ev)}{q}"})
    for x in exps:
        for task, info in ((x["controllable"] or {}).get("tasks") or {}).items():
            src = root / x["controllable_dir"] / f"{task}.png"
            if info.get("status") == "done" and src.exists():
                name = f"{task}-{x['experiment']}.png"
                shutil.copyfile(src, fig_dir / name)
                what = "original | right half hidden | completion" if task == "inpainting" else "original | gray | colorized"
                if task == "class_conditional":
                    what = (f"one class per row: {', '.join(info.get('class_names') or [])}; "
                            f"{info['evaluator_accuracy']:.1%} classed as requested by the evaluator classifier")
                figs.append({"section": "Controllable generation", "kind": "example", "file": name,
                             "caption": f"{x['experiment']} / {task} (rows: {what})"})
    curves = {}
    for x in exps:
        c = figures.read_curve(root / x["loss_curve"])
        if c["train"]:
            p = x["params"]
            curves[x["experiment"]] = {**c, "final": (x["train"] or {}).get("ema_eval_loss"), "ylabel": _loss_label(p),
                                       "title": f"{x['experiment']}: {p.training.sde}, {p.model.name}",
                                       "weights": "EMA weights" if p.training.use_ema else "weights"}
    if curves:
        figures.loss_plot(fig_dir / "loss_curves.png", curves)
        figs.append({"section": "Training", "kind": "plot", "file": "loss_curves.png",
                     "caption": "Training loss per step (faint) and its moving average; the loss of the EMA weights on "
                                "64 test images every training.eval_freq steps (loss.csv) and on 256 at the end "
                                "(train_metrics.json). One panel per experiment: the losses' scales differ by SDE."})
    metric, pts = report_tables.nfe_points(exps)
    if pts:
        figures.quality_vs_nfe(fig_dir / "quality_vs_nfe.png", pts, metric)
        figs.append({"section": "Sample quality against NFE", "kind": "plot", "file": "quality_vs_nfe.png",
                     "caption": f"{metric} against NFE, every (experiment, sampler); bars: ± 1 std over sampling seeds."})
    figs += curve_figures(exps, fig_dir)
    return figs, missing


def _browser_footer(exe: str | None) -> str:
    if exe:
        return (f"preview.png: the top {PREVIEW[0]} × {PREVIEW[1]} px of this page in headless {browser.version(exe)}, "
                f"written with the report; the page is measured at {' and '.join(map(str, WIDTHS))} px "
                "(render_check.json, README.md).")
    why = ("disabled by PIPELINE_CHROMIUM=off" if os.environ.get(browser.ENV_VAR, "").lower() == "off" else
           f"Chromium was not found (apt-get install chromium, or set {browser.ENV_VAR}=/path/to/chrome)")
    return f"No preview.png and no browser check: {why}."


def check_text(checks: list[dict]) -> str:
    """The browser check in one paragraph of README.md."""
    parts = []
    for c in checks:
        if "error" in c:
            parts.append(f"{c['width']} px: {c['error']}")
            continue
        over = [t["id"] or "?" for t in c["tables"] if t["overflow"] > 0]
        parts.append(f"at {c['width']} px: page {c['scroll_width']} px wide in a {c['inner_width']} px window"
                     f" ({'no' if c['scroll_width'] <= c['inner_width'] else 'a'} horizontal scroll), "
                     + (f"tables wider than their box (they scroll inside it): {', '.join(over)}" if over
                        else "every table fits") + f", images decoded {c['images_loaded']}/{c['images']}, "
                     f"console errors {len(c['console_errors'])}" + (f" ({'; '.join(c['console_errors'][:3])})"
                                                                     if c["console_errors"] else ""))
    return "Browser check: " + "; ".join(parts) + "."


def build(root: Path, suite: str, out: Path, use_browser: bool = True, exps: list[dict] | None = None) -> dict:
    """Write the report into the (empty) folder `out`; returns what it holds (tables, figures, browser checks).
    exps: the suite's records (report.collect_experiments), read here when None."""
    root = Path(root)
    exps = report.collect_experiments(root, suite) if exps is None else exps
    datasets = report.collect_datasets(root, exps)
    tables = report_tables.tables(exps)
    summary = report_summary.summary(exps, datasets)
    banners = report_summary.banners(suite, datasets)  # a rehearsal, synthetic data: said first
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs, missing = _figures(root, exps, datasets, fig_dir)
    exe = browser.find() if use_browser else None
    footer = _browser_footer(exe) if use_browser else "No preview.png and no browser check: not requested."
    atomic.write_text(out / "index.html",
                      report_html.page(suite, summary, tables, figs, fig_dir, missing, footer, banners))
    checks = []
    if exe:
        checks = [browser.check(out / "index.html", w, exe=exe) for w in WIDTHS]
        atomic.write_json(out / "render_check.json", {"browser": browser.version(exe), "checks": checks})
        shot = browser.screenshot(out / "index.html", out / "preview.png", *PREVIEW, exe=exe)
        footer = ("![preview: the top of index.html](preview.png)\n\n" if shot else "preview.png: the screenshot failed. ") \
            + check_text(checks)
    atomic.write_text(out / "README.md", report_html.readme(suite, summary, tables, figs, missing, footer, banners))
    tex = [f"% Report: suite {suite}. Generated by `python -m pipeline report --suite {suite}`; needs "
           "\\usepackage{booktabs}.\n"] + [f"% {b}\n" for b in banners] + [report.table_latex(t) for t in tables]
    atomic.write_text(out / "tables.tex", "\n".join(tex))
    return {"tables": tables, "figures": figs, "checks": checks, "summary": summary}


def to_runs(tracker, suite: str, exps: list[dict], built: dict, folder: Path) -> None:
    """The report on the suite's run (its pages and figures as artifacts, each experiment's headline numbers beside
    the papers', a description) and on each experiment's run (its numbers, a description, its figures)."""
    if not tracker.active:
        return
    lines, _, caveats = built["summary"]
    runs = tracker.experiment_runs()
    for x in exps:
        rid = runs.get(x["experiment"])
        if rid:
            tracker.log_metrics({k if k.startswith("paper.") else f"headline.{k}": v for k, v in to_mlflow.headline(x).items()},
                                run_id=rid, step=(x["train"] or {}).get("step"))
            tracker.describe(to_mlflow.experiment_description(x, caveats), run_id=rid)
    tracker.log_metrics({f"{x['experiment']}.{k}": v for x in exps for k, v in to_mlflow.headline(x).items()},
                        run_id=tracker.suite_id)
    tracker.describe(to_mlflow.suite_description(suite, lines, caveats), run_id=tracker.suite_id)
    for f in sorted(folder.iterdir()):
        if f.is_file():
            tracker.log_artifact(f, None, run_id=tracker.suite_id)
    for f in sorted((folder / "figures").iterdir()):
        fig = figures.KEPT.pop(f.name, None)
        exp = to_mlflow.figure_experiment(f.name)
        if fig is not None and exp in runs:
            tracker.log_figure(fig, f"figures/{f.name}", run_id=runs[exp])
        if fig is not None:
            tracker.log_figure(fig, f"figures/{f.name}", run_id=tracker.suite_id)
        else:
            tracker.log_artifact(f, "figures", run_id=tracker.suite_id)
    tracker.set_tags({"pipeline.report": "index.html of the suite run"})


def run(args) -> int:
    root, suite = args.root, args.suite
    check_name_arg("--suite", "suite", suite)
    out = inside_root(root, outputs.paths(suite, "", "")["report"])
    exps = report.collect_experiments(root, suite)  # every params file is read (and checked) before anything is written
    if not exps:
        raise StageError(f"--suite {suite}: no experiments (no params/**/*.yaml under {root} with `suite: {suite}`); "
                         "pass the `suite:` of a params file")
    figures.KEPT = {}  # the figures stay open for MLflow's log_figure
    try:
        with tracking.stage_run(root, suite, None, "report",
                                description=f"The report of suite `{suite}`: an artifact of the suite's run.") as tracker, \
                atomic.atomic_dir(out) as tmp:
            built = build(root, suite, tmp, exps=exps)
            to_runs(tracker, suite, exps, built, tmp)
    finally:
        figures.KEPT = None
        figures._plt().close("all")
    bad = [c for c in built["checks"] if "error" in c or c["scroll_width"] > c["inner_width"] or c["console_errors"]
           or c["images_loaded"] < c["images"]]
    print(f"report written to {out}: {len(built['tables'])} tables, {len(built['figures'])} figures"
          + (f"; browser check: {json.dumps(bad)}" if bad else "; browser check passed" if built["checks"] else
             "; no browser check (Chromium not found)"))
    return 0
