"""What a stage ran on, recorded in its JSON output so the report can say it: CPU model, GPU name, library versions."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo "model name"), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe(processes: int = 1) -> dict:
    """{"cpu", "cpu_count", "gpu" (None without CUDA), "gpu_count", "processes", "torch", "cuda", "python", "platform"}."""
    import torch

    cuda = torch.cuda.is_available()
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_count": torch.cuda.device_count() if cuda else 0, "processes": processes,
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "python": platform.python_version(), "platform": platform.platform(terse=True)}
