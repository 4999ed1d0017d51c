"""pipeline.speed.allocator: with retain_freed_memory() a large tensor comes from malloc's heap, not from its own mmap."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipeline.speed.allocator import _libc

PROBE = textwrap.dedent("""
    import ctypes, sys
    import torch
    from pipeline.speed.allocator import _libc, retain_freed_memory

    class MallInfo2(ctypes.Structure):  # <malloc.h> struct mallinfo2: ten size_t fields
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = _libc()
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    before = libc.mallinfo2().hblkhd
    t = torch.ones(16 << 20)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
    mapped = libc.mallinfo2().hblkhd - before
    arena = libc.mallinfo2().arena
    del t
    after_free = libc.mallinfo2().arena
    # 1.25 GiB freed at the top of the heap, as the end of a train step frees its activations: a finite trim
    # threshold (such as 1 GiB) hands it back to the kernel. malloc itself, so that nothing lands above it.
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    big = libc.malloc(5 << 28)
    arena_big = libc.mallinfo2().arena
    libc.free(big)
    print(mapped, arena, after_free, arena_big, libc.mallinfo2().arena)
""")


def _probe(mode: str) -> tuple[int, ...]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True).stdout.split()
    return tuple(int(v) for v in out[-5:])


@pytest.mark.skipif(_libc() is None or not hasattr(_libc(), "mallinfo2"), reason="needs glibc >= 2.33 (mallinfo2)")
def test_large_tensors_come_from_the_heap_and_stay_after_free():
    mapped, *_ = _probe("default")
    assert mapped >= 64 << 20  # glibc's default: a private mmap per large block, unmapped again on free
    mapped, arena, after_free, arena_big, after_big = _probe("retain")
    assert mapped == 0  # served from the heap
    assert arena >= 64 << 20 and after_free == arena  # freed, but kept for the next step's tensors
    assert arena_big >= 5 << 28 and after_big == arena_big  # never trimmed, however much is freed at once
