"""Error bars over training seeds (`training.seeds`): one report record of an experiment from its replicas' records.

Each replica is the experiment trained, sampled and evaluated with its own seed (`dag.expand_training_seeds`). Every
number of the combined record is the mean over replicas of the replica's mean, ± the sample std over replicas
(ddof = 1, as "mean ± std over 5 runs" in Score SDE Table 1), with `"over": "training seeds"`; bits/dim carries the
standard error over replicas. A metric is combined only when every replica has it; until then it is "not run".
Figures (sample grids, loss curve, controllable examples) come from the first replica.
"""
from __future__ import annotations

from pipeline.metrics.stats import mean_std, mean_stderr

OVER = "training seeds"


def combine_stat(stats: list) -> dict | None:
    """Mean ± std (and standard error) over replicas of each replica's mean; None unless every replica has one."""
    if not stats or not all(isinstance(s, dict) and s.get("mean") is not None for s in stats):
        return None
    values = [float(s["mean"]) for s in stats]
    mean, std = mean_std(values)
    _, stderr = mean_stderr(values)
    finite = len(values) > 1
    return {"mean": mean, "std": std if finite else None, "stderr": stderr if finite else None, "n": len(values),
            "values": values, "over": OVER}


def _combine_block(blocks: list) -> dict:
    """A metric-family block ("classifier" / "inception"): each metric every replica has, combined; the status and
    protocol fields (weights, mode, IS splits) of the first replica."""
    first = blocks[0] if isinstance(blocks[0], dict) else {}
    out = {k: v for k, v in first.items() if not isinstance(v, dict)}
    for key, stat in first.items():
        if isinstance(stat, dict) and (c := combine_stat([(b or {}).get(key) for b in blocks])):
            extra = {k: stat[k] for k in ("splits", "protocol") if k in stat}  # the IS protocol each replica used
            out[key] = {**c, **extra}
    return out


def _run_ids(records: list[dict | None]) -> str | None:
    ids = [r.get("mlflow_run_id") for r in records if r and r.get("mlflow_run_id")]
    return ", ".join(ids) if ids else None


def combine_eval(evs: list[dict | None]) -> dict | None:
    """One evaluate record (eval/<sampler>.json layout) from the replicas'; None until every replica is evaluated."""
    if not evs or any(ev is None for ev in evs):
        return None
    out = {k: v for k, v in evs[0].items() if not isinstance(v, dict)}
    out.update(training_seeds=len(evs), nfe=combine_stat([ev.get("nfe") for ev in evs]),
               classifier=_combine_block([ev.get("classifier") for ev in evs]),
               inception=_combine_block([ev.get("inception") for ev in evs]), mlflow_run_id=_run_ids(evs))
    return out


def combine_likelihood(liks: list[dict | None]) -> dict | None:
    if not liks or any(lik is None for lik in liks):
        return None
    key = "bpd" if "bpd" in liks[0] else "nll_nats_per_dim"
    nfes = [lik["nfe"] for lik in liks if lik.get("nfe") is not None]
    return {**{k: v for k, v in liks[0].items() if not isinstance(v, dict)},
            key: combine_stat([lik.get(key) for lik in liks]), "nfe": sum(nfes) / len(nfes) if nfes else None,
            "training_seeds": len(liks), "mlflow_run_id": _run_ids(liks)}


def combine_train(trains: list[dict | None]) -> dict | None:
    """The first replica's training record (steps, hardware) with the replicas' seconds summed; None until all ran."""
    if not trains or any(t is None for t in trains):
        return None
    secs = [t.get("seconds") for t in trains]
    return {**trains[0], "seconds": sum(secs) if all(s is not None for s in secs) else None,
            "training_seeds": len(trains), "mlflow_run_id": _run_ids(trains)}


def combine_records(name: str, params, records: list[dict]) -> dict:
    """The report record of experiment `name` (its params file's `params`) from its replicas' records, one per seed
    of `params.training.seeds` in that order."""
    first = records[0]
    samplers = {}
    for sampler, s in first["samplers"].items():
        samplers[sampler] = {**s, "eval": combine_eval([r["samplers"][sampler]["eval"] for r in records])}
    return {**first, "experiment": name, "params": params, "training_seeds": list(params.training.seeds),
            "replicas": [r["experiment"] for r in records],
            "samplers": samplers, "train": combine_train([r["train"] for r in records]),
            "likelihood": combine_likelihood([r["likelihood"] for r in records]) if params.eval.enable_bpd else None}


def seeds_note(exps: list[dict]) -> str:
    """The sentence a table says when some of its experiments have error bars over training seeds."""
    seeded = [x for x in exps if x.get("training_seeds")]
    if not seeded:
        return ""
    which = "; ".join(f"{x['experiment']}: seeds {', '.join(map(str, x['training_seeds']))}" for x in seeded)
    return (f" Experiments with training.seeds ({which}): mean ± std over training seeds (one model per seed, each "
            "trained, sampled and evaluated with its seed; bits/dim ± standard error over them), not over sampling "
            "seeds; grids and curves show the first seed.")
