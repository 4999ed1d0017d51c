"""Sample quality along one training run: the classifier FD of samplers at a run's kept checkpoints.

No schedule of the training loop reads `training.n_iters` (the warm-up counts steps, the EMA's half-life is a fraction
of the images seen so far), so the EMA weights a run keeps at step n are the weights an n-step run ends with: one long
training (`python -m pipeline train --set training.n_iters=N --set training.ckpt_freq=K`) answers "how many steps does
this model need" for every multiple of K. Each (checkpoint, sampler, override) draws the sample stage's seeds and
prints the FD (mean ± std over seeds) and NFE.

    python benchmarks/bench_fd_checkpoints.py --root /path/of/a/run --params params/fmnist/ncsn.yaml \
        --ckpt runs/default/ncsn/snapshots/weights/step_000001800.pt [--sampler ald] \
        [--set sampling.step_lr=3e-5 ...] [--samples 128] [--seeds 2] [--raw]

--ckpt is repeatable (paths relative to --root); --set values are params overrides (`--set` syntax) applied to the
sampler; --root must hold data/prepared and data/evaluator of a finished `make repro` (a run's folder with data/
linked to one will do). Unknown samplers and missing checkpoints exit 2 before anything is sampled.

Measured 2026-12-05 (2-core Xeon, one thread per process, the default suite's seeds; FD mean ± std over 2 seeds):

    ncsn, one 1,800-step run (ckpt_freq 200), ALD (L = 15, T = 7), 128 x 2 samples:
      eps 6e-5 (the preset before): 1,400 steps 52.65 ± 4.89   1,600 51.72 ± 1.88   1,800 52.33 ± 0.88
      eps 3e-5: 1,200 steps 50.78 ± 6.29   1,400 45.63 ± 5.50   1,600 44.12 ± 5.84   1,800 40.91 ± 3.69
      1,800 steps: eps 2e-5 60.30 ± 0.19, 4e-5 46.31 ± 2.98
      64 x 2 samples, 1,800 steps:   eps 3e-5 61.37, 6e-5 69.49, 1e-4 83.82; T = 10 77.32; raw weights 228.03
      EMA half-life (fraction of the images seen), 1,000 steps, 64 x 2: 0.05 (preset) eps 3e-5 73.49 / 6e-5 78.72;
      0.15 77.99 / 77.99; 0.30 85.26 / 84.19
    ddpmpp_cont_vp, one 5,100-step run (ckpt_freq 300, resumed at 3,000 and 3,500), 256 x 2 samples (the suite's count),
    Heun + churn (NFE 41) / probability-flow ODE (RK45, rtol = atol = 1e-3, NFE 70-74) = ratio:
      1,500 (the preset; its make repro) 27.37 / 87.16 = 3.18   2,400 21.26 / 51.10 = 2.40   2,700 19.46 / 43.79 = 2.25
      3,000 20.68 / 37.64 = 1.82   3,300 18.15 / 33.68 = 1.86   3,600 18.17 / 31.02 = 1.71   3,900 16.88 / 28.25 = 1.67
      4,200 17.07 / 27.83 = 1.63   4,500 15.49 / 26.80 = 1.73   4,800 15.76 / 24.61 = 1.56   5,100 14.71 / 22.42 = 1.52
      at 3,000 steps: ODE with the raw weights 50.00 ± 7.57; EMA half-life 0.15 of the images: Heun 19.79, ODE 55.39;
      lr 4e-3 (2e-3 the preset): 19.82 / 38.40 = 1.94; batch 64 x 1,500 steps (the same images, 13% more images/s):
      20.07 / 61.33 = 3.06. The ODE's gap closes with optimizer steps, not with images or a larger step size.
    the same run continued to 6,000 steps (2026-12-05, later): 5,400 15.16 / 20.38 = 1.34 (the preset since; its
      fresh-clone make repro gave these numbers to the last digit)   5,700 14.63 / 19.87 = 1.36   6,000 14.40 / 20.16 = 1.40;
      batch 16 (0.074 s/step against 0.126) x 4,800 steps: 22.85 / 43.43 = 1.90; the ODE's end time at 1,500 steps:
      --set samplers.ode.eps=3e-3 88.06, 1e-2 90.44 (1e-3: 87.16).
    ncsnpp_cont, its 3,000-step run's weights at 2,400 steps, 128 x 2: Heun + churn 39.94 ± 5.88, pc 41.31 ± 2.34,
      p_only 55.53 ± 3.80 (the preset since); model.pt with --set samplers.pc.num_steps=50: pc 173.11 ± 6.13.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import finished_run  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.io import checkpoint  # noqa: E402
from pipeline.metrics import curves  # noqa: E402
from pipeline.metrics.dataset_classifier import evaluator_features  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--ckpt", action="append", required=True, help="a checkpoint under --root (repeatable)")
    ap.add_argument("--sampler", action="append", help="a sampler of the params file (default: its default)")
    ap.add_argument("--set", action="append", default=[], help="a params override, key=value (repeatable)")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--raw", action="store_true", help="the trained weights instead of the EMA")
    ap.add_argument("--out", type=Path, help="a JSON file of the records")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, p = load_params(a.params, a.set)
    ev_dir, ref, _, _ = finished_run.read(a.root, p.data.dataset)
    settings = p.sampler_settings()
    features = lambda imgs: evaluator_features(ev_dir, imgs)[0]  # noqa: E731
    unknown = [n for n in a.sampler or [] if n not in settings]
    if unknown:
        print(f"{a.params}: no sampler {unknown[0]!r} (--sampler: one of {', '.join(settings)})", file=sys.stderr)
        return 2
    missing = [a.root / ck for ck in a.ckpt if not (a.root / ck).is_file()]
    if missing:
        print(f"{missing[0]}: no such checkpoint (--ckpt, relative to --root)", file=sys.stderr)
        return 2
    records = []
    for ck in a.ckpt:
        net = checkpoint.load_network(a.root / ck, use_ema=not a.raw).eval()
        for name in a.sampler or [p.sampling.method]:
            r = curves.fd_point(p, settings[name], net, features, ref, a.samples, a.seeds, 64)
            fd = r["fd"]
            records.append({"ckpt": ck, "sampler": name, "set": a.set, "raw": a.raw, **r})
            print(f"{ck}  {name:10s} {' '.join(a.set) or '-'}  FD {fd['mean']:7.2f} ± {fd['std'] or 0:5.2f}  "
                  f"({a.samples} x {a.seeds}, NFE {r['nfe']['mean']:.1f}, {r['seconds']:.0f} s)", flush=True)
    if a.out:
        a.out.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
