"""Every score network by name: importing this module registers them all (`registry.register`); `build(params)`,
`check_params`, `names()`, `count_parameters(net)`."""
from pipeline.models import ddpm, mlp, refinenet, unet  # noqa: F401  (register "ddpm", "mlp", "ncsn", "ncsnv2", "ncsnpp")
from pipeline.models.registry import build, check_params, count_parameters, names, register  # noqa: F401
