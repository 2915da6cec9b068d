"""Request and response shapes: ``JobCreate`` in, ``JobPublic`` out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl

from longplay.jobs.registry import JobKind
from longplay.store.models import Artifact, Job, JobStatus, Priority

CallbackEvent = Literal["started", "progress"]


class JobCreate(BaseModel):
    """A job to run: its kind, the uploaded artifacts it reads, its parameters."""

    kind: str = Field(examples=["convert"])
    inputs: list[str] = Field(default_factory=list, description="Artifact ids, in order.")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = Field(None, description="Default: the one your tier maps to.")
    run_at: AwareDatetime | None = Field(None, description="Do not start before this time.")
    deadline: AwareDatetime | None = Field(
        None,
        description="Not started by then: the job ends `expired`; still running: cancelled.",
    )
    dedupe: bool = Field(
        False,
        description="Reuse a completed job of yours with the same kind, parameters and "
        "input bytes instead of running again.",
    )
    callback_url: HttpUrl | None = Field(
        None, description="Where to POST signed webhooks about this job (Standard Webhooks)."
    )
    callback_events: list[CallbackEvent] = Field(
        default_factory=list,
        description="Webhooks besides the final one: `started`, `progress` (at a bounded rate).",
    )


class ErrorPublic(BaseModel):
    code: str
    message: str
    retryable: bool
    attempt: int | None = None
    retry_in_seconds: float | None = None


class ArtifactLinks(BaseModel):
    self: str
    content: str


class ArtifactPublic(BaseModel):
    id: str
    name: str
    media_type: str
    size: int
    sha256: str
    role: str
    job_id: str | None
    step: str | None
    created_at: datetime
    links: ArtifactLinks

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactPublic:
        base = f"/v1/artifacts/{artifact.id}"
        return cls(
            id=artifact.id,
            name=artifact.name,
            media_type=artifact.media_type,
            size=artifact.size,
            sha256=artifact.sha256,
            role=artifact.role,
            job_id=artifact.job_id,
            step=artifact.step,
            created_at=artifact.created_at,
            links=ArtifactLinks(self=base, content=f"{base}/content"),
        )


class JobLinks(BaseModel):
    self: str
    cancel: str
    events: str


class JobPublic(BaseModel):
    id: str
    kind: str
    status: JobStatus
    priority: Priority
    params: dict[str, Any]
    inputs: list[str]
    progress: float = Field(description="Percent done, 0 to 100.")
    current_step: str | None
    step_details: dict[str, Any]
    eta_seconds: float | None
    queue_position: int | None = Field(
        None, description="While queued: how many jobs start before this one."
    )
    attempts: int
    max_attempts: int
    retry_at: datetime | None = Field(None, description="When a job waiting to retry runs again.")
    run_at: datetime | None = Field(None, description="Not started before this time.")
    deadline: datetime | None
    callback_url: str | None
    error: ErrorPublic | None
    outputs: list[ArtifactPublic] = Field(
        default_factory=list, description="Once completed: the results."
    )
    results_expired: bool = Field(
        False, description="The outputs were deleted after `result_retention`; the job stays."
    )
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    links: JobLinks

    @classmethod
    def of(
        cls,
        job: Job,
        *,
        queue_position: int | None = None,
        outputs: list[Artifact] | None = None,
    ) -> JobPublic:
        base = f"/v1/jobs/{job.id}"
        return cls(
            id=job.id,
            kind=job.kind,
            status=JobStatus(job.status),
            priority=Priority(job.priority),
            params=job.params,
            inputs=job.inputs,
            progress=job.progress,
            current_step=job.current_step,
            step_details=job.step_details,
            eta_seconds=job.eta_seconds,
            queue_position=queue_position,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            retry_at=job.retry_at if job.status == JobStatus.QUEUED.value else None,
            run_at=job.run_at,
            deadline=job.deadline,
            callback_url=job.callback_url,
            error=ErrorPublic.model_validate(job.error) if job.error else None,
            outputs=[ArtifactPublic.of(a) for a in outputs or []],
            results_expired=bool((job.result or {}).get("results_expired")),
            created_at=job.created_at,
            started_at=job.started_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
            links=JobLinks(self=base, cancel=f"{base}/cancel", events=f"{base}/events"),
        )


class JobList(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class AttemptPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None = Field(description="completed, retrying, failed, cancelled or lost.")
    error: ErrorPublic | None


class RetryMany(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=1000)


class RetrySkipped(BaseModel):
    id: str
    reason: str


class RetryManyResult(BaseModel):
    retried: list[str]
    skipped: list[RetrySkipped]


class StepPublic(BaseModel):
    name: str
    weight: float


class KindPublic(BaseModel):
    name: str
    description: str
    steps: list[StepPublic]
    params_schema: dict[str, Any]
    min_inputs: int
    max_inputs: int | None
    accepts: list[str]
    resource: str

    @classmethod
    def of(cls, kind: JobKind) -> KindPublic:
        return cls(
            name=kind.name,
            description=kind.description,
            steps=[StepPublic(name=s.name, weight=s.weight) for s in kind.steps],
            params_schema=kind.params.model_json_schema(),
            min_inputs=kind.min_inputs,
            max_inputs=kind.max_inputs,
            accepts=list(kind.input_types),
            resource=kind.resource,
        )


class EnginePublic(BaseModel):
    kind: str
    backend: str
    model: str
    device: str
    load_seconds: float
    loaded_at: datetime
    fallback: str | None = Field(None, description="Why a GPU engine runs on the CPU.")


class WorkerPublic(BaseModel):
    name: str = Field(description="host:worker pid:process pid")
    engines: list[EnginePublic]
    last_job: str | None
    at: datetime


class HealthPublic(BaseModel):
    status: str = Field(description="ok, or degraded when a part does not answer.")
    store: str
    redis: str
    workers: int = Field(description="Worker processes that said they are alive recently.")
    down: list[str] = Field(
        default_factory=list, description="The parts that do not answer: store, redis, workers."
    )


class WebhookSecretPublic(BaseModel):
    secret: str = Field(
        description="Signs your webhooks (Standard Webhooks): HMAC-SHA256 keyed with the "
        "base64-decoded part after `whsec_`."
    )


class WebhookDeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="The `webhook-id` header; the same on every retry.")
    event: str = Field(description="started, progress, completed, failed, cancelled or expired.")
    url: str
    status: str = Field(
        description="pending, sending, delivered, failed (given up) or superseded (a progress "
        "message not yet sent when the job ended)."
    )
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
