"""Flows: jobs submitted together as named stages, some waiting for others.

``POST /v1/flows`` names its stages; a stage waits for the stages in its ``after`` and
for those whose outputs it reads (:class:`FromStage`). All its jobs are stored in one
transaction, or none is. A flow's status and progress are its jobs'; its events are
one stream (:mod:`longplay.jobs.flow_events`); its webhook goes out once, when its
last job ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from longplay.jobs import dependencies, lifecycle
from longplay.jobs.admission import pump
from longplay.jobs.admission.limits import limits_of, refuse_submission
from longplay.jobs.flow_events import kind_steps
from longplay.jobs.refusals import Conflict, Invalid, NotFound, RateLimited
from longplay.jobs.submission import Input, create_job
from longplay.jobs.unit import UnitOfWork, unit_of_work
from longplay.store.models import Flow, Job, JobStatus, Owner, Priority, new_id
from longplay.store.views import OutputRef

MAX_STAGES = 50


@dataclass(frozen=True)
class FromStage:
    """An input taken from another stage's outputs: by ``output`` name or ``suffix``."""

    stage: str
    output: str | None = None
    suffix: str | None = None


@dataclass(frozen=True)
class Stage:
    """One stage as submitted: a job and the stages it waits for."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: Sequence[Input | FromStage] = ()
    after: Sequence[str] = ()
    priority: Priority | None = None
    run_at: datetime | None = None
    deadline: datetime | None = None


@dataclass(frozen=True)
class FlowJobs:
    """A flow with its jobs (oldest first) and each kind's number of steps."""

    flow: Flow
    jobs: list[Job]
    steps: dict[str, int]


def _waits_for(stage: Stage) -> list[str]:
    return list(
        dict.fromkeys([*stage.after, *(i.stage for i in stage.inputs if isinstance(i, FromStage))])
    )


def _where_it_waits(stage: Stage, upstream: str) -> list[str | int]:
    """Where in ``stage`` it names ``upstream``: its ``after``, else the input reading it."""
    if upstream in stage.after:
        return ["after", list(stage.after).index(upstream)]
    reading = [
        i for i, s in enumerate(stage.inputs) if isinstance(s, FromStage) and s.stage == upstream
    ]
    return ["inputs", reading[0]] if reading else []


def _in_order(stages: Mapping[str, Stage]) -> list[str]:
    """The stage names, each after the stages it waits for; refuses unknown names and
    cycles."""
    ordered: list[str] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def place(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            cycle = " → ".join([*visiting[visiting.index(name) :], name])
            message = f"stages wait for each other in a circle: {cycle}"
            where = _where_it_waits(stages[visiting[-1]], name)
            problem = {"loc": ["body", "stages", visiting[-1], *where], "msg": message}
            raise Invalid(message, [{**problem, "type": "flow_cycle"}], code="flow_cycle")
        visiting.append(name)
        for upstream in _waits_for(stages[name]):
            if upstream not in stages:
                message = f"stage {name!r} waits for {upstream!r}, which is not a stage"
                where = _where_it_waits(stages[name], upstream)
                problem = {"loc": ["body", "stages", name, *where], "msg": message}
                raise Invalid(message, [{**problem, "type": "unknown_stage"}])
            place(upstream)
        visiting.pop()
        placed.add(name)
        ordered.append(name)

    for name in stages:
        place(name)
    return ordered


def create_flow(
    session: Session,
    *,
    owner: Owner,
    stages: Mapping[str, Stage],
    callback_url: str | None = None,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
) -> FlowJobs:
    """Store a flow and every stage's job in one transaction, then announce them; a
    stage refused (bad parameters, another owner's job, a limit) refuses the whole flow.

    With an ``idempotency_key`` the owner already used, the first flow comes back and
    nothing is stored, if ``request_digest`` (of the submission) is the same; a key
    reused for another submission is refused (``idempotency_key_reused``)."""
    if not stages:
        raise Invalid("a flow needs at least one stage")
    if len(stages) > MAX_STAGES:
        raise Invalid(f"at most {MAX_STAGES} stages in a flow")
    limits = limits_of(owner)
    if limits.max_queued is not None and len(stages) > limits.max_queued:
        raise Invalid(
            f"a flow of {len(stages)} stages can never be taken whole: at most "
            f"{limits.max_queued} of your jobs may be queued or waiting "
            f"({limits.set_by['max_queued']} limit); split it into flows of at most "
            f"{limits.max_queued} stages",
            [{"loc": ["body", "stages"], "msg": "too many stages", "type": "too_long"}],
            code="too_many_stages",
        )
    if idempotency_key is not None and (
        earlier := _by_idempotency_key(session, owner, idempotency_key)
    ):
        return _same_request(session, owner, earlier, request_digest)
    unit = UnitOfWork(session)
    try:
        flow = Flow(
            id=new_id("flow"),
            owner_id=owner.id,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
            request_digest=request_digest,
        )
        session.add(flow)
        try:
            session.flush()
        except IntegrityError:  # the same key, sent twice at once: the other one made it
            unit.rollback()
            raced = _by_idempotency_key(session, owner, idempotency_key or "")
            if raced is None:
                raise
            return _same_request(session, owner, raced, request_digest)
        job_of: dict[str, Job] = {}
        for name in _in_order(stages):
            stage = stages[name]
            try:
                job_of[name] = create_job(
                    session,
                    owner=owner,
                    kind_name=stage.kind,
                    params=stage.params,
                    input_ids=[_resolved(i, job_of) for i in stage.inputs],
                    priority=stage.priority,
                    run_at=stage.run_at,
                    deadline=stage.deadline,
                    after=[job_of[a].id for a in stage.after],
                    flow_id=flow.id,
                    stage=name,
                )
            except Invalid as exc:
                raise _in_stage(exc, name, job_of) from exc
            except (NotFound, Conflict) as exc:
                raise type(exc)(f"stage {name!r}: {exc}{_misnamed(stage, stages)}") from exc
        new_jobs = [job.id for job in job_of.values()]
        if (refusal := refuse_submission(session, owner, new_job_ids=new_jobs)) is not None:
            raise RateLimited(refusal.message, refusal.retry_after)
        for job in job_of.values():
            unit.announce(
                job.status,
                job.id,
                status=job.status,
                kind=job.kind,
                priority=job.priority,
                submitted=True,
            )
        unit.commit()
    except BaseException:
        unit.rollback()
        raise
    for job in job_of.values():
        if job.status == JobStatus.WAITING.value:
            dependencies.settle(job.id, unit_of_work)  # it may read an ended job's outputs
    for job in job_of.values():
        pump.wake_quietly(job.run_at)
        pump.wake_quietly(job.deadline)
    return flow_jobs(session, owner=owner, flow_id=flow.id)


def _misnamed(stage: Stage, stages: Mapping[str, Stage]) -> str:
    """What to write instead, where a stage reads a job whose id is another stage's name."""
    for source in stage.inputs:
        if isinstance(source, OutputRef) and source.job in stages:
            return (
                f"; {source.job!r} is a stage of this flow: read its outputs with "
                f'{{"stage": "{source.job}", ...}}'
            )
    return ""


def _in_stage(refusal: Invalid, stage: str, job_of: Mapping[str, Job]) -> Invalid:
    """A stage's refusal as the flow's author wrote the stage: its fields located under
    it, and earlier stages named as stages rather than by the ids their jobs were given
    (which the refusal undoes, so they name nothing)."""

    def said(text: str) -> str:
        for name, job in job_of.items():
            text = text.replace(job.id, f"stage {name!r}")
        return text

    errors = [
        {
            **error,
            "loc": ["body", "stages", stage, *error["loc"][1:]],
            "msg": said(str(error["msg"])),
        }
        if isinstance(error, dict) and list(error.get("loc", ()))[:1] == ["body"]
        else error
        for error in refusal.errors
    ]
    return Invalid(f"stage {stage!r}: {said(str(refusal))}", errors, code=refusal.code)


def _by_idempotency_key(session: Session, owner: Owner, key: str) -> Flow | None:
    return session.scalar(
        select(Flow).where(Flow.owner_id == owner.id, Flow.idempotency_key == key)
    )


def _same_request(
    session: Session, owner: Owner, flow: Flow, request_digest: str | None
) -> FlowJobs:
    """The flow an idempotency key names, if this submission is the one that made it."""
    if flow.request_digest != request_digest:
        raise Invalid(
            f"this Idempotency-Key was first used for another flow ({flow.id}); send a new "
            "key for a new flow",
            [
                {
                    "loc": ["header", "idempotency-key"],
                    "msg": "used before for another flow",
                    "type": "idempotency_key_reused",
                }
            ],
            code="idempotency_key_reused",
        )
    return flow_jobs(session, owner=owner, flow_id=flow.id)


def _resolved(item: Input | FromStage, job_of: Mapping[str, Job]) -> Input:
    if not isinstance(item, FromStage):
        return item
    return OutputRef(job=job_of[item.stage].id, output=item.output, suffix=item.suffix)


def flow_jobs(session: Session, *, owner: Owner, flow_id: str) -> FlowJobs:
    """One of the owner's flows with its jobs; another owner's is not found, nor is one
    whose every job was deleted (retention deletes it, if deleting its last job did
    not)."""
    flow = session.get(Flow, flow_id)
    if flow is None or flow.owner_id != owner.id:
        raise NotFound(f"no flow {flow_id}")
    session.refresh(flow)
    jobs = list(
        session.scalars(
            select(Job)
            .where(Job.flow_id == flow.id)
            .order_by(Job.created_at, Job.id)
            .execution_options(populate_existing=True)
        )
    )
    if not jobs:
        raise NotFound(f"no flow {flow_id}")
    return FlowJobs(flow, jobs, kind_steps(j.kind for j in jobs))


def cancel_flow(session: Session, *, owner: Owner, flow_id: str) -> FlowJobs:
    """Cancel every job of the flow that has not ended, in one unit of work (running
    ones stop at their next progress checkpoint); a flow that has ended is a conflict."""
    found = flow_jobs(session, owner=owner, flow_id=flow_id)
    if all(job.status_enum.finished for job in found.jobs):
        raise Conflict(f"flow {flow_id} has already ended")
    unit = UnitOfWork(session)
    for job in found.jobs:
        if job.status_enum.finished:
            continue
        if lifecycle.transition(session, job.id, JobStatus.CANCELLED, eta_seconds=None):
            unit.announce("cancelled", job.id, status="cancelled", progress=job.progress)
    unit.commit()
    return flow_jobs(session, owner=owner, flow_id=flow_id)
