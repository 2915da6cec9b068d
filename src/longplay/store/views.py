"""The JSON view of jobs and artifacts: what ``GET /v1/jobs/{id}`` answers and what a
webhook carries as ``data``. Below both the API and the jobs layer, so the two send
the same shape from one definition."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from longplay.settings import get_settings
from longplay.store.models import Artifact, Flow, Job, JobStatus, Priority

_SERVER_PATH = re.compile(r"""(?<![\w.:/~-])(?:/[^\s'"`/:;,()<>\[\]{}|]+){2,}/?""")
"""An absolute path of two or more parts, not inside a URL (``http://host/a/b``)."""
_API_PATH = "/v1/"
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]*):[^\s/@]+@")
"""The password of a URL's ``user:password@``, in running text."""
_PASSWORD_KEYWORD = re.compile(r"(\bpassword\s*=\s*)[^\s&;,)]+", re.IGNORECASE)
"""A ``password=`` of a query string or a keyword DSN (``host=db password=…``)."""


def public_message(text: str) -> str:
    """``text`` without the server's own paths or passwords, for a message a client sees.

    Each absolute path becomes its last part: ``File name too long: '/srv/longplay/
    work/job_1/a.mp3.part'`` reads ``File name too long: 'a.mp3.part'``, which still
    says which file, and nothing of how the server is laid out. The data folder goes
    first, whole, in case it has a space in it. API paths (``/v1/...``) stay. A
    password in a URL or after ``password=`` (a kind's own error naming the database
    it could not reach) is ``***``.
    """
    data_dir = str(get_settings().data_dir)
    text = text.replace(data_dir + "/", "/").replace(data_dir, "")

    def last_part(match: re.Match[str]) -> str:
        path = match.group(0)
        if path.startswith(_API_PATH):
            return path
        return path.rstrip("/").rsplit("/", 1)[-1]

    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _PASSWORD_KEYWORD.sub(r"\1***", text)
    return _SERVER_PATH.sub(last_part, text)


class _Told(BaseModel):
    """A code and a message the server wrote, which a client may read."""

    code: str
    message: str

    @classmethod
    def told(cls, stored: Mapping[str, Any]) -> Self:
        """``stored`` as a client may see it: its message without the server's paths.
        Not a validator: the SDK reads these models too, on a machine with none of the
        server's settings."""
        read = cls.model_validate(stored)
        return read.model_copy(update={"message": public_message(read.message)})


class ErrorPublic(_Told):
    retryable: bool
    attempt: int | None = None
    retry_in_seconds: float | None = None


class WarningPublic(_Told):
    """Something a person should know about a job that completed all the same."""

    code: str = Field(description="What it is about, e.g. `truncated_input`.")


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


class OutputRef(BaseModel):
    """An input taken from another job's outputs, found when this job starts: the one
    named ``output``, or the first whose name ends with ``suffix``."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(description="One of your jobs; this job waits for it to complete.")
    output: str | None = Field(None, description="The output's name, e.g. `talk.json`.")
    suffix: str | None = Field(None, description="The end of its name, e.g. `.json`.")

    @model_validator(mode="after")
    def _one_of(self) -> OutputRef:
        if (self.output is None) == (self.suffix is None):
            raise ValueError("name the output by `output` or by `suffix`, one of the two")
        return self


INPUT_SHAPES = (
    'an input is an artifact id, another job\'s output ({"job": "job_…", "output": …} or '
    '{"job": …, "suffix": …})'
)


def input_shape(value: Any) -> str | None:
    """Which kind of input a submitted one is, by its shape, so that a mistake in it is
    told against that kind alone (pydantic would try each and report them all, a
    "should be a valid string" first); None for a shape no input has."""
    if isinstance(value, str):
        return "artifact"
    fields = vars(value) if isinstance(value, BaseModel) else value
    if isinstance(fields, Mapping):
        for key in ("stage", "job"):
            if key in fields:
                return key
    return None


SubmittedRef = Annotated[
    Annotated[str, Tag("artifact")] | Annotated[OutputRef, Tag("job")],
    Discriminator(input_shape, custom_error_type="input", custom_error_message=INPUT_SHAPES),
]
"""An input as a submission names it: an artifact id or another job's output."""


class JobLinks(BaseModel):
    self: str
    cancel: str | None = Field(description="null in a viewer token's answer: it cannot cancel.")
    events: str


class JobPublic(BaseModel):
    id: str
    kind: str
    status: JobStatus
    priority: Priority
    params: dict[str, Any]
    inputs: list[str | OutputRef] = Field(
        description="Artifact ids, or outputs of other jobs (resolved when this job starts)."
    )
    waiting_for: list[str] = Field(
        default_factory=list,
        description="While `waiting`: the jobs (from `after` or its inputs) that have not "
        "completed yet. It is queued once they all have; cancelled with `upstream_failed` "
        "if one fails, is cancelled or expires.",
    )
    flow_id: str | None = Field(None, description="The flow this job is a stage of.")
    stage: str | None = Field(None, description="Its stage's name in that flow.")
    progress: float = Field(description="Percent done, 0 to 100.")
    current_step: str | None
    step_details: dict[str, Any]
    eta_seconds: float | None = Field(
        description="While running: seconds left at the run's recent pace; null until it "
        "has one, and while its worker is silent (`stalled`): the last pace it told is no "
        "word on a run that may have stopped.",
    )
    queue_position: int | None = Field(
        None,
        description="While queued: how many jobs may start before this one, counted up to "
        "100 (100 means 100 or more: counting further would read the whole queue).",
    )
    stalled: str | None = Field(
        None,
        description="While queued: why it cannot start, when nothing will start it "
        "(no live worker takes its kind's resource, `cpu` or `gpu`). While running: "
        "since when its worker has been silent (two heartbeats missed) and by when the "
        "job is taken from it unless it answers. Otherwise null.",
    )
    attempts: int
    max_attempts: int
    retry_at: datetime | None = Field(
        None,
        description="While queued: when a job waiting to retry runs again (a time passed: "
        "since when it has been due, as after a retry by hand).",
    )
    run_at: datetime | None = Field(None, description="Not started before this time.")
    deadline: datetime | None
    callback_url: str | None
    callback_events: list[str] = Field(
        default_factory=list,
        description="The webhooks asked for besides the final one (`started`, `progress`).",
    )
    error: ErrorPublic | None = Field(
        description="Why it failed; for a job queued to retry, or running again, why its "
        "last attempt failed (`attempt` says which); for a job cancelled because one it "
        "waits for did not complete, which one and how. Null once it completes or is "
        "retried by hand."
    )
    outputs: list[ArtifactPublic] = Field(
        default_factory=list, description="Once completed: the results."
    )
    warnings: list[WarningPublic] = Field(
        default_factory=list,
        description="Once completed: what the job noted on the way, as its `note` events "
        "said (an input cut short, say).",
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
        waiting_for: list[str] | None = None,
        stalled: str | None = None,
    ) -> JobPublic:
        base = f"/v1/jobs/{job.id}"
        return cls(
            id=job.id,
            kind=job.kind,
            status=JobStatus(job.status),
            priority=Priority(job.priority),
            params=job.params,
            inputs=[i if isinstance(i, str) else OutputRef.model_validate(i) for i in job.inputs],
            waiting_for=waiting_for or [],
            flow_id=job.flow_id,
            stage=job.stage,
            progress=job.progress,
            current_step=job.current_step,
            step_details=job.step_details,
            eta_seconds=None if stalled else job.eta_seconds,
            queue_position=queue_position,
            stalled=stalled,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            retry_at=job.retry_at if job.status == JobStatus.QUEUED.value else None,
            run_at=job.run_at,
            deadline=job.deadline,
            callback_url=job.callback_url,
            callback_events=list(job.callback_events or []),
            error=ErrorPublic.told(job.error) if job.error else None,
            outputs=[ArtifactPublic.of(a) for a in outputs or []],
            warnings=[WarningPublic.told(w) for w in (job.result or {}).get("warnings", [])],
            results_expired=bool((job.result or {}).get("results_expired")),
            created_at=job.created_at,
            started_at=job.started_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
            links=JobLinks(self=base, cancel=f"{base}/cancel", events=f"{base}/events"),
        )


class FlowStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


def flow_status(statuses: list[str]) -> FlowStatus:
    """Running until every stage ended; then failed if one failed or expired, cancelled
    if one was cancelled, else completed."""
    if not all(JobStatus(s).finished for s in statuses):
        return FlowStatus.RUNNING
    if any(s in (JobStatus.FAILED.value, JobStatus.EXPIRED.value) for s in statuses):
        return FlowStatus.FAILED
    if any(s == JobStatus.CANCELLED.value for s in statuses):
        return FlowStatus.CANCELLED
    return FlowStatus.COMPLETED


class FlowLinks(BaseModel):
    self: str
    cancel: str
    events: str


class FlowPublic(BaseModel):
    """A flow: its stages' jobs, its status and progress across them."""

    id: str
    status: FlowStatus
    progress: float = Field(
        description="Percent done across the stages, each weighted by its kind's steps."
    )
    stages: dict[str, JobPublic] = Field(description="Each stage's job, by stage name.")
    callback_url: str | None
    created_at: datetime
    finished_at: datetime | None = Field(description="When its last stage ended.")
    links: FlowLinks

    @classmethod
    def of(cls, flow: Flow, jobs: list[JobPublic], steps: dict[str, int]) -> FlowPublic:
        """``jobs``: the flow's jobs as shown; ``steps``: each kind's number of steps."""
        weights = {j.id: max(1, steps.get(j.kind, 1)) for j in jobs}
        done = sum(
            (100.0 if j.status == JobStatus.COMPLETED else j.progress) * weights[j.id] for j in jobs
        )
        base = f"/v1/flows/{flow.id}"
        status = flow_status([j.status.value for j in jobs])
        if status != FlowStatus.RUNNING and flow.ended_as is not None:
            status = FlowStatus(flow.ended_as)  # as announced, whatever stage went since
        ended = [j.finished_at for j in jobs if j.finished_at is not None]
        if flow.finished_at is None and status != FlowStatus.RUNNING and ended:
            finished_at: datetime | None = max(ended)  # its ending is being recorded
        else:
            finished_at = flow.finished_at
        return cls(
            id=flow.id,
            status=status,
            progress=round(done / max(1, sum(weights.values())), 2),
            stages={j.stage or j.id: j for j in jobs},
            callback_url=flow.callback_url,
            created_at=flow.created_at,
            finished_at=finished_at,
            links=FlowLinks(self=base, cancel=f"{base}/cancel", events=f"{base}/events"),
        )
