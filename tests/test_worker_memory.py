"""A pool process gives the C heap's free memory back between jobs
(:mod:`longplay.worker.memory`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Run in a process of its own, so that this one's heap does not blur the figures:
# 3,200 blocks of 64 KiB (200 MiB, below glibc's mmap threshold, so in the heap) are
# written to and freed, all but the last, which holds the heap's top where it is.
FRAGMENTED_HEAP = textwrap.dedent(
    """
    import ctypes, re
    from pathlib import Path
    from longplay.worker.memory import give_memory_back, tune_malloc

    def resident_mib():
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmRSS:\\s+(\\d+) kB", status, re.MULTILINE)[1]) // 1024

    if TUNED:
        assert tune_malloc()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(3200)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    for block in blocks[:-1]:
        libc.free(block)
    held = resident_mib()
    given = give_memory_back()
    print(held, resident_mib(), given)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")
@pytest.mark.parametrize("tuned", [False, True], ids=["defaults", "tuned"])
def test_memory_freed_in_the_middle_of_the_heap_is_given_back(tuned: bool) -> None:
    """With glibc's defaults, and with the worker's thresholds (:func:`tune_malloc`)."""
    code = f"TUNED = {tuned}\n{FRAGMENTED_HEAP}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    held, after, given = out.split()

    assert given == "True"
    assert int(held) - int(after) > 150, f"resident {held} MiB before, {after} MiB after"
