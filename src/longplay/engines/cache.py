"""The process-wide engine cache: each engine is loaded once per worker process.

Engines are keyed by the settings they are built from, so a test or a plugin that asks
with other settings gets its own engine and the worker's stays as it is.
:func:`loaded_engines` is what the worker shows about them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar, cast

from longplay.engines.device import DeviceFallback, FallbackCallback
from longplay.settings import Settings

log = logging.getLogger(__name__)

EngineKind = Literal["stt", "tts", "llm", "music", "embed"]
T = TypeVar("T")


@dataclass(frozen=True)
class LoadedEngine:
    """What this process has loaded: for the worker's status and the job's events."""

    kind: EngineKind
    backend: str
    """``faster-whisper``, ``piper``, ``llama.cpp`` or ``http``."""
    model: str
    """The model file or folder, or the model name an HTTP server is asked for."""
    device: str
    """``cpu``, ``cuda``, or ``remote`` for an HTTP engine."""
    load_seconds: float
    loaded_at: datetime
    fallback: DeviceFallback | None = None
    """Set when the engine was to run on the GPU and runs on the CPU."""


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """What an engine loader hands the cache."""

    engine: T
    backend: str
    model: str
    device: str
    fallback: DeviceFallback | None = None


_entries: dict[Hashable, tuple[object, LoadedEngine]] = {}
_key_locks: dict[Hashable, threading.Lock] = {}
_guard = threading.Lock()
_listeners: list[Callable[[LoadedEngine], None]] = []


def on_engine_loaded(listener: Callable[[LoadedEngine], None]) -> None:
    """Have ``listener`` hear of each engine this process loads from now on, once it is
    loaded (the worker tells the API at once, not when the job that loaded it ends).
    A listener that raises is logged and does not fail the load."""
    _listeners.append(listener)


def cached_engine(
    kind: EngineKind,
    settings: Settings,
    load: Callable[[Settings], Loaded[T]],
    on_fallback: FallbackCallback | None,
) -> T:
    """The engine for ``kind`` built from ``settings`` (only its own group and the
    ``engines`` group matter), loaded once.

    ``on_fallback`` hears about a CPU fallback on every call, not only the one that
    loaded, so each job that uses the engine can say where it ran. A fallback engine
    stays for the life of the process (restarting the worker tries the GPU again), so
    jobs do not pay for a failing GPU load each time.
    """
    key = (kind, repr(getattr(settings, kind)), repr(settings.engines))
    with _guard:
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        if key not in _entries:
            started = time.perf_counter()
            loaded = load(settings)
            record = LoadedEngine(
                kind=kind,
                backend=loaded.backend,
                model=loaded.model,
                device=loaded.device,
                load_seconds=time.perf_counter() - started,
                loaded_at=datetime.now(UTC),
                fallback=loaded.fallback,
            )
            with _guard:
                _entries[key] = (loaded.engine, record)
            for listener in _listeners:
                try:
                    listener(record)
                except Exception:
                    log.exception("a listener of engine loads failed")
        engine, record = _entries[key]
    if record.fallback is not None and on_fallback is not None:
        on_fallback(record.fallback)
    return cast(T, engine)


def loaded_engines() -> list[LoadedEngine]:
    """The engines this process has loaded, oldest first."""
    with _guard:
        return sorted((record for _, record in _entries.values()), key=lambda r: r.loaded_at)
