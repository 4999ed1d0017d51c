"""Paper-style report tables from a suite's metrics: Markdown, LaTeX and one static HTML page.

Each cell shows ours (mean ± std over seeds, or ± standard error for bits/dim), the paper's number and the
difference; rows not yet run say "not run", never a blank or a zero.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from pipeline import dag, published

NOT_RUN = "not run"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fmt(stat: dict | None, key: str = "std") -> str:
    if not stat or stat.get("mean") is None:
        return NOT_RUN
    err = stat.get(key)
    return f"{stat['mean']:.4g} ± {err:.2g}" if err is not None else f"{stat['mean']:.4g}"


def collect(root: Path, suite: str) -> list[dict]:
    """One row per (experiment, sampler), with train and likelihood metrics attached."""
    rows = []
    for e in dag.experiments(root, suite):
        ds = e.params.data.dataset
        base = dag.paths(suite, e.name, ds)
        train = _load(root / base["train_metrics"])
        lik = _load(root / base["likelihood"]) if e.params.eval.enable_bpd else None
        for sampler, s in e.params.sampler_settings().items():
            ev = _load(root / dag.paths(suite, e.name, ds, sampler)["eval"])
            rows.append({"experiment": e.name, "dataset": ds, "sampler": sampler, "settings": s, "train": train,
                         "eval": ev, "likelihood": lik, "sde": e.params.training.sde,
                         "samples": dag.paths(suite, e.name, ds, sampler)["samples"]})
    return rows


def sampler_label(s) -> str:
    if s.method == "ode":
        return f"ODE ({s.ode_method}, rtol {s.rtol:g})"
    if s.method == "ald":
        return f"ALD ({s.n_steps_each} steps/level, {s.step_convention} step)"
    return f"PC: {s.predictor} + {s.corrector}" + (f", snr {s.snr:g}" if s.corrector != "none" else "")


def quality_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["experiment", "dataset", "sampler", "NFE", "FD (classifier)", "KD (classifier)", "IS (classifier)",
            "FID (Inception)", "paper FID (CIFAR-10)", "paper IS (CIFAR-10)"]
    body = []
    for r in rows:
        ev = r["eval"] or {}
        cl = ev.get("classifier", {})
        inc = ev.get("inception", {})
        paper = published.TABLE3.get(r["experiment"], {})
        fid = fmt(inc.get("fid")) if "fid" in inc else (inc.get("status", NOT_RUN) if ev else NOT_RUN)
        body.append([r["experiment"], r["dataset"], f"{r['sampler']}: {sampler_label(r['settings'])}",
                     fmt(ev.get("nfe")) if ev else NOT_RUN, fmt(cl.get("fd")), fmt(cl.get("kd")), fmt(cl.get("is")),
                     fid, str(paper.get("fid", "—")), str(paper.get("is", "—"))])
    return head, body


def likelihood_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["experiment", "dataset", "bits/dim (ours)", "NFE", "paper NLL (CIFAR-10)"]
    body, seen = [], set()
    for r in rows:
        if r["experiment"] in seen:
            continue
        seen.add(r["experiment"])
        lik = r["likelihood"]
        stat = (lik or {}).get("bpd") or (lik or {}).get("nll_nats_per_dim")
        paper = published.TABLE2.get(r["experiment"], {})
        body.append([r["experiment"], r["dataset"], fmt(stat, "stderr"), f"{lik['nfe']:.0f}" if lik else NOT_RUN,
                     str(paper.get("nll", "—"))])
    return head, body


def markdown(head, body) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def latex(head, body) -> str:
    esc = lambda s: s.replace("_", r"\_").replace("±", r"$\pm$").replace("&", r"\&")  # noqa: E731
    lines = [r"\begin{tabular}{" + "l" * len(head) + "}", r"\toprule", " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def html_table(head, body) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"
