"""Scale bench: the store's busiest queries with a deep queue and a long history (PostgreSQL).

Run ``.venv/bin/python bench/scale.py [--queued N] [--owners M] [--finished F]``. It creates
a fresh database ``longplay_scale_*`` on the server ``LONGPLAY_BENCH_POSTGRES_URL`` names
(default ``postgresql://postgres@127.0.0.1:5432/postgres``) and an embedded Redis (or
``LONGPLAY_BENCH_REDIS_URL``'s), fills the jobs table with bulk SQL, and times, as medians:
an admission round, beat's upkeep queries, the queue positions of a page and a page of
``GET /v1/jobs``; then one in-process submission as the finished jobs grow from none to
``F``. It prints every query's ``EXPLAIN (ANALYZE, BUFFERS)`` and drops what it made. It
exits non-zero only when something broke, never because of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The process harness is shared with the tests, and lives with them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness

BENCH = Path(__file__).resolve().parent
AIM_MS = 20.0
"""An admission round and a page of ``GET /v1/jobs`` at 100,000 queued jobs (issue 8)."""
PAGE = 50
ANALYZE = "EXPLAIN (ANALYZE, BUFFERS) "
"""Items in a page of ``GET /v1/jobs``, the API's default."""


# -- filling the database with bulk SQL -------------------------------------------------------

# One row per owner: ``own_`` and 20 hex digits like ``new_id`` (``_OWNER_OF`` says the
# same for owner number ``o``), named ``scale-NNNNNN``.
_OWNERS = """
INSERT INTO owners (id, name, is_admin, tier, webhook_secret, created_at)
SELECT 'own_' || substr(md5('owner' || i), 1, 20), 'scale-' || lpad(i::text, 6, '0'),
       false, 'standard', 'whsec_scale', now() - interval '30 days'
FROM generate_series(0, %(owners)s - 1) AS i
"""

# The columns every job row needs, then the ones that differ by shape. ``o`` numbers the
# owner a row belongs to (0 .. owners - 1), ``n`` the row.
_JOB_COLUMNS = """
id, owner_id, kind, status, priority, priority_rank, resource, params, inputs, progress,
step_details, checkpoint, attempts, max_attempts, content_key, created_at, updated_at,
dispatched_at, run_at, retry_at, deadline, started_at, finished_at, worker, result
"""
_OWNER_OF = "'own_' || substr(md5('owner' || o), 1, 20)"

# Queued: owners submit in bursts of ``burst`` jobs, taking turns, ten milliseconds apart
# (100,000 jobs span 17 minutes). One in ten needs a GPU; one in twenty is high priority
# and one in twenty low. A few are not due: 1 % scheduled for later, 0.5 % waiting for a
# retry; 1 % have a deadline, none passed.
_QUEUED = f"""
INSERT INTO jobs ({_JOB_COLUMNS})
SELECT 'job_' || substr(md5('queued' || n), 1, 20), {_OWNER_OF}, 'noop', 'queued',
       CASE n %% 20 WHEN 0 THEN 'high' WHEN 1 THEN 'low' ELSE 'normal' END,
       CASE n %% 20 WHEN 0 THEN 0 WHEN 1 THEN 2 ELSE 1 END,
       CASE WHEN n %% 10 = 3 THEN 'gpu' ELSE 'cpu' END,
       '{{}}', '[]', 0, '{{}}', '{{}}',
       CASE WHEN n %% 200 = 99 THEN 1 ELSE 0 END, 3, md5('content' || n),
       start + n * interval '10 milliseconds', start + n * interval '10 milliseconds',
       NULL,
       CASE WHEN n %% 100 = 50 THEN now() + interval '1 day' END,
       CASE WHEN n %% 200 = 99 THEN now() + interval '1 hour' END,
       CASE WHEN n %% 100 = 7 THEN now() + interval '2 days' END,
       NULL, NULL, NULL, NULL
FROM (SELECT n, (n / %(burst)s) %% %(owners)s AS o,
             now() - interval '1 minute' - %(queued)s * interval '10 milliseconds' AS start
      FROM generate_series(0, %(queued)s - 1) AS n) AS q
"""

# In flight: jobs running on the workers, and the few handed to the broker per resource.
_IN_FLIGHT = f"""
INSERT INTO jobs ({_JOB_COLUMNS})
SELECT 'job_' || substr(md5('flying' || n), 1, 20), {_OWNER_OF}, 'noop',
       CASE WHEN n < %(running)s THEN 'running' ELSE 'queued' END, 'normal', 1,
       CASE WHEN n < %(running)s OR n %% 2 = 0 THEN 'cpu' ELSE 'gpu' END,
       '{{}}', '[]', 0.5, '{{}}', '{{}}', CASE WHEN n < %(running)s THEN 1 ELSE 0 END, 3,
       md5('flying' || n), now() - interval '5 minutes', now(), now() - interval '4 minutes',
       NULL, NULL, NULL,
       CASE WHEN n < %(running)s THEN now() - interval '4 minutes' END, NULL,
       CASE WHEN n < %(running)s THEN 'scale-worker' END, NULL
FROM (SELECT n, (n * 37) %% %(owners)s AS o
      FROM generate_series(0, %(running)s + 2 * %(handed)s - 1) AS n) AS f
"""

# Finished, older than everything queued: mostly completed, some failed, cancelled or
# expired, spread evenly over the owners. ``first`` numbers the first row of this batch.
_FINISHED = f"""
INSERT INTO jobs ({_JOB_COLUMNS})
SELECT 'job_' || substr(md5('finished' || n), 1, 20), {_OWNER_OF}, 'noop', s.status,
       'normal', 1, 'cpu', '{{}}', '[]', 100, '{{}}', '{{}}', 1, 3, md5('finished' || n),
       at, at, at, NULL, NULL, NULL, at, at + interval '2 seconds', 'scale-worker',
       '{{"outputs": []}}'
FROM (SELECT n, n %% %(owners)s AS o,
             now() - interval '2 days' - n * interval '100 milliseconds' AS at,
             CASE WHEN n %% 100 < 90 THEN 'completed' WHEN n %% 100 < 95 THEN 'failed'
                  WHEN n %% 100 < 98 THEN 'cancelled' ELSE 'expired' END AS status
      FROM generate_series(%(first)s, %(first)s + %(count)s - 1) AS n) AS s
"""


def fill(url: str, sql: str, **values: int) -> float:
    """Run one bulk statement, then ``VACUUM ANALYZE`` as autovacuum would soon, and a
    ``CHECKPOINT``, so that the timings after it do not wait behind the fill's writes to
    disk (a commit's WAL flush would, and double a submission); seconds."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(sql, values)
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("VACUUM ANALYZE owners")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Statements:
    """The SQL statements a piece of work sent, captured so their plans can be printed,
    and how many it sent."""

    seen: list[tuple[str, str, Any]] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    label: str | None = None

    def listen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        label = self.label
        if label is None:
            return
        self.sent[label] += 1
        if not any((label, statement) == seen[:2] for seen in self.seen):
            self.seen.append((label, statement, parameters))

    @contextlib.contextmanager
    def capture(self, label: str) -> Iterator[None]:
        self.label = label
        try:
            yield
        finally:
            self.label = None


@dataclass
class Timing:
    """Milliseconds of repeated runs of one piece of work, by part."""

    name: str
    runs: dict[str, list[float]] = field(default_factory=dict)

    def add(self, parts: dict[str, float]) -> None:
        for part, seconds in parts.items():
            self.runs.setdefault(part, []).append(1000 * seconds)

    def median(self, part: str = "total") -> float:
        return statistics.median(self.runs[part])


class Clock:
    """Splits one run of a piece of work into named parts."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[part] = now - self._last
        self._last = now

    def done(self) -> dict[str, float]:
        return {**self.parts, "total": time.perf_counter() - self._start}


def repeat(
    name: str, work: Callable[[Clock], object], times: int, statements: Statements
) -> Timing:
    """Run ``work`` once with its statements captured (a warm-up), then ``times`` timed."""
    with statements.capture(name):
        work(Clock())
    timing = Timing(name)
    for _ in range(times):
        clock = Clock()
        work(clock)
        timing.add(clock.done())
    return timing


@contextlib.contextmanager
def rolled_back() -> Iterator[Any]:
    """A session whose changes are undone at the end, so every repeat sees the same rows."""
    from sqlalchemy.orm import Session

    from longplay.store.db import get_engine

    session = Session(get_engine(), expire_on_commit=False)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def admission_round(clock: Clock) -> list[str]:
    """What a pump round does in the store: the room per resource, the choice, and the
    ``UPDATE`` that marks the chosen jobs as handed over (undone afterwards)."""
    from sqlalchemy import update

    from longplay.jobs.admission.choice import QUEUED, RESOURCES, choose
    from longplay.jobs.admission.pump import room
    from longplay.settings import get_settings
    from longplay.store.models import Job, utcnow

    settings = get_settings()
    # As if one worker of two processes served every resource.
    capacity = dict.fromkeys(RESOURCES, 2)
    with rolled_back() as session:
        free = room(session, settings, capacity)
        clock.lap("room")
        picked = choose(session, settings, free) if free else []
        clock.lap("choose")
        session.execute(
            update(Job)
            .where(Job.id.in_(picked), Job.status == QUEUED, Job.dispatched_at.is_(None))
            .values(dispatched_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        clock.lap("mark handed over")
    return picked


def upkeep(clock: Clock) -> None:
    """Beat's queries besides the pump: deadlines passed, messages lost, the next due moment
    (with nothing overdue or lost, they change nothing)."""
    from longplay.jobs.admission import rounds
    from longplay.store.db import session_scope

    rounds.sweep_deadlines()
    clock.lap("sweep_deadlines")
    rounds.recover_lost()
    clock.lap("recover_lost")
    with session_scope() as session:
        rounds.next_due(session)
    clock.lap("next_due")


@dataclass(frozen=True)
class PageAsk:
    """One ``GET /v1/jobs`` a client makes."""

    label: str
    owner_name: str
    status: tuple[str, ...] = ()
    second: bool = False
    """The second page, through the first one's cursor."""


def list_page(ask: PageAsk) -> Callable[[Clock], object]:
    """``service.list_jobs`` and presenting the page as the route does, JSON included."""
    from sqlalchemy import select

    from longplay.api.routes.jobs import present_page
    from longplay.api.schemas import JobList
    from longplay.jobs import service
    from longplay.store.models import JobStatus, Owner

    with rolled_back() as session:
        owner = session.scalars(select(Owner).where(Owner.name == ask.owner_name)).one()
        session.expunge(owner)
        status = [JobStatus(s) for s in ask.status]
        cursor = None
        if ask.second:
            cursor = service.list_jobs(session, owner=owner, status=status, limit=PAGE).next_cursor

    def work(clock: Clock) -> str:
        with rolled_back() as session:
            page = service.list_jobs(session, owner=owner, status=status, cursor=cursor)
            clock.lap("list_jobs")
            items = present_page(session, page.jobs)
            clock.lap("present_page")
            body = JobList(items=items, next_cursor=page.next_cursor).model_dump_json()
            clock.lap("JSON")
        return body

    return work


def positions(owner_name: str) -> Callable[[Clock], object]:
    """The queue positions of the owner's first page of queued jobs."""
    from sqlalchemy import select

    from longplay.jobs import service
    from longplay.jobs.admission.position import queue_positions
    from longplay.store.models import JobStatus, Owner

    def work(clock: Clock) -> dict[str, int]:
        with rolled_back() as session:
            owner = session.scalars(select(Owner).where(Owner.name == owner_name)).one()
            page = service.list_jobs(session, owner=owner, status=[JobStatus.QUEUED])
            clock.lap("the page")
            found = queue_positions(session, page.jobs)
            clock.lap("queue_positions")
        if len(found) != len(page.jobs):
            raise RuntimeError(f"positions for {len(found)} of {len(page.jobs)} queued jobs")
        return found

    return work


def submissions(count: int, owners: int) -> Callable[[Clock], object]:
    """``submit_job`` in-process, without handing over (``admit=False``), as the route does;
    one job per call, each in its own session, for owners in turn."""
    from sqlalchemy import select

    from longplay.jobs import submission
    from longplay.store.db import session_scope
    from longplay.store.models import Owner

    with session_scope() as session:
        names = [f"scale-{n * max(1, owners // count) % owners:06d}" for n in range(count)]
        by_name = {o.name: o for o in session.scalars(select(Owner).where(Owner.name.in_(names)))}
        session.expunge_all()
    turn = iter(range(sys.maxsize))

    def work(clock: Clock) -> str:
        owner = by_name[names[next(turn) % count]]
        with session_scope() as session:
            made = submission.submit_job(
                session, owner=owner, kind_name="noop", params={}, input_ids=[], admit=False
            )
        clock.lap("submit_job")
        return made.job.id

    return work


def plan(engine: Any, statement: str, parameters: Any) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of a statement, in a transaction rolled back, so a
    write leaves nothing behind. An ``INSERT`` gets a fresh ``id``: its own would collide
    with the row it made."""
    from longplay.store.models import new_id

    if statement.lstrip().startswith("INSERT") and isinstance(parameters, dict):
        parameters = {**parameters, "id": new_id("job")} if "id" in parameters else parameters
    with engine.connect() as conn:
        lines = list(conn.exec_driver_sql(ANALYZE + statement, parameters).scalars())
        conn.rollback()
    return [str(line) for line in lines]


def buffers(lines: Sequence[str]) -> int:
    """Pages a statement touched (shared hits and reads of its top node): unlike time,
    this does not depend on what else the machine runs."""
    for line in lines:
        if line.strip().startswith("Planning"):
            break
        if "Buffers:" in line:
            return sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", line))
    return 0


def explain(url: str, statements: Statements, labels: Sequence[str]) -> None:
    """Print the plan of each statement captured under ``labels``."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        for label, statement, parameters in statements.seen:
            if label in labels:
                print(f"\n-- {label}\n{_one_line(statement)}")
                lines = plan(engine, statement, parameters)
                print("\n".join(f"   {_cut(line)}" for line in lines))
    finally:
        engine.dispose()


def pages_touched(url: str, statements: Statements, label: str) -> int:
    """The pages the statements captured under ``label`` touch, all together (each run
    twice on one connection, the second counted: the first also reads the catalog)."""
    from sqlalchemy import create_engine

    engine = create_engine(url, pool_size=1)
    try:
        total = 0
        for seen, statement, parameters in statements.seen:
            if seen == label:
                plan(engine, statement, parameters)
                total += buffers(plan(engine, statement, parameters))
        return total
    finally:
        engine.dispose()


def _one_line(statement: str) -> str:
    return _cut(" ".join(statement.split()), 400)


def _cut(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


# -- the report --------------------------------------------------------------------------------


def print_timings(
    title: str, timings: Sequence[Timing], aims: dict[str, float], statements: Statements
) -> None:
    width = max(len(t.name) for t in timings) + 4
    print(f"\n{title}")
    head = f"{'work':<{width}}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'SQL':>5}"
    print(f"{head}  parts (median ms)")
    for timing in timings:
        total = timing.runs["total"]
        parts = ", ".join(
            f"{part} {timing.median(part):.2f}" for part in timing.runs if part != "total"
        )
        print(
            f"{timing.name:<{width}}{statistics.median(total):>10.2f}{min(total):>9.2f}"
            f"{max(total):>9.2f}{statements.sent[timing.name]:>5}  {parts}"
        )
    print("(SQL: statements one run sends)")
    for name, aim in aims.items():
        median = next(t for t in timings if t.name == name).median()
        met = "MET" if median < aim else "MISSED"
        print(f"verdict: {name} = {median:.2f} ms (aim < {aim:.0f} ms): {met}")


def print_submissions(rows: Sequence[tuple[int, Timing, int]]) -> None:
    base, base_pages = rows[0][1].median(), rows[0][2] or 1
    print("\nsubmission (submit_job in-process, admit=False) as the finished jobs grow")
    print(
        f"{'finished jobs':>14}{'median ms':>11}{'p90 ms':>9}{'ratio':>8}{'pages':>8}{'ratio':>8}"
    )
    for finished, timing, pages in rows:
        p90 = statistics.quantiles(timing.runs["total"], n=10, method="inclusive")[8]
        print(
            f"{finished:>14,}{timing.median():>11.2f}{p90:>9.2f}{timing.median() / base:>8.2f}"
            f"{pages:>8}{pages / base_pages:>8.2f}"
        )
    print(
        "(ratios against the first row, taken in this run; pages: the buffers one submission's\n"
        " statements touch, from EXPLAIN (ANALYZE, BUFFERS): the machine's load does not move it)"
    )


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--queued", type=int, default=100_000, help="queued jobs, held in the store")
    add("--owners", type=int, default=1_000, help="owners the jobs belong to")
    add("--burst", type=int, default=20, help="an owner's jobs submitted back to back")
    add("--running", type=int, default=32, help="jobs running on workers")
    add("--handed", type=int, default=2, help="queued jobs with the broker, per resource")
    add("--room", type=int, default=8, help="jobs per resource an admission round may hand over")
    add("--finished", type=int, default=1_000_000, help="finished jobs at the largest size")
    add("--repeat", type=int, default=15, help="timed runs of each query (after a warm-up)")
    add("--submits", type=int, default=200, help="submissions timed at each size")
    add("--no-plans", action="store_true", help="leave out the EXPLAIN plans")
    args = parser.parse_args(argv)
    if min(args.queued, args.owners, args.burst, args.room, args.repeat, args.submits) < 1:
        parser.error("--queued, --owners, --burst, --room, --repeat and --submits must be >= 1")
    if min(args.running, args.handed, args.finished) < 0:
        parser.error("--running, --handed and --finished must be >= 0")
    return args


def step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def bench(args: argparse.Namespace, root: Path) -> None:
    from sqlalchemy import event, text

    from longplay.kinds import load as load_kinds
    from longplay.settings import get_settings
    from longplay.store.db import get_engine

    deployment = harness.Deployment(
        root,
        "postgresql",
        plugin="bench_kinds",
        plugin_dir=BENCH,
        env={
            "LONGPLAY_DISPATCH_AHEAD": str(args.handed + args.room),
            # The filled jobs with the broker are never lost: recover_lost only looks.
            "LONGPLAY_REDISPATCH_AFTER": str(30 * 24 * 3600),
        },
        redis_url=os.environ.get("LONGPLAY_BENCH_REDIS_URL"),
        postgres_admin=os.environ.get("LONGPLAY_BENCH_POSTGRES_URL", harness.POSTGRES_ADMIN),
        database_prefix="longplay_scale",
    )
    with deployment:
        os.environ.update({k: v for k, v in deployment.env.items() if k.startswith("LONGPLAY_")})
        get_settings.cache_clear()
        load_kinds()
        url = deployment.database_url
        engine = get_engine(url)
        statements = Statements()
        event.listen(engine, "before_cursor_execute", statements.listen)
        with engine.connect() as conn:
            server = conn.execute(text("SHOW server_version")).scalar()

        step(f"filling {args.owners:,} owners and {args.queued:,} queued jobs")
        took = fill(url, _OWNERS, owners=args.owners)
        took += fill(url, _QUEUED, queued=args.queued, owners=args.owners, burst=args.burst)
        took += fill(url, _IN_FLIGHT, running=args.running, handed=args.handed, owners=args.owners)
        print(
            f"scale bench: PostgreSQL {server}, database {url.rsplit('/', 1)[1]} (dropped "
            f"at the end); {args.queued:,} queued jobs from "
            f"{args.owners:,} owners (bursts of {args.burst}), {args.running} running, "
            f"{args.handed} per resource with the broker, room {args.room} per resource; "
            f"filled in {took:.1f} s; medians of {args.repeat} runs"
        )

        step("timing admission, upkeep, positions and pages")
        # The owner of the middle burst: one with queued jobs, whatever the shape.
        owner = f"scale-{args.queued // 2 // args.burst % args.owners:06d}"
        asks = [
            PageAsk("GET /v1/jobs", owner),
            PageAsk("GET /v1/jobs?status=queued", owner, ("queued",)),
            PageAsk("GET /v1/jobs, page 2", owner, second=True),
        ]
        picked = admission_round(Clock())
        queued = [
            repeat("admission round", admission_round, args.repeat, statements),
            repeat("beat's upkeep", upkeep, args.repeat, statements),
            repeat(f"queue positions, page of {PAGE}", positions(owner), args.repeat, statements),
            *(repeat(a.label, list_page(a), args.repeat, statements) for a in asks),
        ]
        print_timings(
            f"at {args.queued:,} queued jobs (the round picks {len(picked)})",
            queued,
            {"admission round": AIM_MS, **{a.label: AIM_MS for a in asks}},
            statements,
        )

        step(f"timing submissions as the finished jobs grow to {args.finished:,}")
        sizes = sorted({0, args.finished // 10, args.finished})
        rows: list[tuple[int, Timing, int]] = []
        finished = 0
        for size in sizes:
            if size > finished:
                fill(url, _FINISHED, first=finished, count=size - finished, owners=args.owners)
                finished = size
            label = f"submit at {size:,}"
            timing = repeat(label, submissions(args.submits, args.owners), args.submits, statements)
            rows.append((size, timing, pages_touched(url, statements, label)))
        print_submissions(rows)

        ask = PageAsk(f"GET /v1/jobs?status=completed at {finished:,}", owner, ("completed",))
        history = [
            repeat(f"admission round at {finished:,}", admission_round, args.repeat, statements),
            repeat(f"GET /v1/jobs at {finished:,}", list_page(asks[0]), args.repeat, statements),
            repeat(ask.label, list_page(ask), args.repeat, statements),
        ]
        print_timings(f"with {finished:,} finished jobs as well", history, {}, statements)

        if not args.no_plans:
            print("\nplans (EXPLAIN (ANALYZE, BUFFERS), each in a transaction rolled back)")
            labels = [t.name for t in (*queued, *history)] + [f"submit at {sizes[-1]:,}"]
            explain(url, statements, labels)
        event.remove(engine, "before_cursor_execute", statements.listen)
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lp-scale-") as tmp:
        bench(args, Path(tmp))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
