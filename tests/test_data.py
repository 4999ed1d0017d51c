"""Data stages on local files only: fake raw folders in torchvision's layout, digits, toys; corrupt input."""
import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torchvision.datasets as tvd

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


def test_missing_raw_folder_says_what_to_run(tmp_path):
    with pytest.raises(StageError, match="run `python -m pipeline download --dataset mnist`"):
        data.prepare(tmp_path, "mnist")
