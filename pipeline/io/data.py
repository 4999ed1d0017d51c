"""Datasets: download (raw files, torchvision's layout) and prepare (uint8 NCHW arrays + manifest with sha256).

What a dataset is (kind, shape, labels, report name, evaluator epochs) is its `pipeline.names.Dataset` record; how
its files are fetched and read is its `Loader` here (LOADERS implements exactly the names of names.DATASET_TABLE)."""
from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import StageError
from pipeline.io import atomic
from pipeline.names import DATASET_TABLE, DATASETS, check_registry

DEBIAN_FASHION_MNIST = Path(os.environ.get("PIPELINE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
TOY_SIZES = {"train": 20000, "test": 5000}
# md5 of the *decompressed* idx files: the Debian package recompresses the upstream .gz (so torchvision's md5 of
# the .gz differs) while the data inside are the upstream bytes.
IDX_CONTENT_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def raw_dir(root: Path, dataset: str) -> Path:
    return Path(root) / "data" / "raw" / dataset


def prepared_dir(root: Path, dataset: str) -> Path:
    return Path(root) / "data" / "prepared" / dataset


# --- download --------------------------------------------------------------------------------------------------
def _torchvision_class(dataset: str):
    import torchvision.datasets as tvd

    return getattr(tvd, LOADERS[dataset].torchvision)


def _content_md5(gz: Path) -> str | None:
    import hashlib

    h = hashlib.md5()
    try:
        with gzip.open(gz, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except (OSError, EOFError):
        return None
    return h.hexdigest()


def _verify_idx_gz(folder: Path, cls) -> None:
    """Check each `*-ubyte.gz` against torchvision's md5 list, or (Fashion-MNIST from Debian, recompressed) the md5
    of its decompressed bytes; a truncated or corrupt file is named."""
    from torchvision.datasets.utils import check_integrity

    for url_name, md5 in cls.resources:
        name = Path(url_name).name
        gz = folder / name
        if not gz.exists():
            raise StageError(f"{gz}: missing raw file; rerun `python -m pipeline download` for this dataset")
        if check_integrity(str(gz), md5):
            continue
        inner = IDX_CONTENT_MD5.get(name[:-3]) if cls.__name__ == "FashionMNIST" else None
        if inner is None or _content_md5(gz) != inner:
            raise StageError(f"{gz}: md5 mismatch (truncated or corrupt download); delete it and rerun the download stage")


def _download_idx(dataset: str, out: Path) -> None:
    """MNIST-style: the Debian files when present (Fashion-MNIST), else torchvision's own download."""
    from torchvision.datasets.utils import extract_archive

    cls = _torchvision_class(dataset)
    raw = out / cls.__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    local = DEBIAN_FASHION_MNIST if dataset == "fashion_mnist" else None
    if local is not None and all((local / Path(u).name).exists() for u, _ in cls.resources):
        for u, _ in cls.resources:
            shutil.copyfile(local / Path(u).name, raw / Path(u).name)
    else:
        try:
            cls(str(out), train=True, download=True)
        except Exception as e:  # noqa: BLE001 - any network failure becomes one actionable line
            hint = " (offline: `apt-get install -y dataset-fashion-mnist` provides the files)" if dataset == "fashion_mnist" else ""
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise StageError(f"{raw}: could not download {dataset}: {reason}{hint}") from None
    _verify_idx_gz(raw, cls)
    for u, _ in cls.resources:
        extract_archive(str(raw / Path(u).name), str(raw))


def _download_torchvision(dataset: str, out: Path) -> None:
    """CIFAR-10 and CelebA through torchvision (CelebA: every split)."""
    cls = _torchvision_class(dataset)
    try:
        if dataset == "celeba":
            cls(str(out), split="all", download=True)
        else:
            cls(str(out), train=True, download=True)
    except Exception as e:  # noqa: BLE001
        raise StageError(f"{out}: could not download {dataset}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _download_digits(dataset: str, out: Path) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 grey levels -> uint8, NCHW
    atomic.save_npz(out / "digits.npz", images=images, labels=d.target.astype(np.int64))


GMM_MODES, GMM_RADIUS, GMM_STD = 8, 4.0, 0.3  # the `gmm` toy: equal-weight modes on a ring, isotropic std


def gmm_centers() -> np.ndarray:
    """The `gmm` toy's mode centres (GMM_MODES, 2): GMM_RADIUS (cos 2πk/K, sin 2πk/K)."""
    k = np.arange(GMM_MODES)
    return GMM_RADIUS * np.stack([np.cos(2 * np.pi * k / GMM_MODES), np.sin(2 * np.pi * k / GMM_MODES)], 1)


def toy_points(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """2-D toys, float32 (n, 2): an 8-component ring of Gaussians, the swiss roll, the checkerboard."""
    if name == "gmm":
        k = rng.integers(0, GMM_MODES, n)
        return (gmm_centers()[k] + GMM_STD * rng.standard_normal((n, 2))).astype(np.float32)
    if name == "swiss_roll":
        t = 1.5 * np.pi * (1 + 2 * rng.random(n))
        x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5.0
        return (x + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    if name == "checkerboard":
        x1 = rng.random(n) * 4 - 2
        x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0 + np.floor(x1) % 2
        return (np.stack([x1, x2], 1) * 2).astype(np.float32)
    raise ValueError(name)


def _generate_toy(dataset: str, out: Path) -> None:
    """"Downloading" a toy generates it from a fixed seed: versioned like the rest."""
    rng = np.random.default_rng(0)
    arrays = {f"{split}": toy_points(dataset, n, rng) for split, n in TOY_SIZES.items()}
    atomic.save_npz(out / f"{dataset}.npz", **arrays)


SYNTHETIC_SIZES = {"train": 2000, "test": 500}  # a stand-in (names.Dataset.stand_in_for): a rehearsal's data, not a benchmark


def synthetic_images(dataset: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in's images (uint8 NCHW, the record's shape) and balanced labels: per class, stripes of its own
    orientation and frequency in its own colour, a random phase and pixel noise per image. Learnable by the dataset
    classifier, so FD / KD / IS and class-conditional accuracy are defined; not CIFAR-10 or any real image."""
    rec = DATASET_TABLE[dataset]
    k = len(rec.class_names or range(10))
    y = rng.permutation(np.arange(n) % k)
    colour = np.random.default_rng(1234).uniform(0.2, 0.9, (k, rec.channels))  # the classes' colours: fixed
    yy, xx = np.mgrid[0:rec.size, 0:rec.size] / rec.size
    angle, freq = (np.pi * y / k)[:, None, None], (2 + y % 4)[:, None, None]
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi, (n, 1, 1)))
    x = colour[y][:, :, None, None] * (0.6 + 0.4 * wave[:, None]) + 0.05 * rng.standard_normal((n, rec.channels,
                                                                                                  rec.size, rec.size))
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), y.astype(np.int64)


def _generate_synthetic(dataset: str, out: Path) -> None:
    """"Downloading" a stand-in generates it from a fixed seed, offline, and labels the raw folder as synthetic."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SYNTHETIC_SIZES.items():
        arrays[f"{split}_x"], arrays[f"{split}_y"] = synthetic_images(dataset, n, rng)
    atomic.save_npz(out / f"{dataset}.npz", **arrays)
    atomic.write_json(out / "SYNTHETIC.json", {"dataset": dataset, "synthetic": synthetic_note(dataset)})


def _split_synthetic(dataset: str, raw: Path, split: str) -> Split:
    f = raw / f"{dataset}.npz"
    if not f.exists():
        raise StageError(f"{f}: missing; run `python -m pipeline download --dataset {dataset}`")
    with np.load(f) as z:
        return z[f"{split}_x"], z[f"{split}_y"]


def synthetic_note(dataset: str) -> str | None:
    """What a stand-in is, in one sentence (None for a real dataset): the prepared manifest and reports carry it."""
    rec = DATASET_TABLE[dataset]
    if not rec.stand_in_for:
        return None
    real = DATASET_TABLE[rec.stand_in_for]
    return (f"SYNTHETIC data generated offline (seeded), a stand-in for {real.display} with its shape "
            f"({rec.size}x{rec.size}x{rec.channels}) and class names: striped images, one pattern per class; numbers "
            f"on it say nothing about {real.display}")


def _loader(dataset: str) -> Loader:
    if dataset not in LOADERS:
        raise StageError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    return LOADERS[dataset]


def download(root: Path, dataset: str) -> Path:
    out = raw_dir(root, dataset)
    with atomic.atomic_dir(out) as tmp:
        _loader(dataset).download(dataset, tmp)
    return out


# --- prepare ---------------------------------------------------------------------------------------------------
Split = tuple[np.ndarray, np.ndarray]  # (x, y) of a split: uint8 NCHW images (or float32 points), int64 labels


def _torchvision_errors(read: Callable[[str, Path, str], Split]) -> Callable[[str, Path, str], Split]:
    """`read` with any failure of torchvision on bad files turned into one StageError line."""
    def split_or_error(dataset: str, raw: Path, split: str) -> Split:
        try:
            return read(dataset, raw, split)
        except StageError:
            raise
        except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError / ValueError / EOFError on bad files
            raise StageError(f"{raw}: cannot read {dataset} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); delete the folder and rerun the download "
                             "stage") from None
    return split_or_error


@_torchvision_errors
def _split_idx(dataset: str, raw: Path, split: str) -> Split:
    cls = _torchvision_class(dataset)
    _verify_idx_gz(raw / cls.__name__ / "raw", cls)
    ds = cls(str(raw), train=(split == "train"), download=False)
    return ds.data.numpy()[:, None].astype(np.uint8), ds.targets.numpy().astype(np.int64)


@_torchvision_errors
def _split_cifar10(dataset: str, raw: Path, split: str) -> Split:
    ds = _torchvision_class(dataset)(str(raw), train=(split == "train"), download=False)
    return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets, np.int64)


@_torchvision_errors
def _split_celeba(dataset: str, raw: Path, split: str) -> Split:
    """CelebA 64x64 as in the reference: centre crop 140, resize to 64."""
    import torch
    import torchvision.transforms.v2 as T

    tf = T.Compose([T.PILToTensor(), T.CenterCrop(140), T.Resize(64, antialias=True)])
    ds = _torchvision_class(dataset)(str(raw), split="train" if split == "train" else "test", transform=tf,
                                     download=False)
    imgs = torch.stack([ds[i][0] for i in range(len(ds))]).numpy().astype(np.uint8)
    return imgs, np.zeros(len(imgs), np.int64)


def _split_toy(dataset: str, raw: Path, split: str) -> Split:
    with np.load(raw / f"{dataset}.npz") as z:
        x = z[split]
    return x, np.zeros(len(x), np.int64)


def _split_digits(dataset: str, raw: Path, split: str) -> Split:
    f = raw / "digits.npz"
    if not f.exists():
        raise StageError(f"{f}: missing; run `python -m pipeline download --dataset digits`")
    with np.load(f) as z:
        images, labels = z["images"], z["labels"]
    perm = np.random.default_rng(0).permutation(len(images))  # fixed split: 1500 train, the rest test
    idx = perm[:1500] if split == "train" else perm[1500:]
    return images[idx], labels[idx]


# --- the loaders: one per name of names.DATASET_TABLE ----------------------------------------------------------------
@dataclass(frozen=True)
class Loader:
    """How a dataset's files are fetched into the raw folder and read back, per split, as (x, y)."""

    download: Callable[[str, Path], None]  # (dataset, folder): write the raw files into the folder
    split: Callable[[str, Path, str], Split]  # (dataset, raw folder, "train" | "test") -> (x, y)
    torchvision: str | None = None  # the torchvision.datasets class the two use, if any


LOADERS = {
    "fashion_mnist": Loader(_download_idx, _split_idx, "FashionMNIST"),
    "mnist": Loader(_download_idx, _split_idx, "MNIST"),
    "cifar10": Loader(_download_torchvision, _split_cifar10, "CIFAR10"),
    "celeba": Loader(_download_torchvision, _split_celeba, "CelebA"),
    "digits": Loader(_download_digits, _split_digits),
    **{n: Loader(_generate_synthetic, _split_synthetic) for n, d in DATASET_TABLE.items() if d.stand_in_for},
    **{name: Loader(_generate_toy, _split_toy) for name in ("gmm", "swiss_roll", "checkerboard")},
}
check_registry("dataset", LOADERS, DATASETS)


def prepare(root: Path, dataset: str) -> Path:
    raw, out = raw_dir(root, dataset), prepared_dir(root, dataset)
    if not raw.exists():
        raise StageError(f"{raw}: raw data missing; run `python -m pipeline download --dataset {dataset}` first")
    loader = _loader(dataset)
    with atomic.atomic_dir(out) as tmp:
        manifest = {"dataset": dataset, "kind": DATASET_TABLE[dataset].kind, "splits": {}}
        if synthetic_note(dataset):
            manifest["synthetic"] = synthetic_note(dataset)
        for split in ("train", "test"):
            x, y = loader.split(dataset, raw, split)
            atomic.save_npz(tmp / f"{split}.npz", x=x, y=y)
            manifest["splits"][split] = {"count": int(len(x)), "shape": list(x.shape), "dtype": str(x.dtype),
                                         "sha256": atomic.sha256(tmp / f"{split}.npz")}
        atomic.write_json(tmp / "manifest.json", manifest)
    return out


def load_split(root: Path, dataset: str, split: str, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Prepared arrays (x, y) of a split; the file's sha256 is checked against the manifest."""
    folder = prepared_dir(root, dataset)
    mf, f = folder / "manifest.json", folder / f"{split}.npz"
    if not mf.exists() or not f.exists():
        raise StageError(f"{f}: prepared data missing; run `python -m pipeline prepare --dataset {dataset}`")
    try:
        manifest = json.loads(mf.read_text())
        expected = manifest["splits"][split]["sha256"]
    except (ValueError, KeyError):
        raise StageError(f"{mf}: corrupt manifest; rerun `python -m pipeline prepare --dataset {dataset}`") from None
    if verify and atomic.sha256(f) != expected:
        raise StageError(f"{f}: sha256 differs from {mf.name} (corrupt or edited); rerun the prepare stage")
    with np.load(f) as z:
        return z["x"], z["y"]
