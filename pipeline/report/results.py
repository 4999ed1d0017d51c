"""Paper-style report tables from a suite's metrics (rendered by `pipeline.report.render`).

Tables (each only where the suite has experiments for it):
- sample quality in the layout of Score SDE Table 3 (model rows; one experiment each, its default sampler);
- likelihood and probability-flow ODE quality with NFE, Score SDE Table 2;
- the sampler comparison of Score SDE Table 1: rows = predictor, columns = P1000 / P2000 / C2000 / PC1000, one VE and
  one VP block (the discrete models of `published.TABLE1_EXPERIMENTS`);
- NCSN (Song & Ermon 2019) Table 1;
- every (experiment, sampler) with all metrics, the controllable-generation examples and the lineage of each number.

Tables 3 and 2 and the NCSN table put our numbers and the papers' in separate column blocks: "ours, <dataset>" (mean ±
std over sampling seeds; bits/dim: ± standard error over test images), "paper, CIFAR-10" (docs/papers.md §7, from
`pipeline.report.published`) and, only where the experiment ran on the paper's dataset with the paper's metric, "Δ ours −
paper". A metric no row of a table has (e.g. FID without the Inception weights) is dropped from that table and said
once above it, with the fix. Stages without results say "not run", never a blank or a zero.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.metrics.curves import sampler_label as method_label
from pipeline.metrics.inception import INCEPTION_ENV_VAR, INCEPTION_FILENAME, INCEPTION_PARAM
from pipeline.metrics.inception_score import is_protocol
from pipeline.names import DATASET_TABLE
from pipeline.report import published
from pipeline.report import seeds as report_seeds
from pipeline.report.render import Table, latex, markdown, table_html, table_latex, table_markdown, tex_escape
from pipeline.workflow import dag, outputs

__all__ = ["Table", "latex", "markdown", "table_html", "table_latex", "table_markdown", "tex_escape"]  # re-exported

NOT_RUN = "not run"
NO_PAPER = "—"
NETS = {"inception": "Inception-v3", "classifier": "dataset-classifier features"}
# the paper metrics (Inception) and our offline stand-ins (dataset classifier) under the same column
LABELS = {"fid": "FID ↓", "is": "IS ↑"}
OFFLINE = {"fid": "fd", "is": "is"}
OFFLINE_LABELS = {"fd": "FD ↓", "is": "IS ↑"}


def dataset_name(ds: str) -> str:
    """The dataset's name in reports (its record's `display`; an unknown name as it is)."""
    return DATASET_TABLE[ds].display if ds in DATASET_TABLE else ds


PAPER_DATA = dataset_name(published.DATASET)


# --- collecting a suite's results -------------------------------------------------------------------------------
def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_experiments(root: Path, suite: str) -> list[dict]:
    """One record per experiment: params, train / likelihood / controllable results and, per sampler, its eval and
    the sample stage's info.json."""
    out = []
    for e in dag.experiments(root, suite):
        if e.params.training.seeds:  # one record from the replicas': error bars over training seeds
            replicas = [_collect_run(root, suite, r.name, r.params) for r in dag.expand_training_seeds([e])]
            out.append(report_seeds.combine_records(e.name, e.params, replicas))
        else:
            out.append(_collect_run(root, suite, e.name, e.params))
    return out


def _collect_run(root: Path, suite: str, name: str, params) -> dict:
    """The record of one run folder runs/<suite>/<name>."""
    ds = params.data.dataset
    base = outputs.paths(suite, name, ds)
    samplers = {}
    for sampler, s in params.sampler_settings().items():
        sp = outputs.paths(suite, name, ds, sampler)
        samplers[sampler] = {"settings": s, "eval": _load(root / sp["eval"]), "samples": sp["samples"],
                             "info": _load(root / sp["samples"] / "info.json")}
    ctrl_dir = root / base["controllable"]
    return {"experiment": name, "dataset": ds, "params": params, "sde": params.training.sde,
            "default_sampler": next(iter(samplers)), "samplers": samplers,
            "train": _load(root / base["train_metrics"]), "loss_curve": base["loss_curve"],
            "likelihood": _load(root / base["likelihood"]) if params.eval.enable_bpd else None,
            "controllable": _load(ctrl_dir / "info.json") if params.eval.controllable else None,
            "controllable_dir": base["controllable"],
            "curves": {"nfe": _load(root / base["curve_nfe"]), "ckpt": _load(root / base["curve_ckpt"])}}


def collect_datasets(root: Path, exps: list[dict]) -> dict[str, dict]:
    """Per dataset of the suite: its prepared folder, manifest and evaluator metrics (None where not run)."""
    out = {}
    for ds in dict.fromkeys(x["dataset"] for x in exps):
        p = outputs.paths("", "", ds)
        out[ds] = {"prepared": p["prepared"], "manifest": _load(root / p["prepared"] / "manifest.json"),
                   "evaluator": _load(root / p["evaluator"] / "metrics.json")}
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


def ours_cell(stat, key: str) -> str:
    """Our value of metric `key`: an Inception Score over several splits shows ± its std over splits (the protocol of
    eval.is_splits, as NCSN reports it); every other number ± its std over seeds."""
    split = key == "is" and isinstance(stat, dict) and stat.get("split_std") is not None
    return ours(stat, "split_std" if split else "std")[2]


def is_protocol_note(exps: list[dict]) -> str:
    """Which Inception Score protocol (eval.is_splits) each experiment's IS uses, in one sentence."""
    groups: dict[int, list[str]] = {}
    for x in exps:
        groups.setdefault(x["params"].eval.is_splits, []).append(x["experiment"])
    if len(groups) == 1:
        return f" IS (eval.is_splits): {is_protocol(next(iter(groups)))}, every experiment."
    return " IS (eval.is_splits): " + "; ".join(f"{is_protocol(k)}: {', '.join(v)}" for k, v in sorted(groups.items())) + "."


def cell(stat, paper: tuple[float, float | None] | None, comparable: bool, key: str = "std") -> str:
    """One cell "ours; paper P; Δ D" (Table 1, where ours and the paper share the cell's sampler setting)."""
    mean, err, text = ours(stat, key)
    if paper is None or paper[0] is None:
        return f"{text}; paper {NO_PAPER}"
    p_text = number(*paper)
    if not comparable:
        return f"{text}; paper {p_text} ({PAPER_DATA}, not comparable)"
    if mean is None:
        return f"{text}; paper {p_text}"
    d = _decimals(err, 2)
    return f"{text}; paper {p_text}; Δ {mean - paper[0]:+.{d}f}"


def delta(stat, paper: tuple[float, float | None] | None, key: str = "std") -> str | None:
    mean, err, _ = ours(stat, key)
    if mean is None or not paper or paper[0] is None:
        return None
    return f"{mean - paper[0]:+.{_decimals(err, 2)}f}"


def metric(ev: dict | None, net: str, key: str):
    """A metric record, or the reason it is missing (a string), or None: the evaluate stage has not run."""
    if ev is None:
        return None
    block = ev.get(net) or {}
    stat = block.get(key)
    return stat if isinstance(stat, dict) and stat.get("mean") is not None else (block.get("status") or "not computed")


def inception(ev: dict | None, m: str):
    return metric(ev, "inception", m)


def dataset_classifier(ev: dict | None, m: str):
    return metric(ev, "classifier", m)  # the dataset classifier's block: its JSON key kept for compatibility


def availability(evs: list[dict | None], net: str, key: str) -> tuple[str, str | None]:
    """("some", None) when a result has the metric, ("none", the commonest reason) when results exist but none has
    it, ("pending", None) when no result exists yet."""
    values = [metric(ev, net, key) for ev in evs]
    if any(isinstance(v, dict) for v in values):
        return "some", None
    reasons = [v for v in values if isinstance(v, str)]
    return ("none", Counter(reasons).most_common(1)[0][0]) if reasons else ("pending", None)


def missing_note(net: str, reason: str, what: str) -> str:
    """The one sentence a table says instead of repeating `reason` in every cell."""
    if net == "inception" and "weights missing" in reason:
        return (f"{what} (Inception-v3) left out: {reason.removeprefix('not computed: ')} for every row. To compute "
                f"them, supply {INCEPTION_FILENAME} with `export {INCEPTION_ENV_VAR}=/path/to/{INCEPTION_FILENAME}` or "
                f"`{INCEPTION_PARAM}: /path/to/{INCEPTION_FILENAME}` in the params, then rerun the evaluate stages "
                "(`snakemake -c 2 --forcerun evaluate`).")
    return f"{what} ({NETS[net]}) left out: {reason} for every row."


def nfe_text(ev: dict | None) -> str:
    if ev is None:
        return NOT_RUN
    nfe = ev.get("nfe") or {}
    return f"{nfe['mean']:.0f}" if nfe.get("mean") is not None else "unknown"


def on_paper_data(x: dict) -> bool:
    return x["dataset"] == published.DATASET


def _paper(entry: dict | None, key: str) -> tuple[float, float | None] | None:
    if not entry or entry.get(key) is None:
        return None
    return entry[key], entry.get(f"{key}_std")


def sampler_label(s) -> str:
    """How the report names a sampler setting: its method's `label` (pipeline/samplers/methods/<method>.py)."""
    return method_label(s)


def sampler_text(name: str, s) -> str:
    """The sampler's key (its file name under samples/ and eval/) and settings; the key alone is left out where it is
    just the method's name."""
    return sampler_label(s) if name == s.method else f"{name}: {sampler_label(s)}"


def ode_sampler(x: dict) -> str | None:
    return next((n for n, s in x["samplers"].items() if s["settings"].method == "ode"), None)


def _ordered(exps: list[dict], paper_table: dict) -> list[dict]:
    """Experiments of the paper's table first, in its row order, then the rest in suite order."""
    order = {name: i for i, name in enumerate(paper_table)}
    return sorted(exps, key=lambda x: (order.get(x["experiment"], len(order)), exps.index(x)))


def _data_label(exps: list[dict]) -> str:
    names = list(dict.fromkeys(dataset_name(x["dataset"]) for x in exps))
    return ", ".join(names) if names else "—"


# --- the column blocks of Tables 3, 2 and NCSN: ours | paper | Δ -----------------------------------------------------
@dataclass
class Block:
    """Columns under one header group: (label, one cell per row) each."""
    short: str  # the Markdown prefix of its columns
    long: str  # the spanning header (HTML, LaTeX)
    columns: list[tuple[str, list[str]]] = field(default_factory=list)


def assemble(key: str, title: str, lead: list[tuple[str, list[str]]], blocks: list[Block], note: str = "",
             above: list[str] | None = None) -> Table:
    """A Table from leading (ungrouped) columns and header-grouped blocks."""
    blocks = [b for b in blocks if b.columns]
    cols = lead + [c for b in blocks for c in b.columns]
    n = len(cols[0][1]) if cols else 0
    return Table(key, title, [label for label, _ in cols], [[cells[i] for _, cells in cols] for i in range(n)],
                 groups=[("", "", len(lead))] + [(b.short, b.long, len(b.columns)) for b in blocks], note=note,
                 above=above or [])


def quality_blocks(items: list[tuple[dict, dict | None]], keys: tuple[str, ...], paper_of, what: str,
                   paper_keys: tuple[str, ...] | None = None, labels: dict | None = None):
    """Blocks for paper metrics `keys` (of "fid", "is") over rows `items` = (experiment, eval): ours on Inception-v3,
    ours on the dataset classifier (the offline stand-in, never named FID), the paper's values, and Δ.

    Inception columns are shown when a row has them; when results exist and none has them they are dropped and the
    reason said once (`above`); before anything has run, shown where an experiment's eval.feature_net is inception.
    Classifier columns: shown where a row has them and no Inception value or eval.feature_net: classifier (its
    headline); before anything has run, where feature_net is classifier. Δ: only rows on the paper's dataset with
    Inception values. Returns (ours blocks, paper block, Δ block, above)."""
    labels = {**LABELS, **(labels or {})}
    paper_keys = paper_keys or keys
    evs = [ev for _, ev in items]
    nets = {x["params"].eval.feature_net for x, _ in items}
    inc_state, inc_reason = availability(evs, "inception", keys[0])
    cl_state, cl_reason = availability(evs, "classifier", OFFLINE[keys[0]])
    show_inc = inc_state == "some" or (inc_state == "pending" and "inception" in nets)
    show_cl = (cl_state == "some" and any(isinstance(dataset_classifier(ev, OFFLINE[keys[0]]), dict) and (
        not isinstance(inception(ev, keys[0]), dict) or x["params"].eval.feature_net == "classifier")
        for x, ev in items)) or (cl_state == "pending" and "classifier" in nets)
    above = []
    if inc_state == "none":
        above.append(missing_note("inception", inc_reason, what))
    if cl_state == "none" and "classifier" in nets and not show_inc:
        above.append(missing_note("classifier", cl_reason, what))
    data = _data_label([x for x, _ in items])
    ours_blocks = []
    if show_inc:  # a metric of the family that no row has (e.g. no IS) is left out too
        ours_blocks.append(Block("ours", f"ours: {data}, Inception-v3",
                                 [(labels[k], [ours_cell(inception(ev, k), k) for ev in evs]) for k in keys
                                  if availability(evs, "inception", k)[0] != "none"]))
    if show_cl:
        ours_blocks.append(Block("ours", f"ours: {data}, dataset classifier",
                                 [(OFFLINE_LABELS[OFFLINE[k]], [ours_cell(dataset_classifier(ev, OFFLINE[k]), k) for ev in evs])
                                  for k in keys if availability(evs, "classifier", OFFLINE[k])[0] != "none"]))
    paper = Block(f"paper ({PAPER_DATA})", f"paper: {PAPER_DATA}, Inception-v3",
                  [(labels[k], [number(*p) if (p := _paper(paper_of(x), k)) else NO_PAPER for x, _ in items])
                   for k in paper_keys])
    d = Block("Δ", "Δ ours − paper")
    for k, pk in zip(keys, paper_keys):
        cells = [delta(inception(ev, k), _paper(paper_of(x), pk)) if on_paper_data(x) else None for x, ev in items]
        if any(c is not None for c in cells):
            d.columns.append((labels[k], [c if c is not None else ("not comparable" if not on_paper_data(x) else "—")
                                          for c, (x, _) in zip(cells, items)]))
    return ours_blocks, paper, d, above


def _paper_note(exps: list[dict]) -> str:
    other = sorted({dataset_name(x["dataset"]) for x in exps if not on_paper_data(x)})
    if not other:
        return ""
    return (f" The paper's numbers are on {PAPER_DATA}; these experiments ran on {', '.join(other)}, so they are shown "
            "for orientation and no difference is computed.")


def _model(x: dict, paper_table: dict) -> str:
    paper = paper_table.get(x["experiment"])
    return paper["model"] if paper else NO_PAPER
