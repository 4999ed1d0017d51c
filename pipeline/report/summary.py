"""The report's first screen: what ran, on what hardware, how long, the headline number of each experiment, and
what is not comparable with the papers and why. Every number is read from the stages' outputs."""
from __future__ import annotations

from collections import Counter

from pipeline.io.data import synthetic_note
from pipeline.report import published
from pipeline.report.results import (
    NO_PAPER,
    NOT_RUN,
    PAPER_DATA,
    Table,
    availability,
    dataset_classifier,
    dataset_name,
    inception,
    nfe_text,
    number,
    ours,
    sampler_text,
)
from pipeline.workflow import rehearsal


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _secs(v: float) -> str:
    return f"{v:.1f} s" if v < 10 else f"{v:,.0f} s"


def what_ran(exps: list[dict], datasets: dict[str, dict]) -> str:
    trained = [x for x in exps if x["train"]]
    runs = [(x, s) for x in exps for s in x["samplers"].values()]
    evaluated = [(x, s) for x, s in runs if s["eval"]]
    if not trained and not evaluated:
        return (f"nothing yet: {_count(len(exps), 'experiment')} configured ({len(runs)} sampler runs), no stage output "
                "found. Every 'ours' cell reads \"not run\"; this page previews the layout.")
    data = []
    for ds, d in datasets.items():
        p = next(x["params"] for x in exps if x["dataset"] == ds)
        n = ((d["manifest"] or {}).get("splits") or {}).get("train", {}).get("count")
        n = min(n, p.data.max_train) if n and p.data.max_train else n
        shape = f"{p.data.image_size}×{p.data.image_size}×{p.data.num_channels}" if (d["manifest"] or {}).get(
            "kind", "images") == "images" else "2-D points"
        data.append(f"{dataset_name(ds)} ({shape}" + (f", {n:,} training images" if n else "") + ")")
    steps = [x["train"]["step"] for x in trained if x["train"].get("step")]
    out = (f"{len(trained)} of {_count(len(exps), 'experiment')} trained on {', '.join(data)}"
           + (f" for {_span(steps)} steps" if steps else "") + f"; {len(evaluated)} of {_count(len(runs), 'sampler run')} "
           "sampled and evaluated")
    if evaluated:
        n = [s["eval"]["num_samples"] for _, s in evaluated if s["eval"].get("num_samples")]
        k = [s["eval"]["num_seeds"] for _, s in evaluated if s["eval"].get("num_seeds")]
        out += f" ({_span(n)} samples × {_span(k)} seeds each)" if n and k else ""
    bpd = [x for x in exps if x["params"].eval.enable_bpd]
    if bpd:
        out += f"; bits/dim for {sum(1 for x in bpd if x['likelihood'])} of {len(bpd)}"
    tasks = Counter(t for x in exps for t, i in (((x["controllable"] or {}).get("tasks")) or {}).items()
                    if i.get("status") == "done")
    if tasks:
        out += "; " + ", ".join(f"{t} for {_count(n, 'experiment')}" for t, n in tasks.items())
    return out + "."


def _hw_text(h: dict) -> str:
    gpu = f"{h['gpu_count']} × {h['gpu']}" if h.get("gpu") else "no GPU"
    procs = f", {_count(h['processes'], 'process')}" if h.get("processes", 1) > 1 else ""
    return f"{h.get('cpu', 'unknown CPU')} ({h.get('cpu_count', '?')} CPUs), {gpu}; torch {h.get('torch', '?')}{procs}"


def hardware(exps: list[dict]) -> str:
    """The distinct machines the train and sample stages recorded, with the stages that ran on each."""
    seen: dict[str, list[str]] = {}
    missing = 0
    for x in exps:
        recs = [("train", x["train"])] + [("sample", s["info"]) for s in x["samplers"].values()]
        for stage, rec in recs:
            if rec is None:
                continue
            if rec.get("hardware"):
                seen.setdefault(_hw_text(rec["hardware"]), []).append(stage)
            else:
                missing += 1
    if not seen and not missing:
        return "no stage has run yet."
    parts = [t + (f" ({', '.join(sorted(set(st)))} stages)" if len(seen) > 1 else "") for t, st in seen.items()]
    if missing:
        parts.append(f"not recorded by {_count(missing, 'stage output')} (written before the stages recorded it)")
    return "; ".join(parts) + "."


def timing(exps: list[dict], datasets: dict[str, dict]) -> str:
    """The sum of the `seconds` the stages wrote into their outputs."""
    per: Counter = Counter()
    for x in exps:
        per["train"] += (x["train"] or {}).get("seconds") or 0
        for s in x["samplers"].values():
            per["sample"] += (s["info"] or {}).get("seconds") or 0
            per["evaluate"] += (s["eval"] or {}).get("seconds") or 0
        lik = x["likelihood"] or {}  # the final weights' and those of eval.bpd_steps (`at_step`)
        per["likelihood"] += sum(r.get("seconds") or 0 for r in [lik, *(lik.get("at_step") or {}).values()])
        per["controllable"] += sum(t.get("seconds") or 0 for t in (((x["controllable"] or {}).get("tasks")) or {}).values())
        per["curves"] += sum(((x.get("curves") or {}).get(k) or {}).get("seconds") or 0 for k in ("nfe", "ckpt"))
        per["noise classifier"] += sum(t.get("classifier_seconds") or 0
                                       for t in (((x["controllable"] or {}).get("tasks")) or {}).values())
    for d in datasets.values():
        per["dataset classifier"] += (d["evaluator"] or {}).get("seconds") or 0
    total = sum(per.values())
    if not total:
        return "no stage has run yet."
    parts = ", ".join(f"{k} {_secs(v)}" for k, v in per.items() if v)
    return (f"{_secs(total)} ({total / 60:.1f} min) of stage time: {parts}. The sum of the `seconds` each stage wrote "
            "(download, prepare and this report not counted; a resumed training counts its last run only); stages "
            "that ran side by side (`make repro`: Snakemake, one stage per core) count in full, so the wall time is "
            "shorter.")


def headline(exps: list[dict]) -> Table:
    """One row per experiment: its default sampler's main number (eval.feature_net's: FID, or the dataset
    classifier's FD; FD where FID is missing), bits/dim where computed, and the paper's number for the same model with its dataset."""
    rows = []
    for x in exps:
        name = x["default_sampler"]
        ev = x["samplers"][name]["eval"]
        fid, fd = inception(ev, "fid"), dataset_classifier(ev, "fd")
        seeds = f", {ev['num_seeds']} seeds" if ev and ev.get("num_seeds") else ""
        seeds = f", {ev['training_seeds']} training seeds" if ev and ev.get("training_seeds") else seeds
        if x["params"].eval.feature_net == "classifier" and isinstance(fd, dict):
            fid = None  # eval.feature_net: the headline is the dataset classifier's FD
        main = (f"FID {ours(fid)[2]} (Inception-v3{seeds})" if isinstance(fid, dict) else
                f"FD {ours(fd)[2]} (classifier{seeds})" if isinstance(fd, dict) else NOT_RUN)
        if x["likelihood"] and x["likelihood"].get("bpd"):
            main += f"; {ours(x['likelihood']['bpd'], 'stderr')[2]} bits/dim"
        paper = published.TABLE3.get(x["experiment"]) or published.NCSN_TABLE1.get(x["experiment"])
        p = f"{paper['model']}: FID {number(paper['fid'])}" if paper and paper.get("fid") is not None else NO_PAPER
        tr = x["train"]
        trained = f"{tr['step']:,} steps × batch {x['params'].training.batch_size}" if tr and tr.get("step") else NOT_RUN
        rows.append([x["experiment"], dataset_name(x["dataset"]), trained, sampler_text(name, x["samplers"][name]["settings"]),
                     nfe_text(ev), main, p])
    head = ["experiment", "data", "training", "default sampler", "NFE", "ours (mean ± std over seeds)",
            f"paper ({PAPER_DATA}, Inception-v3)"]
    if len({x["dataset"] for x in exps}) == 1:  # one dataset: "What ran" names it
        head, rows = head[:1] + head[2:], [r[:1] + r[2:] for r in rows]
    return Table("headline", "Headline numbers", head, rows)


def not_comparable(exps: list[dict]) -> list[str]:
    """Why our numbers and the papers' differ in kind, from the outputs and params (empty: all comparable)."""
    evs = [s["eval"] for x in exps for s in x["samplers"].values()]
    if not any(evs) and not any(x["train"] or x["likelihood"] for x in exps):
        return ["Nothing has run yet, so there is no number to compare."]
    out = []
    other = sorted({dataset_name(x["dataset"]) for x in exps if x["dataset"] != published.DATASET})
    if other:
        out.append(f"Dataset: the papers' numbers are {PAPER_DATA}; this suite ran {', '.join(other)}. The paper columns "
                   "are there for orientation; no difference is computed.")
    state, reason = availability(evs, "inception", "fid")
    if state == "none":
        out.append(f"Metric: FID / IS (Inception-v3) {reason} (the note above Table 3 says how to supply the weights). "
                   "The offline FD / IS use features of a classifier trained on the suite's own dataset: a different "
                   "scale from FID, never reported under its name.")
    n = [s["eval"]["num_samples"] for x in exps for s in x["samplers"].values() if s["eval"] and s["eval"].get("num_samples")]
    if n and min(n) < published.NUM_SAMPLES:
        out.append(f"Sample count: {_span(n)} samples per seed against {published.NUM_SAMPLES:,} in the papers; "
                   "Fréchet distances are biased upwards at small sample counts.")
    if any(x["train"] for x in exps):
        out.append(f"Checkpoint: ours is the last one; Score SDE Table 3 reports {published.CHECKPOINT_TABLE3}, "
                   f"Table 2 {published.CHECKPOINT_TABLE2}.")
    return out


def summary(exps: list[dict], datasets: dict[str, dict]) -> tuple[list[tuple[str, str]], Table, list[str]]:
    """([(label, text)] for what ran / hardware / time, the headline table, the not-comparable list)."""
    lines = [("What ran", what_ran(exps, datasets)), ("Hardware", hardware(exps)), ("Time", timing(exps, datasets))]
    return lines, headline(exps), not_comparable(exps)


def banners(suite: str, datasets: dict[str, dict]) -> list[str]:
    """What the page must say before anything else: a dress rehearsal's numbers are no result, and synthetic data is
    no dataset (pipeline/workflow/rehearsal.py, names.Dataset.stand_in_for)."""
    out = []
    if rehearsal.is_rehearsal(suite):
        src = rehearsal.source(suite)
        out.append(f"DRESS REHEARSAL of suite {src}, not a result: every stage of its DAG ran at miniature scale "
                   f"(`make rehearse SUITE={src}`) to show that each runs and writes its outputs; the numbers say nothing "
                   f"about the models. Override set: {rehearsal.override_text()}.")
    out += [f"{synthetic_note(ds)}." for ds in datasets if synthetic_note(ds)]
    return out
