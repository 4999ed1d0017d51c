"""Start-up cost of writing one sample grid in a fresh process: pipeline.io.grids (Pillow) against torchvision's
save_image, which imports all of torchvision (its models, ops and torch._dynamo). Each variant runs `--repeats` times
in a new interpreter that has already imported torch and numpy (as every stage has); prints the median seconds of
the grid step (import + tile + write) per variant and their ratio, side by side in one run.

    python benchmarks/bench_grid_import.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import sys, time, tempfile
sys.path.insert(0, {root!r})
import numpy as np, torch
x = np.random.default_rng(0).integers(0, 256, size=(64, 1, 28, 28), dtype=np.uint8)
out = tempfile.mkdtemp() + "/g.png"
t0 = time.perf_counter()
"""
VARIANTS = {
    "pipeline.io.grids": "from pipeline.io import grids\ngrids.save_grid(out, x, points=False)\n",
    "torchvision save_image": ("from torchvision.utils import save_image\n"
                               "save_image(torch.from_numpy(x).float() / 255, out, nrow=8, format='png')\n"),
}
REPORT = "print(time.perf_counter() - t0)\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(a.repeats):  # interleaved, so that a load change hits both variants alike
        for name, body in VARIANTS.items():
            code = SETUP.format(root=str(ROOT)) + body + REPORT
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            times[name].append(float(out.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in med.items():
        print(f"{name:24s} median {m:.3f} s over {a.repeats} fresh processes")
    print(f"torchvision / pipeline.io.grids: {med['torchvision save_image'] / med['pipeline.io.grids']:.1f}x; "
          f"saved per stage that writes a grid: {med['torchvision save_image'] - med['pipeline.io.grids']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
