"""The names the params schema accepts, declared once. Each registry implements exactly its list and checks that at
import (data.py: datasets, sde.py: SDEs, predictors.py / correctors.py: PC samplers, likelihood.py: estimators,
sde_samplers.py: PC orders and ALD step rules, samplers/method.py: sampling methods), so `pipeline.config`
validates names without importing the math.

A dataset is one `Dataset` record of DATASET_TABLE: every consumer (the params schema, the evaluator stage, the
controllable stage, the report) reads it; only the code that fetches and reads its files lives elsewhere
(`pipeline.io.data.LOADERS`, keyed by the same names)."""
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    """What the pipeline knows of a dataset, apart from its loader (pipeline.io.data.LOADERS[name])."""

    name: str  # NAME_PATTERN: data/raw/<name>, data/prepared/<name>, data/evaluator/<name>
    kind: str  # "images" (uint8 NCHW) or "points" (2-D float points): the prepared manifest's `kind`
    # the prepared arrays: images (N, channels, size, size); points (N, 2), which params must declare as
    # data.num_channels 1 and data.image_size 2 (checked by the schema)
    channels: int
    size: int
    display: str  # its name in reports
    labelled: bool = False  # class labels to learn: class-conditional sampling and the dataset classifier use them
    class_names: tuple[str, ...] | None = None  # the labels in order (torchvision's); None: the label numbers
    evaluator_epochs: int = 0  # epochs of the evaluator's dataset classifier (offline FD / KD / IS); 0: none
    # a stand-in generated offline, never a real dataset: the name of the dataset whose shape and classes it copies
    # (`make rehearse` uses it where that dataset is absent); reports and the prepared manifest say so
    stand_in_for: str | None = None

    def __post_init__(self):
        if self.kind not in ("images", "points"):
            raise ValueError(f"dataset {self.name}: kind {self.kind!r} is neither 'images' nor 'points'")
        if (self.evaluator_epochs or self.class_names) and not self.labelled:
            raise ValueError(f"dataset {self.name}: evaluator_epochs and class_names need labels (labelled=True)")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Evaluator epochs: enough for >= 90% test accuracy on Fashion-MNIST in about two CPU minutes. CelebA has no class
# labels here: its FD needs Inception.
DATASET_TABLE = {d.name: d for d in (
    Dataset("fashion_mnist", "images", 1, 28, "Fashion-MNIST", labelled=True, evaluator_epochs=4, class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    Dataset("mnist", "images", 1, 28, "MNIST", labelled=True, evaluator_epochs=2),
    Dataset("cifar10", "images", 3, 32, "CIFAR-10", labelled=True, evaluator_epochs=15, class_names=CIFAR10_CLASSES),
    Dataset("celeba", "images", 3, 64, "CelebA"),
    # coloured stripes, one orientation, frequency and colour per class, under CIFAR-10's class names: not CIFAR-10
    Dataset("cifar10_synthetic", "images", 3, 32, "synthetic stand-in for CIFAR-10 (not CIFAR-10)", labelled=True,
            evaluator_epochs=2, class_names=CIFAR10_CLASSES, stand_in_for="cifar10"),
    Dataset("digits", "images", 1, 8, "digits", labelled=True, evaluator_epochs=8),
    Dataset("gmm", "points", 1, 2, "2-D Gaussian mixture"),
    Dataset("swiss_roll", "points", 1, 2, "2-D Swiss roll"),
    Dataset("checkerboard", "points", 1, 2, "2-D checkerboard"),
)}


def _check_stand_ins() -> None:
    """A stand-in copies the kind, shape and classes of a real dataset of the table."""
    for d in DATASET_TABLE.values():
        real = DATASET_TABLE.get(d.stand_in_for) if d.stand_in_for else d
        if real is None or real.stand_in_for or (d.kind, d.channels, d.size, d.class_names) != (
                real.kind, real.channels, real.size, real.class_names):
            raise ImportError(f"dataset {d.name}: stand_in_for {d.stand_in_for!r} must name a real dataset of the same "
                              "kind, shape and classes")


_check_stand_ins()
IMAGE_DATASETS = tuple(n for n, d in DATASET_TABLE.items() if d.kind == "images")
TOY_DATASETS = tuple(n for n, d in DATASET_TABLE.items() if d.kind == "points")  # 2-D points
DATASETS = IMAGE_DATASETS + TOY_DATASETS
SDES = ("vesde", "vpsde", "subvpsde")
PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")
CORRECTORS = ("langevin", "ald", "none")
PC_ORDERS = ("reference", "paper")
ALD_CONVENTIONS = ("paper", "reference")
EMA_SCHEDULES = ("reference", "constant", "edm")  # model.ema_schedule (pipeline/core/ema.py)
BPD_ESTIMATORS = ("rademacher", "gaussian", "exact")
TIME_GRIDS = ("edm", "logsnr", "uniform")  # fast samplers' time steps


@dataclass(frozen=True)
class SamplingMethod:
    """What the params schema knows of a sampling method (`sampling.method`), as plain data, so `pipeline.config` checks
    a setting without importing the samplers. Its code is one module, pipeline/samplers/methods/<name>.py, registered
    in `pipeline.samplers.method.METHODS` (which must hold exactly the methods of this table)."""

    name: str
    keys: tuple[str, ...]  # the sampling.* keys it reads, besides COMMON_SAMPLING_KEYS
    sdes: tuple[str, ...] = SDES  # the training.sde values it runs on
    models: tuple[str, ...] = ("continuous", "discrete")  # the models it runs on (training.continuous true / false)
    required: tuple[str, ...] = ()  # keys it needs set (their default is None)
    limits: tuple[tuple[str, int, str | None], ...] = ()  # (key, largest value, only when this key is true; None: always)
    knob: str | None = "num_steps"  # the key an FD-vs-NFE curve sets per target NFE; None: adaptive (curves.ode_tols)
    any_score: bool = True  # samples with any score function (class-conditional guidance), not only the network's


# Every method reads the common keys. A key that the setting's method does not read is refused when set to anything
# but its default (pipeline.config.check_setting), except the keys of the default method: `samplers:` entries inherit
# `sampling:` (usually a PC sampler) and switch `method`, so PC keys carry over into an ODE or fast setting, unread.
COMMON_SAMPLING_KEYS = ("method", "compile", "cuda_graphs")
_FEW_STEPS = ("num_steps", "eps", "rho", "time_grid", "noise_removal")  # the few-step solvers' grid (fast_samplers.py)
SAMPLING_METHOD_TABLE = {m.name: m for m in (
    SamplingMethod("pc", ("predictor", "corrector", "snr", "n_steps_each", "noise_removal", "probability_flow",
                          "num_steps", "order", "eps")),
    SamplingMethod("ode", ("rtol", "atol", "eps", "ode_method", "noise_removal"), knob=None),
    SamplingMethod("ald", ("n_steps_each", "step_lr", "step_convention", "noise_removal"), sdes=("vesde",),
                   models=("discrete",), knob="n_steps_each", any_score=False),  # NCSN: a discrete VE model's levels
    SamplingMethod("heun", _FEW_STEPS + ("solver_order", "s_churn", "s_tmin", "s_tmax", "s_noise"),
                   required=("num_steps",), limits=(("solver_order", 2, None),)),
    SamplingMethod("dpm_solver", _FEW_STEPS + ("solver_order", "multistep", "lower_order_final"),
                   required=("num_steps",),
                   limits=(("solver_order", 2, "multistep"),)),
    SamplingMethod("ddim", _FEW_STEPS + ("eta",), sdes=("vpsde", "subvpsde"), required=("num_steps",)),
)}
DEFAULT_SAMPLING_METHOD = "pc"
SAMPLING_METHODS = tuple(SAMPLING_METHOD_TABLE)

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


def sampling_method(name: str) -> SamplingMethod:
    """The declaration of a sampling method, or a ValueError that lists the known names."""
    return lookup("sampling method", SAMPLING_METHOD_TABLE, name)


def dataset(name: str) -> Dataset:
    """The record of a dataset, or a ValueError that lists the known names."""
    return lookup("dataset", DATASET_TABLE, name)


def check_registry(kind: str, implemented, declared: tuple) -> None:
    """Fail at import when a registry and its declared names differ (a name added in one place only)."""
    if set(implemented) != set(declared):
        raise ImportError(f"{kind} registry {sorted(implemented)} differs from pipeline.names {sorted(declared)}")


class Registry(dict):
    """Name -> implementation, filled by the decorator `@REGISTRY.register(name)`. With `declared` (the names this
    module lists for it), `check()` at the end of the registering module fails at import when the two differ;
    `lookup(name)` raises a ValueError that lists the known names."""

    def __init__(self, kind: str, declared: tuple[str, ...] | None = None):
        super().__init__()
        self.kind, self.declared = kind, declared

    def register(self, name: str):
        def wrap(obj):
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj
        return wrap

    def check(self) -> None:
        check_registry(self.kind, self, self.declared or ())

    def lookup(self, name: str):
        return lookup(self.kind, self, name)
