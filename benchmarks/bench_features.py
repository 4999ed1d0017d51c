"""Throughput (images/s) of pipeline.metrics.inception_features vs clean-fid's own feature extraction, side by side.

Both drive the same TorchScript file: the real Inception-v3 architecture (torchvision's, random weights, wrapped in
the interface of clean-fid's inception-2015-12-05.pt), since the real weights are not available offline and
throughput does not depend on weight values. Usage: python benchmarks/bench_features.py [--num-images 60 --batch-size 20 --repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from cleanfid.fid import get_folder_features, get_model_features
from cleanfid.inception_torchscript import InceptionV3W
from PIL import Image
from torchvision.models.inception import Inception3

from pipeline.metrics.inception import INCEPTION_FILENAME, inception_features, load_inception

warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices


class TorchvisionInceptionWithCleanFidInterface(nn.Module):
    """torchvision Inception-v3 body as `layers` (-> pool_3, 2048x1x1), `output` Linear(2048, 1008), and the
    forward(img, return_features, use_fp16, no_output_bias) of StyleGAN2-ADA's TorchScript file."""

    def __init__(self) -> None:
        super().__init__()
        net = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        self.layers = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.maxpool1, net.Conv2d_3b_1x1,
            net.Conv2d_4a_3x3, net.maxpool2, net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b,
            net.Mixed_6c, net.Mixed_6d, net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, net.avgpool,
        )
        self.output = nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = img.to(torch.float32)
        batch_size, channels = x.shape[0], x.shape[1]
        if x.shape[2] != 299 or x.shape[3] != 299:
            # The real file resizes with affine_grid + grid_sample (bilinear, border); same cost class.
            theta = torch.eye(2, 3, dtype=x.dtype).unsqueeze(0).repeat(batch_size, 1, 1)
            grid = F.affine_grid(theta, [batch_size, channels, 299, 299], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        features = self.layers((x - 128.0) / 128.0).reshape(-1, 2048)
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return F.softmax(logits, dim=1)


def build_weights(folder: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random weights; confined to this fork so no global state changes
        module = TorchvisionInceptionWithCleanFidInterface()
        # Calibrate BatchNorm running statistics on one random batch, so activations have the unit scale of a
        # trained network: with the raw init they shrink to ~1e-8 at pool_3, and denormal floats would make the
        # CPU timings meaningless.
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.momentum = None
        module.train()
        with torch.no_grad():
            module.layers(torch.rand(8, 3, 299, 299) * 2 - 1)
        module.eval()
    path = folder / INCEPTION_FILENAME
    torch.jit.script(module).save(str(path))
    return path


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default="clean,legacy_tensorflow")
    args = parser.parse_args()
    if args.num_images % args.batch_size:
        raise SystemExit("--num-images must be a multiple of --batch-size (clean-fid's generator path needs it)")
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.num_images, 3, args.image_size, args.image_size), dtype=np.uint8)

    batches = [images[start:start + args.batch_size] for start in range(0, args.num_images, args.batch_size)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_weights(tmp)
        for index, batch in enumerate(batches):  # one folder per batch, for clean-fid's folder path
            folder = tmp / "png" / f"batch{index:03d}"
            folder.mkdir(parents=True)
            for row, image in enumerate(batch):
                Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{row:05d}.png")

        print(f"device={device} torch_threads={torch.get_num_threads()} images={args.num_images} "
              f"size={args.image_size} batch={args.batch_size} repeats={args.repeats} "
              "(Inception-v3 architecture, random weights)")
        print("ratio = clean-fid time / our time, median over interleaved per-batch pairs (>1: ours faster)")
        print(f"{'mode':18s} {'ours img/s':>11s} {'clean-fid gen img/s':>20s} {'clean-fid folder img/s':>23s} "
              f"{'ratio vs gen':>13s} {'ratio vs folder':>16s} {'max |diff|':>11s}")
        for mode in args.modes.split(","):
            ours_model = load_inception(tmp, device)
            cleanfid_model = InceptionV3W(str(tmp), download=False,
                                          resize_inside=(mode == "legacy_tensorflow")).to(device).eval()

            def ours(index):
                return inception_features(batches[index], model=ours_model, mode=mode, batch_size=args.batch_size,
                                          device=device)[0]

            def cleanfid_generator(index):
                # compute_fid(gen=G) path: G yields a [0,255] float batch; clean-fid resizes and extracts.
                batch = torch.from_numpy(batches[index]).float()
                return get_model_features(lambda z: batch, cleanfid_model, mode=mode, z_dim=1, num_gen=len(batch),
                                          batch_size=len(batch), device=device, verbose=False)

            def cleanfid_folder(index):
                # compute_fid(fdir1, fdir2) path: PNG decode + resize in a DataLoader, then extraction.
                return get_folder_features(str(tmp / "png" / f"batch{index:03d}"), cleanfid_model, num_workers=0,
                                           batch_size=args.batch_size, device=device, mode=mode, verbose=False)

            paths = {"ours": ours, "gen": cleanfid_generator, "folder": cleanfid_folder}
            for fn in paths.values():  # warm-up: TorchScript's profiling executor optimizes on the first calls
                fn(0)
            times = {name: [] for name in paths}
            outputs = {name: [None] * len(batches) for name in paths}
            # The shared CPUs vary by 2x within seconds, so each batch is timed on every path back to back
            # (order rotated) and the ratio is the median of these paired ratios.
            names = list(paths)
            for repeat in range(args.repeats):
                for index in range(len(batches)):
                    shift = (repeat * len(batches) + index) % len(names)
                    for name in names[shift:] + names[:shift]:
                        seconds, outputs[name][index] = timed(lambda: paths[name](index))
                        times[name].append(seconds)
            rate = {name: args.num_images * args.repeats / sum(values) for name, values in times.items()}
            ratio = {name: float(np.median(np.array(times[name]) / np.array(times["ours"]))) for name in ("gen", "folder")}
            ours_all = np.concatenate(outputs["ours"])
            diff = max(np.abs(ours_all - np.concatenate(outputs[name])).max() for name in ("gen", "folder"))
            print(f"{mode:18s} {rate['ours']:11.2f} {rate['gen']:20.2f} {rate['folder']:23.2f} "
                  f"{ratio['gen']:13.3f} {ratio['folder']:16.3f} {diff:11.2e}")


if __name__ == "__main__":
    main()
