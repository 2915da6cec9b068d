"""Submitting a job: check it, store it with its uploads, announce it, hand it over.

A submission is refused before anything is stored when it names an unknown kind,
bad parameters, the wrong number of inputs or another owner's artifact, or when the
owner is over a limit; with an ``Idempotency-Key`` seen before, or ``dedupe`` and a
twin already completed, the earlier job comes back and nothing new is stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from longplay.framework import JobKind, get_kind
from longplay.framework.unknown_params import unknown_params
from longplay.jobs import dependencies, gone
from longplay.jobs.admission import pump
from longplay.jobs.admission.limits import limits_of, refuse_submission
from longplay.jobs.checks import check_submission
from longplay.jobs.collection_checks import check_named_collection
from longplay.jobs.records import check_for_owner
from longplay.jobs.refusals import (
    Conflict,
    Invalid,
    NotFound,
    RateLimited,
    Unavailable,
    problems_of,
)
from longplay.jobs.service import remove_job_files
from longplay.jobs.templates import with_own_template
from longplay.jobs.unit import UnitOfWork, unit_of_work
from longplay.settings import get_settings
from longplay.store import files
from longplay.store.models import (
    PRIORITY_RANK,
    Artifact,
    Job,
    JobStatus,
    Owner,
    Priority,
    new_id,
    utcnow,
)
from longplay.store.queries import outputs_of
from longplay.store.views import OutputRef

log = logging.getLogger(__name__)

Input = str | OutputRef
"""An input as submitted: an artifact id, or another job's output."""


def _kind_or_invalid(name: str) -> JobKind[Any]:
    kind = get_kind(name)
    if kind is None:
        raise Invalid(f"unknown job kind {name!r}; GET /v1/kinds lists the kinds")
    return kind


def refuse_unknown_params(kind: JobKind[Any], params: Mapping[str, Any]) -> None:
    """Refuse a parameter name ``kind`` does not take, at any depth, naming the ones it
    does (:func:`~longplay.framework.unknown_params.unknown_params`); checked before the
    values, for every kind alike (a built-in model forbids extras itself, and pydantic
    would say only "Extra inputs are not permitted"). The refusal names the values of
    the wrong type too, as strictly as they are checked after, so that one answer tells
    every problem."""
    unknown = unknown_params(kind.params, params)
    if not unknown:
        return
    message = unknown[0].message(kind.name)
    try:
        kind.params_from_json(params)
        typed = []
    except ValidationError as exc:
        typed = [p for p in problems_of(exc, ("body", "params")) if p["type"] != "extra_forbidden"]
    raise Invalid(
        message,
        [
            *(
                {
                    "loc": ["body", "params", *each.path],
                    "msg": each.message(kind.name),
                    "type": "extra_forbidden",
                }
                for each in unknown
            ),
            *typed,
        ],
        code="invalid_params",
    )


def kind_priority(tier: Priority, kind: JobKind[Any]) -> Priority:
    """The priority of a job that names none: its owner's tier's, moved a step down for
    a kind declared ``low`` (or up for ``high``), within high to low."""
    ranks = sorted(PRIORITY_RANK, key=PRIORITY_RANK.__getitem__)
    shift = PRIORITY_RANK[Priority(kind.priority)] - PRIORITY_RANK[Priority.NORMAL]
    return ranks[min(max(PRIORITY_RANK[tier] + shift, 0), len(ranks) - 1)]


def _check_times(run_at: datetime | None, deadline: datetime | None) -> None:
    """Refuse a deadline that has passed or comes no later than ``run_at``: the job
    could only ever end ``expired``, which the client can be told now."""
    if deadline is None:
        return
    now = utcnow()
    if deadline <= now:
        message = (
            f"deadline {deadline.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC has passed: it is "
            f"{now:%Y-%m-%d %H:%M:%S} UTC on the service's clock"
        )
        raise Invalid(message, [{"loc": ["body", "deadline"], "msg": message, "type": "past"}])
    if run_at is not None and deadline <= run_at:
        raise Invalid("deadline must come after run_at")


def create_job(
    session: Session,
    *,
    owner: Owner,
    kind_name: str,
    params: dict[str, Any],
    input_ids: Sequence[Input],
    priority: Priority | None = None,
    run_at: datetime | None = None,
    deadline: datetime | None = None,
    callback_url: str | None = None,
    callback_events: Sequence[str] = (),
    after: Sequence[str] = (),
    flow_id: str | None = None,
    stage: str | None = None,
) -> Job:
    """Check a submission and add its job to the session (queued, or waiting for the
    jobs in ``after`` and those whose outputs it reads); dispatch after commit."""
    kind = _kind_or_invalid(kind_name)
    refuse_unknown_params(kind, params)
    try:
        checked = kind.params.model_validate(params)
    except ValidationError as exc:
        raise Invalid(
            f"bad parameters for {kind.name}",
            problems_of(exc, ("body", "params")),
            code="invalid_params",
        ) from exc
    count = len(input_ids)
    if count < kind.min_inputs or (kind.max_inputs is not None and count > kind.max_inputs):
        wanted = (
            f"{kind.min_inputs}"
            if kind.max_inputs == kind.min_inputs
            else f"{kind.min_inputs} to {kind.max_inputs if kind.max_inputs is not None else 'any'}"
        )
        message = f"{kind.name} takes {wanted} input file(s), got {count}"
        raise Invalid(message, [{"loc": ["body", "inputs"], "msg": message, "type": "count"}])
    if count > get_settings().api.max_inputs_per_job:
        raise Invalid(f"at most {get_settings().api.max_inputs_per_job} inputs per job")
    _check_times(run_at, deadline)
    artifact_ids = [i for i in input_ids if isinstance(i, str)]
    found: dict[str, str] = (
        {
            artifact_id: sha256
            for artifact_id, sha256 in session.execute(
                select(Artifact.id, Artifact.sha256)
                .where(Artifact.id.in_(artifact_ids), Artifact.owner_id == owner.id)
                # Held until the job is committed: a delete of the job they were uploaded
                # with waits, then finds this job naming them (see service.delete_job).
                .with_for_update(read=True, key_share=True)
            )
        }
        if artifact_ids
        else {}
    )
    missing = [i for i in artifact_ids if i not in found]
    if missing:
        why = gone.why_gone(session, owner_id=owner.id, artifact_ids=missing)
        raise Invalid(
            "; ".join(why.get(i, f"no such artifact: {i}") for i in missing),
            [
                {
                    "loc": ["body", "inputs"],
                    "msg": why.get(i, f"no such artifact: {i}"),
                    "type": "gone" if i in why else "not_found",
                }
                for i in missing
            ],
        )
    check_submission(session, kind, checked, input_ids)
    check_for_owner(session, owner, checked)
    checked = with_own_template(session, owner, checked)
    upstream = _upstream(after, input_ids)
    _check_upstream(session, owner, upstream)
    check_named_collection(session, owner.id, checked, waits=bool(upstream))
    priority = priority or kind_priority(limits_of(owner).priority, kind)
    params_json = checked.model_dump(mode="json")
    job = Job(
        id=new_id("job"),
        owner_id=owner.id,
        kind=kind.name,
        priority=priority.value,
        priority_rank=PRIORITY_RANK[priority],
        resource=kind.resource,
        status=(JobStatus.WAITING if upstream else JobStatus.QUEUED).value,
        params=params_json,
        inputs=[i if isinstance(i, str) else i.model_dump(exclude_none=True) for i in input_ids],
        content_key=content_key(kind.name, params_json, [_input_key(i, found) for i in input_ids]),
        max_attempts=kind.retry.max_attempts or get_settings().worker.max_attempts,
        run_at=run_at,
        deadline=deadline,
        callback_url=callback_url,
        callback_events=list(callback_events) or None,
        flow_id=flow_id,
        stage=stage,
    )
    session.add(job)
    session.flush()
    dependencies.add(session, job.id, upstream)
    return job


def _upstream(after: Sequence[str], input_ids: Sequence[Input]) -> list[str]:
    """The jobs a submission waits for: those of ``after`` and those whose outputs its
    inputs name, each once, in order."""
    return list(dict.fromkeys([*after, *(i.job for i in input_ids if isinstance(i, OutputRef))]))


def _check_upstream(session: Session, owner: Owner, job_ids: Sequence[str]) -> None:
    """Refuse waiting for a job that is not the owner's (a 404, as if it did not exist)
    or that has already ended without completing (it never will)."""
    if not job_ids:
        return
    statuses = dict(
        session.execute(
            select(Job.id, Job.status).where(Job.id.in_(job_ids), Job.owner_id == owner.id)
        ).all()
    )
    missing = [i for i in job_ids if i not in statuses]
    if missing:
        raise NotFound(f"no job {', '.join(missing)}")
    ended = [f"{i} is {statuses[i]}" for i in job_ids if statuses[i] in dependencies.UNSUCCESSFUL]
    if ended:
        raise Conflict(f"job {', '.join(ended)}; it will not complete, so nothing can wait for it")


def _input_key(item: Input, found: dict[str, str]) -> str:
    """What stands for an input in the content key: its bytes' SHA-256, or the output
    it names (not known before that job completes)."""
    if isinstance(item, str):
        return found[item]
    return f"{item.job}:{item.output if item.output is not None else '*' + (item.suffix or '')}"


@dataclass(frozen=True)
class Submission:
    """What a submission got: a new job, or the earlier one it matched."""

    job: Job
    deduplicated: bool = False
    """An earlier completed job with the same content came back (``dedupe``)."""


def submit_job(
    session: Session,
    *,
    owner: Owner,
    kind_name: str,
    params: dict[str, Any],
    input_ids: Sequence[Input],
    priority: Priority | None = None,
    uploaded: Sequence[Artifact] = (),
    idempotency_key: str | None = None,
    run_at: datetime | None = None,
    deadline: datetime | None = None,
    dedupe: bool = False,
    callback_url: str | None = None,
    callback_events: Sequence[str] = (),
    admit: bool = True,
    after: Sequence[str] = (),
) -> Submission:
    """Create, commit and dispatch a job; ``uploaded`` are input artifacts sent with it.

    The job's announcement asks admission for a round. ``admit=True`` also makes sure
    the queue answers (else nothing is submitted) and books the rounds the job's
    ``run_at`` and ``deadline`` need; ``admit=False`` leaves those rounds to the caller
    (:func:`book_rounds`).

    With an ``idempotency_key`` the owner already used, the first job comes back and
    nothing new is stored, not even this request's uploads. So it is with ``dedupe``
    and a completed job of the owner's with the same kind, parameters and input bytes
    whose outputs are still there; that job comes back marked ``deduplicated``.
    """
    unit = UnitOfWork(session)
    asked = _Asked(
        kind_name, params, input_ids, [a.sha256 for a in uploaded], priority,
        run_at, deadline, callback_url, callback_events, after,
    )  # fmt: skip
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            _discard(unit, uploaded)
            return Submission(_same_request(session, existing, asked))
    try:
        session.flush()
        job = create_job(
            session,
            owner=owner,
            kind_name=kind_name,
            params=params,
            input_ids=[*input_ids, *(a.id for a in uploaded)],
            priority=priority,
            run_at=run_at,
            deadline=deadline,
            callback_url=callback_url,
            callback_events=callback_events,
            after=after,
        )
        if dedupe and (earlier := _duplicate_of(session, job)) is not None:
            _discard(unit, uploaded)
            return Submission(earlier, deduplicated=True)
        if (refusal := refuse_submission(session, owner, new_job_ids=[job.id])) is not None:
            raise RateLimited(refusal.message, refusal.retry_after)
        if idempotency_key is not None:  # setting None after the INSERT costs an UPDATE
            job.idempotency_key = idempotency_key
        for artifact in uploaded:
            artifact.job_id = job.id
        unit.knows(job)
        unit.announce(
            job.status,
            job.id,
            status=job.status,
            kind=job.kind,
            priority=job.priority,
            submitted=True,
        )
        unit.commit()
    except IntegrityError:
        _discard(unit, uploaded)
        raced = _by_idempotency_key(session, owner, idempotency_key or "")
        if raced is None:
            raise
        return Submission(_same_request(session, raced, asked))
    except BaseException:
        _discard(unit, uploaded)
        raise
    log.info(
        "job %s (%s) submitted by %s",
        job.id,
        job.kind,
        owner.name,
        extra={"job_id": job.id, "kind": job.kind, "owner": owner.id},
    )
    if job.status == JobStatus.WAITING.value:
        dependencies.settle(job.id, unit_of_work)  # what it waits for may have ended meanwhile
        session.refresh(job)
    if not admit:
        return Submission(job)
    try:
        pump.notify()
    except Exception as exc:
        abandon(session, job)
        raise Unavailable(f"the queue is not reachable, nothing was submitted: {exc}") from exc
    book_rounds(job.run_at, job.deadline)
    return Submission(job)


def book_rounds(run_at: datetime | None, deadline: datetime | None) -> None:
    """After a submission committed: book the admission rounds its ``run_at`` and
    ``deadline`` need (none for a job due now; its announcement asked for the round that
    hands it over). A failure leaves the job held in the store for beat's rounds."""
    pump.wake_quietly(run_at)
    pump.wake_quietly(deadline)


def content_key(kind: str, params: dict[str, Any], input_sha256s: Sequence[str]) -> str:
    """SHA-256 over the kind, the validated parameters (canonical JSON) and the input
    files' SHA-256s in order: two jobs with one key do the same work."""
    canonical = json.dumps(
        {"kind": kind, "params": params, "inputs": list(input_sha256s)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _duplicate_of(session: Session, job: Job) -> Job | None:
    """The owner's newest completed job with ``job``'s content key whose outputs are
    all still there (not expired, not deleted)."""
    candidates = session.scalars(
        select(Job)
        .where(
            Job.owner_id == job.owner_id,
            Job.content_key == job.content_key,
            Job.status == JobStatus.COMPLETED.value,
            Job.id != job.id,
        )
        .order_by(Job.finished_at.desc())
        .limit(5)
    )
    for candidate in list(candidates):
        result = candidate.result or {}
        if result.get("results_expired"):
            continue
        outputs = outputs_of(session, candidate.id)
        if {a.id for a in outputs} == set(result.get("outputs", [])) and all(
            files.path_of(a).is_file() for a in outputs
        ):
            return candidate
    return None


@dataclass(frozen=True)
class _Asked:
    """A submission as sent, to hold against the job its idempotency key made."""

    kind_name: str
    params: dict[str, Any]
    input_ids: Sequence[Input]
    sent: Sequence[str]
    """The SHA-256 of each file sent with it, in order."""
    priority: Priority | None
    run_at: datetime | None
    deadline: datetime | None
    callback_url: str | None
    callback_events: Sequence[str]
    after: Sequence[str]


def _same_request(session: Session, job: Job, asked: _Asked) -> Job:
    """The job an idempotency key names, when this request is the one that made it: the
    same kind and parameters, the same inputs (files sent with it by their bytes), and
    the same priority (where one is asked for), times, webhook and jobs waited for. A
    key reused for another request is refused (the IETF Idempotency-Key draft's 422),
    so a client's mistake does not pass for a retry, and gets no other upload's job."""
    differs = _differences(session, job, asked)
    if differs:
        raise Invalid(
            f"this Idempotency-Key was first used for another request (job {job.id}, "
            f"kind {job.kind}, other {', '.join(differs)}); send a new key for a new job",
            code="idempotency_key_reused",
        )
    return job


def _differences(session: Session, job: Job, asked: _Asked) -> list[str]:
    """What of ``asked`` is not as ``job`` was asked for, in words."""
    kind = get_kind(asked.kind_name)
    if kind is None or job.kind != kind.name:
        return ["kind"]
    differs = []
    try:
        if kind.params.model_validate(asked.params).model_dump(mode="json") != job.params:
            differs.append("parameters")
    except ValidationError:
        differs.append("parameters")
    named = [i if isinstance(i, str) else i.model_dump(exclude_none=True) for i in asked.input_ids]
    stored = list(job.inputs or [])
    if stored[: len(named)] != named or _sha256s(session, stored[len(named) :]) != asked.sent:
        differs.append("inputs")
    if asked.priority is not None and asked.priority.value != job.priority:
        differs.append("priority")
    if (asked.run_at, asked.deadline) != (job.run_at, job.deadline):
        differs.append("times")
    webhook = (asked.callback_url, list(asked.callback_events) or None)
    if webhook != (job.callback_url, job.callback_events):
        differs.append("webhook")
    if set(_upstream(asked.after, asked.input_ids)) != dependencies.upstream_of(session, job.id):
        differs.append("jobs to wait for")
    return differs


def _sha256s(session: Session, inputs: Sequence[Any]) -> list[str | None]:
    """The SHA-256 of each of ``inputs`` (artifact ids), in order; None for one gone or
    not an artifact id."""
    ids = [i for i in inputs if isinstance(i, str)]
    found = dict(
        session.execute(select(Artifact.id, Artifact.sha256).where(Artifact.id.in_(ids))).all()
    )
    return [found.get(i) if isinstance(i, str) else None for i in inputs]


def _by_idempotency_key(session: Session, owner: Owner, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner.id, Job.idempotency_key == key))


def _discard(unit: UnitOfWork, uploaded: Sequence[Artifact]) -> None:
    unit.rollback()
    for artifact in uploaded:
        files.remove(artifact)


def abandon(session: Session, job: Job) -> None:
    """Undo a committed submission that could not be dispatched, files included."""
    owned = list(session.scalars(select(Artifact).where(Artifact.job_id == job.id)))
    for artifact in owned:
        session.delete(artifact)
    session.delete(job)
    session.commit()
    remove_job_files(job.id, owned)
