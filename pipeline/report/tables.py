"""The report's tables, built from `pipeline.report.results`'s records and column blocks: Score SDE Tables 3, 2 and 1, NCSN
Table 1, every sampler with every metric, the papers' claims checked (`pipeline.report.claims`), the
controllable-generation examples and the lineage of every number."""
from __future__ import annotations

import re

from pipeline.io import mlflow_view
from pipeline.report import published
from pipeline.report.claims import claims_table
from pipeline.report.curves import checkpoint_block
from pipeline.report.render import Link
from pipeline.report.results import (
    NO_PAPER,
    NOT_RUN,
    PAPER_DATA,
    Block,
    Table,
    _data_label,
    _model,
    _ordered,
    _paper,
    _paper_note,
    assemble,
    availability,
    cell,
    dataset_classifier,
    dataset_name,
    delta,
    fmt,
    inception,
    is_protocol_note,
    missing_note,
    nfe_text,
    number,
    ode_sampler,
    on_paper_data,
    ours,
    quality_blocks,
    sampler_text,
)
from pipeline.report.seeds import seeds_note


def table3(exps: list[dict]) -> Table:
    """Score SDE Table 3 layout: one row per experiment with its default sampler; FID ↓ and IS ↑."""
    chosen = _ordered(exps, published.TABLE3)
    items = [(x, x["samplers"][x["default_sampler"]]["eval"]) for x in chosen]
    blocks, paper, d, above = quality_blocks(items, ("fid", "is"), lambda x: published.TABLE3.get(x["experiment"]),
                                             "FID / IS")
    lead = [("model (paper)", [_model(x, published.TABLE3) for x in chosen]),
            ("experiment", [x["experiment"] for x in chosen]),
            ("sampler", [sampler_text(x["default_sampler"], x["samplers"][x["default_sampler"]]["settings"])
                         for x in chosen]),
            ("NFE", [nfe_text(ev) for _, ev in items])]
    ckpt, ckpt_note = checkpoint_block(chosen)
    return assemble("table3", "Sample quality (Score SDE Table 3 layout)", lead, blocks + [ckpt, paper, d], above=above,
                    note="Ours: each experiment's default sampler (`sampling:`), mean ± std over sampling seeds. "
                         f"Paper: {published.NUM_SAMPLES:,} samples, {published.CHECKPOINT_TABLE3}."
                         + _paper_note(chosen) + ckpt_note)


def _nll(x: dict) -> tuple[str, str, str | None]:
    """(NLL cell, its NFE, Δ against the paper) of an experiment."""
    lik = x["likelihood"]
    if not x["params"].eval.enable_bpd:
        return "disabled (eval.enable_bpd: false)", "—", None
    if lik is None:
        return NOT_RUN, NOT_RUN, None
    stat = lik.get("bpd") or lik.get("nll_nats_per_dim")
    text = ours(stat, "stderr")[2] + ("" if "bpd" in lik else " (nats/dim: 2-D points)")
    nfe = f"{lik['nfe']:.0f}" if lik.get("nfe") is not None else "unknown"
    paper = _paper(published.TABLE2.get(x["experiment"]), "nll")
    return text, nfe, delta(stat, paper, "stderr") if on_paper_data(x) and "bpd" in lik else None


def table2(exps: list[dict]) -> Table | None:
    """Score SDE Table 2 layout: NLL (bits/dim) and FID of the probability-flow ODE sampler, with their NFE."""
    chosen = _ordered([x for x in exps if x["params"].eval.enable_bpd or x["experiment"] in published.TABLE2],
                      published.TABLE2)
    if not chosen:
        return None
    odes = [ode_sampler(x) for x in chosen]
    items = [(x, x["samplers"][o]["eval"] if o else None) for x, o in zip(chosen, odes)]
    blocks, paper, d, above = quality_blocks(items, ("fid",), lambda x: published.TABLE2.get(x["experiment"]),
                                             "FID (ODE)", paper_keys=("fid_ode",),
                                             labels={"fid": "FID (ODE) ↓", "fid_ode": "FID (ODE) ↓"})
    nll = [_nll(x) for x in chosen]
    no_ode = "no ODE sampler (add `samplers: {ode: {method: ode}}`)"
    quality = [(label.replace("FD ↓", "FD (ODE) ↓"), [c if o else no_ode for c, o in zip(cells, odes)])
               for b in blocks for label, cells in b.columns]
    ours_b = Block("ours", f"ours: {_data_label(chosen)}",
                   [("NLL, bits/dim ↓", [t for t, _, _ in nll]), ("NFE (NLL)", [n for _, n, _ in nll])] + quality
                   + [("NFE (ODE)", [nfe_text(ev) if o else "—" for (_, ev), o in zip(items, odes)])])
    paper.long = f"paper: {PAPER_DATA}"
    paper.columns.insert(0, ("NLL, bits/dim ↓", [number(*p) if (p := _paper(published.TABLE2.get(x["experiment"]),
                                                                            "nll")) else NO_PAPER for x in chosen]))
    if any(dn is not None for _, _, dn in nll):
        d.columns.insert(0, ("NLL ↓", [dn if dn is not None else ("not comparable" if not on_paper_data(x) else "—")
                                       for (_, _, dn), x in zip(nll, chosen)]))
    lead = [("model (paper)", [_model(x, published.TABLE2) for x in chosen]),
            ("experiment", [x["experiment"] for x in chosen])]
    return assemble("table2", "Likelihood and probability-flow ODE sample quality (Score SDE Table 2 layout)", lead,
                    [ours_b, paper, d], above=above,
                    note="NLL: mean ± standard error over test images (the paper: 5 passes of the test set); sample "
                         "quality: the experiment's `method: ode` sampler (RK45), mean ± std over seeds."
                         + _paper_note(chosen))


def table1_cell(s, num_scales: int) -> tuple[str, str] | None:
    """The Table 1 cell (predictor, column) a sampler setting reproduces, or None.

    P1000 / P2000: predictor only, N or 2N steps; PC1000: predictor + one Langevin step, N steps; C2000: Langevin
    only, 2N steps. "probability flow" is the reverse-diffusion predictor on the probability-flow ODE. N is the
    model's num_scales: 1000 in the paper (and the cifar10 presets), fewer in a dress rehearsal (the note says so)."""
    if s.method != "pc" or s.n_steps_each != 1:
        return None
    steps = {num_scales: 1000, 2 * num_scales: 2000}.get(s.num_steps or num_scales)
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
    """Score SDE Table 1 layout: rows = predictor; a VE and a VP block of P1000 / P2000 / C2000 / PC1000 columns.
    Each cell is one sampler setting, so ours and the paper's value share it: "sampler: ours; paper P; Δ"."""
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
    evs = [x["samplers"][n]["eval"] for (sde, *_), n in cells.items() if (x := blocks[sde])]
    state, reason = availability(evs, "inception", "fid")
    above = [missing_note("inception", reason, "FID").replace("so these columns are left out", "so the cells say "
                                                                "\"not computed\"")] if state == "none" else []
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
                    stat = inception(x["samplers"][name]["eval"], "fid")
                    stat = "not computed" if state == "none" and isinstance(stat, str) else stat
                    row.append(f"{name}: " + cell(stat, paper, on_paper_data(x)))
        rows.append(row)
    ns = sorted({x["params"].model.num_scales for x in blocks.values() if x})
    n_text = " / ".join(map(str, ns)) + ("" if ns == [1000] else "; the paper's N = 1000: P1000 is N steps here, P2000 2N")
    return Table("table1", f"Reverse-time SDE solvers, FID ↓ (Score SDE Table 1 layout; paper: {PAPER_DATA})",
                 ["predictor"] + cols, rows, groups=[("", "", 1)] + groups, above=above,
                 note=f"VE: experiment {published.TABLE1_EXPERIMENTS['VE']}, VP: experiment "
                      f"{published.TABLE1_EXPERIMENTS['VP']} (discrete models, DDPM architecture, N = {n_text}). "
                      "Ours: mean ± std over eval.num_seeds sampling seeds (the paper: 5 runs). Each cell names the "
                      "sampler (`samplers:` key) it comes from.")


def ncsn_table(exps: list[dict]) -> Table | None:
    """NCSN (Song & Ermon 2019) Table 1: unconditional CIFAR-10 Inception score ↑ and FID ↓."""
    chosen = _ordered([x for x in exps if x["experiment"] in published.NCSN_TABLE1], published.NCSN_TABLE1)
    if not chosen:
        return None
    items = [(x, x["samplers"][x["default_sampler"]]["eval"]) for x in chosen]
    blocks, paper, d, above = quality_blocks(items, ("is", "fid"),
                                             lambda x: published.NCSN_TABLE1.get(x["experiment"]), "IS / FID",
                                             labels={"is": "Inception score ↑"})
    lead = [("model (paper)", [published.NCSN_TABLE1[x["experiment"]]["model"] for x in chosen]),
            ("experiment", [x["experiment"] for x in chosen]),
            ("sampler", [sampler_text(x["default_sampler"], x["samplers"][x["default_sampler"]]["settings"])
                         for x in chosen]),
            ("NFE", [nfe_text(ev) for _, ev in items])]
    return assemble("ncsn", f"NCSN (Song & Ermon 2019, Table 1 layout): unconditional {PAPER_DATA} in the paper",
                    lead, blocks + [paper, d], above=above,
                    note="ALD sampler; which step convention each run uses is in the sampler column."
                         + _paper_note(chosen))


def all_samplers_table(exps: list[dict]) -> Table:
    """Every (experiment, sampler) with every metric (compact numbers, no paper columns). A metric family no result
    has (Inception without its weights) is left out and said once above the table."""
    rows = [(x, n, s) for x in exps for n, s in x["samplers"].items()]
    evs = [s["eval"] for _, _, s in rows]
    above, families = [], []
    for net, keys, what in (("classifier", ("fd", "kd", "is"), "FD / KD / IS"),
                            ("inception", ("fid", "kid", "is"), "FID / KID / IS")):
        state, reason = availability(evs, net, keys[0])
        if state == "none":
            above.append(missing_note(net, reason, what))
            continue
        kept = []
        for k in keys:  # one metric of a family no row has (the classifier IS of 2-D points): left out, said once
            s, r = availability(evs, net, k)
            if s == "none":
                above.append(missing_note(net, r, k.upper() if k != "is" else "IS"))
            else:
                kept.append(k)
        families.append((net, tuple(kept)))
    short = {"classifier": "classifier", "inception": "Inception"}
    head = ["experiment", "dataset", "sampler", "NFE"] + [
        f"{k.upper() if k != 'is' else 'IS'} ({short[net]}) {'↑' if k == 'is' else '↓'}" for net, keys in families
        for k in keys] + ["sampling time"]

    def value(ev, net, k):
        v = inception(ev, k) if net == "inception" else dataset_classifier(ev, k)
        return fmt(v) if isinstance(v, dict) else (v or NOT_RUN)

    body = []
    for x, n, s in rows:
        ev, info = s["eval"], s["info"]
        secs = (f"{info['seconds']:.1f} s ({info['num_samples']} × {info['num_seeds']} samples)"
                if info and info.get("seconds") is not None else NOT_RUN)
        body.append([x["experiment"], dataset_name(x["dataset"]), sampler_text(n, s["settings"]),
                     fmt(ev.get("nfe")) if ev else NOT_RUN] + [value(ev, net, k) for net, keys in families for k in keys]
                    + [secs])
    return Table("samplers", "All samplers (every experiment and sampler)", head, body, above=above,
                 note="Mean ± std over sampling seeds, 4 significant digits. Classifier metrics use the dataset "
                      "classifier of the evaluator stage (not Inception); sampling time: the sample stage, all seeds.")


TASKS = ("inpainting", "colorization")


def class_conditional_text(info: dict) -> str:
    """A class_conditional result: the evaluator's accuracy on the samples, the sampler, the noise classifier's own
    test accuracy at its test times."""
    sampler = (f"{info['predictor']} + {info['corrector']}" if info.get("method") == "pc" else info.get("method"))
    clf = info.get("classifier_test_accuracy") or {}
    clf_text = ", ".join(f"t={t}: {a:.0%}" for t, a in clf.items())
    return (f"{info['evaluator_accuracy']:.1%} of {info['num_classes']} × {info['samples_per_class']} samples classed as "
            f"requested (evaluator); {sampler}, {info['num_steps']} steps, NFE {info['nfe']}, guidance scale "
            f"{info['guidance_scale']:g}, {info['seconds']:.1f} s"
            + (f"; noise classifier test accuracy {clf_text}" if clf_text else ""))


def controllable_table(exps: list[dict]) -> Table | None:
    chosen = [x for x in exps if x["params"].eval.controllable]
    if not chosen:
        return None
    # the class-conditional column only where some experiment asks for it
    tasks = TASKS + (("class_conditional",) if any("class_conditional" in x["params"].eval.controllable
                                                   for x in chosen) else ())
    rows = []
    for x in chosen:
        row = [x["experiment"], dataset_name(x["dataset"])]
        for task in tasks:
            if task not in x["params"].eval.controllable:
                row.append("not requested (eval.controllable)")
                continue
            info = ((x["controllable"] or {}).get("tasks") or {}).get(task)
            if info is None:
                row.append(NOT_RUN)
            elif info.get("status") != "done":
                row.append(info.get("status", "unknown"))
            elif task == "class_conditional":
                row.append(class_conditional_text(info))
            else:
                err = (f"MSE hidden half {info['mse_unknown']:.4f}" if "mse_unknown" in info
                       else f"MSE colour {info['mse_color']:.4f}" if "mse_color" in info else "")
                row.append(f"{info['num_images']} images, {info['predictor']} + {info['corrector']}, "
                           f"{info['num_steps']} steps, NFE {info['nfe']}, {info['seconds']:.1f} s; {err}".rstrip("; "))
        rows.append(row)
    return Table("controllable", "Controllable generation (Score SDE Sec. 5): examples",
                 ["experiment", "dataset", "inpainting (right half)", "colorization"]
                 + (["class-conditional (classifier guidance)"] if len(tasks) > len(TASKS) else []), rows,
                 note="Test images; MSE on [0, 1] pixel values against the original (a sample, not a reconstruction "
                      "target: it measures plausibility only loosely)."
                      + (" Class-conditional: samples drawn with the score plus ∇ log p_t(y | x) of a noise-conditional "
                         "classifier (Score SDE Eq. 48-49); accuracy = the fraction whose class under the dataset "
                         "classifier of the evaluator stage (the FD's feature net) is the requested one (chance: "
                         "1 / number of classes)." if len(tasks) > len(TASKS) else ""))


def lineage_table(exps: list[dict]) -> Table:
    """The MLflow run behind every number the report shows: the run id each stage wrote into its DVC-tracked output,
    a link to the run in the MLflow UI (the tracking server, or `make ui`'s address for a SQLite store)."""
    base = mlflow_view.ui_base()

    def rid(d: dict | None, key: str = "mlflow_run_id") -> str:
        run = (d or {}).get(key)
        if not run:
            return "tracking skipped" if d else NOT_RUN
        return Link(run, mlflow_view.run_url(base, run)) if re.fullmatch(r"[0-9a-f]{32}", run) else run

    rows = []
    for x in exps:
        rows.append([x["experiment"], "train", "train_metrics.json", rid(x["train"])])
        for n, s in x["samplers"].items():
            rows.append([x["experiment"], f"sample ({n})", f"samples/{n}/info.json", rid(s.get("info"))])
            rows.append([x["experiment"], f"evaluate ({n})", f"eval/{n}.json", rid(s["eval"])])
        if x["params"].eval.enable_bpd:
            rows.append([x["experiment"], "likelihood", "likelihood.json", rid(x["likelihood"])])
        for key, file in (("nfe", "curve_nfe.json"), ("ckpt", "curve_ckpt.json")):
            if (x.get("curves") or {}).get(key):
                rows.append([x["experiment"], f"curves ({key})", file, rid(x["curves"][key])])
        if x["params"].eval.controllable:
            rows.append([x["experiment"], "controllable", "controllable/info.json", rid(x["controllable"])])
            cc = ((x["controllable"] or {}).get("tasks") or {}).get("class_conditional")
            if cc:
                rows.append([x["experiment"], "classifier", "classifier/metrics.json", rid(cc, "classifier_run_id")])
    return Table("lineage", "Lineage: the MLflow run of every number", ["experiment", "stage", "metrics file",
                 "MLflow run"], rows,
                 note=f"Each id links to its run in the MLflow UI at {base} (`make ui`, or the tracking server of "
                      "$MLFLOW_TRACKING_URI; experiment score-repro/<suite>: the suite's run, under it each "
                      "experiment's, under that each stage's), or `mlflow runs describe --run-id ID`. The metrics files "
                      "are DVC outputs under runs/<suite>/<exp>/.")


def tables(exps: list[dict]) -> list[Table]:
    """Every table the suite has material for, in the report's order."""
    out = [table3(exps), table2(exps), table1(exps), ncsn_table(exps), all_samplers_table(exps),
           claims_table(exps), controllable_table(exps), lineage_table(exps)]
    out = [t for t in out if t is not None]
    for t in out:  # the IS protocol of each experiment, and where error bars are over training seeds
        if t.key in ("table3", "ncsn", "samplers"):
            t.note += is_protocol_note(exps) + (" Table cells with several splits: ± std over splits."
                                                if t.key != "samplers" and any(x["params"].eval.is_splits > 1
                                                                               for x in exps) else "")
        if t.key in ("table3", "table2", "table1", "ncsn", "samplers", "lineage"):
            t.note += seeds_note(exps)
    return out


# --- FD / FID against NFE ---------------------------------------------------------------------------------------------
def nfe_points(exps: list[dict]) -> tuple[str, list[dict]]:
    """(metric label, points) for every (experiment, sampler) with an NFE and an FD or FID. Inception FID when any
    result has one (then only those), else the dataset classifier's FD: one metric per plot, never mixed. Each point
    carries the std over seeds of the metric and of the NFE (None with one seed) and the number of seeds."""
    evs = [(x, n, s["eval"]) for x in exps for n, s in x["samplers"].items() if s["eval"]]
    use_fid = any("fid" in (ev.get("inception") or {}) for _, _, ev in evs)
    label = "FID (Inception-v3)" if use_fid else "FD (dataset classifier)"
    pts = []
    for x, n, ev in evs:
        stat = (ev.get("inception") or {}).get("fid") if use_fid else (ev.get("classifier") or {}).get("fd")
        nfe = ev.get("nfe") or {}
        if isinstance(stat, dict) and stat.get("mean") is not None and nfe.get("mean") is not None:
            pts.append({"experiment": x["experiment"], "sampler": n, "nfe": nfe["mean"], "value": stat["mean"],
                        "std": stat.get("std"), "nfe_std": nfe.get("std"), "seeds": stat.get("n") or ev.get("num_seeds")})
    return label, pts
