"""SQLAlchemy models: owners and their API keys, jobs, their attempts and webhook
deliveries, artifacts."""

from __future__ import annotations

import base64
import enum
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_webhook_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` and base64 of 24 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_id(prefix: str) -> str:
    """A short random id with a type prefix (``job_…``, ``art_…``): readable in logs."""
    return f"{prefix}_{secrets.token_hex(10)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")


class JobStatus(enum.StrEnum):
    WAITING = "waiting"
    """Waits for the jobs it names in ``after`` to complete; admission does not see it."""
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    """Its deadline passed before it started; it never ran."""

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


class Priority(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class ArtifactRole(enum.StrEnum):
    INPUT = "input"
    OUTPUT = "output"


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    tier: Mapped[str] = mapped_column(String(32), default="standard")
    """Names a set of limits and a default priority (settings ``tiers``)."""
    max_running: Mapped[int | None]
    """Jobs of this owner running (or handed to a worker) at once; null: the tier's."""
    max_queued: Mapped[int | None]
    """Jobs of this owner waiting at once; null: the tier's."""
    submit_rate: Mapped[float | None]
    """Submissions a minute; null: the tier's."""
    webhook_secret: Mapped[str] = mapped_column(String(64), default=new_webhook_secret)
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(64))
    """The secret before the last rotation: messages are signed with it too for a while
    (settings ``webhooks.secret_overlap``), so receivers can change over."""
    webhook_secret_rotated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="owner")


class ApiKey(Base):
    """An API key, stored as a SHA-256 of the secret; ``prefix`` identifies it in lists."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    owner: Mapped[Owner] = relationship(back_populates="keys")


class ViewerToken(Base):
    """A token that lets a browser read one job (its state, events and outputs) without
    the owner's key; stored as a SHA-256, and gone with its job. It reads only while
    the key that made it is live: revoking a leaked key ends what it handed out."""

    __tablename__ = "viewer_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # An owner's jobs newest first (GET /v1/jobs), all or by status; ``id`` breaks
        # ties, so a page's cursor is one range.
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_owner_status", "owner_id", "status", "created_at", "id"),
        # Admission reads the held jobs of a resource oldest first (by priority, then
        # age), or each owner's line from its first job.
        Index("ix_jobs_status_queue", "status", "resource", "priority_rank", "created_at", "id"),
        Index(
            "ix_jobs_queue_owner",
            "status",
            "resource",
            "owner_id",
            "priority_rank",
            "created_at",
            "id",
        ),
        # Jobs in flight: running, or queued and handed to the broker.
        Index("ix_jobs_status_dispatched", "status", "dispatched_at"),
        # Beat's upkeep: the next scheduled start, retry or deadline, and the ones passed.
        # Partial: only the jobs that have one.
        *(
            Index(
                f"ix_jobs_{column}",
                "status",
                column,
                postgresql_where=text(f"{column} IS NOT NULL"),
                sqlite_where=text(f"{column} IS NOT NULL"),
            )
            for column in ("run_at", "retry_at", "deadline")
        ),
        Index("ux_jobs_owner_idempotency_key", "owner_id", "idempotency_key", unique=True),
        Index("ix_jobs_content_key", "owner_id", "content_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    priority: Mapped[str] = mapped_column(String(8), default=Priority.NORMAL.value)
    priority_rank: Mapped[int] = mapped_column(default=1)
    resource: Mapped[str] = mapped_column(String(8), default="cpu")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[list[Any]] = mapped_column(default=list)
    """Artifact ids of the inputs, in the order the submitter gave them."""

    progress: Mapped[float] = mapped_column(default=0.0)
    current_step: Mapped[str | None] = mapped_column(String(40))
    step_details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    eta_seconds: Mapped[float | None]
    checkpoint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Steps finished so far and the state they left, so a retry resumes after them."""

    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    worker: Mapped[str | None] = mapped_column(String(200))
    retry_at: Mapped[datetime | None]
    """When a job waiting to be retried will run again."""
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    content_key: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 over kind, parameters and input bytes, for deduplication by content."""
    run_at: Mapped[datetime | None]
    """Not before this time."""
    deadline: Mapped[datetime | None]
    """Not started by then: ``expired``; still running then: cancelled."""
    dispatched_at: Mapped[datetime | None]
    """When a queued job was handed to the broker; null while longplay holds it back
    (scheduled, waiting for a retry, or behind its owner's fair share)."""
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_events: Mapped[list[Any] | None] = mapped_column(JSONType)
    """Webhook events asked for besides the final one (``started``, ``progress``)."""
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    flow_id: Mapped[str | None] = mapped_column(
        ForeignKey("flows.id", ondelete="CASCADE"), index=True
    )
    """The flow this job is a stage of, if any (issue 12)."""
    stage: Mapped[str | None] = mapped_column(String(64))
    """Its stage's name in that flow."""

    @property
    def status_enum(self) -> JobStatus:
        return JobStatus(self.status)


class JobAttempt(Base):
    """One run of a job: who ran it, how it ended and with which error."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    """completed, retrying, failed, cancelled or released; null while it runs."""
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Artifact(Base):
    """A file: an upload (role ``input``) or something a job produced (``output``)."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    role: Mapped[str] = mapped_column(String(8), default=ArtifactRole.INPUT.value)
    step: Mapped[str | None] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(1024))
    media_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)
    """Relative to the data folder's ``files/``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GoneArtifact(Base):
    """An artifact the retention settings removed, remembered so that asking for it
    says why (``410 Gone``) instead of that there is no such thing; ``reason`` is
    ``results``, ``job`` or ``upload`` (:mod:`longplay.jobs.gone`). Kept as long as
    finished jobs are."""

    __tablename__ = "gone_artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(String(40))
    """The job that made or read it; no foreign key, since the job may be gone too."""
    name: Mapped[str] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(String(8))
    removed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookDelivery(Base):
    """One webhook message about a job and how sending it went; its id is the
    ``webhook-id`` header, the same on every retry, so receivers can drop repeats."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending, sending, delivered, failed (given up) or superseded (a progress message
    not sent yet when its job ended)."""
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class DocumentStatus(enum.StrEnum):
    """Where a document of a collection stands; only ``indexed`` ones have passages."""

    QUEUED = "queued"
    INDEXED = "indexed"
    FAILED = "failed"


class Collection(Base):
    """A named set of an owner's documents that jobs search and cite (issue 10)."""

    __tablename__ = "collections"
    __table_args__ = (Index("ix_collections_owner_created", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Document(Base):
    """One file of a collection, read and cut into passages by an ``index`` job."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_collection_seq", "collection_id", "seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    """Its order in the collection: documents in the order they were added."""
    artifact_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id", ondelete="SET NULL"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    """The ``index`` job that reads it."""
    name: Mapped[str] = mapped_column(String(1024))
    media_type: Mapped[str] = mapped_column(String(127))
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.QUEUED.value)
    passage_count: Mapped[int] = mapped_column(default=0)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """Why it could not be read (``code``, ``message``), when it failed."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    indexed_at: Mapped[datetime | None]


class Passage(Base):
    """A piece of a document that search finds and a script cites.

    ``seq`` is the row number the full-text index refers to (SQLite's FTS5 table
    ``passages_fts``; PostgreSQL's generated ``search_vector`` column, both made by
    migration 0006 and over :attr:`search_heading` and :attr:`search_text` since 0018);
    ``id`` is the name the API and the steps know it by.
    """

    __tablename__ = "passages"
    __table_args__ = (Index("ix_passages_document_position", "document_id", "position"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(40), unique=True)
    collection_id: Mapped[str] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    position: Mapped[int]
    heading: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    start: Mapped[float | None]
    end: Mapped[float | None]
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Its text's embedding, ``float32`` values (migration 0010); None where embeddings
    were off when it was indexed."""
    embedded_with: Mapped[str | None] = mapped_column(String(80))
    """The model that made :attr:`embedding`: only vectors of one model are compared."""
    search_heading: Mapped[str | None] = mapped_column(Text)
    search_text: Mapped[str | None] = mapped_column(Text)
    """:attr:`heading` and :attr:`text` as the full-text index reads them (migration
    0018): ``store.library.searchable``, set by ``replace_passages`` as it stores them.
    The index is over these, not the text itself."""


class Flow(Base):
    """Jobs submitted together as named stages (``POST /v1/flows``). Its status is its
    jobs'; ``finished_at`` and ``ended_as`` are set by whoever ended its last job, so its
    webhook goes out once per end, and cleared when a stage of it is retried (it then
    ends again)."""

    __tablename__ = "flows"
    __table_args__ = (
        # Beat's sweep reads the flows not ended yet, oldest first: a few among all the
        # flows ever made, so the index holds only those.
        Index(
            "ix_flows_open",
            "created_at",
            "id",
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
        Index("ux_flows_owner_idempotency_key", "owner_id", "idempotency_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    callback_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    ended_as: Mapped[str | None] = mapped_column(String(16))
    """The status its end announced (migration 0015). Deleting a stage afterwards leaves
    it: a flow that failed stays failed when its failed stage is deleted."""
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 of the submission that made it, to tell a retry from a key reused."""


class JobDependency(Base):
    """A job waits for another (``after``, or an input naming its outputs)."""

    __tablename__ = "job_dependencies"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    after_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class FanOutItem(Base):
    """One item of a step that maps a function over the worker pool (``ctx.map``): what
    it is, who runs it under which lease, how far it got and what it gave back."""

    __tablename__ = "fanout_items"
    __table_args__ = (
        Index("ux_fanout_items_position", "job_id", "step", "position", unique=True),
        Index("ix_fanout_items_status", "job_id", "step", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(40))
    position: Mapped[int]
    function: Mapped[str] = mapped_column(String(300))
    """``module:qualname`` of the function every process imports to run the item."""
    item: Mapped[Any] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending, running, done, failed or cancelled."""
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    fraction: Mapped[float] = mapped_column(default=0.0)
    """How much of the item is done, 0 to 1: the job's progress sums these."""
    tries: Mapped[int] = mapped_column(default=0)
    result: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Template(Base):
    """An owner's own summary template: sections, each an instruction and a form (issue 11)."""

    __tablename__ = "templates"
    __table_args__ = (Index("ux_templates_owner_name", "owner_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text, default="")
    sections: Mapped[list[Any]] = mapped_column(JSONType)
    """``[{"name", "instruction", "form"}]``, in order."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
