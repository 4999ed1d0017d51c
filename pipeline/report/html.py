"""The report's two pages from its parts: index.html (self-contained: figures embedded as base64, no script, opens
from disk) and README.md (the same content; figures linked from figures/).

Figures are dicts {"section", "caption", "file", "kind"} with kind "real" (a dataset's training images, with its
"dataset"), "grid" (samples, with "dataset" and "experiment"), "example" (controllable generation) or "plot"."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from pipeline.report.render import Table, html_table, markdown, table_html, table_markdown

SAMPLES = "Samples beside the training data"
INTRO = ("Ours: mean ± std over sampling seeds (bits/dim: ± standard error over test images). Tables 3 and 2 and the NCSN "
         "table keep the papers' numbers in their own columns, labelled with the paper's dataset (docs/papers.md §7); "
         "a Δ column appears only for experiments on that dataset with the paper's metric. \"not run\" marks stages "
         "without results.")
STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;margin:0 auto;padding:.8em 1.4em;"
    "max-width:1400px;line-height:1.35}h1{font-size:1.55em;margin:.2em 0}h2{font-size:1.2em;margin:1.3em 0 .35em;"
    "border-bottom:1px solid #ddd;padding-bottom:2px}h3{font-size:1em;margin:.6em 0 .2em}nav{font-size:13px}"
    "nav a{margin-right:.9em}.tw{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin-bottom:.35em}"
    "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px;vertical-align:top;text-align:left}"
    "th{background:#f4f4f4}tr.groups th{text-align:center}.g{border-left:2px solid #777}"
    ".above{font-size:12.5px;background:#fff8e1;border-left:3px solid #e0a800;padding:4px 8px;margin:.3em 0}"
    ".note{font-size:12px;color:#555;margin:.2em 0 .6em}.summary{background:#f6f8fb;border:1px solid #dbe2ec;"
    "border-radius:4px;padding:.3em 1em .6em}.summary dl{display:grid;grid-template-columns:max-content 1fr;"
    "gap:.25em 1em;margin:.4em 0;font-size:13px}.summary dt{font-weight:600}.summary dd{margin:0}"
    ".summary ul{font-size:13px;margin:.2em 0;padding-left:1.3em}.cmp{display:flex;gap:14px;align-items:flex-start}"
    ".cmp .real{position:sticky;top:0;background:#fff;flex:none;padding-top:.3em}.cmp .exps{flex:1;min-width:0}"
    ".exp{display:inline-block;vertical-align:top;margin-right:14px}"
    "figure{display:inline-block;margin:4px 10px 10px 0;vertical-align:top}figcaption{font-size:12px;max-width:256px}"
    "img.grid{width:256px;height:auto;image-rendering:pixelated;border:1px solid #ccc}"
    "img.example{width:512px;max-width:100%;height:auto;image-rendering:pixelated;border:1px solid #ccc}"
    "figure.example,figure.plot{max-width:100%}figure.example figcaption,figure.plot figcaption{max-width:720px}"
    "figure.plot{display:block}img.plot{max-width:100%;height:auto}footer{font-size:12px;color:#555;margin-top:2em}"
    ".banner{background:#fdecea;border:2px solid #c62828;border-radius:4px;padding:.4em .9em;margin:.4em 0;"
    "font-weight:600;font-size:14px}"
    "@media (max-width:700px){.cmp{display:block}.cmp .real{position:static}}")


def _img(fig: dict, fig_dir: Path) -> str:
    data = base64.b64encode((fig_dir / fig["file"]).read_bytes()).decode()
    cls = {"real": "grid", "grid": "grid"}.get(fig["kind"], fig["kind"])
    return (f"<figure class='{fig['kind']}'><img class='{cls}' alt='{html.escape(fig['caption'], quote=True)}' "
            f"data-file='{fig['file']}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(fig['caption'])}</figcaption></figure>")


def _samples_html(figs: list[dict], fig_dir: Path, missing: list[str]) -> str:
    """Per dataset: its training-image grid (sticky, so it stays beside the samples while scrolling) and, per
    experiment, the sample grids of its samplers."""
    out = [f"<h2 id='h-samples'>{SAMPLES}</h2>"] + [f"<p class='above'>{html.escape(m)}</p>" for m in missing]
    datasets = list(dict.fromkeys(f["dataset"] for f in figs if f["kind"] in ("real", "grid")))
    for ds in datasets:
        real = [_img(f, fig_dir) for f in figs if f["kind"] == "real" and f["dataset"] == ds]
        exps = []
        grids = [f for f in figs if f["kind"] == "grid" and f["dataset"] == ds]
        for exp in dict.fromkeys(f["experiment"] for f in grids):
            exps.append(f"<div class='exp'><h3>{html.escape(exp)}</h3>"
                        + "".join(_img(f, fig_dir) for f in grids if f["experiment"] == exp) + "</div>")
        out.append(f"<div class='cmp'><div class='real'>{''.join(real)}</div><div class='exps'>{''.join(exps)}</div></div>")
    if not datasets:
        out.append("<p>No sample grids yet (no sample stage has run).</p>")
    return "".join(out)


def _summary_html(lines, headline: Table, caveats: list[str]) -> str:
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in lines)
    ul = "".join(f"<li>{html.escape(c)}</li>" for c in caveats) or "<li>Nothing: every row is comparable.</li>"
    return (f"<section class='summary' id='summary'><h2>Summary</h2><dl>{dl}</dl>"
            + html_table(headline.columns, headline.rows, table_id=headline.key)
            + f"<h3>Not comparable with the papers, and why</h3><ul>{ul}</ul></section>")


def page(suite: str, summary, tables: list[Table], figs: list[dict], fig_dir: Path, missing: list[str],
         footer: str, banners: list[str] = ()) -> str:
    """index.html; `banners` (a rehearsal, synthetic data: report.summary.banners) open the page, above the summary."""
    lines, headline, caveats = summary
    main = [t for t in tables if t.key != "lineage"]
    lineage = [t for t in tables if t.key == "lineage"]
    sections = [("summary", "Summary")] + [(f"h-{t.key}", t.title.split(" (")[0]) for t in main] + [
        ("h-samples", "Samples"), ("h-figures", "Figures")] + [(f"h-{t.key}", "Lineage") for t in lineage]
    nav = "<nav>" + "".join(f"<a href='#{a}'>{html.escape(n)}</a>" for a, n in sections) + "</nav>"
    body = [f"<h1>Report: suite {html.escape(suite)}</h1>", *(f"<p class='banner'>{html.escape(b)}</p>" for b in banners),
            nav, _summary_html(lines, headline, caveats),
            f"<p class='note'>{html.escape(INTRO)}</p>"]
    body += [table_html(t) for t in main]
    body.append(_samples_html(figs, fig_dir, missing))
    body.append("<h2 id='h-figures'>Figures</h2>")
    for section in dict.fromkeys(f["section"] for f in figs if f["kind"] in ("example", "plot")):
        body.append(f"<h3>{html.escape(section)}</h3>")
        body += [_img(f, fig_dir) for f in figs if f["section"] == section and f["kind"] in ("example", "plot")]
    body += [table_html(t) for t in lineage]
    body.append(f"<footer>{html.escape(footer)}</footer>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>score-repro: {html.escape(suite)}</title>"
            f"<style>{STYLE}</style></head><body>" + "".join(body) + "</body></html>\n")


def _samples_md(figs: list[dict], missing: list[str]) -> str:
    out = [f"## {SAMPLES}\n"] + [f"> {m}\n" for m in missing]
    for ds in dict.fromkeys(f["dataset"] for f in figs if f["kind"] in ("real", "grid")):
        real = next((f for f in figs if f["kind"] == "real" and f["dataset"] == ds), None)
        grids = [f for f in figs if f["kind"] == "grid" and f["dataset"] == ds]
        width = max([sum(1 for g in grids if g["experiment"] == e) for e in dict.fromkeys(g["experiment"] for g in grids)]
                    or [0])
        head = ["experiment", real["caption"] if real else "training data"] + [f"samples ({i + 1})" for i in range(width)]
        rows = []
        for exp in dict.fromkeys(g["experiment"] for g in grids):
            mine = [g for g in grids if g["experiment"] == exp]
            rows.append([exp, f"![training data](figures/{real['file']})" if real else "—"]
                        + [f"![{g['caption']}](figures/{g['file']}) {g['caption']}" for g in mine] + [""] * (width - len(mine)))
        if not rows and real:
            rows.append(["—", f"![training data](figures/{real['file']})"])
            head = head[:2]
        out.append(markdown(head, rows))
    return "\n".join(out)


def readme(suite: str, summary, tables: list[Table], figs: list[dict], missing: list[str], footer: str,
           banners: list[str] = ()) -> str:
    lines, headline, caveats = summary
    md = [f"# Report: suite `{suite}`\n", *(f"> **{b}**\n" for b in banners), "## Summary\n"]
    md += [f"- **{k}**: {v}" for k, v in lines]
    md += ["", markdown(headline.columns, headline.rows), "**Not comparable with the papers, and why**\n"]
    md += [f"- {c}" for c in caveats] or ["- Nothing: every row is comparable."]
    md += ["", INTRO + "\n"]
    main = [t for t in tables if t.key != "lineage"]
    md += [table_markdown(t) for t in main]
    md.append(_samples_md(figs, missing))
    md.append("## Figures\n")
    for section in dict.fromkeys(f["section"] for f in figs if f["kind"] in ("example", "plot")):
        md.append(f"### {section}\n")
        md += [f"![{f['caption']}](figures/{f['file']})\n\n{f['caption']}\n" for f in figs
               if f["section"] == section and f["kind"] in ("example", "plot")]
    md += [table_markdown(t) for t in tables if t.key == "lineage"]
    md += ["## Preview\n", footer + "\n"]
    return "\n".join(md)
