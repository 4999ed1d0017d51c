"""The `controllable` stage: inpainting / colorization grids from a checkpoint and prepared test images, written
atomically, deterministic, with the known pixels (or the gray level) kept; bad input exits 2 with one line."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_params
from pipeline.io import atomic
from pipeline.models import zoo as models
from pipeline.models.checkpoint import to_project_checkpoint
from pipeline.stages.controllable import NOT_APPLICABLE_GRAY, right_half_mask

N_IMAGES, SIZE, STEPS = 4, 8, 20


def _params(tmp_path, name, dataset, channels, tasks, sde="vpsde", **extra):
    raw = {"suite": "ctl", "seed": 0,
           "data": {"dataset": dataset, "image_size": SIZE, "num_channels": channels, "centered": sde != "vesde"},
           "model": {"name": "mlp", "hidden": 32, "num_layers": 2, "num_scales": 100},
           "training": {"sde": sde, "continuous": True},
           "sampling": {"method": "pc", "predictor": "euler_maruyama", "corrector": "none"},
           "eval": {"controllable": tasks, "controllable_images": N_IMAGES, "controllable_steps": STEPS, **extra}}
    f = tmp_path / "params" / f"{name}.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(yaml.safe_dump(raw))
    return f


def _prepared(root, dataset, channels, n=6):
    """A prepared test split of random uint8 images (the prepare stage's layout: npz + manifest with sha256)."""
    out = root / "data" / "prepared" / dataset
    out.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (n, channels, SIZE, SIZE), dtype=np.uint8)
    atomic.save_npz(out / "test.npz", x=x, y=np.zeros(n, np.int64))
    atomic.write_json(out / "manifest.json", {"dataset": dataset, "kind": "images",
                                              "splits": {"test": {"sha256": atomic.sha256(out / "test.npz")}}})
    return x


def _checkpoint(root, params_file):
    name, params = load_params(params_file)
    torch.manual_seed(0)
    net = models.build(params)
    f = root / "runs" / params.suite / name / "train" / "model.pt"
    f.parent.mkdir(parents=True)
    torch.save(to_project_checkpoint(params, net.state_dict(), None, 1), f)


def _setup(tmp_path, dataset="digits", channels=1, tasks=("inpainting",), sde="vpsde"):
    root = tmp_path / "root"
    x = _prepared(root, dataset, channels)
    f = _params(tmp_path, "exp", dataset, channels, list(tasks), sde)
    _checkpoint(root, f)
    return root, f, x


def _grid_rows(png, n, channels):
    """The PNG as (3 rows, n images, H, W, C) arrays: save_image pads every image by 2 pixels."""
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape == (3 * (SIZE + 2) + 2, n * (SIZE + 2) + 2, 3)
    cells = np.stack([np.stack([img[2 + r * (SIZE + 2): 2 + r * (SIZE + 2) + SIZE,
                                    2 + c * (SIZE + 2): 2 + c * (SIZE + 2) + SIZE] for c in range(n)]) for r in range(3)])
    return cells if channels == 3 else cells[..., :1]


def test_inpainting_keeps_the_left_half_and_writes_one_grid(tmp_path):
    root, f, x = _setup(tmp_path)
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    folder = root / "runs/ctl/exp/controllable"
    assert sorted(p.name for p in folder.iterdir()) == ["info.json", "inpainting.png", "provenance.json"]  # atomic: no temp files left
    info = json.loads((folder / "info.json").read_text())["tasks"]["inpainting"]
    assert info["status"] == "done" and info["num_images"] == N_IMAGES and info["num_steps"] == STEPS
    assert info["nfe"] == STEPS  # Euler-Maruyama, no corrector: one score evaluation per step
    assert (info["predictor"], info["corrector"]) == ("euler_maruyama", "none")
    assert info["mse_known"] < 1e-6 < info["mse_unknown"]
    cells = _grid_rows(folder / "inpainting.png", N_IMAGES, 1).astype(int)
    original, masked, completed = cells
    assert np.array_equal(original[..., 0], x[:N_IMAGES, 0])  # row 1: the first test images
    half = SIZE // 2
    assert np.abs(completed[:, :, :half] - original[:, :, :half]).max() <= 1  # known half kept (uint8 rounding)
    assert np.array_equal(masked[:, :, :half], original[:, :, :half])
    assert (masked[:, :, half:] == 128).all()  # hidden half drawn mid-gray


def test_same_seed_same_png(tmp_path):
    root, f, _ = _setup(tmp_path)
    png = root / "runs/ctl/exp/controllable/inpainting.png"
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    first = png.read_bytes()
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    assert png.read_bytes() == first


def test_colorization_keeps_the_gray_level_of_rgb_images(tmp_path):
    root, f, x = _setup(tmp_path, "cifar10", 3, ("inpainting", "colorization"))
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    folder = root / "runs/ctl/exp/controllable"
    assert sorted(p.name for p in folder.iterdir()) == ["colorization.png", "info.json", "inpainting.png", "provenance.json"]
    info = json.loads((folder / "info.json").read_text())["tasks"]["colorization"]
    assert info["status"] == "done" and info["mse_gray"] < 1e-6 < info["mse_color"]
    original, gray, _ = _grid_rows(folder / "colorization.png", N_IMAGES, 3).astype(int)
    assert np.array_equal(original.transpose(0, 3, 1, 2), x[:N_IMAGES])
    want = np.round(x[:N_IMAGES].mean(1)).astype(int)  # the gray row: channel mean on all three channels
    assert np.abs(gray - want[..., None]).max() <= 1


def test_colorization_of_one_channel_data_is_not_applicable(tmp_path):
    root, f, _ = _setup(tmp_path, tasks=("inpainting", "colorization"))
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    folder = root / "runs/ctl/exp/controllable"
    assert sorted(p.name for p in folder.iterdir()) == ["info.json", "inpainting.png", "provenance.json"]
    tasks = json.loads((folder / "info.json").read_text())["tasks"]
    assert tasks["colorization"] == {"status": NOT_APPLICABLE_GRAY}
    assert tasks["inpainting"]["status"] == "done"


def test_right_half_mask():
    m = right_half_mask((2, 1, 3, 5))
    assert m.shape == (1, 1, 3, 5) and m[0, 0].tolist() == [[1, 1, 0, 0, 0]] * 3


@pytest.mark.parametrize("what", ["no tasks", "no checkpoint", "no data", "unknown task"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, what):
    root, f, _ = _setup(tmp_path)
    raw = yaml.safe_load(f.read_text())
    if what == "no tasks":
        raw["eval"]["controllable"] = []
        f.write_text(yaml.safe_dump(raw))
        expect = f"error: {f}: eval.controllable: no tasks; set it to [inpainting]"
    elif what == "no checkpoint":
        (root / "runs/ctl/exp/train/model.pt").unlink()
        expect = f"error: {root / 'runs/ctl/exp/train/model.pt'}: model checkpoint missing"
    elif what == "no data":
        (root / "data/prepared/digits/test.npz").unlink()
        expect = f"error: {root / 'data/prepared/digits/test.npz'}: prepared data missing"
    else:
        raw["eval"]["controllable"] = ["outpainting"]
        f.write_text(yaml.safe_dump(raw))
        expect = (f"error: {f}: eval.controllable.0: Input should be 'inpainting', 'colorization' or "
                  "'class_conditional'")
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(expect), err
    assert not (root / "runs/ctl/exp/controllable").exists()
