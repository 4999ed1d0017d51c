"""Raw weights against three EMA schedules (pipeline/core/ema.py) on one training: issue 28's measurement.

Trains one experiment once (the library's loop, in process) while keeping, beside the raw weights, one EMA per
schedule: reference (Score SDE's warm-up to ema_rate), constant (ema_rate from step 1) and edm (a half-life of
ema_rampup_ratio x the images seen). Then samples each weight set with the experiment's default sampler and its `ode`
sampler (seed as the sample stage) and prints, per weight set: the classifier FD (mean ± std over seeds, the
evaluate stage's metric) and a speckle measure, the mean |horizontal neighbour difference| of the samples in [0, 1]
(the test images' value printed beside it).

    python benchmarks/bench_ema.py --root /path/with/data/and/evaluator [--params params/fmnist/ddpmpp_cont_vp.yaml]
        [--set training.n_iters=1000 ...] [--samples 64] [--seeds 2] [--rampup 0.05 0.1] [--out ema.json]

`--root` must hold the prepared dataset and the evaluator of a finished `make repro` (data/prepared, data/evaluator).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import finished_run  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.core.ema import EMA, ema_decay  # noqa: E402
from pipeline.metrics import curves  # noqa: E402
from pipeline.metrics.dataset_classifier import evaluator_features  # noqa: E402
from pipeline.metrics.distances import feature_stats, frechet_from_stats  # noqa: E402
from pipeline.training import launch  # noqa: E402
from pipeline.training.loop import train  # noqa: E402


class Capturing:
    """The run's Accelerator, remembering the network it unwraps (the loop unwraps it after every optimizer step)."""

    def __init__(self, accelerator):
        self._acc, self.model = accelerator, None

    def __getattr__(self, name):
        return getattr(self._acc, name)

    def unwrap_model(self, m, *a, **k):
        self.model = self._acc.unwrap_model(m, *a, **k)
        return self.model


def speckle(x: np.ndarray) -> float:
    """Mean |horizontal neighbour difference| of uint8 images, in [0, 1] units."""
    x = x.astype(np.float64) / 255.0
    return float(np.abs(np.diff(x, axis=-1)).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--params", default="params/fmnist/ddpmpp_cont_vp.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rampup", type=float, nargs="+", default=[0.05, 0.1])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    _, p = load_params(a.params, a.set)
    ev_dir, ref, x, xt = finished_run.read(a.root, p.data.dataset)
    B, rate = p.training.batch_size, p.model.ema_rate
    schedules = {"reference": lambda n: ema_decay(n, "reference", rate),
                 "constant": lambda n: ema_decay(n, "constant", rate)}
    for r in a.rampup:
        schedules[f"edm {r:g}"] = lambda n, r=r: ema_decay(n, "edm", rate, B, p.model.ema_halflife_kimg, r)
    acc = Capturing(launch.make_accelerator(p))
    emas: dict[str, EMA] = {}

    def on_step(step, loss):
        if not emas:
            emas.update({k: EMA(acc.model, rate, f) for k, f in schedules.items()})
        for e in emas.values():
            e.update(acc.model)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, _, res = train(p, torch.from_numpy(x), torch.from_numpy(xt), Path(tmp) / "snapshots",
                              accelerator=acc, on_step=on_step)
    print(f"trained {res.step} steps in {time.perf_counter() - t0:.0f} s (final loss {res.final_loss:.4f})")
    # note: the EMAs start from the weights after the first step (the loop's own EMA starts one step earlier)
    weight_sets = {"raw": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    weight_sets.update({k: e.weights(model) for k, e in emas.items()})
    samplers = {k: v for k, v in p.sampler_settings().items() if k in (p.sampling.method, "ode")}
    feats = lambda imgs: evaluator_features(ev_dir, imgs)[0]  # noqa: E731
    out = {"params": a.params, "set": a.set, "steps": res.step, "samples": a.samples, "seeds": a.seeds,
           "test_speckle": speckle(xt[:1000]), "results": {}}
    print(f"test images: speckle {out['test_speckle']:.3f}")
    net = copy.deepcopy(model).eval()
    for wname, w in weight_sets.items():
        net.load_state_dict(w)
        for sname, s in samplers.items():
            imgs, nfe = curves.draw_samples(p, s, net, a.samples, range(a.seeds), 64)
            fd = [frechet_from_stats(*feature_stats(feats(imgs[k])), *ref) for k in range(a.seeds)]
            rec = {"fd": curves.stat(fd), "nfe": float(np.mean(nfe)), "speckle": speckle(imgs)}
            out["results"][f"{wname} / {sname}"] = rec
            print(f"{wname:12s} {sname:8s} NFE {rec['nfe']:6.1f}  FD {np.mean(fd):7.2f} ± {np.std(fd, ddof=1):5.2f}"
                  f"  speckle {rec['speckle']:.3f}", flush=True)
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
