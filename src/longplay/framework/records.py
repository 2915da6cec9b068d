"""Job records as a kind may read them: an owner's jobs, their views and their files.

A kind that reports on jobs (``export``) must not reach into the store; it asks
:meth:`StepContext.records <longplay.framework.StepContext.records>` for a
:class:`JobRecords`, which the jobs layer implements over the store and scopes to one
owner: the job's own, or the owner an admin named in a :class:`ForOwner` parameter
(checked when the job was submitted: anyone else naming another owner gets a 404).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field


class ForOwner(BaseModel):
    """Params of a kind that may act for another owner than the submitter's: only an
    admin key may name one (``owner``, a name); for anyone else naming another owner
    the submission is a 404, as for any other owner's thing."""

    owner: str | None = Field(
        None,
        description="Act for this owner (by name) instead of the key's; admin keys only.",
        min_length=1,
        max_length=200,
    )


@dataclass(frozen=True)
class RecordQuery:
    """Which of the owner's jobs to read; empty ``kinds`` or ``statuses``: all."""

    kinds: Sequence[str] = ()
    except_kinds: Sequence[str] = ()
    """Leave out jobs of these kinds."""
    statuses: Sequence[str] = ()
    since: datetime | None = None
    """Jobs created at or after this time."""
    until: datetime | None = None
    """Jobs created before this time."""
    include_inputs: bool = False
    """List each job's input files too, not only its outputs."""


@dataclass(frozen=True)
class FileRecord:
    """One file of a job as a record lists it."""

    artifact_id: str
    name: str
    """Safe as a file name (no folders, no control characters)."""
    role: Literal["input", "output"]
    media_type: str
    size: int
    sha256: str
    path: Path | None
    """Where to read it; None once retention deleted it (listed as expired). An input
    whose record went too keeps only its id (as its name)."""


@dataclass(frozen=True)
class JobRecord:
    """One job: its view as ``GET /v1/jobs/{id}`` answers it, a summary of its event
    stream, and its files (inputs first when asked for, then outputs)."""

    job_id: str
    view: dict[str, Any]
    events: dict[str, Any]
    files: list[FileRecord] = field(default_factory=list)


@dataclass(frozen=True)
class RecordTotals:
    """How much a query covers: jobs, the files still there and their bytes."""

    jobs: int
    files: int
    bytes: int


class JobRecords(Protocol):
    """An owner's job records, read a page at a time (memory does not grow with them)."""

    owner: str
    """The name of the owner whose records these are."""

    def totals(self, query: RecordQuery) -> RecordTotals:
        """What :meth:`jobs` will go through, counted first (for progress)."""
        ...

    def jobs(self, query: RecordQuery) -> Iterator[JobRecord]:
        """The matching jobs, oldest first."""
        ...
