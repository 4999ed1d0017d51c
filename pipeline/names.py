"""The names the params schema accepts, declared once. Each registry implements exactly its list and checks that at
import (data.py: datasets, sde.py: SDEs, predictors.py / correctors.py: PC samplers, likelihood.py: estimators,
sampling.py: PC orders, ALD step rules and sampling methods, fast_samplers.py: fast samplers), so `pipeline.config`
validates names without importing the math."""

IMAGE_DATASETS = ("fashion_mnist", "mnist", "cifar10", "celeba", "digits")
TOY_DATASETS = ("gmm", "swiss_roll", "checkerboard")  # 2-D points
DATASETS = IMAGE_DATASETS + TOY_DATASETS
SDES = ("vesde", "vpsde", "subvpsde")
PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")
CORRECTORS = ("langevin", "ald", "none")
PC_ORDERS = ("reference", "paper")
ALD_CONVENTIONS = ("paper", "reference")
BPD_ESTIMATORS = ("rademacher", "gaussian", "exact")
FAST_METHODS = ("heun", "dpm_solver", "ddim")  # fast_samplers.py
SAMPLING_METHODS = ("pc", "ode", "ald") + FAST_METHODS
TIME_GRIDS = ("edm", "logsnr", "uniform")  # fast samplers' time steps
DEFAULT_TIME_GRIDS = {"heun": "edm", "dpm_solver": "logsnr", "ddim": "uniform"}  # when sampling.time_grid is unset


def lookup(kind: str, registry: dict, name: str):
    """registry[name], or a ValueError that lists the known names."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {sorted(registry)}")
    return registry[name]


def check_registry(kind: str, implemented, declared: tuple) -> None:
    """Fail at import when a registry and its declared names differ (a name added in one place only)."""
    if set(implemented) != set(declared):
        raise ImportError(f"{kind} registry {sorted(implemented)} differs from pipeline.names {sorted(declared)}")
