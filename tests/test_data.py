"""Data stages on local files only: fake raw folders in torchvision's layout, digits, toys; corrupt input."""
import gzip
import hashlib
import json
import pickle
import struct

import numpy as np
import pytest
import torchvision.datasets as tvd

from pipeline import names
from pipeline.errors import StageError
from pipeline.io import data


def _idx(path, arr: np.ndarray):
    magic = 2051 if arr.ndim == 3 else 2049
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    """A Debian-like folder with tiny idx files, and torchvision's md5 list pointed at them."""
    src = tmp_path / "debian"
    src.mkdir()
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 6)}
    resources = [(name, _idx(src / name, a)) for name, a in arrays.items()]
    monkeypatch.setattr(tvd.FashionMNIST, "resources", resources)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", src)
    return arrays


def _matches_record(root, dataset: str) -> None:
    """The prepared splits have the kind, shape and labels the dataset's record (names.DATASET_TABLE) declares."""
    rec = names.dataset(dataset)
    for split in ("train", "test"):
        x, y = data.load_split(root, dataset, split)
        assert x.shape[1:] == ((rec.size,) if rec.kind == "points" else (rec.channels, rec.size, rec.size)), (dataset, x.shape)
        assert x.dtype == (np.float32 if rec.kind == "points" else np.uint8)
        assert y.dtype == np.int64 and len(y) == len(x)
        if rec.class_names:
            assert y.max() < len(rec.class_names)
    assert json.loads((data.prepared_dir(root, dataset) / "manifest.json").read_text())["kind"] == rec.kind


def test_every_dataset_is_one_record_with_one_loader(tmp_path):
    """A dataset is declared once (names.DATASET_TABLE); io/data.py implements exactly those names (checked at import)
    and the name lists of the schema are derived from the records."""
    table = names.DATASET_TABLE
    assert set(data.LOADERS) == set(table) == set(names.DATASETS)
    assert names.IMAGE_DATASETS + names.TOY_DATASETS == names.DATASETS
    for name, rec in table.items():
        assert rec.name == name and names.name_problem("dataset", name) is None
        assert (rec.kind == "points") == (name in names.TOY_DATASETS)
        assert rec.class_names is None or (rec.labelled and len(rec.class_names) >= 2)
        if rec.kind == "points":
            assert (rec.channels, rec.size, rec.labelled, rec.evaluator_epochs) == (1, 2, False, 0)
    with pytest.raises(ImportError, match="dataset registry"):
        names.check_registry("dataset", {**data.LOADERS, "extra": None}, names.DATASETS)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        names.dataset("nope")
    with pytest.raises(StageError, match="unknown dataset 'nope'"):
        data.download(tmp_path, "nope")


def test_fashion_mnist_from_local_files(tmp_path, fake_fashion):
    root = tmp_path / "repo"
    data.download(root, "fashion_mnist")
    out = data.prepare(root, "fashion_mnist")
    x, y = data.load_split(root, "fashion_mnist", "train")
    assert x.dtype == np.uint8 and x.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], fake_fashion["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(y, fake_fashion["train-labels-idx1-ubyte.gz"])
    xt, _ = data.load_split(root, "fashion_mnist", "test")
    assert xt.shape == (6, 1, 28, 28)
    assert (out / "manifest.json").exists()
    _matches_record(root, "fashion_mnist")


def test_truncated_raw_file_is_named(tmp_path, fake_fashion):
    root = tmp_path / "repo"
    data.download(root, "fashion_mnist")
    gz = root / "data/raw/fashion_mnist/FashionMNIST/raw/train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100])
    with pytest.raises(StageError, match="train-images-idx3-ubyte.gz: md5 mismatch"):
        data.prepare(root, "fashion_mnist")
    assert not (root / "data/prepared/fashion_mnist").exists(), "nothing half-written"


def test_edited_prepared_file_fails_checksum(tmp_path, fake_fashion):
    root = tmp_path / "repo"
    data.download(root, "fashion_mnist")
    data.prepare(root, "fashion_mnist")
    f = root / "data/prepared/fashion_mnist/train.npz"
    np.savez(f, x=np.zeros((20, 1, 28, 28), np.uint8), y=np.zeros(20, np.int64))
    with pytest.raises(StageError, match="sha256 differs"):
        data.load_split(root, "fashion_mnist", "train")


def test_cifar10_from_fake_torchvision_folder(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches in torchvision's layout (md5 list pointed at the fakes)."""
    folder = tmp_path / "repo/data/raw/cifar10/cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train_list, test_list, want = [], [], {}
    for name in ["data_batch_1", "test_batch"]:
        imgs = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": imgs, "labels": labels}, f)
        md5 = hashlib.md5((folder / name).read_bytes()).hexdigest()
        (train_list if name.startswith("data") else test_list).append([name, md5])
        want[name] = imgs.reshape(4, 3, 32, 32)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    monkeypatch.setattr(tvd.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(tvd.CIFAR10, "test_list", test_list)
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()})
    root = tmp_path / "repo"
    data.prepare(root, "cifar10")
    x, _ = data.load_split(root, "cifar10", "train")
    np.testing.assert_array_equal(x, want["data_batch_1"])
    _matches_record(root, "cifar10")
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(StageError, match="cannot read cifar10"):
        data.prepare(root, "cifar10")


def test_digits_and_toys(tmp_path):
    for ds in ("digits", "gmm", "swiss_roll", "checkerboard"):
        data.download(tmp_path, ds)
        data.prepare(tmp_path, ds)
    x, y = data.load_split(tmp_path, "digits", "train")
    xt, _ = data.load_split(tmp_path, "digits", "test")
    assert x.shape == (1500, 1, 8, 8) and xt.shape == (297, 1, 8, 8) and x.dtype == np.uint8
    assert x.max() == 255 and set(np.unique(y)) == set(range(10))
    g, _ = data.load_split(tmp_path, "gmm", "train")
    assert g.shape == (data.TOY_SIZES["train"], 2) and g.dtype == np.float32
    radii = np.linalg.norm(g, axis=1)
    assert abs(np.median(radii) - 4.0) < 0.1  # the 8 components sit on the circle of radius 4
    # seeded: regenerating gives identical points
    again = tmp_path / "again"
    data.download(again, "gmm")
    data.prepare(again, "gmm")
    np.testing.assert_array_equal(g, data.load_split(again, "gmm", "train")[0])
    for ds in ("digits", "gmm", "swiss_roll", "checkerboard"):
        _matches_record(tmp_path, ds)


def test_missing_raw_folder_says_what_to_run(tmp_path):
    with pytest.raises(StageError, match="run `python -m pipeline download --dataset mnist`"):
        data.prepare(tmp_path, "mnist")


def test_synthetic_stand_in(tmp_path):
    """cifar10_synthetic: generated offline with CIFAR-10's shape and classes (balanced), the same bytes every time,
    and labelled synthetic in its raw folder and prepared manifest; the real dataset has no such label."""
    rec = names.dataset("cifar10_synthetic")
    assert rec.stand_in_for == "cifar10" and rec.class_names == names.dataset("cifar10").class_names
    for root in (tmp_path / "a", tmp_path / "b"):
        data.download(root, "cifar10_synthetic")
        data.prepare(root, "cifar10_synthetic")
        _matches_record(root, "cifar10_synthetic")
    x, y = data.load_split(tmp_path / "a", "cifar10_synthetic", "train")
    assert x.shape == (data.SYNTHETIC_SIZES["train"], 3, 32, 32) and np.bincount(y).tolist() == [200] * 10
    np.testing.assert_array_equal(x, data.load_split(tmp_path / "b", "cifar10_synthetic", "train")[0])
    per_class = np.stack([x[y == c].mean(axis=(0, 2, 3)) for c in range(10)])
    assert np.ptp(per_class, axis=0).max() > 50  # the classes differ in colour: a classifier can tell them apart
    manifest = json.loads((data.prepared_dir(tmp_path / "a", "cifar10_synthetic") / "manifest.json").read_text())
    assert manifest["synthetic"].startswith("SYNTHETIC data generated offline") and "CIFAR-10" in manifest["synthetic"]
    assert json.loads((data.raw_dir(tmp_path / "a", "cifar10_synthetic") / "SYNTHETIC.json").read_text())["synthetic"]
    assert data.synthetic_note("cifar10") is None
