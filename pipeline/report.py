"""Paper-style report tables from a suite's metrics: Markdown, LaTeX and HTML renderings of the same tables.

Tables (each only where the suite has experiments for it):
- Sample quality in the layout of Score SDE Table 3 (one row per experiment, its default sampler);
- likelihood and probability-flow ODE FID with NFE, Score SDE Table 2;
- the sampler comparison of Score SDE Table 1: rows = predictor, columns = P1000 / P2000 / C2000 / PC1000, one VE and
  one VP block (the discrete models of `published.TABLE1_EXPERIMENTS`);
- NCSN (Song & Ermon 2019) Table 1;
- every (experiment, sampler) with all metrics, and the controllable-generation examples.

A comparison cell reads "ours; paper P; Δ D": ours is mean ± std over sampling seeds (bits/dim: ± standard error over
test images), P the published number (docs/papers.md §7) and D = ours - P. The difference is given only when the
experiment ran on the paper's dataset and the metric is the paper's (Inception FID / IS); otherwise the cell says why.
Stages without results say "not run", never a blank or a zero.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import dag, outputs, published

NOT_RUN = "not run"
NO_PAPER = "—"


# --- collecting a suite's results -------------------------------------------------------------------------------
def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_experiments(root: Path, suite: str) -> list[dict]:
    """One record per experiment: params, train / likelihood / controllable results and, per sampler, its eval."""
    out = []
    for e in dag.experiments(root, suite):
        ds = e.params.data.dataset
        base = outputs.paths(suite, e.name, ds)
        samplers = {}
        for sampler, s in e.params.sampler_settings().items():
            sp = outputs.paths(suite, e.name, ds, sampler)
            samplers[sampler] = {"settings": s, "eval": _load(root / sp["eval"]), "samples": sp["samples"]}
        ctrl_dir = root / base["controllable"]
        out.append({"experiment": e.name, "dataset": ds, "params": e.params, "sde": e.params.training.sde,
                    "default_sampler": next(iter(samplers)), "samplers": samplers,
                    "train": _load(root / base["train_metrics"]), "loss_curve": base["loss_curve"],
                    "likelihood": _load(root / base["likelihood"]) if e.params.eval.enable_bpd else None,
                    "controllable": _load(ctrl_dir / "info.json") if e.params.eval.controllable else None,
                    "controllable_dir": base["controllable"]})
    return out


# --- numbers and cells -------------------------------------------------------------------------------------------
def fmt(stat: dict | None, key: str = "std") -> str:
    """Compact: 4 significant digits (the all-samplers table)."""
    if not stat or stat.get("mean") is None:
        return NOT_RUN
    err = stat.get(key)
    return f"{stat['mean']:.4g} ± {err:.2g}" if err is not None else f"{stat['mean']:.4g}"


def _decimals(err: float | None, nd: int) -> int:
    """At least `nd` decimals, more when the error bar would otherwise print as zero."""
    if err is None or not math.isfinite(err) or err <= 0 or err >= 10 ** -nd:
        return nd
    return min(8, -math.floor(math.log10(err)))


def number(mean: float, err: float | None = None, nd: int = 2) -> str:
    d = _decimals(err, nd)
    return f"{mean:.{d}f} ± {err:.{d}f}" if err is not None and math.isfinite(err) else f"{mean:.{d}f}"


def ours(stat, key: str = "std") -> tuple[float | None, float | None, str]:
    """(mean, err, text) of a metric record; a string is a status ("not computed: ..."), None means not run."""
    if isinstance(stat, str):
        return None, None, stat
    if not stat or stat.get("mean") is None:
        return None, None, NOT_RUN
    err = stat.get(key)
    return stat["mean"], err, number(stat["mean"], err)


def cell(stat, paper: tuple[float, float | None] | None, comparable: bool, key: str = "std") -> str:
    """"ours; paper P; Δ D" (see the module doc)."""
    mean, err, text = ours(stat, key)
    if paper is None or paper[0] is None:
        return f"{text}; paper {NO_PAPER}"
    p_text = number(*paper)
    if not comparable:
        return f"{text}; paper {p_text} (CIFAR-10, not comparable)"
    if mean is None:
        return f"{text}; paper {p_text}"
    d = _decimals(err, 2)
    return f"{text}; paper {p_text}; Δ {mean - paper[0]:+.{d}f}"


def inception(ev: dict | None, metric: str):
    """An Inception metric record, or the reason it is missing (None: the evaluate stage has not run)."""
    if ev is None:
        return None
    inc = ev.get("inception") or {}
    return inc.get(metric) or inc.get("status") or "not computed"


def classifier(ev: dict | None, metric: str):
    if ev is None:
        return None
    cl = ev.get("classifier") or {}
    return cl.get(metric) or cl.get("status") or "not computed"


def nfe_text(ev: dict | None) -> str:
    if ev is None:
        return NOT_RUN
    nfe = ev.get("nfe") or {}
    return f"{nfe['mean']:.0f}" if nfe.get("mean") is not None else "unknown"


def _on_paper_data(x: dict) -> bool:
    return x["dataset"] == published.DATASET


def _paper(entry: dict | None, key: str) -> tuple[float, float | None] | None:
    if not entry or entry.get(key) is None:
        return None
    return entry[key], entry.get(f"{key}_std")


def sampler_label(s) -> str:
    if s.method == "ode":
        return f"ODE ({s.ode_method}, rtol {s.rtol:g})"
    if s.method == "ald":
        return f"ALD ({s.n_steps_each} steps/level, {s.step_convention} step)"
    if s.method == "heun":
        churn = f", churn {s.s_churn:g}" if s.s_churn > 0 else ""
        return f"{'Heun' if s.solver_order == 2 else 'Euler'} (EDM), {s.num_steps} steps{churn}"
    if s.method == "dpm_solver":
        name = f"DPM-Solver++({s.solver_order}M)" if s.multistep else f"DPM-Solver-{s.solver_order}"
        return f"{name}, {s.num_steps} steps"
    if s.method == "ddim":
        return f"DDIM (eta {s.eta:g}), {s.num_steps} steps"
    pred = s.predictor + (" (probability flow)" if s.probability_flow else "")
    steps = f", {s.num_steps} steps" if s.num_steps else ""
    return f"PC: {pred} + {s.corrector}" + (f", snr {s.snr:g}" if s.corrector != "none" else "") + steps


# --- tables ------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    key: str  # short id (LaTeX label, HTML anchor)
    title: str
    columns: list[str]
    rows: list[list[str]]
    groups: list[tuple[str, str, int]] = field(default_factory=list)  # (short, long, span) over columns, in order
    note: str = ""

    def md_columns(self) -> list[str]:
        """Markdown has one header row: grouped columns get the group's short name as a prefix."""
        if not self.groups:
            return list(self.columns)
        out, i = [], 0
        for short, _, span in self.groups:
            out += [f"{short} {c}".strip() for c in self.columns[i:i + span]]
            i += span
        return out


def _ordered(exps: list[dict], paper_table: dict) -> list[dict]:
    """Experiments of the paper's table first, in its row order, then the rest in suite order."""
    order = {name: i for i, name in enumerate(paper_table)}
    return sorted(exps, key=lambda x: (order.get(x["experiment"], len(order)), exps.index(x)))


def _needs_classifier_column(evs: list[dict | None]) -> bool:
    """A dataset-classifier FD column where some result has one but no Inception FID (offline suites)."""
    return any(ev and "fid" not in (ev.get("inception") or {}) and "fd" in (ev.get("classifier") or {}) for ev in evs)


def table3(exps: list[dict]) -> Table:
    """Score SDE Table 3 layout: one row per experiment with its default sampler; FID ↓ and IS ↑."""
    evs = [x["samplers"][x["default_sampler"]]["eval"] for x in exps]
    with_fd = _needs_classifier_column(evs)
    cols = ["model (paper)", "experiment", "sampler", "NFE", "FID ↓", "IS ↑"] + (["FD, dataset classifier ↓"] if with_fd else [])
    rows = []
    for x in _ordered(exps, published.TABLE3):
        sampler = x["default_sampler"]
        s = x["samplers"][sampler]
        paper = published.TABLE3.get(x["experiment"])
        ok = _on_paper_data(x)
        row = [paper["model"] if paper else NO_PAPER, x["experiment"], f"{sampler}: {sampler_label(s['settings'])}",
               nfe_text(s["eval"]), cell(inception(s["eval"], "fid"), _paper(paper, "fid"), ok),
               cell(inception(s["eval"], "is"), _paper(paper, "is"), ok)]
        if with_fd:
            row.append(ours(classifier(s["eval"], "fd"))[2])
        rows.append(row)
    return Table("table3", "Sample quality (Score SDE Table 3 layout)", cols, rows,
                 note="Each experiment's default sampler (`sampling:`); 50,000 samples in the paper presets. "
                      "FID / IS on Inception-v3.")


def ode_sampler(x: dict) -> str | None:
    return next((n for n, s in x["samplers"].items() if s["settings"].method == "ode"), None)


def table2(exps: list[dict]) -> Table | None:
    """Score SDE Table 2 layout: NLL (bits/dim) and FID of the probability-flow ODE sampler, with their NFE."""
    chosen = [x for x in exps if x["params"].eval.enable_bpd or x["experiment"] in published.TABLE2]
    if not chosen:
        return None
    odes = {x["experiment"]: ode_sampler(x) for x in chosen}
    evs = [x["samplers"][odes[x["experiment"]]]["eval"] for x in chosen if odes[x["experiment"]]]
    with_fd = _needs_classifier_column(evs)
    cols = ["model (paper)", "experiment", "NLL, bits/dim ↓", "NFE (NLL)", "FID, ODE ↓", "NFE (ODE)"] + (
        ["FD (ODE), dataset classifier ↓"] if with_fd else [])
    rows = []
    for x in _ordered(chosen, published.TABLE2):
        paper = published.TABLE2.get(x["experiment"])
        ok = _on_paper_data(x)
        lik = x["likelihood"]
        if not x["params"].eval.enable_bpd:
            nll, nll_nfe = "disabled (eval.enable_bpd: false)", "—"
        elif lik is None:
            nll, nll_nfe = cell(None, _paper(paper, "nll"), ok), NOT_RUN
        else:
            stat = lik.get("bpd") or lik.get("nll_nats_per_dim")
            unit_ok = ok and "bpd" in lik
            nll = cell(stat, _paper(paper, "nll"), unit_ok, key="stderr")
            if "bpd" not in lik:
                nll += " (nats/dim: 2-D points)"
            nll_nfe = f"{lik['nfe']:.0f}" if lik.get("nfe") is not None else "unknown"
        name = odes[x["experiment"]]
        if name is None:
            fid, ode_nfe, fd = "no ODE sampler in the params (add `samplers: {ode: {method: ode}}`)", "—", "—"
        else:
            ev = x["samplers"][name]["eval"]
            fid, ode_nfe = cell(inception(ev, "fid"), _paper(paper, "fid_ode"), ok), nfe_text(ev)
            fd = ours(classifier(ev, "fd"))[2]
        rows.append([paper["model"] if paper else NO_PAPER, x["experiment"], nll, nll_nfe, fid, ode_nfe]
                    + ([fd] if with_fd else []))
    return Table("table2", "Likelihood and probability-flow ODE sample quality (Score SDE Table 2 layout)", cols, rows,
                 note="bits/dim: mean ± standard error over test images (the paper: 5 passes of the test set); "
                      "FID (ODE): the experiment's `method: ode` sampler (RK45).")


def table1_cell(s, num_scales: int) -> tuple[str, str] | None:
    """The Table 1 cell (predictor, column) a sampler setting reproduces, or None.

    P1000 / P2000: predictor only, N or 2N steps; PC1000: predictor + one Langevin step, N steps; C2000: Langevin
    only, 2N steps. "probability flow" is the reverse-diffusion predictor on the probability-flow ODE."""
    if s.method != "pc" or s.n_steps_each != 1 or num_scales != 1000:
        return None
    steps = s.num_steps or num_scales
    if s.predictor == "none":
        return ("none", "C2000") if s.corrector == "langevin" and steps == 2000 else None
    if s.probability_flow:
        pred = "probability_flow" if s.predictor == "reverse_diffusion" else None
    else:
        pred = s.predictor if s.predictor in published.TABLE1_PREDICTORS else None
    if pred is None:
        return None
    if s.corrector == "none":
        col = {1000: "P1000", 2000: "P2000"}.get(steps)
    else:
        col = "PC1000" if s.corrector == "langevin" and steps == 1000 else None
    return (pred, col) if col else None


def table1(exps: list[dict]) -> Table | None:
    """Score SDE Table 1 layout: rows = predictor; a VE and a VP block of P1000 / P2000 / C2000 / PC1000 columns."""
    by_name = {x["experiment"]: x for x in exps}
    blocks = {sde: by_name.get(name) for sde, name in published.TABLE1_EXPERIMENTS.items()}
    if not any(blocks.values()):
        return None
    cells: dict[tuple[str, str, str], str] = {}  # (sde, predictor, column) -> sampler name
    for sde, x in blocks.items():
        if x is None:
            continue
        for name, s in x["samplers"].items():
            where = table1_cell(s["settings"], x["params"].model.num_scales)
            if where and (sde, *where) not in cells:
                cells[(sde, *where)] = name
    cols = list(published.TABLE1_COLUMNS) * len(blocks)
    groups = [(sde, published.TABLE1_SDES[sde], len(published.TABLE1_COLUMNS)) for sde in blocks]
    rows = []
    for r, (pred, label) in enumerate(published.TABLE1_PREDICTORS.items()):
        row = [label]
        for sde, x in blocks.items():
            for col in published.TABLE1_COLUMNS:
                key = ("none", "C2000") if col == "C2000" else (pred, col)
                if col == "C2000" and r > 0:
                    row.append("↑ (corrector only: same cell)")
                    continue
                paper = published.TABLE1[key][sde]
                name = cells.get((sde, *key))
                if x is None:
                    row.append(cell(None, paper, True) + f" (experiment {published.TABLE1_EXPERIMENTS[sde]} not in this suite)")
                elif name is None:
                    row.append(cell(None, paper, True) + " (no sampler with these settings in the params)")
                else:
                    ev = x["samplers"][name]["eval"]
                    row.append(f"{name}: " + cell(inception(ev, "fid"), paper, _on_paper_data(x)))
        rows.append(row)
    return Table("table1", "Reverse-time SDE solvers, FID ↓ (Score SDE Table 1 layout)", ["predictor"] + cols, rows,
                 groups=[("", "", 1)] + groups,
                 note=f"VE: experiment {published.TABLE1_EXPERIMENTS['VE']}, VP: experiment "
                      f"{published.TABLE1_EXPERIMENTS['VP']} (discrete models, DDPM architecture, N = 1000). "
                      "Ours: mean ± std over eval.num_seeds sampling seeds (the paper: 5 runs). Each cell names the "
                      "sampler (`samplers:` key) it comes from.")


def ncsn_table(exps: list[dict]) -> Table | None:
    """NCSN (Song & Ermon 2019) Table 1: unconditional CIFAR-10 Inception score ↑ and FID ↓."""
    chosen = [x for x in exps if x["experiment"] in published.NCSN_TABLE1]
    if not chosen:
        return None
    rows = []
    for x in _ordered(chosen, published.NCSN_TABLE1):
        paper = published.NCSN_TABLE1[x["experiment"]]
        sampler = x["default_sampler"]
        s = x["samplers"][sampler]
        ok = _on_paper_data(x)
        rows.append([paper["model"], x["experiment"], f"{sampler}: {sampler_label(s['settings'])}", nfe_text(s["eval"]),
                     cell(inception(s["eval"], "is"), _paper(paper, "is"), ok),
                     cell(inception(s["eval"], "fid"), _paper(paper, "fid"), ok)])
    return Table("ncsn", "NCSN (Song & Ermon 2019, Table 1 layout): unconditional CIFAR-10",
                 ["model (paper)", "experiment", "sampler", "NFE", "Inception score ↑", "FID ↓"], rows,
                 note="ALD sampler; which step convention each run uses is in the sampler column.")


def quality_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Every (experiment, sampler) with every metric (compact numbers, no paper columns)."""
    head = ["experiment", "dataset", "sampler", "NFE", "FD (classifier)", "KD (classifier)", "IS (classifier)",
            "FID (Inception)", "KID (Inception)", "IS (Inception)"]
    body = []
    for r in rows:
        ev = r["eval"]
        metric = lambda get, m: fmt(get(ev, m)) if isinstance(get(ev, m), dict) else (get(ev, m) or NOT_RUN)  # noqa: E731
        body.append([r["experiment"], r["dataset"], f"{r['sampler']}: {sampler_label(r['settings'])}",
                     fmt(ev.get("nfe")) if ev else NOT_RUN, metric(classifier, "fd"), metric(classifier, "kd"),
                     metric(classifier, "is"), metric(inception, "fid"), metric(inception, "kid"),
                     metric(inception, "is")])
    return head, body


def all_samplers_table(rows: list[dict]) -> Table:
    head, body = quality_table(rows)
    return Table("samplers", "All samplers (every experiment and sampler)", head, body,
                 note="Mean ± std over sampling seeds, 4 significant digits. Classifier metrics use the dataset "
                      "classifier of the evaluator stage (not Inception).")


TASKS = ("inpainting", "colorization")


def controllable_table(exps: list[dict]) -> Table | None:
    chosen = [x for x in exps if x["params"].eval.controllable]
    if not chosen:
        return None
    rows = []
    for x in chosen:
        row = [x["experiment"], x["dataset"]]
        for task in TASKS:
            if task not in x["params"].eval.controllable:
                row.append("not requested (eval.controllable)")
                continue
            info = ((x["controllable"] or {}).get("tasks") or {}).get(task)
            if info is None:
                row.append(NOT_RUN)
            elif info.get("status") != "done":
                row.append(info.get("status", "unknown"))
            else:
                err = (f"MSE hidden half {info['mse_unknown']:.4f}" if "mse_unknown" in info
                       else f"MSE colour {info['mse_color']:.4f}" if "mse_color" in info else "")
                row.append(f"{info['num_images']} images, {info['predictor']} + {info['corrector']}, "
                           f"{info['num_steps']} steps, NFE {info['nfe']}, {info['seconds']:.1f} s; {err}".rstrip("; "))
        rows.append(row)
    return Table("controllable", "Controllable generation (Score SDE Sec. 5): examples",
                 ["experiment", "dataset", "inpainting (right half)", "colorization"], rows,
                 note="Test images; MSE on [0, 1] pixel values against the original (a sample, not a reconstruction "
                      "target: it measures plausibility only loosely).")


def lineage_table(exps: list[dict]) -> Table:
    """The MLflow run behind every number: the run id each stage wrote into its DVC-tracked metrics file."""
    def rid(d: dict | None) -> str:
        return (d or {}).get("mlflow_run_id") or ("tracking skipped" if d else NOT_RUN)

    rows = []
    for x in exps:
        rows.append([x["experiment"], "train", "train_metrics.json", rid(x["train"])])
        for n, s in x["samplers"].items():
            rows.append([x["experiment"], f"evaluate ({n})", f"eval/{n}.json", rid(s["eval"])])
        if x["params"].eval.enable_bpd:
            rows.append([x["experiment"], "likelihood", "likelihood.json", rid(x["likelihood"])])
    return Table("lineage", "Lineage: the MLflow run of every number", ["experiment", "stage", "metrics file",
                 "MLflow run id"], rows,
                 note="Open a run in `make ui` (experiment score-repro/<suite>, child of the experiment's parent run), "
                      "or `mlflow runs describe --run-id ID`. The metrics files are DVC outputs under runs/<suite>/<exp>/.")


def tables(exps: list[dict]) -> list[Table]:
    """Every table the suite has material for, in the report's order."""
    rows = [{"experiment": x["experiment"], "dataset": x["dataset"], "sampler": n, "settings": s["settings"],
             "eval": s["eval"]} for x in exps for n, s in x["samplers"].items()]
    out = [table3(exps), table2(exps), table1(exps), ncsn_table(exps), all_samplers_table(rows),
           controllable_table(exps), lineage_table(exps)]
    return [t for t in out if t is not None]


# --- FD / FID against NFE ---------------------------------------------------------------------------------------------
def nfe_points(exps: list[dict]) -> tuple[str, list[dict]]:
    """(metric label, points) for every (experiment, sampler) with an NFE and an FD or FID. Inception FID when any
    result has one (then only those), else the dataset classifier's FD: one metric per plot, never mixed."""
    evs = [(x, n, s["eval"]) for x in exps for n, s in x["samplers"].items() if s["eval"]]
    use_fid = any("fid" in (ev.get("inception") or {}) for _, _, ev in evs)
    label = "FID (Inception-v3)" if use_fid else "FD (dataset classifier)"
    pts = []
    for x, n, ev in evs:
        stat = (ev.get("inception") or {}).get("fid") if use_fid else (ev.get("classifier") or {}).get("fd")
        nfe = ev.get("nfe") or {}
        if isinstance(stat, dict) and stat.get("mean") is not None and nfe.get("mean") is not None:
            pts.append({"experiment": x["experiment"], "sampler": n, "nfe": nfe["mean"], "value": stat["mean"],
                        "std": stat.get("std")})
    return label, pts


# --- rendering -------------------------------------------------------------------------------------------------------
def markdown(head, body) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def table_markdown(t: Table) -> str:
    out = f"## {t.title}\n\n" + markdown(t.md_columns(), t.rows)
    return out + (f"\n{t.note}\n" if t.note else "")


_TEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
        ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
        ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("—", "---"),
        ("×", r"$\times$"), ("§", r"\S{}"), ("`", "")]


def tex_escape(s: str) -> str:
    out = []
    for ch in s:
        for a, b in _TEX:
            if ch == a:
                out.append(b)
                break
        else:
            out.append(ch)
    return "".join(out)


def latex(head, body, groups: list[tuple[str, str, int]] | None = None, caption: str = "", label: str = "") -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); `groups` adds a spanning header row with rules."""
    lines = []
    if caption:
        lines += [r"\begin{table}[ht]", r"\centering", r"\caption{" + tex_escape(caption) + "}"]
        if label:
            lines.append(r"\label{tab:" + label + "}")
    lines += [r"\begin{tabular}{" + "l" * len(head) + "}", r"\toprule"]
    if groups:
        spans, rules, col = [], [], 1
        for _, long, span in groups:
            spans.append(r"\multicolumn{" + str(span) + "}{c}{" + tex_escape(long) + "}" if long else " & ".join([""] * span))
            if long:
                rules.append(r"\cmidrule(lr){" + f"{col}-{col + span - 1}" + "}")
            col += span
        lines += [" & ".join(spans) + r" \\", " ".join(rules)]
    lines += [" & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def table_latex(t: Table) -> str:
    return f"% {t.title}\n" + latex(t.columns, t.rows, t.groups or None, caption=t.title, label=t.key)


def html_table(head, body, groups: list[tuple[str, str, int]] | None = None, table_id: str = "") -> str:
    top = ""
    if groups:
        top = "<tr>" + "".join(f"<th colspan='{span}'>{html.escape(long)}</th>" for _, long, span in groups) + "</tr>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    ident = f" id='{html.escape(table_id)}'" if table_id else ""
    return f"<table{ident}><thead>{top}<tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def table_html(t: Table) -> str:
    note = f"<p class='note'>{html.escape(t.note)}</p>" if t.note else ""
    return f"<h2>{html.escape(t.title)}</h2>" + html_table(t.columns, t.rows, t.groups or None, t.key) + note
