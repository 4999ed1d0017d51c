"""Error bars over training seeds (`training.seeds`): the DAG's replicas (names, commands, tracked keys; suites
without the key unchanged), the stage context of a replica, and the report's mean ± std over replicas from
synthetic metrics files. tests/test_dag.py: the DVC and Snakemake front ends agree on a seeded suite."""
import json
import math
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT

from pipeline.config import ParamsError
from pipeline.report import results as report
from pipeline.report import tables as rt
from pipeline.stages.common import load_context
from pipeline.workflow import dag


def _suite(root: Path, seeds=None, name: str = "tiny") -> Path:
    raw = yaml.safe_load((ROOT / "params/smoke.yaml").read_text())
    raw["suite"] = "unit"
    if seeds is not None:
        raw["training"]["seeds"] = seeds
    f = root / "params" / "unit" / f"{name}.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


def _by_name(root: Path) -> dict[str, dag.Stage]:
    return {s.name: s for s in dag.suite_stages(root, "unit")}


def test_replicas_stages_commands_and_tracked_keys(tmp_path):
    _suite(tmp_path, seeds=[3, 5])
    stages = _by_name(tmp_path)
    exp_stages = {n for n, s in stages.items() if s.kind not in ("download", "prepare", "evaluator", "report")}
    assert exp_stages == {f"{k}-tiny-seed{s}{v}" for s in (3, 5) for k, v in
                          [("train", ""), ("sample", "-pc"), ("evaluate", "-pc"), ("sample", "-ode"), ("evaluate", "-ode"),
                           ("likelihood", ""), ("controllable", "")]}
    train = stages["train-tiny-seed5"]
    assert train.cmd == "python -m pipeline train --params params/unit/tiny.yaml --training-seed 5"
    assert stages["evaluate-tiny-seed3-ode"].cmd == ("python -m pipeline evaluate --params params/unit/tiny.yaml "
                                                     "--training-seed 3 --sampler ode")
    assert train.outs == ["runs/unit/tiny-seed5/train"] and train.persist == ["runs/unit/tiny-seed5/snapshots"]
    keys = train.params["params/unit/tiny.yaml"]
    # the replica's seed is in its command; training.seeds is read by the DAG only: adding a seed reruns no replica
    assert "seed" not in keys and "training" not in keys and "training.seeds" not in keys
    assert {"data", "model", "optim", "training.n_iters", "training.sde", "training.batch_size"} <= set(keys)
    assert "seed" not in stages["sample-tiny-seed3-pc"].params["params/unit/tiny.yaml"]
    assert {"runs/unit/tiny-seed3/eval/pc.json", "runs/unit/tiny-seed5/eval/pc.json"} <= set(stages["report-unit"].deps)


def test_suite_without_training_seeds_is_unchanged(tmp_path):
    _suite(tmp_path)
    stages = _by_name(tmp_path)
    train = stages["train-tiny"]
    assert train.cmd == "python -m pipeline train --params params/unit/tiny.yaml"
    assert train.params["params/unit/tiny.yaml"] == ["seed", "data", "model", "training", "optim"]
    assert not any("seed" in n.removeprefix("train-tiny") for n in stages)


def test_replica_name_clash_and_bad_seeds(tmp_path):
    _suite(tmp_path, seeds=[3])
    _suite(tmp_path, name="tiny-seed3")
    with pytest.raises(ValueError, match="tiny-seed3"):
        dag.suite_stages(tmp_path, "unit")
    for bad in ([1, 1], [-1], []):
        with pytest.raises(ParamsError, match="training.seeds"):
            _suite(tmp_path / str(bad), seeds=bad)
            dag.suite_stages(tmp_path / str(bad), "unit")


def test_stage_context_of_a_replica(tmp_path):
    f = _suite(tmp_path, seeds=[3, 5])
    ctx = load_context(Namespace(params=str(f), set=[], root=str(tmp_path), training_seed=5))
    assert (ctx.experiment, ctx.params.seed) == ("tiny-seed5", 5)
    assert ctx.path("train") == tmp_path / "runs/unit/tiny-seed5/train"
    assert ctx.path("eval", "pc") == tmp_path / "runs/unit/tiny-seed5/eval/pc.json"
    plain = load_context(Namespace(params=str(f), set=[], root=str(tmp_path), training_seed=None))
    assert (plain.experiment, plain.params.seed) == ("tiny", 0)


def _stat(mean, std=0.1):
    return {"mean": mean, "std": std, "n": 2, "values": [mean - std, mean + std]}


def _write(root: Path, run: str, rel: str, obj: dict) -> None:
    f = root / "runs" / "unit" / run / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(obj))


def _eval(fd: float, is_: float, split_std: float | None = None) -> dict:
    return {"experiment": "x", "num_samples": 64, "num_seeds": 2, "nfe": _stat(100.0, 0.0), "feature_net": "classifier",
            "inception": {"status": "not computed: weights missing"}, "mlflow_run_id": f"run{fd:g}",
            "classifier": {"fd": _stat(fd), "kd": _stat(0.5), "is": {**_stat(is_), "splits": 1, "split_std": split_std,
                                                                      "protocol": "one split"}}}


def test_report_mean_and_std_over_training_seeds(tmp_path):
    _suite(tmp_path, seeds=[3, 5, 7])
    fds, iss = [10.0, 14.0, 15.0], [2.0, 2.5, 3.0]
    for seed, fd, is_ in zip((3, 5, 7), fds, iss):
        run = f"tiny-seed{seed}"
        for sampler in ("pc", "ode"):
            _write(tmp_path, run, f"eval/{sampler}.json", _eval(fd, is_))
        _write(tmp_path, run, "likelihood.json", {"bpd": {"mean": fd / 10, "stderr": 0.01}, "nfe": 50.0 + seed})
        _write(tmp_path, run, "train_metrics.json", {"step": 300, "seconds": 10.0, "mlflow_run_id": f"t{seed}"})
    (x,) = report.collect_experiments(tmp_path, "unit")
    assert x["experiment"] == "tiny" and x["training_seeds"] == [3, 5, 7]
    assert x["replicas"] == ["tiny-seed3", "tiny-seed5", "tiny-seed7"]
    fd = x["samplers"]["pc"]["eval"]["classifier"]["fd"]
    # mean of the replica means 13, sample std sqrt(((-3)^2 + 1^2 + 2^2) / 2) = sqrt(7)
    assert fd["mean"] == pytest.approx(13.0, rel=1e-12) and fd["std"] == pytest.approx(math.sqrt(7), rel=1e-12)
    assert fd["n"] == 3 and fd["over"] == "training seeds" and fd["values"] == fds
    is_ = x["samplers"]["pc"]["eval"]["classifier"]["is"]
    assert is_["mean"] == pytest.approx(2.5) and is_["std"] == pytest.approx(0.5) and is_["splits"] == 1
    assert "split_std" not in is_  # the error bar is over training seeds
    bpd = x["likelihood"]["bpd"]
    assert bpd["mean"] == pytest.approx(1.3) and bpd["stderr"] == pytest.approx(math.sqrt(0.07) / math.sqrt(3))
    assert x["likelihood"]["nfe"] == pytest.approx(55.0) and x["train"]["seconds"] == 30.0
    assert x["samplers"]["pc"]["samples"] == "runs/unit/tiny-seed3/samples/pc"  # figures: the first replica
    tabs = {t.key: t for t in rt.tables([x])}
    row = next(r for r in tabs["samplers"].rows if r[2].startswith("PC"))
    assert row[4] == f"13 ± {math.sqrt(7):.2g}"  # FD (classifier), 4 significant digits
    for key in ("table3", "samplers", "lineage"):
        assert "tiny: seeds 3, 5, 7" in tabs[key].note and "over training seeds" in tabs[key].note
    assert "run10, run14, run15" in [r[3] for r in tabs["lineage"].rows if r[1] == "evaluate (pc)"]


def test_report_of_a_partly_run_seeded_experiment_says_not_run(tmp_path):
    _suite(tmp_path, seeds=[3, 5])
    _write(tmp_path, "tiny-seed3", "eval/pc.json", _eval(10.0, 2.0))
    (x,) = report.collect_experiments(tmp_path, "unit")
    assert x["samplers"]["pc"]["eval"] is None  # one of two replicas evaluated: no mean over training seeds yet
    t3 = {t.key: t for t in rt.tables([x])}["table3"]
    assert "not run" in t3.rows[0]


def test_seeded_experiment_without_files(tmp_path):
    _suite(tmp_path, seeds=[1])
    (x,) = report.collect_experiments(tmp_path, "unit")
    assert x["train"] is None and x["likelihood"] is None
    assert all(s["eval"] is None for s in x["samplers"].values()) and x["replicas"] == ["tiny-seed1"]


def test_committed_suites_have_no_training_seeds():
    """The presets are single-seed: their DAG is what it was before the key existed."""
    for f in sorted((ROOT / "params").rglob("*.yaml")):
        assert "seeds" not in (yaml.safe_load(f.read_text()).get("training") or {}), f


def test_replica_stages_train_and_sample_in_their_own_folders(tmp_path, monkeypatch):
    """Through the CLI: `--training-seed` trains a different model (its seed: init and batches) into the replica's
    run folder, and its sample stage writes that replica's samples."""
    import torch

    from pipeline.cli import main
    from pipeline.io import data

    monkeypatch.setenv("PIPELINE_TRACKING", "off")
    data.download(tmp_path, "digits")
    data.prepare(tmp_path, "digits")
    f = _suite(tmp_path, seeds=[3, 5])
    sets = ["--set", "training.n_iters=4", "--set", "training.snapshot_freq=4", "--set", "model.hidden=32",
            "--set", "eval.num_samples=4", "--set", "eval.num_seeds=1", "--set", "sampling.num_steps=5",
            "--set", "training.snapshot_sampling=false"]
    weights, samples = {}, {}
    for seed in (3, 5):
        for stage in ("train", "sample"):
            assert main([stage, "--params", str(f), "--training-seed", str(seed), "--root", str(tmp_path), *sets]
                        + (["--sampler", "pc"] if stage == "sample" else [])) == 0
        run = tmp_path / f"runs/unit/tiny-seed{seed}"
        assert (run / "samples/pc/samples.npz").exists()
        weights[seed] = torch.load(run / "train/model.pt", map_location="cpu", weights_only=False)
        with np.load(run / "samples/pc/samples.npz") as z:
            samples[seed] = z["images"]
    assert not (tmp_path / "runs/unit/tiny").exists()
    assert _differ(weights[3], weights[5]) and not np.array_equal(samples[3], samples[5])


def _differ(a, b) -> bool:
    import torch

    if isinstance(a, dict):
        return any(_differ(a[k], b[k]) for k in a)
    return isinstance(a, torch.Tensor) and not torch.equal(a, b)
