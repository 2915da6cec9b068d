"""Progress: from ``ctx.advance(done, total)`` inside a step to percent, step and ETA.

:class:`ProgressTracker` is the arithmetic (weights, percent, ETA) and has no I/O;
:class:`ProgressReporter` publishes changes as events and writes the store, each at a
bounded rate. Each store write is also the cancellation checkpoint: it only touches a
job still running on this worker, so when it touches nothing the step is stopped with
:class:`JobCancelled`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Update, bindparam, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from longplay.framework import JobCancelled, PermanentError, Step
from longplay.jobs.unit import tell
from longplay.store.db import (
    affected,
    driver_message,
    session_scope,
    session_waiting_at_most,
)
from longplay.store.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)
Clock = Callable[[], float]

EVENTS_PER_SECOND = 20.0
EVENT_BURST = 20
"""A job's progress events are rate-limited, a token bucket: bursts of up to
``EVENT_BURST`` go out as they come (a transcript's segments, found all at once), and
then ``EVENTS_PER_SECOND`` at most. A step may call ``ctx.advance`` for every word it
reads: thousands of events a second, which every follower would be sent and a job's
stream (its last ``STREAM_MAXLEN`` events) would keep instead of the job's beginning.
A step's start and end always go out, and a change held back goes out with the next
event due, or with the step's end. (The heartbeat does not send it: it talks to the
store alone, so that a Redis that hangs cannot keep a live job's lease from renewal.)

The store is written at most every ``write_interval``; a change that came sooner is
written by the heartbeat thread once the interval is up, so a job polled through the
API is never more than that behind, even while a long call runs after its last report."""

PROGRESS_PATIENCE = 0.5
"""Seconds a progress write waits for SQLite's write lock before it is skipped: the
step that reported it waits meanwhile (the usual wait is a few milliseconds)."""
SKIPPED_PAUSE = 5.0
"""Seconds more before the next progress write, after one was skipped: a store whose
lock another process holds for long costs a step a tenth of that time, not all of it."""


ETA_AFTER_PERCENT = 5.0
"""Percent of a run's time a run must have behind it before its pace is told as an ETA."""
RECENT_S = 120.0
"""Seconds of a run's recent past its pace is measured over, at most."""
WINDOW_SHARE = 1 / 3
"""The share of a run's time so far that its pace is measured over (from
:data:`MIN_WINDOW_S` to :data:`RECENT_S`): the run's pace lately, not since its start,
whose first seconds (a model loaded, the first window decoded) said a transcription had
2.5 times the time left that it had."""
MIN_WINDOW_S = 10.0
"""Seconds, at least, that a pace is measured over: steps that report in bursts (a
transcript's segments, a podcast's turns) do not swing the ETA with each."""
SAMPLE_EVERY_S = 1.0
"""Seconds between two points of the run's recent past kept for that pace."""


class ProgressTracker:
    """Turns per-step fractions into overall percent and an ETA.

    The percent goes by the steps' declared weights; the ETA by each step's share of a
    run's time, where ``shares`` give them (:mod:`longplay.jobs.step_times`), else by
    the weights too."""

    def __init__(
        self,
        steps: Sequence[Step[Any]],
        *,
        clock: Clock = time.monotonic,
        shares: Mapping[str, float] | None = None,
    ) -> None:
        self._weights = {s.name: s.weight for s in steps}
        self._total = sum(self._weights.values())
        self._shares = (
            dict(shares)
            if shares is not None and set(shares) == set(self._weights)
            else {name: weight / self._total for name, weight in self._weights.items()}
        )
        self._done_weight = 0.0
        self._done_share = 0.0
        self._clock = clock
        self.step: str | None = None
        self.step_fraction = 0.0
        self._started_at: float | None = None
        self._start_share = 0.0
        self._step_began = 0.0
        self.seconds: dict[str, float] = {}
        """Seconds each step run in this run took, to its end (its outputs kept)."""
        self.skipped = False
        """Whether a step was skipped (done by an earlier run): this run's times are
        not a whole run's."""
        self._seen: deque[tuple[float, float]] = deque()
        """(when, share of the run's time behind it) as the run moved on, a second apart
        at least, back to the last point before the recent window."""
        self._seeing = threading.Lock()
        """Held to change or read :attr:`_seen`: the heartbeat's thread asks for the ETA
        while the step's moves the run on."""

    @property
    def percent(self) -> float:
        current = self._weights.get(self.step or "", 0.0) * self.step_fraction
        return min(100.0, 100.0 * (self._done_weight + current) / self._total)

    @property
    def time_done(self) -> float:
        """The share of the run's time behind it (0 to 1), by the step shares."""
        return min(
            1.0, self._done_share + self._shares.get(self.step or "", 0.0) * self.step_fraction
        )

    def start(self, step: str) -> None:
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
            self._start_share = self.time_done
            self._seen.append((now, self._start_share))
        self.step = step
        self.step_fraction = 0.0
        self._step_began = now

    def set_fraction(self, done: float, total: float) -> None:
        fraction = done / total if total > 0 else 1.0
        self.step_fraction = max(self.step_fraction, min(1.0, max(0.0, fraction)))
        self._saw()

    def finish(self, step: str, *, skipped: bool = False) -> None:
        """Count a step as done (also for a step skipped because a retry already did it)."""
        self._done_weight += self._weights[step]
        self._done_share += self._shares[step]
        if skipped:
            self.skipped = True
        elif self.step == step:
            self.seconds[step] = self._clock() - self._step_began
        if self.step == step:
            self.step_fraction = 0.0
            self.step = None
        self._saw()

    def _saw(self) -> None:
        """Keep where the run is now, and no more of the past than the recent window
        needs."""
        if self._started_at is None:
            return
        now = self._clock()
        with self._seeing:
            if not self._seen or now - self._seen[-1][0] >= SAMPLE_EVERY_S:
                self._seen.append((now, self.time_done))
            while len(self._seen) > 1 and self._seen[1][0] <= now - RECENT_S:
                self._seen.popleft()

    def eta_seconds(self) -> float | None:
        """Seconds left at the run's recent pace; None until it has one
        (:data:`ETA_AFTER_PERCENT` of its time behind it: a model's first window, loaded
        and read in one go, gave a transcription 0.95 % after 18 s and an ETA of 32
        minutes, where 35 s were left).

        The pace is measured over the run's last third, 10 s to 2 minutes of it
        (:data:`WINDOW_SHARE`): a run that slows (a long transcription whose helper
        process left for another job went on at half its pace) or speeds up is told
        so within that. Where the run stood still for the whole window, the pace
        reaches back to its last move, so the ETA grows while it stands rather than
        going blank (the heartbeat writes it then, :meth:`ProgressReporter.eta`)."""
        if self._started_at is None:
            return None
        now = self._clock()
        elapsed = now - self._started_at
        done = self.time_done
        if elapsed < 0.5 or 100 * (done - self._start_share) < ETA_AFTER_PERCENT:
            return None
        window = min(RECENT_S, max(MIN_WINDOW_S, elapsed * WINDOW_SHARE))
        since, then = self._started_at, self._start_share
        with self._seeing:
            for when, share in reversed(self._seen):  # the latest point before the window
                if when <= now - window and share < done:
                    since, then = when, share
                    break
        return max(0.0, (1.0 - done) * (now - since) / (done - then))


class ProgressReporter:
    """Publishes progress events and writes them to the store, each at a bounded rate.

    The step's thread reports; a change it may not write yet is kept for the job's
    :class:`Heartbeat` to write when it is due (:meth:`write_unwritten`)."""

    def __init__(
        self,
        job_id: str,
        worker: str,
        steps: Sequence[Step[Any]],
        *,
        write_interval: float,
        clock: Clock = time.monotonic,
        known: Job | None = None,
        shares: Mapping[str, float] | None = None,
    ) -> None:
        self.job_id = job_id
        self._known = known
        """The runner's copy of the job, carried by the announcements."""
        self.worker = worker
        self.tracker = ProgressTracker(steps, clock=clock, shares=shares)
        self._write_interval = write_interval
        self._clock = clock
        self._last_write = clock()  # the claim has just written the job
        self._writing = threading.Lock()
        """Held for each store write: the step's and the heartbeat's never cross, so
        an older snapshot cannot land after a newer one."""
        self._unwritten: dict[str, Any] | None = None
        self.wake = threading.Event()
        """Set when a change is first left unwritten: the heartbeat wakes to write it in
        time (a later change before that write has the same deadline)."""
        self._tokens = float(EVENT_BURST)
        self._refilled = clock()
        self._last_published: dict[str, Any] | None = None
        self.details: dict[str, Any] = {}
        self.lost = threading.Event()
        """Set by the heartbeat when the job stopped being ours (cancelled, lease lost)."""

    def start_step(self, step: Step[Any]) -> None:
        self.tracker.start(step.name)
        self.details = {}
        self._emit(at_once=True)

    def finish_step(self, step: Step[Any], *, skipped: bool = False) -> None:
        self.tracker.finish(step.name, skipped=skipped)
        if skipped:
            tell("step_skipped", self.job_id, known=self._known, step=step.name)

    def advance(self, done: float, total: float, **details: Any) -> None:
        if self.lost.is_set():
            raise JobCancelled(self.job_id)
        self.tracker.set_fraction(done, total)
        self.details = bounded(json_safe({**details, "done": done, "total": total}))
        self._emit()

    def end_step(self) -> None:
        """The running step returned: its whole share counts, and the details it last
        reported stay (a step that reported itself done publishes nothing more)."""
        if self.lost.is_set():
            raise JobCancelled(self.job_id)
        self.tracker.set_fraction(1, 1)
        self._emit(at_once=True)

    def _emit(self, *, at_once: bool = False) -> None:
        """Publish the change (rate-limited, unless ``at_once``) and write it to the
        store when a write is due. Called in the step's own thread only."""
        now = self._clock()
        snapshot = self.snapshot()
        self._tokens = min(EVENT_BURST, self._tokens + (now - self._refilled) * EVENTS_PER_SECOND)
        self._refilled = now
        if snapshot != self._last_published and (at_once or self._tokens >= 1):
            self._publish(snapshot)
        if now - self._last_write >= self._write_interval:
            self.write(snapshot)
        else:
            deadline_is_new = self._unwritten is None
            self._unwritten = snapshot
            if deadline_is_new:  # else the heartbeat already waits for it
                self.wake.set()

    def _publish(self, snapshot: dict[str, Any]) -> None:
        """Send ``snapshot`` as the job's progress event."""
        self._last_published = snapshot
        self._tokens = max(0.0, self._tokens - 1)
        tell("progress", self.job_id, known=self._known, status="running", **snapshot)

    def eta(self) -> float | None:
        """The ETA now, as a snapshot has it; the heartbeat writes it with the lease, so
        that a step that reports nothing for a while is seen to take longer (the ETA
        stood at its last report's, 51 s for 11 s of a transcription's silence)."""
        eta = self.tracker.eta_seconds()
        return round(eta, 1) if eta is not None else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "progress": round(self.tracker.percent, 2),
            "step": self.tracker.step,
            "step_details": self.details,
            "eta_seconds": self.eta(),
        }

    def write(self, snapshot: dict[str, Any]) -> None:
        """Write progress if the job is still ours; otherwise stop the step."""
        with self._writing:
            self._unwritten = None  # this one is newer
            held = self._store(snapshot)
        if held is False:
            self.lost.set()
            raise JobCancelled(self.job_id)

    def unwritten_due_in(self) -> float | None:
        """Seconds until the change left unwritten may be written; None if there is none."""
        if self._unwritten is None:
            return None
        return max(0.0, self._write_interval - (self._clock() - self._last_write))

    def write_unwritten(self) -> bool | None:
        """Write the change left unwritten, if its time has come (the heartbeat's call).
        True or False: whether the job is still ours; None: nothing was written."""
        with self._writing:
            snapshot = self._unwritten
            if snapshot is None or self._clock() - self._last_write < self._write_interval:
                return None
            if self._unwritten is snapshot:  # not replaced by a newer one meanwhile
                self._unwritten = None
            return self._store(snapshot)

    def _store(self, snapshot: dict[str, Any]) -> bool | None:
        """Write ``snapshot`` (holding ``_writing``): whether the job is still ours.

        A store that does not answer (or whose write lock stays taken for
        :data:`PROGRESS_PATIENCE`) skips this write, rather than failing the job: None,
        and the next one tries again :data:`SKIPPED_PAUSE` later; the lease decides if
        the store stays away too long."""
        self._last_write = self._clock()
        try:
            with session_waiting_at_most(PROGRESS_PATIENCE) as session:
                return touch_in(
                    session,
                    self.job_id,
                    self.worker,
                    progress=snapshot["progress"],
                    current_step=snapshot["step"],
                    step_details=snapshot["step_details"],
                    eta_seconds=snapshot["eta_seconds"],
                    updated_at=utcnow(),
                )
        except OperationalError as exc:
            log.warning(
                "job %s: progress not written, the store did not answer: %s",
                self.job_id,
                driver_message(exc),
            )
            self._last_write += SKIPPED_PAUSE
            return None


_PLAIN = frozenset({str, int, float, bool, type(None)})


def json_safe(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` as the store and the live events both keep them: a value that is not
    JSON becomes its ``str`` (a datetime, a Path), a tuple a list, a key text, as
    ``json.dumps(default=str)`` makes the events. Plain values (the usual case, on
    every ``advance``) are returned as they are, without a round trip."""
    for value in details.values():
        if type(value) not in _PLAIN:
            return dict(json.loads(json.dumps(details, default=str)))
    return details


DETAILS_LIMIT = 16 * 1024
"""The most bytes of JSON a step's progress details may take. They travel in every
progress event to every follower and are written to the job's row at each store write:
they are for a progress bar, not for results."""


def bounded(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` if their JSON is at most :data:`DETAILS_LIMIT` bytes; else the step
    fails at the call (``invalid_progress``), naming the largest value, rather than
    slow every follower and the store for the rest of the job."""
    total = len(json.dumps(details).encode())
    if total <= DETAILS_LIMIT:
        return details
    sizes = {key: len(json.dumps(value).encode()) for key, value in details.items()}
    largest = max(sizes, key=sizes.__getitem__)
    raise PermanentError(
        f"ctx.advance: the step details are {total / 1024:.1f} KiB of JSON, more than the "
        f"{DETAILS_LIMIT // 1024} KiB progress may carry (the largest, {largest!r}, is "
        f"{sizes[largest] / 1024:.1f} KiB): keep large values in an output file "
        "(ctx.add_output) and report counts or names",
        code="invalid_progress",
    )


def touch(job_id: str, worker: str, **values: Any) -> bool:
    """Renew the lease of a job still running on ``worker`` (and set ``values``).

    False when the job is no longer ours: cancelled, finished, or taken over.
    """
    with session_scope() as session:
        return touch_in(session, job_id, worker, **values)


def touch_in(session: Session, job_id: str, worker: str, **values: Any) -> bool:
    """:func:`touch` inside the caller's transaction."""
    params = {f"new_{name}": value for name, value in values.items()}
    statement = _touch_statement(tuple(sorted(values)))
    result = session.connection().execute(
        statement, {"job_id": job_id, "holder": worker, "now": utcnow(), **params}
    )
    return bool(affected(result))


@lru_cache(maxsize=16)
def _touch_statement(names: tuple[str, ...]) -> Update:
    """The UPDATE of a touch that sets ``names``, built once (building a statement costs
    more than running it)."""
    return (
        update(Job)
        .where(
            Job.id == bindparam("job_id"),
            Job.status == JobStatus.RUNNING.value,
            Job.worker == bindparam("holder"),
        )
        .values(
            heartbeat_at=bindparam("now"),
            **{name: bindparam(f"new_{name}") for name in names},
        )
        .execution_options(synchronize_session=False)
    )


def grace_left(job_id: str, grace: float) -> float | None:
    """Seconds a cancelled job may still run before it is stopped by force: ``grace``
    counted from the cancel; None when the job was not cancelled (taken over, gone)."""
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.finished_at).where(Job.id == job_id)).first()
    if row is None or row.status != JobStatus.CANCELLED.value:
        return None
    if row.finished_at is None:
        return grace
    elapsed = (utcnow() - row.finished_at).total_seconds()
    return min(grace, max(0.0, grace - elapsed))


class Heartbeat:
    """Renews the job's lease while a step runs, even one that reports no progress.

    It also writes the progress the step reported but could not write yet
    (:meth:`ProgressReporter.write_unwritten`); such a write renews the lease too.

    Each beat is also a cancellation check for steps that report nothing. Once the
    job is cancelled, the step has ``cancel_grace`` seconds (from the cancel) to reach
    a checkpoint and stop; if it has not, ``on_overdue`` runs in the heartbeat thread
    (it cleans up and ends the process).

    A pool process runs one job at a time, so it has one heartbeat thread, started with
    its first job and handed each next job's heartbeat: starting a thread per job costs
    a short job more than its own work does.

    ``renew`` is what a beat renews, and says whether it is still ours: the job's lease,
    with its ETA as of now, unless given (a fan-out helper renews the item it runs,
    :mod:`longplay.jobs.fanout`).
    """

    def __init__(
        self,
        reporter: ProgressReporter,
        interval: float,
        *,
        cancel_grace: float | None = None,
        on_overdue: Callable[[], None] | None = None,
        renew: Callable[[], bool] | None = None,
    ) -> None:
        self._reporter = reporter
        self._renew = renew or (
            lambda: touch(reporter.job_id, reporter.worker, eta_seconds=reporter.eta())
        )
        self._interval = interval
        self._cancel_grace = cancel_grace
        self._on_overdue = on_overdue
        self._stop_event = threading.Event()

    def start(self) -> None:
        """Beat in this process's heartbeat thread until :meth:`stop`."""
        _heartbeat_thread().hand(self)

    def run(self) -> None:
        reporter = self._reporter
        next_beat = time.monotonic() + self._interval
        while True:
            reporter.wake.clear()  # before the check: a stop() after it wakes the wait
            if self._stop_event.is_set():
                return
            wait = next_beat - time.monotonic()
            due = reporter.unwritten_due_in()
            reporter.wake.wait(max(0.0, wait if due is None else min(wait, due)))
            if self._stop_event.is_set():
                return
            try:
                held = reporter.write_unwritten()
                if held is None and time.monotonic() >= next_beat:
                    held = self._renew()
            except Exception:  # a database blip: try again at the next beat
                held = None
            if held is not None or time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._interval
            if held is False:
                reporter.lost.set()
                self._await_stop()
                return

    def _await_stop(self) -> None:
        if self._on_overdue is None or self._cancel_grace is None:
            return
        try:
            left = grace_left(self._reporter.job_id, self._cancel_grace)
        except Exception:  # the store does not answer: count the whole grace from now
            left = self._cancel_grace
        if left is None or self._stop_event.wait(left):
            return
        self._on_overdue()

    def stop(self) -> None:
        self._stop_event.set()
        self._reporter.wake.set()


class _HeartbeatThread:
    """A process's heartbeat thread: runs the heartbeats handed to it, one after another
    (each returns once its job's runner stops it)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._next: queue.SimpleQueue[Heartbeat] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="heartbeat", daemon=True).start()

    def hand(self, heartbeat: Heartbeat) -> None:
        self._next.put(heartbeat)

    def _serve(self) -> None:
        while True:
            self._next.get().run()


_thread: _HeartbeatThread | None = None


def _heartbeat_thread() -> _HeartbeatThread:
    """This process's heartbeat thread (a forked child starts its own)."""
    global _thread
    if _thread is None or _thread.pid != os.getpid():
        _thread = _HeartbeatThread()
    return _thread
