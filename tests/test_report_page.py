"""The report as a reviewer reads it (issue 16), on an offline suite shaped like the default one (every stage run,
no Inception weights) and on the cifar10 layout: a metric no row has said once per table, the summary (what ran,
hardware, time, headline, what is not comparable), the training-data grid beside the samples, the loss curves with the
EMA evaluation loss, error bars against NFE, and index.html measured in headless Chromium at 1280 and 800 px with its
preview.png (skipped where Chromium is not installed)."""
import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import test_report
import yaml
from conftest import ROOT
from PIL import Image
from test_report import _eval, _png, _row, _tables

from pipeline.config import load_params
from pipeline.io import atomic, hardware
from pipeline.report import browser, figures
from pipeline.report import results as report
from pipeline.report import summary as report_summary
from pipeline.report import tables as rt
from pipeline.stages.report import build, real_grid
from pipeline.stages.train import loss_csv

suite_root = test_report.suite_root  # the cifar10 suite's fixture, shared

# --- an offline suite as the default one runs it: every stage done, no Inception weights ---------------------------
HW = {"cpu": "Test CPU 9000", "cpu_count": 2, "gpu": None, "gpu_count": 0, "processes": 1, "torch": "2.99.0",
      "cuda": None, "python": "3.11.7", "platform": "Linux"}
FM = ["ddpmpp_cont_subvp", "ddpmpp_cont_vp", "ncsn", "ncsnpp_cont"]


def _prepared(root: Path, dataset: str, n: int = 100, size: int = 28) -> np.ndarray:
    """A prepared training split of n images, each a different uint8 constant (so the chosen indices are visible)."""
    x = np.broadcast_to((np.arange(n, dtype=np.uint8) * 2)[:, None, None, None], (n, 1, size, size)).copy()
    folder = root / "data/prepared" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=x, y=np.zeros(n, np.int64))
    split = {"count": n, "dtype": "uint8", "shape": list(x.shape), "sha256": atomic.sha256(folder / "train.npz")}
    (folder / "manifest.json").write_text(json.dumps({"dataset": dataset, "kind": "images", "splits": {"train": split}}))
    return x


@pytest.fixture
def fm_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_TRACKING", "off")
    root = tmp_path / "fmrepo"
    (root / "params/fm").mkdir(parents=True)
    for name in FM:
        raw = yaml.safe_load((ROOT / f"params/fmnist/{name}.yaml").read_text())
        (root / f"params/fm/{name}.yaml").write_text(yaml.safe_dump({**raw, "suite": "fm"}))
    for i, name in enumerate(FM):
        run = root / "runs/fm" / name
        _, p = load_params(root / f"params/fm/{name}.yaml")
        for k, sampler in enumerate(p.sampler_settings()):
            _eval(root, "fm", name, sampler, 100 + 10 * k, fd=(50.0 + i, 1.0), cis=(4.0, 0.1), seconds=3.0)
            info = {"seconds": 20.0, "num_samples": p.eval.num_samples, "num_seeds": p.eval.num_seeds, "hardware": HW}
            (run / "samples" / sampler).mkdir(parents=True)
            (run / "samples" / sampler / "info.json").write_text(json.dumps(info))
            _png(run / "samples" / sampler / "grid.png", (30 + 40 * i, 90, 10 * k))
        (run / "train_metrics.json").write_text(json.dumps({"step": 1000, "seconds": 100.0, "ema_eval_loss": 0.5,
                                                           "hardware": HW, "mlflow_run_id": None}))
        (run / "loss.csv").write_text(loss_csv([(s, 2.0 / s) for s in range(1, 201)], [(100, 0.03), (200, 0.02)]))
    (root / "runs/fm/ddpmpp_cont_subvp/likelihood.json").write_text(
        json.dumps({"bpd": {"mean": 3.71, "stderr": 0.07}, "nfe": 62.0, "seconds": 50.0}))
    (root / "runs/fm/ddpmpp_cont_vp/likelihood.json").write_text(
        json.dumps({"bpd": {"mean": 3.85, "stderr": 0.06}, "nfe": 60.0, "seconds": 50.0}))
    (root / "data/evaluator/fashion_mnist").mkdir(parents=True)
    (root / "data/evaluator/fashion_mnist/metrics.json").write_text(json.dumps({"seconds": 40.0, "test_accuracy": 0.9}))
    _prepared(root, "fashion_mnist")
    return root


def test_a_metric_no_row_has_is_said_once_per_table_and_its_columns_dropped(fm_root):
    tabs = _tables(fm_root, "fm")
    cells = [c for t in tabs.values() for r in t.rows for c in r]
    assert not any("weights missing" in c or "not computed" in c for c in cells)  # in no cell ...
    # the paper's dataset: in the headers only (the claims table's "paper's evidence" column quotes the papers)
    assert not any("CIFAR-10" in c or "not comparable" in c for t in tabs.values() if t.key != "claims"
                   for r in t.rows for c in r)
    for key in ("table3", "table2", "ncsn", "samplers"):
        t = tabs[key]
        assert len(t.above) == 1, key  # ... but once above each table, with the fix
        assert "PIPELINE_INCEPTION_WEIGHTS" in t.above[0] and "eval.inception_weights" in t.above[0], key
        ours_cols = [c for c, g in zip(t.md_columns(), _group_of(t)) if g == "ours"]
        assert not any("FID" in c or "KID" in c for c in ours_cols), (key, ours_cols)
    assert not any("Inception" in c for c in tabs["samplers"].columns)
    t3 = tabs["table3"]
    assert _row(t3, "ncsnpp_cont")[4:] == ["53.00 ± 1.00", "4.00 ± 0.10", "2.38", "9.83"]  # the paper's value stays
    assert _row(t3, "ncsn")[4:] == ["52.00 ± 1.00", "4.00 ± 0.10", "25.32", "8.87 ± 0.12"]
    t2 = tabs["table2"]
    assert _row(t2, "ddpmpp_cont_subvp") == ["DDPM++ cont. (sub-VP)", "ddpmpp_cont_subvp", "3.71 ± 0.07", "62",
                                             "50.00 ± 1.00", "110", "3.02", "3.16"]
    assert t2.columns[4] == "FD (ODE) ↓" and [g[1] for g in t2.groups][1:] == ["ours: Fashion-MNIST", "paper: CIFAR-10"]
    md = report.table_markdown(t3)
    assert md.count("PIPELINE_INCEPTION_WEIGHTS") == 1 and md.index("> FID / IS") < md.index("| model (paper)")


def _group_of(t):
    return [short for short, _, span in t.groups for _ in range(span)]


def test_summary_says_what_ran_where_how_long_and_what_is_not_comparable(fm_root):
    exps = report.collect_experiments(fm_root, "fm")
    lines, head, caveats = report_summary.summary(exps, report.collect_datasets(fm_root, exps))
    what, hw, time = (v for _, v in lines)
    assert what.startswith("4 of 4 experiments trained on Fashion-MNIST (28×28×1, 100 training images) for 1,000 steps")
    assert "11 of 11 sampler runs sampled and evaluated (200 samples × 5 seeds each)" in what
    assert "bits/dim for 2 of 2" in what and "inpainting" not in what  # no controllable output in the fixture
    assert hw == "Test CPU 9000 (2 CPUs), no GPU; torch 2.99.0."
    # 4 x 100 s train, 11 x 20 s sample, 11 x 3 s evaluate, 2 x 50 s likelihood, 40 s dataset classifier
    assert time.startswith("793 s (13.2 min) of stage time: train 400 s, sample 220 s, evaluate 33 s, likelihood 100 s, "
                           "dataset classifier 40 s.")
    assert head.columns[-1] == "paper (CIFAR-10, Inception-v3)"
    row = next(r for r in head.rows if r[0] == "ddpmpp_cont_subvp")
    assert head.columns[1] == "training"  # one dataset, named in "What ran": no data column
    assert row[1] == "1,000 steps × batch 32" and row[4] == "FD 50.00 ± 1.00 (classifier, 5 seeds); 3.71 ± 0.07 bits/dim"
    assert row[5] == "DDPM++ cont. (sub-VP): FID 2.61"
    assert [c.split(":")[0] for c in caveats] == ["Dataset", "Metric", "Sample count", "Checkpoint"]
    assert "Fashion-MNIST" in caveats[0] and "50,000" in caveats[2]
    # outputs of an older run (no hardware recorded) and a GPU machine: both said, with the stages on each
    (fm_root / "runs/fm/ncsn/train_metrics.json").write_text(json.dumps({"step": 600, "seconds": 10.0}))
    info = fm_root / "runs/fm/ncsnpp_cont/samples/pc/info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "hardware": {**HW, "gpu": "NVIDIA H200", "gpu_count": 1}}))
    assert report_summary.hardware(report.collect_experiments(fm_root, "fm")) == (
        "Test CPU 9000 (2 CPUs), no GPU; torch 2.99.0 (sample, train stages); Test CPU 9000 (2 CPUs), 1 × NVIDIA H200; "
        "torch 2.99.0 (sample stages); not recorded by 1 stage output (written before the stages recorded it).")


def test_summary_before_anything_ran(suite_root):
    shutil.rmtree(suite_root / "runs")
    exps = report.collect_experiments(suite_root, "cifar10")
    lines, head, _ = report_summary.summary(exps, report.collect_datasets(suite_root, exps))
    what, hw, time = (v for _, v in lines)
    assert what.startswith("nothing yet: 5 experiments configured") and "previews the layout" in what
    assert hw == "no stage has run yet." and time == "no stage has run yet."
    assert all(r[4] == "not run" for r in head.rows)
    assert report_summary.not_comparable(exps) == ["Nothing has run yet, so there is no number to compare."]


def test_training_data_grid_is_deterministic_and_shaped_like_the_sample_grids(fm_root, tmp_path):
    x = _prepared(fm_root, "fashion_mnist")  # 100 images, image i filled with 2 i
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    caption = real_grid(fm_root, "fashion_mnist", a, 64)
    real_grid(fm_root, "fashion_mnist", b, 64)
    assert a.read_bytes() == b.read_bytes() and "64 images of the Fashion-MNIST training split (100)" in caption
    img = np.asarray(Image.open(a).convert("L"))
    assert img.shape == (8 * 30 + 2, 8 * 30 + 2)  # torchvision's grid: 8 per row, 2 px padding, like grid.png
    idx = np.sort(np.random.default_rng(0).choice(100, 64, replace=False))
    tiles = [int(img[2 + 30 * (i // 8) + 14, 2 + 30 * (i % 8) + 14]) for i in range(64)]
    assert tiles == [int(x[i, 0, 0, 0]) for i in idx]  # the drawn training images, in index order


def test_report_shows_each_experiments_samples_beside_the_training_data(fm_root, monkeypatch):
    monkeypatch.setenv(browser.ENV_VAR, "off")
    built = build(fm_root, "fm", fm_root / "out")
    real = [f for f in built["figures"] if f["kind"] == "real"]
    assert [(f["dataset"], f["file"]) for f in real] == [("fashion_mnist", "real-fashion_mnist.png")]
    page = (fm_root / "out/index.html").read_text()
    block = page[page.index("<div class='cmp'>"):]
    assert block.index("real-fashion_mnist.png") < block.index("samples-ddpmpp_cont_subvp-ode.png")
    assert all(f"<h3>{name}</h3>" in block for name in FM)
    md = (fm_root / "out/README.md").read_text()
    assert "| ncsnpp_cont | ![training data](figures/real-fashion_mnist.png) | ![" in md


def test_loss_curve_with_ema_evaluation_and_its_figure(fm_root, tmp_path):
    c = figures.read_curve(fm_root / "runs/fm/ncsn/loss.csv")
    assert len(c["train"]) == 200 and c["eval"] == [(100, 0.03), (200, 0.02)]
    assert figures.read_curve(tmp_path / "absent.csv") == {"train": [], "eval": []}
    assert figures.read_curve(_write(tmp_path / "old.csv", "step,loss\n1,0.5\n2,0.4\n")) == \
        {"train": [(1, 0.5), (2, 0.4)], "eval": []}  # loss.csv written before the EMA column
    out = tmp_path / "loss.png"
    figures.loss_plot(out, {n: {**c, "final": 0.02, "ylabel": "loss", "title": n} for n in ("a", "b", "c")})
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[:2] == (2 * 330, 2 * 520)  # 3 experiments: 2 x 2 panels
    orange = np.abs(img.astype(int) - (255, 127, 14)).sum(-1) < 30
    assert orange.sum() > 50  # the EMA evaluation curve is drawn


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_quality_against_nfe_has_error_bars_in_both_directions(fm_root):
    _, pts = rt.nfe_points(report.collect_experiments(fm_root, "fm"))
    assert {(p["std"], p["nfe_std"], p["seeds"]) for p in pts} == {(1.0, 0.0, 5)}


def test_hardware_is_recorded():
    import torch

    h = hardware.describe(processes=2)
    assert h["cpu"] and h["cpu"] != "unknown" and h["torch"] == torch.__version__ and h["processes"] == 2
    assert (h["gpu"] is None) == (not torch.cuda.is_available())


# --- headless Chromium --------------------------------------------------------------------------------------------
def _chromium():
    exe = browser.find()
    if not exe:
        pytest.skip("Chromium is not installed (apt-get install chromium): the rendering check needs it")
    return exe


def test_browser_probe_catches_what_a_reader_would_see(tmp_path):
    """The probe itself: a wide table, a page wider than the window, a broken image and a console error are caught."""
    exe = _chromium()
    page = tmp_path / "bad.html"
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "png")
    ok_png = base64.b64encode(buf.getvalue()).decode()
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                    "<div class='tw' style='overflow-x:auto'><table id='wide'><tr><td style='min-width:1500px'>x</td>"
                    "</tr></table></div><div style='width:1400px'>wide</div>"
                    f"<img src='missing.png'><img src='data:image/png;base64,{ok_png}'>"
                    "<script>console.error('boom')</script></body></html>")
    c = browser.check(page, 1280, exe=exe)
    assert c["scroll_width"] > c["inner_width"] == 1280
    assert [t["overflow"] > 200 for t in c["tables"]] == [True] and c["tables"][0]["id"] == "wide"
    assert (c["images"], c["images_loaded"]) == (2, 1) and "boom" in c["console_errors"]
    assert any("missing.png" in e for e in c["console_errors"])
    assert not list(tmp_path.glob(".probe-*"))  # the probe copy is removed


@pytest.mark.parametrize("suite", ["cifar10", "fm"])
def test_html_renders_in_headless_chromium(suite, suite_root, fm_root, tmp_path):
    exe = _chromium()
    root = suite_root if suite == "cifar10" else fm_root
    built = build(root, suite, tmp_path / "rep")
    out = tmp_path / "rep"
    checks = json.loads((out / "render_check.json").read_text())
    assert checks["browser"] == browser.version(exe) and [c["width"] for c in checks["checks"]] == [1280, 800]
    n_img = len(built["figures"])
    for c in checks["checks"]:
        assert c["scroll_width"] <= c["inner_width"] == c["width"], c  # no horizontal scroll at 1280 nor 800 px
        assert (c["images"], c["images_loaded"], c["broken_images"]) == (n_img, n_img, []), c
        assert c["console_errors"] == [], c
    wide = checks["checks"][0]
    assert [t["id"] for t in wide["tables"] if t["overflow"]] == [], wide["tables"]  # every table fits at 1280 px
    md = (out / "README.md").read_text()
    assert "![preview: the top of index.html](preview.png)" in md and "at 1280 px: page 1280 px wide" in md
    shot = np.asarray(Image.open(out / "preview.png").convert("RGB"))
    assert shot.shape == (1800, 1280, 3) and len({tuple(c) for c in shot.reshape(-1, 3)[::7]}) > 50
    page = (out / "index.html").resolve()
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") == len(built["tables"]) + 1  # + the summary's headline table
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom)) == n_img
    if suite == "cifar10":
        assert "Variance Exploding SDE (SMLD)" in dom and "pc: 3.30 ± 0.02; paper 3.24 ± 0.02; Δ +0.06" in dom
        big = np.asarray(Image.open(io.BytesIO(_shot(exe, page, tmp_path))).convert("RGB"))
        for rgb in [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]:  # every embedded grid was decoded
            assert (np.abs(big.astype(int) - rgb).sum(-1) == 0).any(), rgb


def _shot(exe, page, tmp_path) -> bytes:
    shot = tmp_path / "full.png"
    assert browser.screenshot(page, shot, 1280, 6000, exe=exe)
    return shot.read_bytes()
