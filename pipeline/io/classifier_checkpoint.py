"""The noise-conditional classifier's checkpoint (runs/<suite>/<exp>/classifier/classifier.pt): its
`make_noise_classifier` config and weights, saved atomically and loaded with every failure turned into one StageError
line. Apart from `pipeline.io.checkpoint` so that the score-model stages do not depend on the classifier's code."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import StageError
from pipeline.io import atomic
from pipeline.models.noise_classifier import make_noise_classifier

CLASSIFIER_FILE = "classifier.pt"


def save_classifier(path: Path, config: dict, net: torch.nn.Module) -> None:
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save({"config": config, "weights": {k: v.cpu() for k, v in net.state_dict().items()}}, tmp)


def load_classifier(path: Path, device: str = "cpu") -> torch.nn.Module:
    """The classifier saved by `save_classifier`, in eval mode on `device`."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: noise-conditional classifier missing; run the classifier stage first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = make_noise_classifier(state["config"])
        net.load_state_dict(state["weights"])
    except Exception as e:  # noqa: BLE001  (a truncated file, a foreign pickle, a config that does not fit)
        raise StageError(f"{path}: not a readable classifier checkpoint ({type(e).__name__}); rerun the classifier "
                         "stage (delete the file first)") from None
    return net.to(device).eval()
