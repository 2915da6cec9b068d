"""Handing a committed delivery over: to a sender thread of this process, else to a
worker through the broker.

A message went to the broker only, to be sent by whichever worker pool process was
free. While every pool process ran a job, none was, so a long job's ``job.started``
and ``job.progress`` messages waited for a job to end, and were superseded unsent by
their own job's end. An attempt is mostly waiting on the network, so now a few
threads of the process that stored the message (the pool process running the job,
the API process that cancelled it) make it at once. One job's messages go to one
thread, in the order they were stored. A retry is a broker message with a countdown,
as before; its task hands the attempt to a thread in turn, so a slow receiver never
holds a pool process. Where a thread's queue is full, the message goes to the broker.
A process that dies with messages in its queues loses nothing: each is a row that
beat's sweep sends again.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import zlib

from longplay.broker import send as broker

log = logging.getLogger(__name__)

SENDERS = 4
"""Sender threads per process, started at its first message."""
ROOM = 100
"""Messages that may wait for each thread before they go to the broker instead."""


class Relay:
    """The sender threads of one process, started at its first message (and again in
    a forked child, which has none of its parent's threads)."""

    def __init__(self, senders: int = SENDERS, room: int = ROOM) -> None:
        self._senders, self._room = senders, room
        self._lock = threading.Lock()
        self._queues: list[queue.Queue[tuple[str, str]]] = []

    def offer(self, delivery_id: str, job_id: str) -> bool:
        """Queue an attempt at ``delivery_id``; False when its thread's queue is full."""
        queues = self._started()
        lane = queues[zlib.crc32(job_id.encode()) % len(queues)]
        try:
            lane.put_nowait((delivery_id, job_id))
        except queue.Full:
            return False
        return True

    def forget(self) -> None:
        """In a forked child: none of the parent's threads, and a lock that no thread
        of this process holds (the parent's may have been held as it forked)."""
        self._lock = threading.Lock()
        self._queues = []

    def _started(self) -> list[queue.Queue[tuple[str, str]]]:
        with self._lock:
            if not self._queues:
                self._queues = [queue.Queue(self._room) for _ in range(self._senders)]
                for n, lane in enumerate(self._queues):
                    threading.Thread(
                        target=_serve, args=(lane,), name=f"webhooks-{n}", daemon=True
                    ).start()
            return self._queues


def _serve(lane: queue.Queue[tuple[str, str]]) -> None:
    while True:
        attempt(*lane.get())


def attempt(delivery_id: str, job_id: str | None) -> None:
    """Make one attempt at a delivery and book the next one, if there is one; a store
    that does not answer leaves the row to beat's sweep."""
    # Imported here: the delivery tells the job's stream how it went, through the units
    # of work, which stage messages through the outbox, which hands them to this module.
    from longplay.jobs.webhooks import delivery

    try:
        delay = delivery.deliver(delivery_id)
    except Exception as exc:
        log.warning("webhook %s: not sent now (%s); the sweep sends it", delivery_id, exc)
        return
    if delay is not None:
        to_broker(delivery_id, job_id, countdown=delay)


RELAY = Relay()
"""This process's senders."""
os.register_at_fork(after_in_child=RELAY.forget)


def send(delivery_id: str, job_id: str) -> None:
    """Hand a committed delivery over at once: to this process's sender for its job,
    or to the broker where that sender has no room."""
    if not RELAY.offer(delivery_id, job_id):
        to_broker(delivery_id, job_id)


def to_broker(delivery_id: str, job_id: str | None, *, countdown: float | None = None) -> None:
    """Hand a committed delivery to a worker; when the broker does not answer, the
    sweep sends it later."""
    try:
        broker.deliver_webhook(delivery_id, job_id, countdown=countdown)
    except Exception as exc:
        log.warning("webhook %s: not handed to a worker (%s); the sweep will", delivery_id, exc)
