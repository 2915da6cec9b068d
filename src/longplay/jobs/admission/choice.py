"""Which held jobs go to the broker next: priority, then the owner with the fewest jobs
in flight, then age; never past an owner's ``max_running``.

The order is worked out from as few rows as it needs, however deep the queue. The held,
due jobs of a resource are read oldest first (by priority, then age), a page at a time
(:class:`Waiting`), and :class:`Order` takes a job only once no row still unread could
come before it. Usually the first page decides: its oldest jobs of owners with nothing
in flight go first. When the oldest jobs all belong to owners already served (one
owner's long backlog), the reading turns to each waiting owner's first job instead, one
index probe per owner, so a round never reads the whole queue.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select, tuple_
from sqlalchemy.orm import Session

from longplay.jobs.admission.limits import limits_of
from longplay.settings import Settings
from longplay.store.models import Job, JobStatus, Owner, utcnow

RESOURCES = ("cpu", "gpu")
QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
PAGE = 256
"""Held jobs one read of the walk fetches (queue positions: a page of jobs to place)."""
WALK_AT_MOST = 2 * PAGE
"""Held jobs read oldest first before reading by owner instead."""
ROUND_PAGE = 8
"""The walk's page in an admission round, which hands over a few jobs (free slots plus
``dispatch_ahead``): a page of 256 read for those cost more than all else in a round,
and on a busy worker a round hands over one or two."""
ROUND_WALK_AT_MOST = ROUND_PAGE
""":data:`WALK_AT_MOST` in an admission round. Low, so that an owner's backlog with
jobs in flight (no row of the walk decides: an unread job of an owner with none in
flight could come first) turns soon to one probe per waiting owner instead of reading
the whole queue each round."""
LINE_PAGE = 32
"""Jobs one read of one owner's line fetches."""

Place = tuple[int, datetime, str]
"""A held job's place in its owner's line and in the walk: priority rank, age, id."""
Key = tuple[int, int, datetime, str]
"""A held job's place in admission's order: priority rank, its owner's jobs in flight,
age, id."""


_PLACE = (Job.priority_rank, Job.created_at, Job.id)


def due(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    """Held, and nothing keeps it back: its time came, its retry is due, its deadline not."""
    return and_(
        Job.status == QUEUED,
        Job.dispatched_at.is_(None),
        or_(Job.run_at.is_(None), Job.run_at <= now),
        or_(Job.retry_at.is_(None), Job.retry_at <= now),
        or_(Job.deadline.is_(None), Job.deadline > now),
    )


def in_flight() -> ColumnElement[bool]:
    """Running, or handed to the broker and about to."""
    return or_(Job.status == RUNNING, and_(Job.status == QUEUED, Job.dispatched_at.is_not(None)))


# Built once: building a statement costs more than running it, and a round runs for
# every job that is queued or ends.
_FLYING = select(Job.owner_id, func.count()).where(in_flight()).group_by(Job.owner_id)
_OWNER_LIMITS = select(Owner.tier, Owner.max_running, Owner.max_queued, Owner.submit_rate).where(
    Owner.id == bindparam("owner_id")
)


def flying_per_owner(session: Session) -> dict[str, int]:
    """Jobs in flight per owner, for every owner with any (few: at most the workers'
    slots and what waits in the broker)."""
    counts = session.connection().execute(_FLYING)
    return {owner_id: int(n) for owner_id, n in counts}


def max_running(session: Session, settings: Settings, owner_id: str) -> int | None:
    """An owner's ``max_running`` (its own, its tier's or the settings'), from one
    indexed read of its row; None when there is no such owner."""
    row = session.connection().execute(_OWNER_LIMITS, {"owner_id": owner_id}).first()
    if row is None:
        return None
    tier, most, queued, rate = row
    owner = Owner(tier=tier, max_running=most, max_queued=queued, submit_rate=rate)
    return limits_of(owner, settings).max_running


def choose(
    session: Session,
    settings: Settings,
    room: dict[str, int],
    flying: dict[str, int] | None = None,
) -> list[str]:
    """The held, due jobs to hand over now, in order: priority, then the owner with the
    fewest jobs in flight, then age; at most ``room`` per resource, within each owner's
    ``max_running``. ``flying`` is the jobs in flight per owner when the caller has
    counted them already (the pump does, in the same read as its room)."""
    now = utcnow()
    left = {r: n for r, n in room.items() if n > 0}
    caps: dict[str, int | None] = {}

    def cap(owner_id: str) -> int | None:
        if owner_id not in caps:
            caps[owner_id] = max_running(session, settings, owner_id)
        return caps[owner_id]

    if flying is None:
        flying = flying_per_owner(session)
    # The lower of the two, so that tests that shrink PAGE shrink a round's reads too.
    page, walk = min(PAGE, ROUND_PAGE), min(WALK_AT_MOST, ROUND_WALK_AT_MOST)
    waiting = [Waiting(session, r, now, page=page, walk_at_most=walk) for r in left]
    order = Order(waiting, flying, cap=cap)
    picked: list[str] = []
    while (job := order.peek()) is not None:
        order.take(job)
        picked.append(job.id)
        left[job.resource] -= 1
        if not left[job.resource]:
            order.drop(job.resource)
    return picked


class Held(NamedTuple):
    """A held, due job, as much of it as admission looks at."""

    id: str
    owner_id: str
    resource: str
    priority_rank: int
    created_at: datetime

    @property
    def place(self) -> Place:
        return (self.priority_rank, self.created_at, self.id)


def _place_params(prefix: str) -> ColumnElement[tuple[int, datetime, str]]:
    return tuple_(
        bindparam(f"{prefix}_rank", type_=Job.__table__.c.priority_rank.type),
        bindparam(f"{prefix}_created_at", type_=Job.__table__.c.created_at.type),
        bindparam(f"{prefix}_id", type_=Job.__table__.c.id.type),
    )


def _place_values(prefix: str, place: Place) -> dict[str, object]:
    rank, created_at, job_id = place
    return {f"{prefix}_rank": rank, f"{prefix}_created_at": created_at, f"{prefix}_id": job_id}


# The statements :class:`Waiting` sends, built once; a read binds the resource, the time,
# how many rows, and the place to read after (or before).
_HERE = (
    due(bindparam("now", type_=Job.__table__.c.created_at.type)),
    Job.resource == bindparam("resource"),
)
_OWNER = Job.owner_id == bindparam("owner_id")
_HELD = select(Job.id, Job.owner_id, Job.resource, Job.priority_rank, Job.created_at)
_WALK = _HELD.where(*_HERE).order_by(*_PLACE).limit(bindparam("most"))
_WALK_ON = _WALK.where(tuple_(*_PLACE) > _place_params("after"))
_LINE = _HELD.where(*_HERE, _OWNER).order_by(*_PLACE).limit(bindparam("most"))
_LINE_ON = _LINE.where(tuple_(*_PLACE) > _place_params("after"))
_PLACES_BEFORE = (
    select(*_PLACE)
    .where(*_HERE, _OWNER, tuple_(*_PLACE) < _place_params("before"))
    .order_by(*_PLACE)
    .limit(bindparam("most"))
)


def _heads() -> Select[str, str, str, int, datetime]:
    """Each owner with a queued job on the resource, one probe each (a recursive skip
    along the index on status, resource and owner), and its first due job there."""
    queued = (Job.status == QUEUED, Job.resource == bindparam("resource"))
    owners = select(func.min(Job.owner_id).label("owner_id")).where(*queued)
    owners_cte = owners.cte("waiting_owners", recursive=True)
    following = select(func.min(Job.owner_id)).where(*queued, Job.owner_id > owners_cte.c.owner_id)
    owners_cte = owners_cte.union_all(
        select(following.scalar_subquery()).where(owners_cte.c.owner_id.is_not(None))
    )
    first = (
        select(Job.id)
        .where(*_HERE, Job.owner_id == owners_cte.c.owner_id)
        .order_by(*_PLACE)
        .limit(1)
    )
    heads = (
        select(first.scalar_subquery().label("id"))
        .where(owners_cte.c.owner_id.is_not(None))
        .subquery()
    )
    return _HELD.where(Job.id == heads.c.id)


_HEADS = _heads()


class Waiting:
    """The held, due jobs of one resource, read from the store as far as they are needed.

    Each owner's line (by priority, then age) is known up to some place. At first the
    jobs are read in one walk, all owners together, oldest first: everything up to the
    walk's :attr:`frontier` is known. After :data:`WALK_AT_MOST` jobs without a decision,
    it reads by owner: every waiting owner's first job (one index probe per owner), and
    more of a line when an :class:`Order` finds it ran out.
    """

    def __init__(
        self,
        session: Session,
        resource: str,
        now: datetime,
        *,
        page: int | None = None,
        walk_at_most: int | None = None,
    ) -> None:
        self.session = session
        self.page = PAGE if page is None else page
        """Jobs one read of the walk fetches."""
        self.walk_at_most = WALK_AT_MOST if walk_at_most is None else walk_at_most
        """Jobs the walk reads before reading by owner."""
        self.resource = resource
        self.now = now
        self.lines: dict[str, deque[Held]] = defaultdict(deque)
        """Each owner's jobs read and not taken, in line order."""
        self.read: dict[str, list[Place]] = defaultdict(list)
        """The places of each owner's jobs read so far, taken or not, in line order."""
        self.ended: set[str] = set()
        """Owners whose whole line has been read (when reading by owner)."""
        self.frontier: Place | None = None
        """The walk read every due job up to here."""
        self.complete = False
        """Every due job has been read."""
        self.by_owner = False
        self._walked = 0

    def _fetch(
        self, statement: Select[str, str, str, int, datetime], **values: object
    ) -> list[Held]:
        params = {"resource": self.resource, "now": self.now, **values}
        return [Held._make(row) for row in self.session.connection().execute(statement, params)]

    def _add(self, rows: Iterable[Held]) -> list[str]:
        """Add rows just read, each continuing its owner's line (the walk reads only
        before reading by owner begins); the owners whose line had been empty."""
        fresh = []
        for row in rows:
            if not self.lines[row.owner_id]:
                fresh.append(row.owner_id)
            self.read[row.owner_id].append(row.place)
            self.lines[row.owner_id].append(row)
        return fresh

    def may_precede(self, key: Key) -> bool:
        """Whether a job not read yet could come before one with ``key``. An unread job
        lies past the walk's frontier; the best it can be is that place with an owner
        that has nothing in flight."""
        if self.complete or self.by_owner:
            return False  # by owner, every line's next job is read or bounded in the Order
        if self.frontier is None:
            return True
        rank, created_at, job_id = self.frontier
        return key > (rank, 0, created_at, job_id)

    def read_more(self) -> list[str]:
        """Read further: the walk's next page, or, past :data:`WALK_AT_MOST`, every
        waiting owner's first job; the owners whose line had been empty."""
        if self.complete or self.by_owner:
            return []
        if self._walked >= self.walk_at_most:
            return self._read_by_owner()
        if self.frontier is None:
            rows = self._fetch(_WALK, most=self.page)
        else:
            rows = self._fetch(_WALK_ON, most=self.page, **_place_values("after", self.frontier))
        self._walked += len(rows)
        self.complete = len(rows) < self.page
        if rows:
            self.frontier = rows[-1].place
        return self._add(rows)

    def _read_by_owner(self) -> list[str]:
        """Every waiting owner's first due job, for the owners not read yet."""
        self.by_owner = True
        known = set(self.read)
        return self._add(row for row in self._fetch(_HEADS) if row.owner_id not in known)

    def read_owner(self, owner_id: str) -> int:
        """Read :data:`LINE_PAGE` more of one owner's line; how many were read. Fewer:
        the line has been read to its end."""
        known = self.read.get(owner_id)
        if known:
            after = _place_values("after", known[-1])
            rows = self._fetch(_LINE_ON, owner_id=owner_id, most=LINE_PAGE, **after)
        else:
            rows = self._fetch(_LINE, owner_id=owner_id, most=LINE_PAGE)
        self._add(rows)
        if len(rows) < LINE_PAGE:
            self.ended.add(owner_id)
        return len(rows)

    def before(self, owner_id: str, place: Place) -> int:
        """How many of the owner's due jobs here, read so far, come before ``place``: all
        of them once the reading has passed ``place`` (what has been read of a line is
        always its beginning)."""
        return bisect_left(self.read.get(owner_id, []), place)

    def line_of(self, owner_id: str, *, before: Place, most: int) -> list[Place]:
        """The places of the first ``most`` of an owner's due jobs here that come before
        ``before``, read apart from the lines admission follows."""
        params = {"resource": self.resource, "now": self.now, "owner_id": owner_id, "most": most}
        rows = self.session.connection().execute(
            _PLACES_BEFORE, {**params, **_place_values("before", before)}
        )
        return [(rank, created_at, job_id) for rank, created_at, job_id in rows]


class Order:
    """Admission's order over the held, due jobs of some resources: priority, then the
    owner with the fewest jobs in flight, then age. Taking a job counts it in flight for
    its owner, so the owner's next job waits behind everyone else's turn.

    A heap holds each line's next job under its key; a key that went stale (its owner
    took a job on another resource) is put right when it comes to the top. When reading
    by owner, a line that ran out stays in the heap under its last key, a bound on the
    next one's, and is read further only when that bound comes to the top.
    """

    def __init__(
        self,
        waiting: Iterable[Waiting],
        flying: dict[str, int],
        *,
        cap: Callable[[str], int | None] | None = None,
    ) -> None:
        self.waiting = {w.resource: w for w in waiting}
        self.flying: defaultdict[str, int] = defaultdict(int, flying)
        self._cap = cap
        self._heap: list[tuple[Key, str, str]] = []
        self._last: dict[tuple[str, str], Place] = {}
        """Each line's last job taken, for the bound of a line that ran out."""

    def _key(self, job: Held) -> Key:
        return (job.priority_rank, self.flying[job.owner_id], job.created_at, job.id)

    def _push(self, waiting: Waiting, owners: Iterable[str]) -> None:
        for owner_id in owners:
            heapq.heappush(
                self._heap, (self._key(waiting.lines[owner_id][0]), waiting.resource, owner_id)
            )

    def _capped(self, owner_id: str) -> bool:
        flying = self.flying[owner_id]
        if self._cap is None or flying == 0:  # a cap is at least 1
            return False
        cap = self._cap(owner_id)
        return cap is not None and flying >= cap

    def peek(self) -> Held | None:
        """The job admission takes next, or None when there is none."""
        while True:
            if not self._heap:
                unread = [w for w in self.waiting.values() if not (w.complete or w.by_owner)]
                if not unread:
                    return None
                for waiting in unread:
                    self._read_more(waiting)
                continue
            key, resource, owner_id = self._heap[0]
            found = self.waiting.get(resource)
            if found is None:
                heapq.heappop(self._heap)
                continue
            line = found.lines[owner_id]
            if not line:  # a line that ran out, when reading by owner
                heapq.heappop(self._heap)
                if (
                    owner_id not in found.ended
                    and not self._capped(owner_id)
                    and found.read_owner(owner_id)
                ):
                    self._push(found, [owner_id])
                continue
            current = self._key(line[0])
            if current != key:
                heapq.heapreplace(self._heap, (current, resource, owner_id))
            elif self._capped(owner_id):
                heapq.heappop(self._heap)
            else:
                short = next((w for w in self.waiting.values() if w.may_precede(key)), None)
                if short is None:
                    return line[0]
                self._read_more(short)  # read as far as needed to be sure

    def _read_more(self, waiting: Waiting) -> None:
        was_by_owner = waiting.by_owner
        self._push(waiting, waiting.read_more())
        if waiting.by_owner and not was_by_owner:
            self._bound_empty_lines(waiting)

    def _bound_empty_lines(self, waiting: Waiting) -> None:
        """On turning to read by owner: the lines the walk had emptied go back in the heap
        under their last key."""
        for owner_id, line in waiting.lines.items():
            last = self._last.get((waiting.resource, owner_id))
            if not line and last is not None:
                rank, created_at, job_id = last
                key = (rank, self.flying[owner_id], created_at, job_id)
                heapq.heappush(self._heap, (key, waiting.resource, owner_id))

    def take(self, job: Held) -> None:
        """Take ``job``, the one :meth:`peek` just returned."""
        _, resource, owner_id = heapq.heappop(self._heap)
        if (resource, owner_id) != (job.resource, job.owner_id):
            raise RuntimeError(f"{job.id} is not the job admission takes next")
        waiting = self.waiting[resource]
        line = waiting.lines[owner_id]
        line.popleft()
        self.flying[owner_id] += 1
        self._last[(resource, owner_id)] = job.place
        if line:
            self._push(waiting, [owner_id])
        elif waiting.by_owner and owner_id not in waiting.ended:
            heapq.heappush(self._heap, (self._key(job), resource, owner_id))

    def drop(self, resource: str) -> None:
        """Take nothing more on ``resource``."""
        self.waiting.pop(resource, None)
