"""`evaluator`: per dataset, train the dataset classifier whose features give the offline FD / KD / IS (for as many
epochs as the dataset's record says: `pipeline.names.Dataset.evaluator_epochs`), and cache the reference statistics
of the training split (mean, covariance, a feature subset for KD)."""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from pipeline.io import atomic, data, tracking
from pipeline.metrics.dataset_classifier import dataset_classifier_features, save_evaluator, train_dataset_classifier
from pipeline.metrics.distances import feature_stats, feature_subset
from pipeline.names import DATASET_TABLE
from pipeline.stages.common import add_common_arguments, dataset_arg

KD_SUBSET = 10000


SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="evaluator", help="train the dataset classifier (offline FD/KD/IS) and cache reference statistics",
    scope="dataset", order=30, deps=("prepared",), outs=("evaluator",), priority=1,
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p, params_required=False)
    p.add_argument("--dataset", help="dataset name (instead of --params)")


def run(args) -> int:
    ds = dataset_arg(args)
    x, y = data.load_split(args.root, ds, "train")
    xt, yt = data.load_split(args.root, ds, "test")
    out = args.root / "data" / "evaluator" / ds
    t0 = time.perf_counter()
    metrics: dict = {"dataset": ds}
    with tracking.stage_run(args.root, "datasets", ds, "evaluator") as tracker, atomic.atomic_dir(out) as tmp:
        points, epochs = DATASET_TABLE[ds].kind == "points", DATASET_TABLE[ds].evaluator_epochs
        if points or epochs == 0:
            feats = x.astype(np.float64).reshape(len(x), -1) if points else None
            metrics["feature_net"] = "identity (2-D points)" if points else "none (no labels: Inception only)"
        else:
            config = {"num_channels": int(x.shape[1]), "image_size": int(x.shape[2]), "num_classes": int(y.max() + 1),
                      "width": 32, "feature_dim": 128}
            net = train_dataset_classifier(x, y, epochs=epochs, generator=torch.Generator().manual_seed(0),
                                           progress=sys.stderr.isatty(), num_classes=config["num_classes"],
                                           width=config["width"], feature_dim=config["feature_dim"])
            save_evaluator(tmp, config, net)
            feats, _ = dataset_classifier_features(net.eval(), x, batch_size=256)
            _, test_logits = dataset_classifier_features(net.eval(), xt, batch_size=256)
            metrics["feature_net"] = "classifier"  # the dataset classifier; the name kept for compatibility (metrics.json)
            metrics["test_accuracy"] = float((test_logits.argmax(1) == yt).mean())
        if feats is not None:
            mu, sigma = feature_stats(feats)
            subset = feature_subset(feats, KD_SUBSET, torch.Generator().manual_seed(0))
            atomic.save_npz(tmp / "ref_stats.npz", mu=mu, sigma=sigma, subset=subset)
            metrics["feature_dim"] = int(feats.shape[1])
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        metrics.update(tracker.record())
        atomic.write_json(tmp / "metrics.json", metrics)
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    print(f"evaluator {ds}: {metrics}")
    return 0
