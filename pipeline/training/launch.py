"""Processes and precision from params: a stage started as one process re-launches itself through Accelerate.

The DAG's command is `python -m pipeline train --params FILE` (and `sample ... --sampler S`) whatever the process
count. When the params ask for more than one process (`training.num_processes`, `eval.num_processes`) or name an
Accelerate config (`training.accelerate_config`), the stage validates its input and then runs Accelerate's launcher
in its own process (`accelerate.commands.launch`), which starts the ranks with torch's elastic launcher (torchrun):
NCCL on GPUs, gloo on a machine without CUDA. Each rank runs the same command line, finds itself launched and does
its share. Why from inside the stage rather than an `accelerate launch ...` command written into dvc.yaml:

- the command does not depend on params, so `dvc exp run -S training.num_processes=8`, `--set` on the command line
  and a Snakemake params change take effect without regenerating dvc.yaml (DVC reads the command from dvc.yaml);
- a SLURM job (profiles/slurm) runs the same single command inside its allocation of N GPUs (the Snakefile asks for
  `gpu=N`): one task whose ranks torchrun starts, the usual single-node pattern, no `srun -n N`;
- bad input (a params key, a missing file or config, more processes than GPUs) is reported once, before any rank
  starts, as one line with status 2; a rank's own exit status (2, or 143 after a SIGTERM snapshot) is returned;
- each launch takes a free port, so two multi-process stages on one machine (`snakemake -j 2`) do not collide.

`training.mixed_precision` is the one precision switch: it is passed to `Accelerator` and to the launcher, and the
accelerate/*.yaml files set none. Accelerate's MULTI_CPU type starts one process unless MPI is used, so ranks are
always started with `--multi_gpu` (torchrun), and each rank checks that the world it joined is the one asked for.
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import yaml

from pipeline.errors import StageError

LAUNCHED = "PIPELINE_LAUNCHED"  # set by `relaunch` for the ranks it starts
EXTERNAL = ("WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch` / torchrun


def launched_by_us() -> bool:
    return os.environ.get(LAUNCHED) == "1"


def launched() -> bool:
    """This process is a rank started by a launcher (ours, or `accelerate launch` / torchrun run by hand)."""
    return launched_by_us() or any(k in os.environ for k in EXTERNAL)


def wants_launch(num_processes: int, config: str | None) -> bool:
    return (num_processes > 1 or config is not None) and not launched()


def check_request(root: Path, num_processes: int, config: str | None, key: str, params_path: str) -> None:
    """Bad launch settings fail before any rank starts: a missing config, more GPU ranks than visible GPUs."""
    import torch

    if config is not None:
        if not (root / config).is_file():
            raise StageError(f"{params_path}: training.accelerate_config: {root / config} not found "
                             "(use a file of accelerate/, e.g. accelerate/multi_gpu.yaml, or remove the key)")
        try:
            machines = int((yaml.safe_load((root / config).read_text()) or {}).get("num_machines", 1))
        except (yaml.YAMLError, AttributeError, TypeError, ValueError):
            raise StageError(f"{params_path}: training.accelerate_config: {root / config} is not an Accelerate "
                             "config (a YAML mapping with a numeric num_machines)") from None
        if machines > 1:
            raise StageError(f"{params_path}: training.accelerate_config: {config} spans {machines} machines; a stage "
                             "starts ranks on its own machine only: run `accelerate launch` on each node by hand "
                             "(see the file) or use a one-machine config")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and num_processes > gpus:
        raise StageError(f"{params_path}: {key}: {num_processes} processes but {gpus} GPU(s) visible; set {key} to "
                         f"at most {gpus} (one rank per GPU)")


def check_precision(mixed_precision: str, params_path: str) -> None:
    """fp16 needs CUDA (on the CPU Accelerate's fp16 autocast silently computes in fp32); bf16 needs a GPU with bf16
    (Ampere or newer) or the CPU (autocast on every x86 CPU, native on those with AVX512-BF16 / AMX)."""
    import torch

    cuda = torch.cuda.is_available()
    if mixed_precision == "fp16" and not cuda:
        raise StageError(f"{params_path}: training.mixed_precision: fp16 needs a CUDA GPU (on the CPU it would run in "
                         "fp32); use bf16 or no")
    if mixed_precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise StageError(f"{params_path}: training.mixed_precision: this GPU has no bf16; use fp16 or no")


def launcher_mixed_precision(mixed_precision: str) -> str | None:
    """A launcher's precision (ACCELERATE_MIXED_PRECISION) that differs from params, else None: the caller warns that
    params win (`Accelerator(mixed_precision=...)` overrides the environment)."""
    env = os.environ.get("ACCELERATE_MIXED_PRECISION")
    return env if env is not None and env != mixed_precision else None


def make_accelerator(params):
    """The Accelerator of a training run, built from params in this one place (the train stage, tests): the CPU
    without CUDA, `training.mixed_precision` as the precision (it overrides a launcher's: `launcher_mixed_precision`).
    `pipeline.training.loop.train` takes it and builds none."""
    import torch

    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=params.training.mixed_precision)


def check_world(world: int, num_processes: int, key: str, params_path: str) -> str | None:
    """A rank we started must see the world asked for (else StageError); under someone else's launcher the returned
    note says which count applies."""
    if world == num_processes:
        return None
    if launched_by_us():
        raise StageError(f"{params_path}: {key}: asked for {num_processes} processes, Accelerate started {world} "
                         "(check the accelerate config's distributed settings)")
    return (f"note: started by an external launcher with {world} process(es); {key} = {num_processes} applies to "
            "`python -m pipeline ...` without a launcher")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_args(num_processes: int, mixed_precision: str, config: str | None, port: int) -> list[str]:
    """`accelerate launch` options: the process count and precision from params, the rest from the config."""
    args = ["--config_file", config] if config else ["--num_machines", "1"]
    args += ["--num_processes", str(num_processes), "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if num_processes > 1:  # torchrun ranks on GPUs or, without CUDA, on the CPU (gloo)
        args += ["--multi_gpu", "--main_process_port", str(port)]
    return args


def stage_argv(stage: str, args, extra: list[str] = ()) -> list[str]:
    """The stage's own command line (`pipeline STAGE --params ... --set ... --root ...`) for its ranks."""
    out = [stage, "--params", str(args.params)]
    for s in args.set:
        out += ["--set", s]
    return out + ["--root", str(args.root), *extra]


def relaunch(argv: list[str], num_processes: int, mixed_precision: str, config: str | None, root: Path) -> int:
    """Run `python -m pipeline <argv>` as `num_processes` ranks through Accelerate's launcher; the ranks' status."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    opts = launcher_args(num_processes, mixed_precision, str(root / config) if config else None, free_port())
    parsed = launch_command_parser().parse_args([*opts, "--module", "pipeline", *argv])
    print(f"launching {num_processes} process(es) through Accelerate: accelerate launch {' '.join(opts)} "
          f"-m pipeline {' '.join(argv)}", flush=True)
    before = os.environ.get(LAUNCHED)
    os.environ[LAUNCHED] = "1"
    try:
        launch_command(parsed)
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # a rank killed by signal s: 128 + s, as a shell reports it
    except subprocess.CalledProcessError as e:  # one process (a config without --multi_gpu): Accelerate's Popen
        return e.returncode if e.returncode > 0 else 128 - e.returncode
    except SignalException as e:  # this process got SIGTERM / SIGINT; torchrun has passed it on to the ranks
        return 128 + int(e.sigval)
    finally:
        if before is None:
            os.environ.pop(LAUNCHED, None)
        else:
            os.environ[LAUNCHED] = before
    return 0


def shard(jobs: list, world: int, rank: int) -> list:
    """This rank's share of `jobs`: every world-th one from `rank`. Whole batches are dealt out, never split, so each
    sample is computed in the same batch as in one process (an adaptive ODE solver's steps depend on the batch)."""
    return jobs[rank::world]
