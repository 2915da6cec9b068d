"""The admission loop of a worker's main process.

A thread runs an admission round each time one is asked for
(:func:`longplay.jobs.admission.pump.serve`): a job was queued, or one ended and its
slot is free. In the main process, not in a pool process, so a round never waits
behind a job and a job never pays for a round. It starts once the worker is ready (its
pool forked) and stops with the worker; every worker runs one, and the admission lock
lets one round run at a time.
"""

from __future__ import annotations

import sys
import threading

from longplay.jobs.admission import pump

IDLE = 1.0
"""Seconds the loop waits for an ask before it looks for a lock left by a dead process
(and at whether the worker is stopping)."""
SWITCH_INTERVAL = 0.0005
"""Seconds a thread of the main process may hold the GIL while the other waits for it
(Python's default is 5 ms): the loop's rounds must not hold up Celery's event loop,
which hands messages to the pool and acknowledges them, for that long."""


class AdmissionLoop:
    """Starts :func:`~longplay.jobs.admission.pump.serve` in a thread, once."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread = threading.Thread(
            target=pump.serve,
            args=(self._stopping,),
            kwargs={"idle": IDLE},
            name="admission",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """End the loop, waiting for a round it runs: a process that exits in the
        middle of one would leave the admission lock held for its whole timeout."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=IDLE + pump.LOCK_SECONDS)


LOOP = AdmissionLoop()
"""The loop of this worker's main process."""
