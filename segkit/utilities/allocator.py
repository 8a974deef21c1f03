"""Keeps freed memory in the process for the next step instead of handing it back to the system.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps it on
free. A CPU training step allocates and frees its large activations (64 MiB each for a 64-channel map at
128x128, batch 16) every step, so each step maps them afresh and the kernel zero-fills every page on first
touch: hundreds of thousands of page faults a step. With mmap off and a high trim threshold, freed blocks stay
in the heap and the next step reuses them. `benchmarks/allocator.py` measures the effect side by side.
With glibc before 2.38 reuse sets in after a few steps, not at once: torch's aligned blocks leave alignment
slivers in glibc's thread cache, which keep a freed block from merging back to its size until that bin fills.

Every command that runs a network (train, eval, predict, export, lr_find, bench, tradeoff) calls
`keep_freed_memory()` first; `SEGKIT_MALLOC=system` leaves glibc's defaults.
Tuned at run time with `mallopt`, so no environment variable has to be set before Python starts; DataLoader
workers forked afterwards inherit it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# glibc's defaults, restored by `use_system_defaults`.
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
# Freed memory above this at the top of the heap goes back to the system: large enough that a training
# step's working set stays, small enough that memory freed after a run's peak can still leave.
KEPT_FREE_BYTES = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    """glibc, or None on other C libraries (musl, macOS, Windows), where the tuning does not apply."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Turns off glibc's mmap for large blocks and raises its trim threshold; True if applied. Does nothing
    with SEGKIT_MALLOC=system or outside glibc."""
    if os.environ.get("SEGKIT_MALLOC", "keep") == "system":
        return False
    libc = _glibc()
    if libc is None:
        return False
    applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES) == 1
    if not applied:
        log.warning("glibc refused mallopt: large allocations keep being mapped afresh every step")
    return applied


def use_system_defaults() -> None:
    """glibc's default allocation settings again (for side-by-side measurements); returns freed memory."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    return_freed_memory()


def return_freed_memory() -> None:
    """Gives the memory glibc keeps after frees back to the system (so that a memory baseline is what is really
    in use); nothing outside glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
