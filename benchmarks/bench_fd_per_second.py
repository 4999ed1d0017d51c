"""Sample quality per train-second: one experiment's training under settings that cost about the same CPU time.

Issue 28 asks to spend the default suite's training time where it buys the most quality. This trains the experiment
once per variant (the library's loop in process, the preset's EMA), then samples the EMA weights with the
experiment's default sampler (seed as the sample stage) and prints the train seconds, the classifier FD (mean ± std
over seeds: the evaluate stage's metric, compared at equal sample counts).

    python benchmarks/bench_fd_per_second.py --root /path/of/a/finished/make/repro \
        --params params/fmnist/ncsnpp_cont.yaml --variant base: \
        --variant b16:training.batch_size=16,training.n_iters=3000 [--samples 128] [--seeds 2] [--out fd.json]

A variant is `name:key=value,key=value` (params overrides, `--set` syntax); `base:` is the preset as it is. Run
variants of one experiment in separate processes, one thread each, to compare them side by side on a 2-core machine
(the stages of `make repro` run that way). `--root` must hold data/prepared and data/evaluator of a finished
`make repro`.

Measured (2026-12-04, 2-core Xeon, two processes side by side, the default suite's seeds, 128 x 2 samples, FD mean ±
std over the 2 seeds; `base` reproduces the sample stage's numbers exactly):

    ncsnpp_cont  base (b32 x 1500, lr 1e-3)   303 s  FD 55.78 ± 9.05      ncsn  base (b32 x 600, lr 1e-3)  324 s  77.38 ± 3.81
                 lr 2e-3                      279 s     53.44 ± 5.53            b16 x 1200                 349 s  83.42 ± 0.73
                 b16 x 3000                   339 s     51.32 ± 3.38            lr 2e-3                    335 s  77.17 ± 0.91
                 b16 x 3000, lr 2e-3          342 s     54.63 ± 5.00
                 b64 x 750, lr 2e-3           256 s     51.70 ± 5.40

2026-12-05, a slower host (the preset's NCSN trained in 354 s there, in its make repro), before refinenet.py's
BoxFilter: ncsn nf 8 x 1000 (the half-width net, 1.6x cheaper per step) 402 s, FD 83.27 ± 2.17. The same host, two
processes side by side, with the BoxFilter (the preset's ncsn: 600 steps, 384 s in its make repro, FD 82.82 ± 4.16;
ncsnpp_cont: 1500 steps, 350 s, FD 55.78 ± 9.05): twice the steps, ncsn x 1200 683 s, FD 48.94 ± 2.73;
ncsnpp_cont x 3000 676 s, FD 35.60 ± 3.80. Steps, not settings, are what these models lack.

2026-12-05 (a later session; `python -m pipeline train --set training.n_iters=3000` on a copy of a finished run, then
the sample stage's seeds at 128 x 2): ddpmpp_cont_vp x 3000, Heun + churn FD 27.48 ± 0.30 and probability-flow ODE
(RK45, rtol 1e-3, NFE 73.5) 46.14 ± 3.77: 1.68x, against 32.7 and 93.0 (2.8x) for the preset's 1,500 steps at the
same counts. The ODE's gap to the stochastic samplers is the young model's, and it closes with steps.

At equal train-seconds no batch size, learning rate or width moves the FD beyond its seed-to-seed spread: these models are
limited by the compute, not by these settings.
"""
from __future__ import annotations

import argparse
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
from pipeline.metrics import curves  # noqa: E402
from pipeline.metrics.dataset_classifier import evaluator_features  # noqa: E402
from pipeline.metrics.distances import feature_stats, frechet_from_stats  # noqa: E402
from pipeline.training import launch  # noqa: E402
from pipeline.training.loop import train  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    return name, [s for s in sets.split(",") if s]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--params", default="params/fmnist/ncsnpp_cont.yaml")
    ap.add_argument("--variant", action="append", default=[], help="name:key=value,... (repeatable)")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = {"params": a.params, "samples": a.samples, "seeds": a.seeds, "results": {}}
    for name, sets in map(parse_variant, a.variant or ["base:"]):
        _, p = load_params(a.params, sets)
        ev_dir, ref, x, xt = finished_run.read(a.root, p.data.dataset)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            model, ema, res = train(p, torch.from_numpy(x), torch.from_numpy(xt), Path(tmp) / "snapshots",
                                    accelerator=launch.make_accelerator(p))
        seconds = time.perf_counter() - t0
        if ema is not None:
            model.load_state_dict(ema.weights(model))
        model.eval()
        s = p.sampler_settings()[p.sampling.method]
        imgs, nfe = curves.draw_samples(p, s, model, a.samples, range(a.seeds), 64)
        feats = [evaluator_features(ev_dir, imgs[k])[0] for k in range(a.seeds)]
        fd = [frechet_from_stats(*feature_stats(f), *ref) for f in feats]
        rec = {"set": sets, "steps": res.step, "train_s": seconds, "final_loss": res.final_loss,
               "ema_eval_loss": res.ema_eval_loss, "nfe": float(np.mean(nfe)), "fd": curves.stat(fd)}
        out["results"][name] = rec
        print(f"{name:10s} steps {res.step:5d}  train {seconds:6.0f} s  EMA eval loss {res.ema_eval_loss:.4f}  "
              f"FD {np.mean(fd):7.2f} ± {np.std(fd, ddof=1):5.2f}  ({a.samples} x {a.seeds}, NFE {rec['nfe']:.0f})",
              flush=True)
        if a.out:
            a.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
