"""Experiment parameters: the schema of `params/*.yaml` (pydantic), and `--set` override parsing.

Group and key names follow score_sde_pytorch's `configs/` (data.*, model.*, training.*, sampling.*, eval.*, optim.*).
Name lists come from `pipeline.names`, which the registries implement. The check that needs the model registry (a
known model name that builds) is `pipeline.models.zoo.check_params`, run by the DAG generator and the train stage.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.names import (
    ALD_CONVENTIONS,
    BPD_ESTIMATORS,
    COMMON_SAMPLING_KEYS,
    CORRECTORS,
    DATASET_TABLE,
    DATASETS,
    DEFAULT_SAMPLING_METHOD,
    EMA_SCHEDULES,
    PC_ORDERS,
    PREDICTORS,
    SAMPLING_METHOD_TABLE,
    SDES,
    TIME_GRIDS,
    TOY_DATASETS,
    name_problem,
    sampling_method,
)

# `seed` and `training.seeds`: non-negative and below 2**31. The seeding scheme (pipeline/core/rng.py) hashes the seed's
# text, so any integer works there; torch.manual_seed (weight initialisation) takes < 2**64. 2**31 keeps a seed exact
# in JSON, MLflow and any signed 32-bit seed API (NumPy's legacy seed, JAX's PRNGKey of the reference code).
SEED_LIMIT = 2 ** 31
# eval.num_samples (and the curves' samples per point): the papers' FID uses 50,000; the sample stage holds all samples
# of a seed in memory (1,000,000 CIFAR-10 images are 3 GB of uint8).
MAX_SAMPLES = 1_000_000


def _check_seed(v: int) -> int:
    if not 0 <= v < SEED_LIMIT:
        raise ValueError(f"a seed is an integer from 0 to {SEED_LIMIT - 1} (2**31 - 1), got {v}")
    return v


def _check_num_samples(v: Optional[int]) -> Optional[int]:
    if v is not None and v > MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES:,} samples (the papers' FID uses 50,000), got {v}")
    return v


Samples = Annotated[int, AfterValidator(_check_num_samples)]  # a sample count: at most MAX_SAMPLES


def _check_names(kind: str, names) -> None:
    for name in names:
        problem = name_problem(kind, name)
        if problem:
            raise ValueError(problem)


def _names_of(kind: str) -> AfterValidator:
    """A field's check that its value (one name, a list of names, or a dict keyed by names) holds `kind` names."""

    def check(v):
        _check_names(kind, [v] if isinstance(v, str) else v)
        return v

    return AfterValidator(check)


Seed = Annotated[int, AfterValidator(_check_seed)]  # 0 <= seed < SEED_LIMIT


class ParamsError(Exception):
    """Bad params: carries the file, the dotted key and what was expected (printed as one line)."""

    def __init__(self, path: str, key: str, message: str):
        self.path, self.key, self.message = path, key, message
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class DataConfig(_Block):
    dataset: Literal[DATASETS] = "fashion_mnist"  # type: ignore[valid-type]
    image_size: int = Field(28, ge=1, le=1024)
    num_channels: int = Field(1, ge=1, le=4)
    centered: bool = True  # True: data in [-1, 1]; False: [0, 1]
    random_flip: bool = False
    uniform_dequantization: bool = False
    max_train: Optional[int] = Field(None, ge=1)  # cap the training split (CPU suites)


class ModelConfig(_Block):
    name: str = "ddpmpp"
    sigma_min: float = Field(0.01, gt=0)
    sigma_max: float = Field(50.0, gt=0)
    num_scales: int = Field(1000, ge=1)
    beta_min: float = Field(0.1, gt=0)
    beta_max: float = Field(20.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    embedding_type: Literal["fourier", "positional"] = "positional"
    scale_by_sigma: bool = False
    ema_rate: float = Field(0.9999, ge=0, le=1)
    # EMA decay schedule (pipeline/core/ema.py): reference (Score SDE's warm-up to ema_rate), constant (ema_rate from
    # step 1) or edm (a half-life of ema_rampup_ratio x the images seen, capped at ema_halflife_kimg; ema_rate unused)
    ema_schedule: Literal[EMA_SCHEDULES] = "reference"  # type: ignore[valid-type]
    ema_halflife_kimg: float = Field(500.0, gt=0)
    ema_rampup_ratio: Optional[float] = Field(0.05, gt=0)  # None: no ramp-up, the capped half-life from step 1
    normalization: str = "GroupNorm"
    nonlinearity: Literal["swish", "elu", "relu", "lrelu"] = "swish"
    nf: int = Field(128, ge=1)
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = Field(2, ge=1)
    attn_resolutions: tuple[int, ...] = (16,)
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: Literal["biggan", "ddpm"] = "biggan"
    progressive: Literal["none", "output_skip", "residual"] = "none"
    progressive_input: Literal["none", "input_skip", "residual"] = "none"
    progressive_combine: Literal["sum", "cat"] = "sum"
    attention_type: str = "ddpm"
    init_scale: float = Field(0.0, ge=0)
    fourier_scale: float = Field(16.0, gt=0)
    conv_size: int = Field(3, ge=1)
    hidden: int = Field(256, ge=1)  # width of the `mlp` toy score model
    num_layers: int = Field(3, ge=1)  # depth of the `mlp` toy score model

    @model_validator(mode="after")
    def _sigmas_ordered(self):
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        if self.beta_min >= self.beta_max:
            raise ValueError(f"beta_min ({self.beta_min}) must be below beta_max ({self.beta_max})")
        return self


class TrainingConfig(_Block):
    sde: Literal[SDES] = "vpsde"  # type: ignore[valid-type]
    continuous: bool = True
    reduce_mean: bool = True
    likelihood_weighting: bool = False
    n_iters: int = Field(1000, ge=1)
    batch_size: int = Field(128, ge=1)
    snapshot_freq: int = Field(500, ge=1)
    snapshot_keep: int = Field(2, ge=1)
    log_freq: int = Field(50, ge=1)
    eval_freq: int = Field(100, ge=1)
    # The one precision switch (pipeline/training/launch.py): bf16 autocast on CPU and GPU, fp16 on GPU only; accelerate/*.yaml
    # set none, and the stage passes this value to the launcher it starts.
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation_steps: int = Field(1, ge=1)
    use_ema: bool = True
    snapshot_sampling: bool = True  # a sample grid to MLflow at every snapshot (reference key)
    # Processes (ranks) of the train stage: > 1 re-launches `python -m pipeline train` through Accelerate (DDP; NCCL on
    # GPUs, gloo on a CPU-only machine); batch_size stays the global batch. accelerate_config: an accelerate/*.yaml
    # with the machine's other launch settings (gpu_ids, ...), None = none.
    num_processes: int = Field(1, ge=1)
    accelerate_config: Optional[str] = None
    ckpt_freq: Optional[int] = Field(None, ge=1)  # keep the evaluation (EMA) weights every N steps: checkpoint curve
    compile: bool = False  # torch.compile (inductor) the network for the train step; eager fallback (pipeline/speed/compiled.py)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, v):
        return "no" if v is False else v  # YAML 1.1 reads an unquoted `no` as false

    @field_validator("num_processes")
    @classmethod
    def _batch_splits(cls, v, info):
        per = v * info.data.get("gradient_accumulation_steps", 1)
        if info.data.get("batch_size", 0) % per:
            raise ValueError(f"{v} processes x gradient_accumulation_steps {per // v} must divide training.batch_size "
                             f"{info.data['batch_size']} (it is the global batch)")
        return v

    @field_validator("accelerate_config")
    @classmethod
    def _under_accelerate(cls, v):
        if v is not None and not re.fullmatch(r"accelerate/[A-Za-z0-9_.-]+\.ya?ml", v):
            raise ValueError("expected a file of the repository's accelerate/ folder, e.g. accelerate/multi_gpu.yaml")
        return v

    # Error bars over training seeds: one model per seed, each trained, sampled and evaluated as the experiment with
    # `seed: s` (run folder <exp>-seed<s>); the report shows mean ± std over them. None: the experiment's `seed` only.
    seeds: Optional[list[int]] = Field(None, min_length=1)

    @field_validator("seeds")
    @classmethod
    def _seeds_valid(cls, v):
        if v is not None and (len(set(v)) != len(v) or min(v) < 0 or max(v) >= SEED_LIMIT):
            raise ValueError(f"training seeds must be distinct integers from 0 to {SEED_LIMIT - 1}, got {v}")
        return v


class OptimConfig(_Block):
    optimizer: Literal["Adam", "AdamW"] = "Adam"
    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: int = Field(5000, ge=0)
    grad_clip: float = 1.0  # <= 0 disables clipping (NCSN v1 recipe)


class SamplingConfig(_Block):
    """One sampler setting. `samplers:` entries override these keys for extra sampler variants. Which keys a method
    reads, and where it runs, is its declaration in names.SAMPLING_METHOD_TABLE (checked by `check_setting`)."""

    method: str = DEFAULT_SAMPLING_METHOD  # a name of names.SAMPLING_METHOD_TABLE
    predictor: Literal[PREDICTORS] = "euler_maruyama"  # type: ignore[valid-type]
    corrector: Literal[CORRECTORS] = "none"  # type: ignore[valid-type]
    snr: float = Field(0.16, gt=0)
    n_steps_each: int = Field(1, ge=1)
    noise_removal: bool = True
    probability_flow: bool = False
    num_steps: Optional[int] = Field(None, ge=1)  # pc: None = the SDE's N, e.g. 2000 for "P2000"; fast samplers: required
    order: Literal[PC_ORDERS] = "reference"  # type: ignore[valid-type]
    eps: Optional[float] = Field(None, gt=0, lt=1)  # None: 1e-5 for VE, 1e-3 for VP / sub-VP
    rtol: float = Field(1e-5, gt=0)
    atol: float = Field(1e-5, gt=0)
    ode_method: str = "RK45"
    step_lr: float = Field(2e-5, gt=0)  # ALD ε (NCSN v1)
    step_convention: Literal[ALD_CONVENTIONS] = "reference"  # type: ignore[valid-type]
    # Fast samplers (method heun | dpm_solver | ddim, docs/papers.md §3 "Fast samplers"); num_steps = solver steps.
    solver_order: int = Field(2, ge=1, le=3)  # heun: 1 (Euler) or 2; dpm_solver: 1-3 single-step, 1-2 multistep
    multistep: bool = False  # dpm_solver: DPM-Solver++(2M) on the data prediction instead of single steps
    # dpm_solver multistep: a first-order last step when fewer than 15 steps are taken (as diffusers'
    # DPMSolverMultistepScheduler); tests/test_fast_samplers.py measures what it gains at 10 steps
    lower_order_final: bool = True
    time_grid: Optional[Literal[TIME_GRIDS]] = None  # type: ignore[valid-type]  # None: the method's own grid
    rho: float = Field(7.0, gt=0)  # the "edm" grid's exponent (Karras et al. 2022, Eq. 5)
    s_churn: float = Field(0.0, ge=0)  # heun: stochastic churn (Karras et al. 2022, Alg. 2); s_* in units of σ/α
    s_tmin: float = Field(0.0, ge=0)
    s_tmax: Optional[float] = Field(None, gt=0)  # None: no upper bound
    s_noise: float = Field(1.0, gt=0)
    eta: float = Field(0.0, ge=0)  # ddim: 0 deterministic, 1 ancestral
    compile: bool = False  # torch.compile (inductor) the network for sampling; eager fallback (pipeline/speed/compiled.py)
    # compile in mode "reduce-overhead": on CUDA each fixed-shape network call replays as one CUDA graph (no per-kernel
    # launch cost); implies compile; on CPU the same as compile
    cuda_graphs: bool = False

    @field_validator("method")
    @classmethod
    def _known_method(cls, v):
        if v not in SAMPLING_METHOD_TABLE:  # read at validation: the table is the registry of the methods
            known = [repr(n) for n in SAMPLING_METHOD_TABLE]
            raise PydanticCustomError("literal_error", "Input should be {expected}",
                                      {"expected": ", ".join(known[:-1]) + " or " + known[-1]})
        return v


def _check_method_keys() -> None:
    """Every key a method declares (names.SAMPLING_METHOD_TABLE) is a sampling.* key."""
    for m in SAMPLING_METHOD_TABLE.values():
        unknown = set(m.keys + m.required + tuple(k for lim in m.limits for k in lim[::2] if k)) - set(
            SamplingConfig.model_fields)
        if unknown:
            raise ImportError(f"sampling method {m.name} declares keys that are not sampling.* keys: {sorted(unknown)}")


_check_method_keys()


class NoiseClassifierConfig(_Block):
    """The noise-conditional classifier p_t(y | x(t)) of class-conditional sampling (Score SDE App. I.1): a Wide-ResNet
    with a noise-level embedding (`pipeline.models.noise_classifier`), trained by the `classifier` stage."""

    nf: int = Field(16, ge=4)  # width of the first stage; stage i has nf * ch_mult[i] channels
    ch_mult: tuple[int, ...] = Field((1, 2, 2), min_length=1)
    num_res_blocks: int = Field(1, ge=1)  # wide residual blocks per stage (WRN-28-10: 4 per stage, nf 160)
    dropout: float = Field(0.0, ge=0, lt=1)
    fourier_scale: float = Field(16.0, gt=0)  # std of the random Fourier frequencies of log σ̂(t)
    n_iters: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)  # peak of the one-cycle schedule (AdamW)
    test_images: int = Field(1000, ge=1)  # test accuracy on the first test images, at each of test_times
    test_times: tuple[float, ...] = Field((0.01, 0.25, 0.5, 0.75, 1.0), min_length=1)

    @field_validator("test_times")
    @classmethod
    def _times_in_range(cls, v):
        if any(not 0 < t <= 1 for t in v):
            raise ValueError(f"times must lie in (0, 1], got {list(v)}")
        return v


class ClassConditionalConfig(_Block):
    """Class-conditional sampling (`eval.controllable: [class_conditional]`): the score plus guidance_scale times the
    noise classifier's ∇ log p_t(y | x) (Score SDE Eq. 48-49), samples_per_class samples of every class."""

    samples_per_class: int = Field(8, ge=1, le=64)
    guidance_scale: float = Field(1.0, ge=0)  # 1: the paper's conditional score
    # overrides of `sampling` (as a samplers: entry): pc, ode or a fast sampler; {} = the experiment's `sampling`
    sampling: dict[str, Any] = Field(default_factory=dict)


class EvalConfig(_Block):
    num_samples: Samples = Field(64, ge=1)
    batch_size: int = Field(64, ge=1)
    num_seeds: int = Field(1, ge=1)
    num_processes: int = Field(1, ge=1)  # ranks of the sample and evaluate stages (whole batches split; same results)
    enable_bpd: bool = True
    bpd_num_repeats: int = Field(1, ge=1)
    bpd_max_images: Optional[int] = Field(None, ge=1)
    bpd_estimator: Literal[BPD_ESTIMATORS] = "rademacher"  # type: ignore[valid-type]
    bpd_rtol: float = Field(1e-5, gt=0)  # probability-flow ODE tolerances for bits/dim (paper: 1e-5)
    bpd_atol: float = Field(1e-5, gt=0)
    # also score the EMA weights the train stage kept at these steps (multiples of training.ckpt_freq below n_iters):
    # the claims table pairs two SDEs' bits/dim at equal training (pipeline/report/claims.py), so an experiment that
    # trains longer still has a partner at the other's step
    bpd_steps: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    # The features of the headline FD: "classifier" the evaluator's dataset classifier (Inception metrics are added when the
    # weights exist); "inception" Inception-v3 FID, required: the evaluate stage exits 2 when the weights are missing.
    feature_net: Literal["classifier", "inception"] = "classifier"
    # Inception Score protocol (classifier IS and Inception IS): mean ± std over this many splits of the samples.
    # 1 (default): one score over all samples (TF-GAN, Score SDE); 10: Salimans et al. 2016 and NCSN.
    is_splits: int = Field(1, ge=1)
    inception_weights: Optional[str] = None
    fid_mode: Literal["clean", "legacy_tensorflow"] = "legacy_tensorflow"
    # Controllable generation examples (Score SDE Sec. 5): the `controllable` stage runs these tasks on a few test
    # images with the PC sampler of `sampling` (reverse diffusion + Langevin when `sampling` is not a PC sampler).
    controllable: list[Literal["inpainting", "colorization", "class_conditional"]] = Field(default_factory=list)
    controllable_images: int = Field(8, ge=1, le=64)
    controllable_steps: Optional[int] = Field(None, ge=1)  # None: the SDE's N
    # class_conditional: the noise-conditional classifier (the classifier stage); the key kept for compatibility
    classifier: NoiseClassifierConfig = NoiseClassifierConfig()
    class_conditional: ClassConditionalConfig = ClassConditionalConfig()

    @field_validator("controllable")
    @classmethod
    def _unique_tasks(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"tasks repeated: {v}")
        return v


class CheckpointCurveConfig(_Block):
    """FD against training step over the weights kept every training.ckpt_freq steps (one cheap sampler)."""

    sampler: dict[str, Any] = Field(default_factory=dict)  # sampling.* overrides merged onto `sampling`
    num_samples: Optional[Samples] = Field(None, ge=2)  # None: curves.num_samples
    num_seeds: Optional[int] = Field(None, ge=1)  # None: curves.num_seeds


class CurvesConfig(_Block):
    """The `curves` stage: FD against NFE per sampler, and FD against training step (pipeline/metrics/curves.py)."""

    num_samples: Samples = Field(100, ge=2)  # samples per seed and point
    num_seeds: int = Field(2, ge=1)
    batch_size: Optional[int] = Field(None, ge=1)  # None: eval.batch_size
    nfe: list[int] = Field(default_factory=lambda: [10, 20, 50, 100, 200])  # target NFEs of each non-ODE curve
    ode_tols: list[float] = Field(default_factory=lambda: [1e-1, 1e-2, 1e-3, 1e-4])  # rtol = atol of an ode curve
    # curve name -> sampling.* overrides
    samplers: Annotated[dict[str, dict[str, Any]], _names_of("curve")] = Field(default_factory=dict)
    # curve name -> its own target NFEs (replacing `nfe` for that curve), e.g. the PC / P / C curves of a VE model
    # at NFE 200, where the other curves stop at 50
    nfe_by_curve: dict[str, list[int]] = Field(default_factory=dict)
    checkpoints: Optional[CheckpointCurveConfig] = None  # None: no checkpoint curve

    @staticmethod
    def _increasing(v: list[int]) -> list[int]:
        if any(n < 1 for n in v) or sorted(set(v)) != list(v):
            raise ValueError(f"target NFEs must be increasing integers >= 1 (got {v})")
        return v

    @field_validator("nfe")
    @classmethod
    def _nfe_ok(cls, v):
        return cls._increasing(v)

    @model_validator(mode="after")
    def _nfe_by_curve_ok(self):
        for name, v in self.nfe_by_curve.items():
            if name not in self.samplers:
                raise ValueError(f"nfe_by_curve.{name}: no curve of that name in curves.samplers "
                                 f"({sorted(self.samplers)})")
            self._increasing(v)
        return self

    def targets(self, name: str) -> list[int]:
        """The target NFEs of curve `name`: its `nfe_by_curve` entry, else `nfe`."""
        return self.nfe_by_curve.get(name, self.nfe)

    @field_validator("ode_tols")
    @classmethod
    def _tols_ok(cls, v):
        if any(not 0 < t < 1 for t in v):
            raise ValueError(f"tolerances must lie in (0, 1) (got {v})")
        return v


class Params(_Block):
    seed: Seed = 42
    # a name (names.NAME_PATTERN): reports/<suite>, runs/<suite>, pipelines/<suite>/dvc.yaml
    suite: Annotated[str, _names_of("suite")] = "default"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    optim: OptimConfig = OptimConfig()
    sampling: SamplingConfig = SamplingConfig()
    samplers: Annotated[dict[str, dict[str, Any]], _names_of("sampler")] = Field(default_factory=dict)
    eval: EvalConfig = EvalConfig()
    curves: Optional[CurvesConfig] = None  # None: no curves stage

    @model_validator(mode="after")
    def _consistent(self):
        ds = DATASET_TABLE[self.data.dataset]
        if ds.kind == "points" and (self.data.image_size, self.data.num_channels) != (ds.size, ds.channels):
            raise ValueError(f"toy datasets are 2-D points: set data.image_size: {ds.size} and data.num_channels: "
                             f"{ds.channels}")
        return self

    # --- derived views --------------------------------------------------------------------------------------
    def controllable_sampler(self) -> SamplingConfig:
        """The controllable stage's PC sampler (inpainting and colorization project the PC loop's iterates):
        `sampling` when its method reads the predictor and corrector, else the paper's controllable-generation
        sampler (Score SDE App. I): reverse diffusion + one Langevin step, r = 0.16."""
        if _runs_pc(self.sampling):
            return self.sampling
        return SamplingConfig(method=DEFAULT_SAMPLING_METHOD, predictor="reverse_diffusion", corrector="langevin", snr=0.16)

    def class_conditional_sampler(self) -> SamplingConfig:
        """The class-conditional sampler: `sampling` with `eval.class_conditional.sampling` overrides."""
        return sampler_override(self.sampling, self.eval.class_conditional.sampling)

    def sampler_settings(self) -> dict[str, SamplingConfig]:
        """The experiment's samplers: `sampling` under its method's name, then each `samplers.NAME` override."""
        out = {self.sampling.method: self.sampling}
        for name, over in self.samplers.items():
            out[name] = sampler_override(self.sampling, over)
        return out

    def curve_settings(self) -> dict[str, SamplingConfig]:
        """The FD-vs-NFE curves: each `curves.samplers.NAME` override merged onto `sampling`."""
        return {name: sampler_override(self.sampling, over) for name, over in (self.curves.samplers if self.curves else {}).items()}

    def checkpoint_curve_setting(self) -> Optional[SamplingConfig]:
        """The checkpoint curve's sampler (`curves.checkpoints.sampler` merged onto `sampling`), or None."""
        if self.curves is None or self.curves.checkpoints is None:
            return None
        return sampler_override(self.sampling, self.curves.checkpoints.sampler)


def sampler_override(base: SamplingConfig, over: dict) -> SamplingConfig:
    """`base` with the keys of one `samplers:` entry replaced: the one place sampler overrides are merged."""
    return SamplingConfig(**{**base.model_dump(), **over})


def _loc_to_key(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def set_dotted(d: dict, key: str, value: Any, path: str) -> None:
    """d[a][b][c] = value for key "a.b.c", creating groups on the way."""
    parts = key.split(".")
    cur = d
    for part in parts[:-1]:
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ParamsError(path, key, f"cannot set a key under {part!r}, which is not a group")
        cur = nxt
    cur[parts[-1]] = value


def parse_override(text: str, path: str) -> tuple[str, Any]:
    """`KEY=VALUE` from `--set`; VALUE is parsed as YAML (`model.ch_mult=[1,2,2]`)."""
    if "=" not in text:
        raise ParamsError(path, text, "--set expects KEY=VALUE, e.g. --set training.n_iters=100")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ParamsError(path, key, f"--set value is not valid YAML: {e}".splitlines()[0]) from None


def validate_schema(raw: Any, path: str) -> Params:
    """Validate a raw mapping against the schema; raise ParamsError naming the first bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(path, "", "expected a YAML mapping of groups (data, model, training, ...)")
    odd = [k for k in raw if not isinstance(k, str)]
    if odd:
        raise ParamsError(path, str(odd[0]), "a top-level key must be a group or key name (seed, suite, data, model, ...)")
    try:
        return Params(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = _loc_to_key(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params/README.md)"
        elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict) \
                and repr(err["input"]) not in msg:  # a mapping: the message names the bad entry
            msg = f"{msg} (got {err['input']!r})"
        raise ParamsError(path, key, msg) from None


def check_samplers(params: Params, path: str) -> None:
    """Each `samplers.NAME` override merges into a valid setting that fits the experiment's SDE."""
    settings = {"sampling": params.sampling}
    for name, over in params.samplers.items():
        if not isinstance(over, dict):
            raise ParamsError(path, f"samplers.{name}", "expected a mapping of sampling.* overrides")
        try:
            settings[f"samplers.{name}"] = sampler_override(params.sampling, over)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise ParamsError(path, f"samplers.{name}.{key}", msg) from None
    if "class_conditional" in params.eval.controllable:
        settings["eval.class_conditional.sampling"] = _class_conditional_setting(params, path)
    if params.sampling.method in params.samplers:
        raise ParamsError(path, f"samplers.{params.sampling.method}",
                          "this name is taken by the default sampler (sampling.method)")
    settings.update(_curve_settings(params, path))
    if params.eval.controllable:
        _check_ddpm_steps(params, params.controllable_sampler(), params.eval.controllable_steps,
                          "eval.controllable_steps", path)
    for where, s in settings.items():
        check_setting(params, s, where, path)


def check_setting(params: Params, s: SamplingConfig, where: str, path: str) -> None:
    """One sampler setting fits the experiment (the curves stage checks each point of a sweep with it): its method's
    declaration (names.SAMPLING_METHOD_TABLE: the SDEs and models it runs on, the keys it needs, its limits, the keys
    it reads) and the rules of the predictor and corrector where the method runs them."""
    sde, m = params.training.sde, sampling_method(s.method)
    model = "continuous" if params.training.continuous else "discrete"
    _check_ddpm_steps(params, s, s.num_steps, f"{where}.num_steps", path)
    if sde not in m.sdes or model not in m.models:
        any_model = len(m.models) > 1
        raise ParamsError(path, f"{where}.method", f"method {s.method} runs on {' or '.join(m.sdes)} models"
                          + ("" if any_model else f" trained {m.models[0]}ly") + " (training.sde"
                          + ("" if any_model else ", training.continuous") + f"); this experiment's is {sde}"
                          + ("" if any_model else f", trained {model}ly"))
    if _runs_pc(s) and s.predictor == "none" and s.corrector == "none":
        raise ParamsError(path, f"{where}.predictor", "a PC sampler needs a predictor or a corrector (both are none)")
    if _runs_pc(s) and s.predictor == "ancestral_sampling" and sde == "subvpsde":
        raise ParamsError(path, f"{where}.predictor", "ancestral_sampling is defined for vesde and vpsde only")
    for key in m.required:
        if getattr(s, key) is None:
            raise ParamsError(path, f"{where}.{key}", f"method {s.method} needs {key} (it has no default)")
    for key, most, when in m.limits:
        if (when is None or getattr(s, when)) and getattr(s, key) > most:
            raise ParamsError(path, f"{where}.{key}", f"method {s.method}{f' with {when}' if when else ''} takes "
                                                      f"{key} up to {most}, got {getattr(s, key)}")
    if s.s_tmax is not None and s.s_tmax <= s.s_tmin:
        raise ParamsError(path, f"{where}.s_tmax", f"must be above s_tmin ({s.s_tmin:g})")
    for key in unread_keys(s):
        readers = [n for n, d in SAMPLING_METHOD_TABLE.items() if key in d.keys]
        raise ParamsError(path, f"{where}.{key}", f"{key} applies to method{'s' if len(readers) > 1 else ''} "
                                                  f"{', '.join(readers)} only, not {s.method} (leave it unset)")


def unread_keys(s: SamplingConfig) -> list[str]:
    """The keys set to other than their default that the setting's method does not read: refused by check_setting.
    The default method's keys are never refused: `samplers:` entries inherit them from `sampling:` and switch method
    (names.COMMON_SAMPLING_KEYS)."""
    read = set(COMMON_SAMPLING_KEYS) | set(sampling_method(DEFAULT_SAMPLING_METHOD).keys) | set(
        sampling_method(s.method).keys)
    fields = SamplingConfig.model_fields
    return [k for k in fields if k not in read and getattr(s, k) != fields[k].default]


def _runs_pc(s: SamplingConfig) -> bool:
    """Whether the setting's method runs the PC loop: it reads the predictor and the corrector."""
    return {"predictor", "corrector"} <= set(sampling_method(s.method).keys)


def _merged(params: Params, over: Any, key: str, path: str) -> SamplingConfig:
    if not isinstance(over, dict):
        raise ParamsError(path, key, "expected a mapping of sampling.* overrides")
    try:
        return sampler_override(params.sampling, over)
    except ValidationError as e:
        err = e.errors()[0]
        sub = ".".join(str(x) for x in err["loc"])
        msg = "unknown key (a sampling.* key)" if err["type"] == "extra_forbidden" else err["msg"]
        raise ParamsError(path, f"{key}.{sub}", msg) from None


def _curve_settings(params: Params, path: str) -> dict[str, SamplingConfig]:
    """The curves' sampler settings (checked with the experiment's samplers) and the checkpoint curve's needs."""
    c = params.curves
    if c is None:
        return {}
    out = {f"curves.samplers.{name}": _merged(params, over, f"curves.samplers.{name}", path)
           for name, over in c.samplers.items()}
    if c.checkpoints is not None:
        out["curves.checkpoints.sampler"] = _merged(params, c.checkpoints.sampler, "curves.checkpoints.sampler", path)
        if params.training.ckpt_freq is None:
            raise ParamsError(path, "curves.checkpoints", "the checkpoint curve needs training.ckpt_freq (keep the "
                                                          "EMA weights every N steps), e.g. training.ckpt_freq: 200")
        if params.training.ckpt_freq >= params.training.n_iters:
            raise ParamsError(path, "training.ckpt_freq", f"must be below training.n_iters ({params.training.n_iters}) "
                                                          "for the checkpoint curve to have more than one point")
    for key, s in out.items():  # the sweep sets num_steps per point (checked there): check the rest here
        m = sampling_method(s.method)
        if key.startswith("curves.samplers.") and m.knob is not None:
            steps = params.model.num_scales if "num_steps" in m.required else None
            out[key] = s.model_copy(update={"num_steps": steps})
    for key, s in out.items():
        name = key.removeprefix("curves.samplers.")
        if key.startswith("curves.samplers.") and sampling_method(s.method).knob is not None and not c.targets(name):
            raise ParamsError(path, "curves.nfe", f"the curve {name} (method {s.method}, not adaptive) needs target "
                                                  "NFEs, e.g. [10, 20, 50]")
    return out


def _class_conditional_setting(params: Params, path: str) -> SamplingConfig:
    """`sampling` with the `eval.class_conditional.sampling` overrides, for a labelled image dataset and a sampler that
    takes any score function (names.SAMPLING_METHOD_TABLE: any_score)."""
    where = "eval.class_conditional.sampling"
    if not DATASET_TABLE[params.data.dataset].labelled:
        raise ParamsError(path, "eval.controllable", f"class_conditional needs a labelled image dataset; "
                                                     f"{params.data.dataset} has no classes (remove it)")
    try:
        s = params.class_conditional_sampler()
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ParamsError(path, f"{where}.{key}", msg) from None
    if not sampling_method(s.method).any_score:
        takers = [n for n, d in SAMPLING_METHOD_TABLE.items() if d.any_score]
        raise ParamsError(path, f"{where}.method", f"class-conditional sampling runs {', '.join(takers[:-1])} or "
                                                   f"{takers[-1]}, not {s.method} (it samples the network's own score only)")
    return s


def _check_ddpm_steps(params: Params, s: SamplingConfig, steps: Optional[int], key: str, path: str) -> None:
    """The DDPM table β_i = β(t_i) / N that VP reverse diffusion, ancestral sampling and the Langevin α (VP and sub-VP)
    use needs β_i < 1, i.e. N > beta_max steps (docs/papers.md §1, §3)."""
    sde, m = params.training.sde, params.model
    uses_table = _runs_pc(s) and (s.corrector == "langevin" or (
        sde == "vpsde" and s.predictor in ("reverse_diffusion", "ancestral_sampling")))
    n = steps or m.num_scales
    if sde != "vesde" and uses_table and n <= m.beta_max:
        raise ParamsError(path, key if steps else "model.num_scales",
                          f"{n} steps give DDPM betas beta_max/N >= 1 for {s.predictor} + {s.corrector}; use more than "
                          f"model.beta_max = {m.beta_max:g} steps")


def validate(raw: Any, path: str) -> Params:
    """The schema, then the sampler settings; raise ParamsError naming the first bad key."""
    params = validate_schema(raw, path)
    check_samplers(params, path)
    check_eval(params, path)
    return params


def check_eval(params: Params, path: str) -> None:
    """Evaluation keys that depend on each other: every Inception Score split holds at least one sample; Inception
    features exist for images only."""
    e = params.eval
    if e.feature_net == "inception" and params.data.dataset in TOY_DATASETS:
        raise ParamsError(path, "eval.feature_net", "inception applies to images; 2-D points use feature_net: classifier "
                          "(the points are their own features)")
    t = params.training
    for i, step in enumerate(e.bpd_steps):
        if not (t.ckpt_freq and step % t.ckpt_freq == 0 and step < t.n_iters):
            raise ParamsError(path, f"eval.bpd_steps.{i}", f"step {step} is not kept by the train stage: use a multiple "
                              f"of training.ckpt_freq ({t.ckpt_freq}) below training.n_iters ({t.n_iters})")
    if len(set(e.bpd_steps)) != len(e.bpd_steps):
        raise ParamsError(path, "eval.bpd_steps", "a step is listed twice")
    if e.is_splits > e.num_samples:
        raise ParamsError(path, "eval.is_splits", f"{e.is_splits} splits of eval.num_samples = {e.num_samples} samples "
                          "leave a split empty; use at most num_samples splits")


EMPTY_HINT = ("an experiment needs at least model.name and usually data, training, sampling and eval (see params/README.md; "
              "params/smoke.yaml is a small complete example)")


def read_params_yaml(path: str | Path) -> dict:
    """The mapping a params file holds ({} for an empty file), read with yaml.safe_load; a file that cannot be read,
    is not valid YAML, is not a mapping or whose `suite:` is not a name raises ParamsError naming the file (and the
    line). The one reader of params files: load_params and the DAG's discovery (pipeline.workflow.dag) both use it."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(shown, "", f"not UTF-8 text (byte {e.start}); a params file is YAML") from None
    except OSError as e:
        raise ParamsError(shown, "", f"cannot read the file ({e.strerror or e})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # yaml.safe_load, with the line of a value that cannot be constructed
    except yaml.YAMLError as e:
        raise ParamsError(shown, "", f"not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ParamsError(shown, "", "not valid YAML: nested too deeply") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamsError(shown, "", f"expected a YAML mapping of groups (data, model, training, ...), got a "
                                     f"{type(raw).__name__}")
    if "suite" in raw:
        problem = name_problem("suite", raw["suite"])
        if problem:
            raise ParamsError(shown, "suite", problem)
    return raw


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader whose errors building a value (e.g. the date 2020-13-45: month 13) name its line."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {node.value!r}: {e}"
                                                    if isinstance(node, yaml.ScalarNode) else str(e),
                                                    node.start_mark) from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line from a PyYAML error: what is wrong and where (1-based line and column)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem, context = getattr(e, "problem", None), getattr(e, "context", None)
    what = (f"{problem} ({context})" if context else problem) if problem else (str(e).splitlines() or [type(e).__name__])[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{what}".split())


def load_params(path: str | Path, overrides: list[str] | None = None) -> tuple[str, Params]:
    """Read, override and validate a params file; returns (experiment name = file stem, params)."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise ParamsError(shown, "", "params file not found (pass --params params/NAME.yaml)")
    problem = name_problem("experiment", path.stem)
    if problem:
        raise ParamsError(shown, "", f"{problem}: the file's stem names the experiment (its run folder and DAG stages); "
                                     "rename the file")
    raw = read_params_yaml(path)
    if not raw:
        raise ParamsError(shown, "", f"the file is empty (no keys); {EMPTY_HINT}")
    for text in overrides or []:
        key, value = parse_override(text, shown)
        set_dotted(raw, key, value, shown)
    return path.stem, validate(raw, shown)
