"""Celery's worker, run in this process until it stops, and the exit code it ends with.

Celery's ``worker_main`` (and ``app.start``) drop the worker's exit code: a worker that
ended on an unrecoverable error, such as Redis refusing writes while its disk is full,
exited 0, and a supervisor that restarts only failures (systemd's
``Restart=on-failure``) left it stopped. The code is kept here as the worker shuts down.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_shutdown

from longplay.broker.app import celery_app


def run_worker(argv: list[str]) -> int:
    """Run ``celery worker`` with ``argv``; 0 after a stop asked for, 1 after an
    unrecoverable error."""
    codes: list[int] = []

    def kept(sender: Any = None, **_: object) -> None:
        codes.append(int(getattr(sender, "exitcode", 0) or 0))

    worker_shutdown.connect(kept, weak=False)
    try:
        celery_app.worker_main(argv)
    finally:
        worker_shutdown.disconnect(kept)
    return codes[-1] if codes else 0
