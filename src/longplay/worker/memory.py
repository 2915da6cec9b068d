"""How a worker pool process gives the C heap's memory back after a job.

Models and decoders allocate and free hundreds of megabytes per job. glibc keeps
freed memory in its heaps for reuse, so without help a pool process would hold its
largest job's memory for life (measured: 100-200 MiB after a transcription).

The memory is handed back between jobs, with ``malloc_trim(0)``, and not during
them. Tuning malloc to hand it back at once (``mallopt`` with a 128 KiB mmap and
trim threshold, as this module did before) turns every large temporary of a model
into fresh pages the kernel must fault in and zero: it made a Whisper transcription
55 % slower, 2.2 million page faults against 0.25 million (``bench/speech.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


def give_memory_back() -> bool:
    """Return the free pages of every malloc arena to the system; False (and nothing
    done) on a C library without ``malloc_trim`` (musl, macOS)."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
