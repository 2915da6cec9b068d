"""How a worker pool process gives the C heap's memory back.

Models and decoders allocate and free hundreds of megabytes per job. glibc keeps
freed memory in its heaps for reuse, so without help a pool process would hold its
largest job's memory for life (measured: 100-200 MiB after a transcription).

Two things hand it back. :func:`tune_malloc`, before the pool forks, has blocks of
``MMAP_THRESHOLD`` and more mapped on their own (given back the moment they are
freed) and lets the heap keep up to ``TRIM_THRESHOLD`` free at its top; then
:func:`give_memory_back`, after each job, returns every free page of every heap.

The thresholds are no lower on purpose. At 128 KiB each (what this module set
before), every mid-sized temporary of a model became fresh pages for the kernel to
fault in and zero, and the heap's top was given back and taken again over and over:
a Whisper transcription took 55 % longer, with 2.2 million page faults against 0.25
million, and ``bench/speech.py`` had the transcribe job 43 % over Whisper alone. At
4 MiB and 32 MiB it runs as fast as with glibc's defaults, and the pool process in
that bench peaked at 953-968 MiB, against 1016-1024 with the defaults and
``malloc_trim`` alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
"""Blocks from this size are mapped on their own."""
TRIM_THRESHOLD = 32 << 20
"""Free memory at the heap's top past this size is given back as soon as it is freed."""


def tune_malloc() -> bool:
    """Set the thresholds above; False (and nothing done) on another C library."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not ok:
        log.debug("mallopt refused the memory settings; keeping the C library's defaults")
    return ok


def give_memory_back() -> bool:
    """Return the free pages of every malloc heap to the system; False (and nothing
    done) on a C library without ``malloc_trim`` (musl, macOS)."""
    libc = _libc()
    return libc is not None and hasattr(libc, "malloc_trim") and bool(libc.malloc_trim(0))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None
