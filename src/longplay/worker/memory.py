"""How a worker process's C heap gives memory back.

Models and decoders allocate and free hundreds of megabytes per job. With glibc's
defaults, freed blocks below a moving threshold stay in the heap, so a pool process
keeps its largest job's memory for life (measured: 100-200 MiB after a transcription).
Serving large blocks from ``mmap`` and trimming the heap sooner gives it back, at a
cost too small to measure against a model's work. Set before the pool forks, so every
pool process inherits it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024
"""Blocks from this size are mapped on their own, and free heap past it is trimmed."""


def give_memory_back() -> bool:
    """Tune glibc's malloc as above; False (and nothing done) on another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES)
    )
    if not ok:
        log.debug("mallopt refused the memory settings; keeping the C library's defaults")
    return ok
