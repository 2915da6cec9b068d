"""Handing a committed delivery over: to a sender thread of this process, else to a
worker through the broker.

A message went to the broker only, to be sent by whichever worker pool process was
free. While every pool process ran a job, none was, so a long job's ``job.started``
and ``job.progress`` messages waited for a job to end, and were superseded unsent by
their own job's end; a retry after its backoff waited the same way. An attempt is
mostly waiting on the network, so now a few threads of the process that stored the
message (the pool process running the job, the API process that cancelled it) make
it at once, and the next attempt, if one is due, when its time comes. One job's
messages go to one thread, in the order they were stored.

Where a thread's queue, or the list of attempts to come, is full, the message goes
to the broker as before (a task with a countdown, which hands the attempt to a
thread of the pool process that takes it). A process that dies with messages queued
or waiting loses nothing: each is a row that beat's sweep sends again.

The API and the worker make attempts (:func:`sends_with`, at their start); any other
process that stores a message (a command) hands it to the broker.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import threading
import time
import zlib
from collections.abc import Callable

from longplay.broker import send as broker

log = logging.getLogger(__name__)

SENDERS = 4
"""Sender threads per process, started at its first message."""
ROOM = 100
"""Messages that may wait for each thread before they go to the broker instead."""
LATER_ROOM = 1000
"""Attempts to come (retries waiting out their backoff) a process keeps itself."""

Delivery = tuple[str, str]
"""A delivery's id and its job's."""
Deliver = Callable[[str], float | None]
"""One attempt at a delivery: the seconds until the next one is due, or None."""
_deliver: Deliver | None = None


def sends_with(deliver: Deliver) -> None:
    """Let this process's threads make attempts with ``deliver``
    (:func:`longplay.jobs.webhooks.delivery.deliver`, which this module cannot import:
    it tells the job's stream how an attempt went through the units of work, whose
    outbox hands messages to this module)."""
    global _deliver
    _deliver = deliver


class Relay:
    """The sender threads of one process, started at its first message (and again in
    a forked child, which has none of its parent's threads), and one that hands each
    attempt to come to its sender when it is due."""

    def __init__(self, senders: int = SENDERS, room: int = ROOM) -> None:
        self._senders, self._room = senders, room
        self.forget()

    def forget(self) -> None:
        """Start afresh: in a forked child, none of the parent's threads, and locks no
        thread of this process holds (the parent's may have been held as it forked)."""
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)
        self._queues: list[queue.Queue[Delivery]] = []
        self._later: list[tuple[float, str, str]] = []

    def offer(self, delivery_id: str, job_id: str) -> bool:
        """Queue an attempt at ``delivery_id``; False when its thread's queue is full."""
        queues = self._started()
        lane = queues[zlib.crc32(job_id.encode()) % len(queues)]
        try:
            lane.put_nowait((delivery_id, job_id))
        except queue.Full:
            return False
        return True

    def offer_later(self, delivery_id: str, job_id: str, delay: float) -> bool:
        """Queue an attempt ``delay`` seconds from now; False when too many wait."""
        self._started()
        with self._due:
            if len(self._later) >= LATER_ROOM:
                return False
            heapq.heappush(self._later, (time.monotonic() + delay, delivery_id, job_id))
            self._due.notify()
        return True

    def _started(self) -> list[queue.Queue[Delivery]]:
        with self._lock:
            if not self._queues:
                self._queues = [queue.Queue(self._room) for _ in range(self._senders)]
                for n, lane in enumerate(self._queues):
                    threading.Thread(
                        target=_serve, args=(lane,), name=f"webhooks-{n}", daemon=True
                    ).start()
                threading.Thread(
                    target=self._hand_over_due, name="webhooks-due", daemon=True
                ).start()
            return self._queues

    def _hand_over_due(self) -> None:
        while True:
            with self._due:
                while not self._later or self._later[0][0] > time.monotonic():
                    self._due.wait(self._later[0][0] - time.monotonic() if self._later else None)
                _, delivery_id, job_id = heapq.heappop(self._later)
            send(delivery_id, job_id)


def _serve(lane: queue.Queue[Delivery]) -> None:
    while True:
        attempt(*lane.get())


def attempt(delivery_id: str, job_id: str | None) -> None:
    """Make one attempt at a delivery and book the next one, if there is one; a store
    that does not answer leaves the row to beat's sweep."""
    deliver = _deliver
    if deliver is None:
        to_broker(delivery_id, job_id)
        return
    try:
        delay = deliver(delivery_id)
    except Exception as exc:
        log.warning("webhook %s: not sent now (%s); the sweep sends it", delivery_id, exc)
        return
    if delay is None:
        return
    if job_id is None or not RELAY.offer_later(delivery_id, job_id, delay):
        to_broker(delivery_id, job_id, countdown=delay)


RELAY = Relay()
"""This process's senders."""
os.register_at_fork(after_in_child=RELAY.forget)


def send(delivery_id: str, job_id: str) -> None:
    """Hand a committed delivery over at once: to this process's sender for its job,
    or to the broker where that sender has no room (or this process sends none)."""
    if _deliver is None or not RELAY.offer(delivery_id, job_id):
        to_broker(delivery_id, job_id)


def to_broker(delivery_id: str, job_id: str | None, *, countdown: float | None = None) -> None:
    """Hand a committed delivery to a worker; when the broker does not answer, the
    sweep sends it later."""
    try:
        broker.deliver_webhook(delivery_id, job_id, countdown=countdown)
    except Exception as exc:
        log.warning("webhook %s: not handed to a worker (%s); the sweep will", delivery_id, exc)
