"""The evaluate stage end to end on digits: classifier FD/KD/IS with error bars, the FD sanity (test split far
closer to train than noise is), Inception columns marked "not computed" without weights and computed with a
TorchScript stand-in of the same interface."""
import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from test_inception import InceptionStandIn

from pipeline import atomic, data, outputs
from pipeline.cli import main

PARAMS = {"suite": "unit", "seed": 0, "data": {"dataset": "digits", "image_size": 8, "num_channels": 1},
          "model": {"name": "mlp"}, "eval": {"num_samples": 297, "num_seeds": 2, "batch_size": 100}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data.download(root, "digits")
    data.prepare(root, "digits")
    assert main(["evaluator", "--dataset", "digits", "--root", str(root)]) == 0
    return root


def _samples(root, name: str, images: np.ndarray):
    """Write `images` as the two seeds of sampler `name` (as the sample stage would)."""
    folder = root / outputs.paths("unit", "unit", "digits", name)["samples"]
    folder.mkdir(parents=True, exist_ok=True)
    atomic.save_npz(folder / "samples.npz", images=np.stack([images, images[::-1].copy()]), nfe=np.array([1.0, 1.0]))


def _params(tmp_path, **eval_over):
    p = json.loads(json.dumps(PARAMS))
    p["eval"].update(eval_over)
    p["samplers"] = {"noise": {"method": "ode"}}
    f = tmp_path / "unit.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


def _evaluate(root, f, sampler):
    assert main(["evaluate", "--params", str(f), "--sampler", sampler, "--root", str(root)]) == 0
    return json.loads((root / outputs.paths("unit", "unit", "digits", sampler)["eval"]).read_text())


def test_classifier_metrics_and_fd_sanity(root, tmp_path):
    ev = json.loads((root / "data/evaluator/digits/metrics.json").read_text())
    assert ev["test_accuracy"] > 0.9
    test_x, _ = data.load_split(root, "digits", "test")
    _samples(root, "pc", test_x)
    _samples(root, "noise", np.random.default_rng(0).integers(0, 256, test_x.shape).astype(np.uint8))
    f = _params(tmp_path)
    real, noise = _evaluate(root, f, "pc"), _evaluate(root, f, "noise")
    fd_real, fd_noise = real["classifier"]["fd"]["mean"], noise["classifier"]["fd"]["mean"]
    assert fd_real * 20 < fd_noise, (fd_real, fd_noise)
    assert real["classifier"]["is"]["mean"] > 2 * noise["classifier"]["is"]["mean"]
    assert real["classifier"]["fd"]["n"] == 2 and real["classifier"]["fd"]["std"] is not None
    assert real["inception"]["status"] == "not computed: weights missing"
    assert "PIPELINE_INCEPTION_WEIGHTS" in real["inception"]["how"]


def test_halves_of_the_training_set_are_close(root):
    from pipeline.metrics.classifier import evaluator_features as features_of
    from pipeline.metrics.distances import frechet_distance

    x, _ = data.load_split(root, "digits", "train")
    feats, _ = features_of(root / "data/evaluator/digits", x)
    noise, _ = features_of(root / "data/evaluator/digits", np.random.default_rng(1).integers(0, 256, x[:750].shape).astype(np.uint8))
    half = frechet_distance(feats[:750], feats[750:])
    assert half * 20 < frechet_distance(noise, feats[750:])  # measured: 1.6 vs 80


def test_inception_metrics_with_a_weights_file(root, tmp_path):
    with torch.random.fork_rng(devices=[]):
        module = InceptionStandIn().eval()
    weights = tmp_path / "inception-2015-12-05.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(module).save(str(weights))
    test_x, _ = data.load_split(root, "digits", "test")
    _samples(root, "pc", test_x)
    f = _params(tmp_path, inception_weights=str(weights), fid_mode="legacy_tensorflow")
    inc = _evaluate(root, f, "pc")["inception"]
    assert inc["status"] == "computed" and inc["mode"] == "legacy_tensorflow"
    assert inc["fid"]["n"] == 2 and inc["fid"]["mean"] >= 0 and inc["kid"]["mean"] is not None
    assert 1.0 <= inc["is"]["mean"] <= 1008
    assert any((root / "data/inception_ref/digits").glob("train-legacy_tensorflow-*.npz"))
