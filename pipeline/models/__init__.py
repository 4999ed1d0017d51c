"""Score networks by name: `build(params)`, `names()`, `count_parameters(net)`, `load(path)` (a project checkpoint)."""
from pipeline.models import ddpm, mlp, refinenet, unet  # noqa: F401  (register "ddpm", "mlp", "ncsn", "ncsnv2", "ncsnpp")
from pipeline.models.checkpoint import CheckpointError, load, to_project_checkpoint  # noqa: F401
from pipeline.models.registry import build, check_params, count_parameters, names, register  # noqa: F401
