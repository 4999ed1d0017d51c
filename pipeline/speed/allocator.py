"""Keep freed CPU memory in the process instead of handing it back to the kernel after every tensor.

PyTorch allocates CPU tensors with malloc. glibc serves blocks above its mmap threshold (dynamic, at most 32 MiB on
64-bit) with a fresh mmap and unmaps them on free, so every such activation of every step page-faults its pages in
again and the kernel zeroes them: a U-Net activation at batch 256 (256 × 32 × 32 × 32 float32 = 32 MiB) is one. At
batch 256 that was 3.3 s of system time in a 13.0 s NCSN++ train step here (benchmarks/bench_speed.py, section
`allocator`). `retain_freed_memory()` serves every block from malloc's heap (M_MMAP_MAX = 0)
and never trims the heap (M_TRIM_THRESHOLD = -1), so a training loop reuses its own pages: the end of every train
step frees all its activations at once (about 5 GB for NCSN++ at batch 256), and any finite trim threshold gave the
excess back to the kernel only for the next step to fault it in again (with 1 GiB: 250,000 page faults and 1.8-2.2 s
of system time per 10.8 s step; never trimming: 0 faults, 8.7 s). The process's peak memory is unchanged (5.1 ->
5.35 GB maximum RSS in that measurement, from fragmentation); freed memory stays with the process until it exits, as
with the caching allocators (jemalloc, tcmalloc) often preloaded for the same reason. Each stage is its own process.
Elsewhere than glibc (macOS, musl) it does nothing.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = -1  # mallopt(3): -1 disables trimming


def _libc():
    """The process's C library when it is glibc (mallopt and gnu_get_libc_version among the loaded symbols), else None."""
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def retain_freed_memory() -> bool:
    """Serve all blocks from the heap and keep freed memory; True when glibc took the settings."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
