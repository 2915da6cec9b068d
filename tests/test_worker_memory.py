"""A pool process gives the C heap's free memory back between jobs
(:mod:`longplay.worker.memory`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

RESIDENT_MIB = textwrap.dedent(
    """
    import re
    from pathlib import Path

    def resident_mib():
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmRSS:\\s+(\\d+) kB", status, re.MULTILINE)[1]) // 1024
    """
)
"""Source that defines ``resident_mib()``, this process's resident memory in whole MiB,
for the scripts the memory tests run in processes of their own."""


def in_a_pool_process(code: str, env: dict[str, str] | None = None) -> list[int]:
    """The whole numbers ``code`` prints, run in a process of its own set up as a worker
    pool process is (the worker's malloc thresholds), with ``resident_mib()`` and
    ``give_memory_back()`` at hand. In the suite's own process, what
    earlier tests left in the heap decides whether freed buffers reach the system, and
    the figures drift with it."""
    source = (
        RESIDENT_MIB
        + "from longplay.worker.memory import give_memory_back, tune_malloc\n"
        + "assert tune_malloc()\n"
        + textwrap.dedent(code)
    )
    out = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, check=True, env=env
    ).stdout
    return [int(figure) for figure in out.split()]


# Run in a process of its own, so that this one's heap does not blur the figures:
# 3,200 blocks of 64 KiB (200 MiB, below glibc's mmap threshold, so in the heap) are
# written to and freed, all but the last, which holds the heap's top where it is.
FRAGMENTED_HEAP = RESIDENT_MIB + textwrap.dedent(
    """
    import ctypes
    from longplay.worker.memory import give_memory_back, tune_malloc

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
