"""`evaluate`: sample quality of one sampler, every metric with its error bar over eval.num_seeds seeds.

Offline metrics use the dataset classifier of the evaluator stage (FD, KD, classifier IS). Inception-v3 FID / KID / IS are computed only
when the weights file exists; otherwise they are reported as "not computed: weights missing", never substituted, and
with `eval.feature_net: inception` (the headline FD is Inception FID) a missing weights file is an error (exit 2).
Both Inception Scores follow `eval.is_splits` (docs/papers.md §8: one split for Score SDE, 10 for NCSN).

With eval.num_processes > 1 the stage re-launches itself as that many ranks (pipeline/training/launch.py), as the sample stage
does: the feature extraction (dataset classifier, Inception-v3 and its reference statistics) runs on whole batches of
eval.batch_size dealt out over the ranks (`launch.shard`) and gathered in the one-process order; the main process
computes the metrics and writes. 1 and N processes give the same features batch for batch.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from pipeline.config import ParamsError
from pipeline.errors import StageError
from pipeline.io import atomic, data, tracking
from pipeline.io.atomic import sha256
from pipeline.metrics.dataset_classifier import evaluator_features
from pipeline.metrics.distances import feature_stats, feature_subset, frechet_from_stats, kernel_distance
from pipeline.metrics.inception import (
    INCEPTION_ENV_VAR,
    INCEPTION_FILENAME,
    INCEPTION_PARAM,
    INCEPTION_URL,
    InceptionWeightsMissing,
    inception_features,
    load_inception,
    resolve_inception_weights,
)
from pipeline.metrics.inception_score import inception_score, is_protocol
from pipeline.metrics.points import median_bandwidths, mmd2, mode_weights, sliced_wasserstein2
from pipeline.metrics.stats import mean_std
from pipeline.stages.common import add_common_arguments, load_context, require, run_tags, sampler_params, tracked_params, trained
from pipeline.stages.common import device as stage_device
from pipeline.training import launch

SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="evaluate", help="FD/KD/IS on the classifier; FID/KID/IS on Inception-v3 when its weights exist",
    scope="sampler", order=60, deps=("samples", "evaluator"), metrics=("eval",),
    params=("eval.feature_net", "eval.inception_weights", "eval.fid_mode", "eval.is_splits"),
    gpu=True, processes="eval.num_processes",
    snakemake_report={"eval": {"category": "Metrics",
                               "labels": {"experiment": "{exp}", "metrics": "sample quality ({sampler})"}}},
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)
    p.add_argument("--sampler", required=True, help="sampler name: sampling.method, or a key of `samplers:`")


def with_error(values: list[float]) -> dict:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std if np.isfinite(std) else None, "n": len(values), "values": values}


def is_with_error(scores: list[tuple[float, float]], splits: int) -> dict:
    """The IS record from one (mean, std over `splits` splits) per sampling seed: mean / std / n / values over seeds
    as for every metric, plus the protocol: `splits`, `split_std` (the std over splits, averaged over seeds: the
    ± the NCSN protocol reports; None for one split) and `protocol` in words."""
    out = with_error([m for m, _ in scores])
    split_std = float(np.mean([s for _, s in scores])) if splits > 1 else None
    return {**out, "splits": splits, "split_std": split_std, "protocol": is_protocol(splits)}


def features_by_rank(fn, images: np.ndarray, batch_size: int, state=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(features, logits or None) of `images` by `fn` over whole batches of `batch_size`, dealt out over the ranks of
    `state` (an accelerate PartialState; None: one process) and gathered in order, so every rank gets all of them."""
    world, rank = (state.num_processes, state.process_index) if state is not None else (1, 0)
    mine = [(b, *fn(images[b: b + batch_size])) for b in launch.shard(list(range(0, len(images), batch_size)), world, rank)]
    if world > 1:
        from accelerate.utils import gather_object

        mine = gather_object(mine)
    parts = sorted(mine, key=lambda r: r[0])
    logits = None if parts[0][2] is None else np.concatenate([r[2] for r in parts])
    return np.concatenate([r[1] for r in parts]), logits


def dataset_classifier_metrics(ev_dir, samples: np.ndarray, is_splits: int = 1, batch_size: int | None = None,
                               state=None) -> dict:
    ref_file = ev_dir / "ref_stats.npz"
    if not ref_file.exists():
        return {"status": "not computed: this dataset has no classifier evaluator"}
    with np.load(ref_file) as z:
        mu, sigma, subset = z["mu"], z["sigma"], z["subset"]
    fd, kd, is_ = [], [], []
    for seed_samples in samples:
        feats, logits = features_by_rank(lambda x: evaluator_features(ev_dir, x), seed_samples,
                                         batch_size or len(seed_samples), state)
        fd.append(frechet_from_stats(*feature_stats(feats), mu, sigma))
        kd.append(kernel_distance(feats, subset))
        if logits is not None:
            is_.append(inception_score(logits, splits=is_splits))
    out = {"fd": with_error(fd), "kd": with_error(kd)}
    if is_:
        out["is"] = is_with_error(is_, is_splits)
    return out


def point_metrics(ctx, samples: np.ndarray) -> dict:
    """2-D points (no feature network): MMD² and sliced W₂ to held-out test points, as many as samples per seed,
    with the same two numbers between training and test points as the floor that n points allow; for `gmm`, the mode
    weights (nearest centre) and the fraction of samples within 3 std of a centre (data: 0.989)."""
    ds = ctx.params.data.dataset
    test, _ = data.load_split(ctx.root, ds, "test")
    train, _ = data.load_split(ctx.root, ds, "train")
    n = min(samples.shape[1], len(test), len(train))
    ref = test[:n].astype(np.float64)
    bw = median_bandwidths(ref)
    out: dict = {"reference": f"{ds} test split, first {n} points", "n": n, "mmd_bandwidths": bw}
    per = {"mmd2": [], "sw2": [], "mode_weight_max_dev": [], "in_mode": []}
    for x in samples:
        x = x[:n].astype(np.float64)
        per["mmd2"].append(mmd2(x, ref, bw))
        per["sw2"].append(sliced_wasserstein2(x, ref))
        if ds == "gmm":
            w, inside = mode_weights(x, data.gmm_centers(), 3 * data.GMM_STD)
            per["mode_weight_max_dev"].append(float(np.abs(w - 1 / len(w)).max()))
            per["in_mode"].append(inside)
    out.update({k: with_error(v) for k, v in per.items() if v})
    base = train[:n].astype(np.float64)
    out["data_floor"] = {"mmd2": mmd2(base, ref, bw), "sw2": sliced_wasserstein2(base, ref)}
    if ds == "gmm":
        w, inside = mode_weights(base, data.gmm_centers(), 3 * data.GMM_STD)
        out["data_floor"].update(mode_weight_max_dev=float(np.abs(w - 1 / len(w)).max()), in_mode=inside)
    return out


def inception_reference(ctx, features, weights, mode: str, state=None) -> tuple:
    """(mu, sigma, KD subset) of the training split's Inception features (`features`: a batch -> (features, logits)),
    computed once per dataset, mode and weights file, over the ranks, and cached under data/inception_ref/ by the main
    process (like clean-fid's own statistics cache)."""
    ds = ctx.params.data.dataset
    cache = ctx.root / "data" / "inception_ref" / ds / f"train-{mode}-{sha256(weights)[:12]}.npz"
    if not cache.exists():
        x, _ = data.load_split(ctx.root, ds, "train")
        print(f"computing Inception reference statistics of {ds}/train ({len(x)} images, mode {mode}) -> {cache}")
        feats, _ = features_by_rank(features, x, ctx.params.eval.batch_size, state)
        mu, sigma = feature_stats(feats)
        subset = feature_subset(feats, 10000, torch.Generator().manual_seed(0))
        if state is None or state.is_main_process:
            atomic.save_npz(cache, mu=mu, sigma=sigma, subset=subset)
        return mu, sigma, subset
    with np.load(cache) as z:
        return z["mu"], z["sigma"], z["subset"]


def inception_weights(ctx):
    """The Inception-v3 weights file. Missing: InceptionWeightsMissing, or with eval.feature_net: inception (FID is
    the headline, so required) a ParamsError naming the key and the fix (exit 2)."""
    try:
        return resolve_inception_weights(ctx.params.eval.inception_weights)
    except InceptionWeightsMissing:
        if ctx.params.eval.feature_net != "inception":
            raise
        raise ParamsError(ctx.params_path, "eval.feature_net", f"inception needs the Inception-v3 weights "
                          f"{INCEPTION_FILENAME} (not found): set {INCEPTION_PARAM} or ${INCEPTION_ENV_VAR} to the "
                          f"file (from {INCEPTION_URL}), or use eval.feature_net: classifier") from None


def inception_metrics(ctx, samples: np.ndarray, state=None) -> dict:
    """FID / KID / IS on Inception-v3 (clean-fid's TorchScript port of the TF graph), or why they were not computed."""
    if samples.dtype != np.uint8:
        return {"status": "not applicable: 2-D points"}
    try:
        weights = inception_weights(ctx)
    except InceptionWeightsMissing as e:
        print(f"note: Inception-v3 metrics not computed: {str(e).splitlines()[0]}")
        return {"status": "not computed: weights missing", "how": " ".join(str(e).split())}
    device = state.device if state is not None else stage_device()
    mode, bs = ctx.params.eval.fid_mode, ctx.params.eval.batch_size
    model = load_inception(weights, device)
    features = lambda x: inception_features(x, mode=mode, model=model, batch_size=bs, device=device)  # noqa: E731
    mu, sigma, subset = inception_reference(ctx, features, weights, mode, state)
    fid, kid, is_ = [], [], []
    for seed_samples in samples:
        feats, logits = features_by_rank(features, seed_samples, bs, state)
        fid.append(frechet_from_stats(*feature_stats(feats), mu, sigma))
        kid.append(kernel_distance(feats, subset))
        is_.append(inception_score(logits, splits=ctx.params.eval.is_splits))
    return {"status": "computed", "weights": str(weights), "mode": mode, "fid": with_error(fid), "kid": with_error(kid),
            "is": is_with_error(is_, ctx.params.eval.is_splits)}


# The result run's metric names: the dataset classifier's FD / KD / IS are the short ones (the headline of every suite
# without Inception weights), Inception's keep theirs (fid, kid, inception_is), 2-D points theirs (mmd2, sw2, ...).
RESULT_NAMES = {("classifier", "fd"): "fd", ("classifier", "kd"): "kd", ("classifier", "is"): "is",
                ("inception", "fid"): "fid", ("inception", "kid"): "kid", ("inception", "is"): "inception_is"}


def result_metrics(metrics: dict, info: dict) -> dict[str, float]:
    """Every metric of eval/<sampler>.json as `<name>` (mean over seeds) and `<name>_std`, with the sampler's NFE, its
    seconds (sample stage) and this stage's seconds."""
    out = {}
    for net in ("classifier", "inception", "points"):
        for k, v in (metrics.get(net) or {}).items():
            if isinstance(v, dict) and v.get("mean") is not None:
                name = RESULT_NAMES.get((net, k), k)
                out[name] = v["mean"]
                if v.get("std") is not None:
                    out[f"{name}_std"] = v["std"]
    nfe = metrics["nfe"]
    out.update(nfe=nfe["mean"], **({"nfe_std": nfe["std"]} if nfe.get("std") is not None else {}),
               eval_seconds=metrics["seconds"])
    if info.get("seconds") is not None:
        out["sample_seconds"] = info["seconds"]
    return out


def per_seed_table(metrics: dict) -> dict[str, list]:
    """One row per sampling seed: its NFE and every metric (the values behind each mean ± std)."""
    table = {"seed": list(range(metrics["num_seeds"])), "nfe": metrics["nfe"]["values"]}
    for net in ("classifier", "inception", "points"):
        for k, v in (metrics.get(net) or {}).items():
            if isinstance(v, dict) and len(v.get("values") or []) == metrics["num_seeds"]:
                table[RESULT_NAMES.get((net, k), k)] = v["values"]
    return table


def sample_info(folder) -> dict:
    """The sample stage's info.json (settings, NFE, seconds, its MLflow run), {} when unreadable."""
    import json

    try:
        return json.loads((folder / "info.json").read_text())
    except (OSError, ValueError):
        return {}


def result_description(ctx, sampler: str, info: dict) -> str:
    p = ctx.params
    net = "Inception-v3 FID (`fid`)" if p.eval.feature_net == "inception" else "the dataset classifier's FD (`fd`)"
    return (f"`{ctx.experiment}` sampled with `{sampler}` ({info.get('settings', {}).get('method', '?')}, NFE "
            f"{info.get('nfe', float('nan')):.0f}): {p.eval.num_samples} samples × {p.eval.num_seeds} seeds, headline "
            f"{net}, mean over seeds (`*_std`: std over seeds; per seed: per_seed.json). Params `sampler.*`: the setting "
            "the samples were drawn with; the samples' run is `pipeline.sample_run_id`, the model's "
            "`pipeline.model_run_id`. Not comparable with the papers' FID unless the dataset, the feature network and "
            "the sample count match (the suite run's description says which do).")


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    if args.sampler not in p.sampler_settings():
        raise ParamsError(ctx.params_path, f"samplers.{args.sampler}", f"no such sampler; have {list(p.sampler_settings())}")
    sample_file = require(ctx.path("samples", args.sampler) / "samples.npz", "samples", "run the sample stage first")
    ev_dir = require(ctx.path("evaluator"), "dataset evaluator", f"run `python -m pipeline evaluator --dataset {p.data.dataset}`")
    try:
        with np.load(sample_file) as z:
            samples = z["images"] if "images" in z else z["points"]
            nfe = z["nfe"].tolist()
    except (OSError, ValueError, KeyError) as e:
        raise StageError(f"{sample_file}: unreadable samples ({type(e).__name__}); rerun the sample stage") from None
    if p.eval.feature_net == "inception":
        inception_weights(ctx)  # required: fail before any work
    n_proc = p.eval.num_processes
    if launch.wants_launch(n_proc, None):
        launch.check_request(ctx.root, n_proc, None, "eval.num_processes", ctx.params_path)
        return launch.relaunch(launch.stage_argv("evaluate", args, ["--sampler", args.sampler]), n_proc, "no", None,
                               ctx.root)
    from accelerate.state import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    main = state.is_main_process
    t0 = time.perf_counter()
    info = sample_info(sample_file.parent)
    settings = info.get("settings") or p.sampler_settings()[args.sampler].model_dump()
    run_ctx = (tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, f"evaluate/{args.sampler}",
                                  {**sampler_params(settings), **tracked_params(ctx, ["eval.num_samples", "eval.num_seeds",
                                                                                      *SPEC["params"]])},
                                  kind="result", tags={**run_tags(ctx, args.sampler, settings.get("method")),
                                                       "pipeline.sample_run_id": info.get("mlflow_run_id")},
                                  description=result_description(ctx, args.sampler, info))
               if main else contextlib.nullcontext())
    with run_ctx as tracker:
        metrics = {"experiment": ctx.experiment, "sampler": args.sampler, "num_samples": int(samples.shape[1]),
                   "num_seeds": int(samples.shape[0]), "nfe": with_error(nfe), "feature_net": p.eval.feature_net,
                   # the dataset classifier's block: the key "classifier" kept for compatibility (eval/<sampler>.json)
                   "classifier": dataset_classifier_metrics(ev_dir, samples, p.eval.is_splits, p.eval.batch_size, state),
                   "inception": inception_metrics(ctx, samples, state)}
        if not main:
            return 0
        if samples.dtype != np.uint8:
            metrics["points"] = point_metrics(ctx, samples)
        metrics.update(seconds=round(time.perf_counter() - t0, 2), **tracker.record())
        flat = result_metrics(metrics, info)
        step = trained(ctx).get("step")  # the model's training step: the x of every chart of the run
        tracker.log_metrics(flat, step=step)
        tracker.log_table(per_seed_table(metrics), "per_seed.json")
        atomic.write_json(ctx.path("eval", args.sampler), metrics)
        tracker.log_artifact(ctx.path("eval", args.sampler))
        if (sample_file.parent / "grid.png").exists():
            tracker.log_image(sample_file.parent / "grid.png", "samples", step=step)
    print(f"evaluated {ctx.experiment}/{args.sampler}: " + ", ".join(f"{k}={v:.4g}" for k, v in flat.items()))
    return 0
