"""The names the params schema accepts, declared once. Each registry implements exactly its list and checks that at
import (data.py: datasets, sde.py: SDEs, predictors.py / correctors.py: PC samplers, likelihood.py: estimators,
sampling.py: PC orders, ALD step rules and sampling methods, fast_samplers.py: fast samplers), so `pipeline.config`
validates names without importing the math."""
import re

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

# Suite, experiment (a params file's stem; a training-seed replica `<exp>-seed<s>`), dataset and sampler names: they
# become folder names (runs/<suite>/<exp>/samples/<sampler>, reports/<suite>, pipelines/<suite>/dvc.yaml) and words
# of shell commands (dvc.yaml's `cmd`), so nothing that can leave a folder ('/', '..') or end a command (';', ' ').
# Not a leading '-' either: `--sampler -x` is read as an option.
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
NAME_RULE = f"letters, digits, '_' or '-', not starting with '-' ({NAME_PATTERN})"


def name_problem(kind: str, name) -> str | None:
    """Why `name` cannot be a `kind` name (suite, experiment, dataset, sampler, curve), or None."""
    if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name):
        return None
    return f"{kind} name {name!r} must be {NAME_RULE}"


def lookup(kind: str, registry: dict, name: str):
    """registry[name], or a ValueError that lists the known names."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {sorted(registry)}")
    return registry[name]


def check_registry(kind: str, implemented, declared: tuple) -> None:
    """Fail at import when a registry and its declared names differ (a name added in one place only)."""
    if set(implemented) != set(declared):
        raise ImportError(f"{kind} registry {sorted(implemented)} differs from pipeline.names {sorted(declared)}")
