"""Request and response shapes: ``JobCreate`` in, ``JobPublic`` out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from longplay.framework import JobKind
from longplay.framework.kinds import params_schema
from longplay.jobs.webhooks.addresses import refusal
from longplay.settings import get_settings
from longplay.store.models import JobAttempt, Priority
from longplay.store.views import ErrorPublic, JobPublic, SubmittedRef

CallbackEvent = Literal["started", "progress"]


def _sendable(url: HttpUrl) -> HttpUrl:
    """A callback URL whose host is written as an address webhooks may not go to is
    refused now; a name is checked when the message is sent."""
    why = refusal(str(url), get_settings().webhooks.allowed_networks)
    if why is not None:
        raise PydanticCustomError("callback_not_allowed", "{why}", {"why": why})
    return url


CallbackUrl = Annotated[HttpUrl, AfterValidator(_sendable)]


class JobCreateFields(BaseModel):
    """What every submission has besides its kind and its parameters."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[SubmittedRef] = Field(
        default_factory=list,
        description='Artifact ids, or another job\'s output (`{"job": "job_…", '
        '"output": "talk.json"}` or `{"job": …, "suffix": ".json"}`, found when '
        "this job starts), in order.",
    )
    after: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Ids of your jobs to wait for: this job is `waiting` until they all "
        "complete, then queued; cancelled with `upstream_failed` if one does not. A job "
        "whose outputs are among the inputs is waited for too.",
    )
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
    callback_url: CallbackUrl | None = Field(
        None,
        description="Where to POST signed webhooks about this job (Standard Webhooks): a "
        "public address, or one in the networks the operator allows.",
    )
    callback_events: list[CallbackEvent] = Field(
        default_factory=list,
        description="Webhooks besides the final one: `started`, `progress` (at a bounded "
        "rate); with a `callback_url` to send them to.",
    )

    @model_validator(mode="after")
    def _events_have_somewhere_to_go(self) -> Self:
        if self.callback_events and self.callback_url is None:
            raise ValueError("callback_events needs a callback_url to send them to")
        return self


class JobCreate(JobCreateFields):
    """A job to run: its kind, the uploaded artifacts it reads, its parameters. Each kind
    has a model of its own (:func:`job_create_model`) whose ``params`` is the kind's."""

    kind: str
    params: BaseModel


_SUBMIT_MODELS: dict[str, tuple[JobKind[Any], type[JobCreate]]] = {}


def job_create_model(kind: JobKind[Any]) -> type[JobCreate]:
    """The submission model of ``kind``: ``kind`` is its name, ``params`` its params
    model (required when the model has a required field). Made once per kind."""
    made = _SUBMIT_MODELS.get(kind.name)
    if made is not None and made[0] is kind:
        return made[1]
    required = any(f.is_required() for f in kind.params.model_fields.values())
    params: Any = (
        (kind.params, Field(description=f"The parameters of `{kind.name}`."))
        if required
        else (kind.params, Field(default_factory=dict, validate_default=True))
    )
    name: Any = Literal[kind.name]  # a type made at run time, one per kind
    model = create_model(
        "JobCreate" + "".join(part.capitalize() for part in re.split(r"[_-]", kind.name)),
        __base__=JobCreate,
        __doc__=f"A `{kind.name}` job. {kind.description}".strip(),
        kind=(name, Field(description="The job kind; GET /v1/kinds lists them.")),
        params=params,
    )
    _SUBMIT_MODELS[kind.name] = (kind, model)
    return model


class JobList(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class AttemptPublic(BaseModel):
    attempt: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None = Field(
        description="completed, retrying, failed, cancelled, lost (its worker died or "
        "stopped answering: `worker_lost`) or requeued (its worker stopped and gave it "
        "back; no attempt spent). Null while it runs."
    )
    error: ErrorPublic | None

    @classmethod
    def of(cls, attempt: JobAttempt) -> AttemptPublic:
        """An attempt as a client sees it: its error without the server's paths."""
        return cls(
            attempt=attempt.attempt,
            worker=attempt.worker,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            outcome=attempt.outcome,
            error=ErrorPublic.told(attempt.error) if attempt.error else None,
        )


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
    def of(cls, kind: JobKind[Any]) -> KindPublic:
        return cls(
            name=kind.name,
            description=kind.description,
            steps=[StepPublic(name=s.name, weight=s.weight) for s in kind.steps],
            params_schema=params_schema(kind.params),
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
    beat: str = Field(
        description="ok while a beat schedules (holds its lease), none when none does: then "
        "no reaper gives back a dead worker's jobs, and no cleanup runs."
    )
    disk: str = Field(
        "ok",
        description="The service's storage: ok; low when the data folder's disk has under "
        "1 GiB and a tenth of it free; full when it has under 64 MiB free, or the database "
        "refused a write for a full disk within the last minute (then writes fail with a "
        "507, and it is down).",
    )
    down: list[str] = Field(
        default_factory=list,
        description="The parts that do not answer, or are missing: store, redis, workers, "
        "beat, disk (full).",
    )


class WebhookSecretPublic(BaseModel):
    secret: str = Field(
        description="Signs your webhooks (Standard Webhooks): HMAC-SHA256 keyed with the "
        "base64-decoded part after `whsec_`."
    )
    previous_signs_until: datetime | None = Field(
        None,
        description="After a rotation, messages carry a signature by the secret it "
        "replaced as well, until this time; null when they no longer do.",
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
