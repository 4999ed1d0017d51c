"""Score networks by name: `build(params)`, `names()`, `count_parameters(net)`."""
from pipeline.models import mlp  # noqa: F401  (registers "mlp")
from pipeline.models.registry import build, count_parameters, names, register  # noqa: F401
