"""What the report puts on the suite's and the experiments' MLflow runs (pipeline/io/tracking.py): headline numbers
beside the papers' (`paper.fid`, `paper.is`, `paper.nll`, `paper.fid_ode` from pipeline/report/published.py), a
description (what ran, what is not comparable and why) and which figures go where."""
from __future__ import annotations

from pipeline.report import published
from pipeline.report.results import dataset_classifier, inception


def _stat(ev: dict | None, net: str, m: str) -> dict | None:
    stat = (inception if net == "inception" else dataset_classifier)(ev, m)
    return stat if isinstance(stat, dict) and stat.get("mean") is not None else None


def paper(experiment: str) -> dict[str, float]:
    """The papers' numbers for an experiment of that name (CIFAR-10, Inception-v3), as `paper.*` metrics."""
    out = {}
    for table, keys in ((published.TABLE3, ("fid", "is")), (published.NCSN_TABLE1, ("fid", "is")),
                        (published.TABLE2, ("nll", "fid_ode"))):
        for k in keys:
            if (table.get(experiment) or {}).get(k) is not None:
                out.setdefault(f"paper.{k}", table[experiment][k])
    return out


def headline(x: dict) -> dict[str, float]:
    """An experiment's headline numbers: its default sampler's FD (and FID, IS where computed) and NFE, the best FD
    over its samplers, bits/dim, the training steps; then the papers' numbers."""
    out: dict[str, float] = {}
    ev = x["samplers"][x["default_sampler"]]["eval"]
    for net, m, name in (("classifier", "fd", "fd"), ("inception", "fid", "fid"), ("classifier", "is", "is"),
                         ("inception", "is", "inception_is")):
        stat = _stat(ev, net, m)
        if stat:
            out[name] = stat["mean"]
    if ev and (ev.get("nfe") or {}).get("mean") is not None:
        out["nfe"] = ev["nfe"]["mean"]
    fds = [s["mean"] for s in (_stat(v["eval"], "classifier", "fd") for v in x["samplers"].values()) if s]
    if fds:
        out["fd_best_sampler"] = min(fds)
    bpd = (x["likelihood"] or {}).get("bpd") or {}
    if bpd.get("mean") is not None:
        out["bpd"] = bpd["mean"]
    if (x["train"] or {}).get("step"):
        out["train_steps"] = x["train"]["step"]
    return {**out, **paper(x["experiment"])}


def experiment_description(x: dict, caveats: list[str]) -> str:
    samplers = ", ".join(f"`{n}`" for n in x["samplers"])
    p = x["params"]
    lines = [f"**{x['experiment']}**: {p.model.name}, {p.training.sde}, dataset {x['dataset']}; samplers {samplers} "
             f"(default `{x['default_sampler']}`: its FD / NFE are this run's `headline.fd` / `headline.nfe`; "
             "`headline.fd_best_sampler`: the lowest FD over the samplers). Each sampler's result run is a child of "
             "this run, with its settings (`sampler.*`) and every metric. `paper.*`: the papers' numbers for the model of this name "
             f"({published.DATASET}, Inception-v3, {published.NUM_SAMPLES:,} samples).",
             "", "Not comparable with the papers:"] + [f"- {c}" for c in caveats or ["nothing: every row is comparable."]]
    return "\n".join(lines)


def suite_description(suite: str, lines: list[tuple[str, str]], caveats: list[str]) -> str:
    out = [f"**Suite `{suite}`**: the report is this run's artifact `index.html` (and README.md, figures/). Metrics "
           "`<experiment>.<name>`: each experiment's headline numbers beside `<experiment>.paper.*`; the result runs "
           "(one per experiment and sampler) are the rows with `tags.pipeline.kind = 'result'`.", ""]
    out += [f"- **{k}**: {v}" for k, v in lines]
    out += ["", "Not comparable with the papers:"] + [f"- {c}" for c in caveats or ["nothing: every row is comparable."]]
    return "\n".join(out)


def figure_experiment(name: str) -> str | None:
    """The experiment whose run also gets the figure `name` (its FD-vs-NFE curves); every figure is the suite run's."""
    return name.removeprefix("fd_vs_nfe-").removesuffix(".png") if name.startswith("fd_vs_nfe-") else None
