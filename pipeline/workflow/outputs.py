"""Where each stage's inputs and outputs live, relative to the repository root: data/<kind>/<dataset>,
runs/<suite>/<experiment>/..., reports/<suite>. The DAG and the stages both read these paths from here."""
from __future__ import annotations


def replica_name(exp: str, seed: int) -> str:
    """The run name of experiment `exp` trained with training seed `seed` (`training.seeds`): its run folder
    runs/<suite>/<exp>-seed<seed> and DAG stage names (train-<exp>-seed<seed>, ...)."""
    return f"{exp}-seed{seed}"


def run_dir(suite: str, exp: str) -> str:
    return f"runs/{suite}/{exp}"


def paths(suite: str, exp: str, dataset: str, sampler: str | None = None) -> dict[str, str]:
    r = run_dir(suite, exp)
    p = {
        "raw": f"data/raw/{dataset}",
        "prepared": f"data/prepared/{dataset}",
        "evaluator": f"data/evaluator/{dataset}",
        "train": f"{r}/train",
        "snapshots": f"{r}/snapshots",
        "train_metrics": f"{r}/train_metrics.json",
        "loss_curve": f"{r}/loss.csv",
        "likelihood": f"{r}/likelihood.json",
        "controllable": f"{r}/controllable",
        "classifier": f"{r}/classifier",  # the noise-conditional classifier; the short name kept for compatibility
        "report": f"reports/{suite}",
        "ckpts": f"{r}/train/ckpts",
        "curve_nfe": f"{r}/curves/nfe.json",
        "curve_ckpt": f"{r}/curves/ckpt.json",
    }
    if sampler:
        p["samples"] = f"{r}/samples/{sampler}"
        p["eval"] = f"{r}/eval/{sampler}.json"
    return p


def model_file(suite: str, exp: str) -> str:
    return f"{paths(suite, exp, '')['train']}/model.pt"
