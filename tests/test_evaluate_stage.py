"""The evaluate stage end to end on digits: classifier FD/KD/IS with error bars, the FD sanity (test split far
closer to train than noise is), Inception columns marked "not computed" without weights and computed with a
TorchScript stand-in of the same interface."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
import yaml
from test_inception import InceptionStandIn

from pipeline.cli import main
from pipeline.io import atomic, data
from pipeline.workflow import outputs

PARAMS = {"suite": "unit", "seed": 0, "data": {"dataset": "digits", "image_size": 8, "num_channels": 1},
          "model": {"name": "mlp"}, "eval": {"num_samples": 297, "num_seeds": 2, "batch_size": 100}}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data.download(root, "digits")
    data.prepare(root, "digits")
    assert main(["evaluator", "--dataset", "digits", "--root", str(root)]) == 0
    return root


def _samples(root, name: str, images: np.ndarray, seeds: int = 2):
    """Write `images` as the two seeds of sampler `name` (as the sample stage would), or as its one seed."""
    folder = root / outputs.paths("unit", "unit", "digits", name)["samples"]
    folder.mkdir(parents=True, exist_ok=True)
    per_seed = [images, images[::-1].copy()][:seeds]
    atomic.save_npz(folder / "samples.npz", images=np.stack(per_seed), nfe=np.ones(seeds))


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
    from pipeline.metrics.dataset_classifier import evaluator_features as features_of
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
    # one sampling seed: each FID is a scipy sqrtm of a 2048 x 2048 product, 10 s here (the seeds' error bars are
    # tested on the classifier's FD above)
    _samples(root, "pc", test_x, seeds=1)
    f = _params(tmp_path, inception_weights=str(weights), fid_mode="legacy_tensorflow", num_seeds=1)
    inc = _evaluate(root, f, "pc")["inception"]
    assert inc["status"] == "computed" and inc["mode"] == "legacy_tensorflow"
    assert inc["fid"]["n"] == 1 and inc["fid"]["mean"] >= 0 and inc["kid"]["mean"] is not None
    assert 1.0 <= inc["is"]["mean"] <= 1008
    assert any((root / "data/inception_ref/digits").glob("train-legacy_tensorflow-*.npz"))


# ---------------------------------------------------------------- Inception Score protocol (eval.is_splits)
def _class_logits(images: np.ndarray) -> np.ndarray:
    """Hand-made classifier: image i is certain (logit 60) of class = its first pixel."""
    return 60.0 * np.eye(8)[images.reshape(len(images), -1)[:, 0].astype(int)]


def _features(images: np.ndarray) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(len(images), 2))  # FD / KD inputs: irrelevant to the IS


def _is_samples() -> np.ndarray:
    """Two sampling seeds of 20 one-pixel 'images'. Seed 0: rows 0-9 alternate classes {0, 1}, rows 10-19 cycle
    {0..4}; seed 1: every row cycles {0..4}."""
    first = np.concatenate([np.tile(np.arange(2), 5), np.tile(np.arange(5), 2)])
    second = np.tile(np.arange(5), 4)
    return np.stack([first, second]).astype(np.uint8).reshape(2, 20, 1, 1, 1)


# IS of one-hot p(y|x): KL(p(y|x) || p(y)) = -log p(y = class of x), so IS = exp(mean over rows of -log p(class)).
# Seed 0, one split: p(y) = (7, 7, 2, 2, 2) / 20, IS = exp(-(14 log .35 + 6 log .1) / 20); seed 1: 5 classes, IS = 5.
IS_ONE_SPLIT = (math.exp(-(14 * math.log(0.35) + 6 * math.log(0.1)) / 20), 5.0)


@pytest.mark.parametrize("splits, per_seed, split_std", [
    (1, IS_ONE_SPLIT, None),
    # Two splits: seed 0 scores 2 (classes {0, 1}) and 5 (classes {0..4}): 3.5 ± 1.5 (population std, Salimans et
    # al.); seed 1 scores 5 and 5: 5 ± 0. split_std = mean over seeds = 0.75.
    (2, (3.5, 5.0), 0.75),
])
def test_classifier_is_follows_is_splits(tmp_path, monkeypatch, splits, per_seed, split_std):
    from pipeline.stages import evaluate

    monkeypatch.setattr(evaluate, "evaluator_features", lambda folder, x: (_features(x), _class_logits(x)))
    atomic.save_npz(tmp_path / "ref_stats.npz", mu=np.zeros(2), sigma=np.eye(2), subset=np.eye(2))
    rec = evaluate.dataset_classifier_metrics(tmp_path, _is_samples(), splits)["is"]
    assert rec["values"] == pytest.approx(list(per_seed), rel=1e-12)
    assert rec["mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert rec["std"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-12)  # over sampling seeds, like every metric
    assert rec["splits"] == splits and rec["protocol"] == evaluate.is_protocol(splits)
    assert rec["split_std"] == (None if split_std is None else pytest.approx(split_std, rel=1e-12))


def test_inception_is_follows_is_splits(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pipeline.config import Params
    from pipeline.stages import evaluate

    monkeypatch.setattr(evaluate, "resolve_inception_weights", lambda path: tmp_path / "w.pt")
    monkeypatch.setattr(evaluate, "load_inception", lambda weights, device: None)
    monkeypatch.setattr(evaluate, "inception_reference", lambda *a: (np.zeros(2), np.eye(2), np.eye(2)))
    monkeypatch.setattr(evaluate, "inception_features",
                        lambda x, **kw: (_features(x), _class_logits(x)))
    ctx = SimpleNamespace(params=Params(eval={"num_samples": 20, "is_splits": 2}))
    rec = evaluate.inception_metrics(ctx, _is_samples())["is"]
    assert rec["values"] == pytest.approx([3.5, 5.0], rel=1e-12) and rec["split_std"] == pytest.approx(0.75)
    assert rec["splits"] == 2 and "2 splits" in rec["protocol"]


def test_evaluate_stage_writes_the_is_protocol(root, tmp_path):
    """Through the CLI on digits: the classifier IS of each seed is the library's IS of the evaluator's logits with
    eval.is_splits splits."""
    from pipeline.metrics.dataset_classifier import evaluator_features
    from pipeline.metrics.inception_score import inception_score

    test_x, _ = data.load_split(root, "digits", "test")
    _samples(root, "pc", test_x)
    rec = _evaluate(root, _params(tmp_path, is_splits=3), "pc")["classifier"]["is"]
    expected = [inception_score(evaluator_features(root / "data/evaluator/digits", x)[1], splits=3)
                for x in (test_x, test_x[::-1].copy())]
    assert rec["values"] == pytest.approx([m for m, _ in expected], rel=1e-9)
    assert rec["split_std"] == pytest.approx(np.mean([s for _, s in expected]), rel=1e-9)
    assert rec["splits"] == 3 and "3 splits" in rec["protocol"]


def test_is_splits_above_num_samples_is_a_params_error(root, tmp_path, capsys):
    assert main(["evaluate", "--params", str(_params(tmp_path, num_samples=8, is_splits=10)), "--sampler", "pc",
                 "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval.is_splits" in err and "unit.yaml" in err


# ---------------------------------------------------------------- eval.feature_net
def test_feature_net_inception_without_weights_exits_2(root, tmp_path, capsys):
    test_x, _ = data.load_split(root, "digits", "test")
    _samples(root, "pc", test_x)
    out = root / outputs.paths("unit", "unit", "digits", "pc")["eval"]
    out.unlink(missing_ok=True)
    assert main(["evaluate", "--params", str(_params(tmp_path, feature_net="inception")), "--sampler", "pc",
                 "--root", str(root)]) == 2
    assert not out.exists()  # failed before any work, nothing written
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "eval.feature_net" in err and "PIPELINE_INCEPTION_WEIGHTS" in err and "feature_net: classifier" in err


def test_feature_net_is_recorded_and_classifier_runs_without_weights(root, tmp_path):
    test_x, _ = data.load_split(root, "digits", "test")
    _samples(root, "pc", test_x)
    ev = _evaluate(root, _params(tmp_path, feature_net="classifier"), "pc")
    assert ev["feature_net"] == "classifier" and ev["inception"]["status"] == "not computed: weights missing"
