"""Keep freed memory in the process during training, so each step reuses it instead of faulting it back in.

glibc hands tensors of a few MB to mmap and gives freed heap tops back to the OS; a training step allocates and frees
the same ~1 GB of activations every time, so each step paid ~200,000 page faults and 0.3-1 s of kernel time
(ResNet-50 at 224 px, batch 8, 2 cores; benchmarks/distill/lightly/README.md). Raising the mmap threshold to its
maximum (32 MiB on 64-bit) and the trim threshold to 1 GiB keeps that memory for the next step. Resident memory
then stays at the step's peak, which a training process reaches anyway. Settings the user made through glibc's
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` environment variables are left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2); larger values are refused
TRIM_THRESHOLD = 1 << 30
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> str:
    """Apply the settings above to this process (and the loader workers it forks); says what it did, for the log."""
    if any(name in os.environ for name in USER_SETTINGS):
        return "unchanged: MALLOC_*_THRESHOLD_ set in the environment"
    try:
        libc = ctypes.CDLL(None)  # this process's own symbols, libc's included: no library search
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it; musl and macOS have no mallopt thresholds
    except (OSError, AttributeError, TypeError):
        return "unchanged: not glibc"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "unchanged: mallopt refused"
    return f"glibc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
