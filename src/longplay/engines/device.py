"""Where engines run: choosing the device, one job per GPU, falling back to the CPU.

One job at a time per GPU is an exclusive ``flock`` on a file in the data folder
(``locks/gpu-<host>-<gpu>.lock``), taken by :func:`gpu_slot`. A file lock rather than a
semaphore because Celery's prefork pool runs jobs in separate processes, which a
process-level semaphore cannot see; rather than a Redis lock because the kernel drops
an ``flock`` the moment its process dies, so a killed worker never leaves a GPU locked
until some expiry. The host name in the file name keeps machines that share a data
folder over the network from queueing behind each other's GPUs.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

from longplay.framework.errors import JobError, PermanentError, RetryableError
from longplay.settings import Settings, get_settings

Device = Literal["cpu", "cuda"]
T = TypeVar("T")

_OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "cuda_error_out_of_memory",
    "cudaerrormemoryallocation",
    "cublas_status_alloc_failed",
    "failed to allocate",
)


@dataclass(frozen=True)
class DeviceFallback:
    """An engine that was to run on the GPU and runs on the CPU instead, and why."""

    engine: str
    requested: Device
    used: Device
    reason: str

    def describe(self) -> str:
        """A line for the job's events."""
        return f"{self.engine} runs on the {self.used.upper()}: {self.reason}"


FallbackCallback = Callable[[DeviceFallback], None]


def cpu_threads(settings: Settings) -> int:
    """``engine_threads``, or with 0 this machine's cores shared out among the worker's
    processes, so that two jobs side by side do not fight over the same cores."""
    cores = len(os.sched_getaffinity(0))
    return settings.engines.threads or max(1, cores // settings.worker.concurrency)


def choose_device(
    setting: Literal["auto", "cpu", "cuda"], *, engine: str, cuda_available: bool
) -> Device:
    """The device an engine loads on; ``cuda`` where the engine cannot use one is an error."""
    if setting == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda"
    if setting == "cuda":
        raise PermanentError(
            f"LONGPLAY_DEVICE=cuda but {engine} cannot use a CUDA GPU on this worker; "
            "set LONGPLAY_DEVICE=auto or cpu, or install a CUDA build of the engine",
            code="device_unavailable",
        )
    return "cpu"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that device (or host) memory ran out."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _OUT_OF_MEMORY_MARKERS)


def load_on_device(
    engine: str, load: Callable[[Device], T], device: Device, *, strict: bool
) -> tuple[T, Device, DeviceFallback | None]:
    """Call ``load(device)``; when it fails on CUDA, load on the CPU instead.

    Running out of GPU memory always falls back. With ``strict`` (``LONGPLAY_DEVICE=cuda``)
    any other CUDA failure is an error; without it (``auto``) it falls back too, since
    ``auto`` means "the GPU when it works" — a CUDA library of the wrong version shows
    up only when the model loads. A :class:`JobError` from the loader (a missing model
    file) is raised as it is: the CPU would not find the file either.
    """
    try:
        return load(device), device, None
    except JobError:
        raise
    except Exception as exc:
        if device != "cuda" or (strict and not is_out_of_memory(exc)):
            raise _load_error(engine, device, exc) from exc
        fallback = DeviceFallback(engine=engine, requested="cuda", used="cpu", reason=str(exc))
    try:
        return load("cpu"), "cpu", fallback
    except JobError:
        raise
    except Exception as exc:
        raise _load_error(engine, "cpu", exc) from exc


def _load_error(engine: str, device: Device, exc: Exception) -> JobError:
    if is_out_of_memory(exc):
        return RetryableError(
            f"{engine} ran out of memory loading on the {device.upper()}: {exc}",
            code="out_of_memory",
        )
    return PermanentError(
        f"{engine} failed to load on the {device.upper()}: {exc}", code="engine_load_failed"
    )


@contextmanager
def gpu_slot(
    device: str,
    *,
    settings: Settings | None = None,
    timeout_s: float | None = None,
    poll_s: float = 0.1,
) -> Iterator[None]:
    """Hold this machine's GPU for one job; a no-op for the CPU.

    Waits while another job (in any process of this machine) holds it; past
    ``timeout_s`` raises a :class:`RetryableError` with code ``gpu_busy``.
    """
    if device != "cuda":
        yield
        return
    settings = settings or get_settings()
    path = settings.data_dir / "locks" / f"gpu-{_machine_gpu_id()}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RetryableError(
                        f"the GPU stayed busy with another job for {timeout_s:g} s",
                        code="gpu_busy",
                    ) from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _machine_gpu_id() -> str:
    """Host and physical GPU: engines use CUDA device 0, the first of CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{socket.gethostname()}-{visible}")
