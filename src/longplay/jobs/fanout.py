"""A step's items spread over the worker pool (``ctx.map`` on a running job).

The store keeps every item (``fanout_items``): what it is, which process runs it under
which lease, how far it got and what it gave back. The job's own process stores the
items as the step makes them, asks for up to ``fan_out - 1`` helpers (a message each,
on the job's queue) as soon as there are two, so they start while it makes the rest,
and then runs items itself until none is left, so a step never waits for a slot the
pool may not have. A helper (:func:`help_job`) takes items one at a time until none is
left for a while (:data:`LINGER`: the step may still be making them), the job stops
running, or another job waits for a worker slot: helpers only use slots nobody else
asked for, and give them back between items.

A helper runs each item under a heartbeat, as a job's own process runs its job: it
renews the item's lease while the item reports nothing, and a helper whose job was
cancelled stops at the item's next report or, reaching none within
``LONGPLAY_CANCEL_GRACE`` of the cancel, has its process ended (Celery starts another).

A process that dies leaves its item ``running``: whoever looks next (the job's
process while it waits, a helper, Celery's redelivery of the helper's message) takes
it over when its holder is gone or its lease lapsed, and runs it again alone. A
result counts only from the process that holds the item, so nothing is kept twice.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.exc import OperationalError

from longplay import keys
from longplay.broker import send as broker
from longplay.framework import (
    InputFile,
    ItemContext,
    ItemFn,
    JobCancelled,
    JobError,
    PermanentError,
    RetryableError,
    StepContext,
    get_kind,
)
from longplay.framework.fanout import ItemFailed, function_ref, resolve, run_item
from longplay.framework.kinds import as_json
from longplay.jobs.admission.pump import room, worker_capacity
from longplay.jobs.context import item_failure, load_inputs
from longplay.jobs.endings import end_pool_process
from longplay.jobs.failures import job_error
from longplay.jobs.fanout_items import DONE, FAILED, PENDING, RUNNING, Planner, cancel
from longplay.jobs.progress import Heartbeat, ProgressReporter
from longplay.settings import get_settings
from longplay.store.db import affected, session_scope
from longplay.store.models import FanOutItem, Job, JobStatus, utcnow

log = logging.getLogger(__name__)

LOOK_EVERY = 0.2
"""Seconds between the job's looks at the items others run, once none is left to take."""
LINGER = 1.0
"""Seconds a helper that finds no item left waits for the step to make more before it
gives its slot back (while no other job waits for one)."""
ASK_AGAIN = 5.0
"""Seconds after which the job's process, between two items, asks again for the
helpers it lacks (the pool was full, or a helper gave its slot to another job)."""


@dataclass(frozen=True)
class Pool:
    """Where a running job spreads a step's items, and who is asking."""

    job_id: str
    resource: str
    priority: str
    width: int
    """The kind's ``fan_out``: processes busy with the items at once, this one included."""
    worker: str
    is_gone: Callable[[str], bool]

    def map(
        self, ctx: StepContext[Any], step: str, fn: ItemFn[Any, Any, Any], items: Iterable[Any]
    ) -> list[Any]:
        """``fn`` over ``items`` on the pool; the results in order (see the module)."""
        workdir = ctx.workdir  # made (if no step did) before a helper runs an item in it
        planner = Planner(self.job_id, step, function_ref(fn))
        runner = _ItemRunner(self.job_id, step, self.worker, self.is_gone)
        report = _Report(ctx, self.job_id, step)
        expected = len(items) if isinstance(items, Sized) else self.width
        asked = None
        try:
            for item in items:
                stored = as_json(item, f"ctx.map: item {planner.count}")
                if not planner.add(stored):  # cancelled while making the items
                    raise JobCancelled(self.job_id)
                if asked is None and planner.count == 2:
                    _call_helpers(self, step, min(self.width, expected) - 1)
                    asked = time.monotonic()
                elif asked is not None and time.monotonic() - asked >= ASK_AGAIN:
                    asked = time.monotonic()
                    _call_helpers(self, step, self._helpers_missing(step))
            planner.finish()
            if asked is None:
                _call_helpers(self, step, min(self.width, planner.count) - 1)
                asked = time.monotonic()
            while True:
                claimed = runner.claim()
                if claimed is not None:
                    runner.run(
                        claimed, fn, ctx.params, ctx.inputs, workdir, report.tell, ctx.item_failed
                    )
                    report.tell()  # a cancellation checkpoint between items
                    if time.monotonic() - asked >= ASK_AGAIN:
                        asked = time.monotonic()
                        _call_helpers(self, step, self._helpers_missing(step))
                    continue
                if report.tell():
                    break
                time.sleep(LOOK_EVERY)
        except BaseException:
            # The step stopped: its items stop too (a store that does not answer
            # leaves that to the hook that ends the run).
            with contextlib.suppress(OperationalError), session_scope() as session:
                cancel(session, self.job_id, step)
            raise
        with session_scope() as session:
            return list(
                session.scalars(
                    select(FanOutItem.result)
                    .where(FanOutItem.job_id == self.job_id, FanOutItem.step == step)
                    .order_by(FanOutItem.position)
                )
            )

    def _helpers_missing(self, step: str) -> int:
        """Helpers the items left could still use: a slot may have freed since the
        last ask, or a helper stopped to give its slot to another job."""
        with session_scope() as session:
            counts = dict(
                session.execute(
                    select(FanOutItem.status, func.count())
                    .where(
                        FanOutItem.job_id == self.job_id,
                        FanOutItem.step == step,
                        FanOutItem.status.in_([PENDING, RUNNING]),
                        or_(FanOutItem.worker.is_(None), FanOutItem.worker != self.worker),
                    )
                    .group_by(FanOutItem.status)
                ).all()
            )
        return min(self.width - 1, counts.get(PENDING, 0)) - counts.get(RUNNING, 0)


def help_job(job_id: str, step: str, *, worker: str, is_gone: Callable[[str], bool]) -> int:
    """Run items of ``job_id``'s step in this process while there are any, the job runs
    and no other job waits for a slot; how many this process finished.

    An item that fails is kept ``failed`` with its error, judged as in the job's own
    process (:func:`~longplay.jobs.failures.job_error`), and the job's process fails
    the step with it: for another try where that error is retryable."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.RUNNING.value:
            return 0
        session.expunge(job)
    kind = get_kind(job.kind)
    if kind is None:
        return 0
    params = kind.params.model_validate(job.params)
    try:
        inputs = load_inputs(job)
    except JobError:  # gone: the job's own process fails the job, saying so
        return 0
    workdir = get_settings().work_dir / job.id
    runner = _ItemRunner(job.id, step, worker, is_gone)
    finished = 0
    idle_since = None
    while _still_running(job.id) and not _others_waiting(job):
        claimed = runner.claim()
        if claimed is None:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= LINGER:
                break
            time.sleep(LOOK_EVERY)
            continue
        idle_since = None
        try:
            fn = resolve(claimed.function)
            failed = partial(item_failure, job)
            with runner.beating(claimed) as lost:
                runner.run(claimed, fn, params, inputs, workdir, lambda: False, failed, lost)
        except JobCancelled:
            break
        except Exception as exc:
            log.warning("job %s: item %d of %s failed: %r", job.id, claimed.position, step, exc)
            runner.fail(claimed, job_error(job, kind, exc).as_dict())
            break
        finished += 1
    return finished


@dataclass(frozen=True)
class _Claimed:
    id: int
    position: int
    function: str
    item: Any


class _ItemRunner:
    """Takes items of one step and runs them in this process, under a lease."""

    def __init__(self, job_id: str, step: str, worker: str, is_gone: Callable[[str], bool]) -> None:
        settings = get_settings()
        self.job_id, self.step, self.worker, self.is_gone = job_id, step, worker, is_gone
        self.lease = timedelta(seconds=settings.worker.lease_seconds)
        self.interval = settings.worker.progress_write_interval

    def claim(self) -> _Claimed | None:
        """The first item nobody runs, or one whose holder is gone or lease lapsed,
        now held by this process; None when there is none."""
        now = utcnow()
        with session_scope() as session:
            rows = session.execute(
                select(
                    FanOutItem.id,
                    FanOutItem.position,
                    FanOutItem.function,
                    FanOutItem.item,
                    FanOutItem.status,
                    FanOutItem.worker,
                    FanOutItem.lease_until,
                )
                .where(
                    FanOutItem.job_id == self.job_id,
                    FanOutItem.step == self.step,
                    FanOutItem.status.in_([PENDING, RUNNING]),
                )
                .order_by(FanOutItem.position)
            ).all()
        for row in rows:
            if row.status == RUNNING and not self._lost(row.worker, row.lease_until, now):
                continue
            held_by = (
                FanOutItem.worker.is_(None)
                if row.worker is None
                else FanOutItem.worker == row.worker
            )
            with session_scope() as session:
                taken = session.execute(
                    update(FanOutItem)
                    .where(FanOutItem.id == row.id, FanOutItem.status == row.status, held_by)
                    .values(
                        status=RUNNING,
                        worker=self.worker,
                        lease_until=now + self.lease,
                        tries=FanOutItem.tries + 1,
                        fraction=0.0,
                        started_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
            if affected(taken):
                if row.status == RUNNING:
                    log.warning(
                        "job %s: item %d of %s lost with %s; running it again",
                        self.job_id,
                        row.position,
                        self.step,
                        row.worker,
                    )
                return _Claimed(row.id, row.position, row.function, row.item)
        return None

    def _lost(self, holder: str | None, lease_until: Any, now: Any) -> bool:
        return (
            lease_until is None
            or lease_until < now
            or (holder is not None and self.is_gone(holder))
        )

    def run(
        self,
        claimed: _Claimed,
        fn: Callable[..., Any],
        params: Any,
        inputs: Sequence[InputFile],
        workdir: Path,
        on_progress: Callable[[], object],
        failed: ItemFailed,
        lost: threading.Event | None = None,
    ) -> None:
        """Run one held item and keep its result, if this process still holds it then.
        ``on_progress`` is called after each write of the item's progress; what the
        item raises, ``failed`` judges (naming the item). Once ``lost`` is set (by the
        item's heartbeat, :meth:`beating`), every report of the item stops it."""
        last = time.monotonic()

        def progress(done: float, total: float, **_: Any) -> None:
            nonlocal last
            if lost is not None and lost.is_set():
                raise JobCancelled(self.job_id)
            now = time.monotonic()
            if now - last < self.interval:
                return
            last = now
            fraction = min(1.0, max(0.0, done / total)) if total else 0.0
            if not self._touch(claimed, fraction=fraction, lease_until=utcnow() + self.lease):
                raise JobCancelled(self.job_id)
            on_progress()

        item_ctx = ItemContext(self.job_id, params, inputs, workdir, progress)
        result = run_item(fn, item_ctx, claimed.item, claimed.position, failed)
        stored = as_json(result, f"ctx.map: the result of item {claimed.position}")
        kept = self._touch(claimed, status=DONE, result=stored, fraction=1.0, finished_at=utcnow())
        if not kept:
            log.info(
                "job %s: item %d of %s was no longer ours", self.job_id, claimed.position, self.step
            )

    @contextlib.contextmanager
    def beating(self, claimed: _Claimed) -> Iterator[threading.Event]:
        """A heartbeat for the held item while it runs here, the job's own
        (:class:`~longplay.jobs.progress.Heartbeat`) with the item's lease to renew: an
        item that reports nothing for long is not taken for lost, and once it is no
        longer ours the event given is set, which its next report stops at. If the job
        was cancelled and the item reaches no report within ``cancel_grace`` of the
        cancel, this process is ended (:func:`_end_stuck_helper`).

        Not for the job's own process: its job's heartbeat does this for it."""
        settings = get_settings()
        # A reporter of no steps: the item's progress goes to its row, not the job's.
        beaten = ProgressReporter(self.job_id, self.worker, [], write_interval=self.interval)
        heartbeat = Heartbeat(
            beaten,
            settings.worker.heartbeat_interval,
            cancel_grace=settings.worker.cancel_grace,
            on_overdue=partial(
                _end_stuck_helper, self.job_id, self.step, claimed.position, worker=self.worker
            ),
            renew=lambda: self._touch(claimed, lease_until=utcnow() + self.lease),
        )
        heartbeat.start()
        try:
            yield beaten.lost
        finally:
            heartbeat.stop()

    def fail(self, claimed: _Claimed, error: dict[str, object]) -> None:
        self._touch(claimed, status=FAILED, error=error, finished_at=utcnow())

    def _touch(self, claimed: _Claimed, **values: Any) -> bool:
        """Change the item if this process still holds it running."""
        with session_scope() as session:
            result = session.execute(
                update(FanOutItem)
                .where(
                    FanOutItem.id == claimed.id,
                    FanOutItem.status == RUNNING,
                    FanOutItem.worker == self.worker,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return bool(affected(result))


class _Report:
    """The job's progress from its items: the sum of their fractions."""

    def __init__(self, ctx: StepContext[Any], job_id: str, step: str) -> None:
        self.ctx, self.job_id, self.step = ctx, job_id, step

    def tell(self) -> bool:
        """Report the items' progress (a cancellation checkpoint); True once all are done.
        Raises the error of an item that failed elsewhere."""
        with session_scope() as session:
            counts = session.execute(
                select(FanOutItem.status, func.count(), func.sum(FanOutItem.fraction))
                .where(FanOutItem.job_id == self.job_id, FanOutItem.step == self.step)
                .group_by(FanOutItem.status)
            ).all()
            error = session.scalar(
                select(FanOutItem.error)
                .where(
                    FanOutItem.job_id == self.job_id,
                    FanOutItem.step == self.step,
                    FanOutItem.status == FAILED,
                )
                .limit(1)
            )
        if error is not None:
            kind = RetryableError if error.get("retryable") else PermanentError
            raise kind(str(error.get("message")), code=str(error.get("code")))
        total = sum(int(n) for _, n, _ in counts)
        done = sum(int(n) for status, n, _ in counts if status == DONE)
        running = sum(int(n) for status, n, _ in counts if status == RUNNING)
        fraction = sum(float(f or 0.0) for _, _, f in counts)
        self.ctx.advance(fraction, total, items=total, items_done=done, items_running=running)
        return done == total


def _call_helpers(pool: Pool, step: str, wanted: int) -> None:
    """Ask for up to ``wanted`` helpers, no more than the pool has slots free that no
    waiting job asked for. Without a broker the job's process runs every item."""
    if wanted <= 0:
        return
    settings = get_settings()
    try:
        with session_scope() as session:
            free = room(session, settings, worker_capacity()).get(pool.resource, 0)
        free -= settings.admission.dispatch_ahead
        queue = keys.queue_name(pool.resource, pool.priority)
        helpers = max(0, min(wanted, free))
        for _ in range(helpers):
            broker.help_job(pool.job_id, step, queue=queue)
        log.info(
            "job %s: %s asked for %d helpers (%d slots free)", pool.job_id, step, helpers, free
        )
    except Exception as exc:
        log.warning(
            "job %s: no helpers for %s (%s); running its items alone", pool.job_id, step, exc
        )


def _end_stuck_helper(job_id: str, step: str, position: int, *, worker: str) -> None:
    """The helper's item ran past ``cancel_grace`` after its job was cancelled, without
    reaching a report: end this pool process as
    :func:`~longplay.jobs.endings.end_stuck_process` ends a job's (the job's own process
    settles the job). The job's scratch space goes first, unless a retry took the job up
    again meanwhile: the job's process may have removed it already, before this one
    wrote more there. Runs in the heartbeat thread.

    Celery requeues the helper's message; that delivery finds the job not running and
    does nothing."""
    log.warning(
        "job %s: item %d of %s still running %g s after the job was cancelled; "
        "stopping its helper process",
        job_id,
        position,
        step,
        get_settings().worker.cancel_grace,
    )
    try:
        if _status(job_id) == JobStatus.CANCELLED.value:
            shutil.rmtree(get_settings().work_dir / job_id, ignore_errors=True)
    finally:
        end_pool_process(worker)


def _still_running(job_id: str) -> bool:
    return _status(job_id) == JobStatus.RUNNING.value


def _status(job_id: str) -> str | None:
    with session_scope() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def _others_waiting(job: Job) -> bool:
    """Whether a job handed to the broker waits for a slot of this job's resource."""
    with session_scope() as session:
        return bool(
            session.scalar(
                select(
                    exists().where(
                        Job.status == JobStatus.QUEUED.value,
                        Job.resource == job.resource,
                        Job.dispatched_at.is_not(None),
                    )
                )
            )
        )
