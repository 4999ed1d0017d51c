"""The `classifier` stage and the controllable stage's class_conditional task: outputs written atomically, the grid
has one row per class, the accuracy in info.json is the evaluator's on the drawn samples, same seed same PNG; the DAG
runs the classifier beside train; bad input exits 2 with one line."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_params
from pipeline.io import atomic
from pipeline.metrics.dataset_classifier import evaluator_features, make_dataset_classifier, save_evaluator
from pipeline.models import zoo as models
from pipeline.models.checkpoint import to_project_checkpoint
from pipeline.workflow import dag

SIZE, K, PER_CLASS = 8, 3, 2


def _params(tmp_path, dataset="digits", **cc):
    raw = {"suite": "cc", "seed": 0,
           "data": {"dataset": dataset, "image_size": SIZE, "num_channels": 1, "centered": True},
           "model": {"name": "mlp", "hidden": 32, "num_layers": 2, "num_scales": 100},
           "training": {"sde": "vpsde", "continuous": True},
           "sampling": {"method": "pc", "predictor": "euler_maruyama", "corrector": "none", "num_steps": 10},
           "eval": {"controllable": ["class_conditional"],
                    "classifier": {"nf": 4, "ch_mult": [1, 2], "n_iters": 6, "batch_size": 8, "test_images": 9,
                                   "test_times": [0.1, 1.0]},
                    "class_conditional": {"samples_per_class": PER_CLASS, **cc}}}
    f = tmp_path / "params" / "exp.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(yaml.safe_dump(raw))
    return f


def _setup(tmp_path, **cc):
    """Prepared digits-shaped splits with K labels, an untrained evaluator and an untrained score checkpoint."""
    root = tmp_path / "root"
    out = root / "data" / "prepared" / "digits"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 30), ("test", 12)):
        x = rng.integers(0, 256, (n, 1, SIZE, SIZE), dtype=np.uint8)
        atomic.save_npz(out / f"{split}.npz", x=x, y=np.arange(n) % K)
        splits[split] = {"sha256": atomic.sha256(out / f"{split}.npz")}
    atomic.write_json(out / "manifest.json", {"dataset": "digits", "kind": "images", "splits": splits})
    ev = root / "data" / "evaluator" / "digits"
    ev.mkdir(parents=True)
    config = {"num_channels": 1, "image_size": SIZE, "num_classes": K, "width": 4, "feature_dim": 8}
    save_evaluator(ev, config, make_dataset_classifier(**config, generator=torch.Generator().manual_seed(1)).eval())
    f = _params(tmp_path, **cc)
    name, params = load_params(f)
    torch.manual_seed(0)
    ckpt = root / "runs" / "cc" / name / "train" / "model.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(to_project_checkpoint(params, models.build(params).state_dict(), None, 1), ckpt)
    return root, f


def _cells(png):
    """The PNG as (rows, columns, H, W) gray levels: save_image pads every image by 2 pixels."""
    img = np.asarray(Image.open(png).convert("L")).astype(int)
    rows, cols = (img.shape[0] - 2) // (SIZE + 2), (img.shape[1] - 2) // (SIZE + 2)
    assert img.shape == (rows * (SIZE + 2) + 2, cols * (SIZE + 2) + 2)
    return np.stack([np.stack([img[2 + r * (SIZE + 2): 2 + r * (SIZE + 2) + SIZE,
                                   2 + c * (SIZE + 2): 2 + c * (SIZE + 2) + SIZE] for c in range(cols)])
                     for r in range(rows)])


def test_classifier_stage_then_class_conditional_grid(tmp_path):
    root, f = _setup(tmp_path)
    run_dir = root / "runs/cc/exp"
    assert main(["classifier", "--params", str(f), "--root", str(root)]) == 0
    assert sorted(p.name for p in (run_dir / "classifier").iterdir()) == ["classifier.pt", "metrics.json", "provenance.json"]
    m = json.loads((run_dir / "classifier/metrics.json").read_text())
    assert m["num_classes"] == K and m["n_iters"] == 6 and m["test_images"] == 9
    assert set(m["test_accuracy"]) == {"0.1", "1"} and all(0 <= a <= 1 for a in m["test_accuracy"].values())
    assert m["chance_loss"] == pytest.approx(np.log(K))

    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    folder = run_dir / "controllable"
    assert sorted(p.name for p in folder.iterdir()) == ["class_conditional.png", "info.json", "provenance.json"]
    info = json.loads((folder / "info.json").read_text())["tasks"]["class_conditional"]
    assert info["status"] == "done" and info["num_classes"] == K and info["samples_per_class"] == PER_CLASS
    assert info["nfe"] == 10 and info["guidance_scale"] == 1.0 and info["method"] == "pc"
    assert info["classifier_test_accuracy"] == m["test_accuracy"]
    cells = _cells(folder / "class_conditional.png")
    assert cells.shape == (K, PER_CLASS, SIZE, SIZE)  # one row per class
    # the reported accuracy is the evaluator's on these samples: recomputed from the PNG's pixels (save_image rounds
    # like to_uint8, so the images are the same uint8 levels, up to ±1 at exact halves)
    _, logits = evaluator_features(root / "data/evaluator/digits", cells.reshape(-1, 1, SIZE, SIZE).astype(np.uint8))
    hits = logits.argmax(1) == np.repeat(np.arange(K), PER_CLASS)
    assert info["evaluator_accuracy"] == pytest.approx(hits.mean())
    assert info["evaluator_accuracy_per_class"] == pytest.approx(hits.reshape(K, PER_CLASS).mean(1).tolist())
    first = (folder / "class_conditional.png").read_bytes()
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    assert (folder / "class_conditional.png").read_bytes() == first


def test_fast_sampler_and_guidance_scale_are_used(tmp_path):
    root, f = _setup(tmp_path, guidance_scale=2.5,
                     sampling={"method": "dpm_solver", "multistep": True, "num_steps": 4})
    assert main(["classifier", "--params", str(f), "--root", str(root)]) == 0
    assert main(["controllable", "--params", str(f), "--root", str(root)]) == 0
    info = json.loads((root / "runs/cc/exp/controllable/info.json").read_text())["tasks"]["class_conditional"]
    assert (info["method"], info["nfe"], info["guidance_scale"]) == ("dpm_solver", 5, 2.5)  # 4 steps + denoising


def test_dag_runs_the_classifier_beside_train(tmp_path):
    root, f = _setup(tmp_path)
    e = dag.Experiment("exp", "params/exp.yaml", load_params(f)[1], yaml.safe_load(f.read_text()))
    stages = {s.kind: s for s in dag.experiment_stages(e, "cc")}
    clf, ctl = stages["classifier"], stages["controllable"]
    assert clf.name == "classifier-exp" and clf.cmd == "python -m pipeline classifier --params params/exp.yaml"
    assert clf.outs == ["runs/cc/exp/classifier"] and "data/prepared/digits" in clf.deps
    assert not any(d.startswith("runs/") for d in clf.deps)  # not the score model: it runs in parallel to train
    assert "pipeline/stages/classifier.py" in clf.deps and "pipeline/models/noise_classifier.py" in clf.deps
    assert {"runs/cc/exp/classifier", "data/evaluator/digits", "runs/cc/exp/train"} <= set(ctl.deps)
    assert "eval.classifier" in clf.params["params/exp.yaml"] and "model" not in clf.params["params/exp.yaml"]
    assert "eval.class_conditional" in ctl.params["params/exp.yaml"]
    assert "pipeline/models/noise_classifier.py" not in stages["train"].deps


@pytest.mark.parametrize("what", ["no classifier", "no evaluator", "ald sampler", "bad override", "bad time",
                                  "toy data", "classifier not requested"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, what):
    root, f = _setup(tmp_path)
    raw = yaml.safe_load(f.read_text())
    cmd = "controllable"
    if what == "no classifier":
        expect = f"error: {root / 'runs/cc/exp/classifier/classifier.pt'}: noise-conditional classifier missing; run"
    elif what == "no evaluator":
        assert main(["classifier", "--params", str(f), "--root", str(root)]) == 0
        capsys.readouterr()
        (root / "data/evaluator/digits/classifier.pt").unlink()
        expect = f"error: {root / 'data/evaluator/digits/classifier.pt'}: evaluator classifier missing; run"
    elif what == "ald sampler":
        raw["eval"]["class_conditional"]["sampling"] = {"method": "ald"}
        expect = f"error: {f}: eval.class_conditional.sampling.method: class-conditional sampling runs pc, ode"
    elif what == "bad override":
        raw["eval"]["class_conditional"]["sampling"] = {"num_step": 3}
        expect = f"error: {f}: eval.class_conditional.sampling.num_step: unknown key"
    elif what == "bad time":
        raw["eval"]["classifier"]["test_times"] = [0.0]
        cmd = "classifier"
        expect = f"error: {f}: eval.classifier.test_times: times must lie in (0, 1]"
    elif what == "toy data":
        raw["data"] = {"dataset": "gmm", "image_size": 2, "num_channels": 1}
        expect = f"error: {f}: eval.controllable: class_conditional needs a labelled image dataset; gmm has no classes"
    else:
        raw["eval"]["controllable"] = ["inpainting"]
        cmd = "classifier"
        expect = f"error: {f}: eval.controllable: the classifier serves class_conditional only"
    f.write_text(yaml.safe_dump(raw))
    assert main([cmd, "--params", str(f), "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(expect), err
    assert not (root / "runs/cc/exp/controllable").exists()


def test_report_controllable_table_shows_the_accuracy(tmp_path):
    """The class-conditional column appears only when some experiment asks for it, with the evaluator accuracy, the
    sampler and the noise classifier's test accuracy."""
    from pipeline.report.tables import controllable_table

    params = load_params(_params(tmp_path))[1]
    info = {"status": "done", "num_classes": 10, "samples_per_class": 8, "guidance_scale": 1.0, "method": "pc",
            "predictor": "euler_maruyama", "corrector": "none", "num_steps": 100, "nfe": 100, "seconds": 41.3,
            "evaluator_accuracy": 0.8625, "classifier_test_accuracy": {"0.01": 0.91, "0.5": 0.62}}
    exps = [{"experiment": "exp", "dataset": "digits", "params": params,
             "controllable": {"tasks": {"class_conditional": info}}}]
    t = controllable_table(exps)
    assert t.columns[-1] == "class-conditional (classifier guidance)" and len(t.columns) == 5
    assert t.rows[0][2:4] == ["not requested (eval.controllable)"] * 2
    cell = t.rows[0][4]
    assert cell.startswith("86.2% of 10 × 8 samples classed as requested (evaluator); euler_maruyama + none, 100 steps")
    assert "NFE 100" in cell and "guidance scale 1" in cell and "t=0.01: 91%, t=0.5: 62%" in cell
    plain = params.model_copy(update={"eval": params.eval.model_copy(update={"controllable": ["inpainting"]})})
    t = controllable_table([{**exps[0], "params": plain, "controllable": None}])
    assert len(t.columns) == 4  # no class-conditional column when nobody asks for it
