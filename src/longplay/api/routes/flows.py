"""Flows: submit named stages at once, follow them as one, cancel them together."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, status
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from longplay.api import bodies
from longplay.api.deps import KeyDep, as_owner, in_store, key_holds
from longplay.api.errors import errors
from longplay.api.followers import EventHub
from longplay.api.openapi import json_body
from longplay.api.routes.events import (
    ENDED_RESPONSE,
    ResumeAfter,
    next_entries,
    past_the_stream,
    refuse_past_the_end,
)
from longplay.api.routes.jobs import present_page
from longplay.api.schemas import CallbackUrl
from longplay.jobs import flows
from longplay.jobs.flow_events import FLOW_ENDED
from longplay.store.models import Flow, Owner, Priority, utcnow
from longplay.store.views import INPUT_SHAPES, FlowPublic, OutputRef, input_shape

router = APIRouter(prefix="/v1/flows", tags=["flows"])

STAGE_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class StageOutputRef(BaseModel):
    """An input taken from another stage's outputs, by name or by the end of its name."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description="The stage; this one waits for it to complete.")
    output: str | None = Field(None, description="The output's name, e.g. `talk.json`.")
    suffix: str | None = Field(None, description="The end of its name, e.g. `.json`.")

    @model_validator(mode="after")
    def _one_of(self) -> StageOutputRef:
        if (self.output is None) == (self.suffix is None):
            raise ValueError("name the output by `output` or by `suffix`, one of the two")
        return self


StageInput = Annotated[
    Annotated[str, Tag("artifact")]
    | Annotated[OutputRef, Tag("job")]
    | Annotated[StageOutputRef, Tag("stage")],
    Discriminator(
        input_shape,
        custom_error_type="input",
        custom_error_message=f'{INPUT_SHAPES}, or another stage\'s ({{"stage": …, "output" or '
        '"suffix": …})',
    ),
]
"""An input as a stage names it: besides what a job takes, another stage's output."""


class StageCreate(BaseModel):
    """One stage: a job as ``POST /v1/jobs`` takes it, waiting for other stages."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="The job kind; GET /v1/kinds lists them.")
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters.")
    inputs: list[StageInput] = Field(
        default_factory=list,
        description="Artifact ids, another job's outputs, or another stage's "
        '(`{"stage": "t", "suffix": ".json"}`), in order.',
    )
    after: list[str] = Field(
        default_factory=list, description="Stages to wait for (besides those it reads)."
    )
    priority: Priority | None = None
    run_at: AwareDatetime | None = None
    deadline: AwareDatetime | None = None


class FlowCreate(BaseModel):
    """Jobs to run as named stages: each starts once the stages it waits for completed."""

    model_config = ConfigDict(extra="forbid")

    stages: dict[Annotated[str, Field(pattern=STAGE_NAME)], StageCreate] = Field(
        min_length=1, max_length=flows.MAX_STAGES
    )
    callback_url: CallbackUrl | None = Field(
        None, description="Where to POST one signed webhook, `flow.<status>`, when it ends."
    )


def _stage(body: StageCreate) -> flows.Stage:
    return flows.Stage(
        kind=body.kind,
        params=body.params,
        inputs=[
            flows.FromStage(i.stage, i.output, i.suffix) if isinstance(i, StageOutputRef) else i
            for i in body.inputs
        ],
        after=body.after,
        priority=body.priority,
        run_at=body.run_at,
        deadline=body.deadline,
    )


def present(session: Session, found: flows.FlowJobs) -> FlowPublic:
    return FlowPublic.of(found.flow, present_page(session, found.jobs), found.steps)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FlowPublic,
    responses=errors(401, 404, 409, 413, 422, 429),
    openapi_extra=json_body(FlowCreate),
)
async def create_flow(
    request: Request,
    key: KeyDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Send the same key again to get the same flow back."),
    ] = None,
) -> FlowPublic:
    """Submit a flow: every stage's job at once (all stored, or none)."""
    parsed, raw = await bodies.read_json_body(request)
    body = bodies.validated(FlowCreate, raw)
    stages = {name: _stage(stage) for name, stage in body.stages.items()}
    callback = str(body.callback_url) if body.callback_url else None
    # What the submission says, whatever the order and spacing of its JSON.
    digest = hashlib.sha256(
        json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return await as_owner(
        key,
        lambda session, owner: present(
            session,
            flows.create_flow(
                session,
                owner=owner,
                stages=stages,
                callback_url=callback,
                idempotency_key=idempotency_key or None,  # an empty header names no key
                request_digest=digest,
            ),
        ),
    )


@router.get("/{flow_id}", response_model=FlowPublic, responses=errors(401, 404))
async def get_flow(flow_id: str, key: KeyDep) -> FlowPublic:
    """A flow: its status, its progress across stages, each stage's job."""
    return await as_owner(
        key,
        lambda session, owner: present(
            session, flows.flow_jobs(session, owner=owner, flow_id=flow_id)
        ),
    )


@router.post("/{flow_id}/cancel", response_model=FlowPublic, responses=errors(401, 404, 409))
async def cancel_flow(flow_id: str, key: KeyDep) -> FlowPublic:
    """Cancel every stage that has not ended (running ones stop at a checkpoint)."""

    def cancel(session: Session, owner: Owner) -> FlowPublic:
        return present(session, flows.cancel_flow(session, owner=owner, flow_id=flow_id))

    return await as_owner(key, cancel)


async def owned_flow_id(flow_id: str, key: KeyDep) -> str:
    """Checked before the stream starts, so another owner's flow is a plain 404."""
    return await as_owner(
        key, lambda session, owner: flows.flow_jobs(session, owner=owner, flow_id=flow_id).flow.id
    )


async def _flow_resume(
    flow_id: Annotated[str, Depends(owned_flow_id)], after: ResumeAfter, request: Request
) -> str:
    async def ended() -> bool:
        flow = await in_store(lambda session: session.get(Flow, flow_id))
        return flow is None or flow.finished_at is not None

    await refuse_past_the_end(request, flow_id, after, {FLOW_ENDED}, ended)
    return after


@router.get(
    "/{flow_id}/events",
    response_class=EventSourceResponse,
    responses={**ENDED_RESPONSE, **errors(401, 404)},
)
async def flow_events(
    flow_id: Annotated[str, Depends(owned_flow_id)],
    after: Annotated[str, Depends(_flow_resume)],
    key: KeyDep,
    request: Request,
) -> AsyncIterator[ServerSentEvent]:
    """Follow every stage's events in one stream, each with its `stage`; it ends with
    `flow_ended` (with the flow's `status`). Resumable with ``Last-Event-ID``; resuming
    after `flow_ended` is a ``204``. A stream whose key is revoked ends within seconds."""
    hub: EventHub = request.app.state.event_hub
    async with hub.follow(flow_id, after) as follower:
        while not await request.is_disconnected() and await key_holds(key):
            entries = await next_entries(hub, follower)
            if hub.stopping:
                return  # the client resumes on the next process, from its last id
            for entry_id, data in entries:
                if not follower.is_new(entry_id):
                    continue
                follower.cursor = entry_id
                event = json.loads(data)
                yield ServerSentEvent(data=event, event=event["type"], id=entry_id)
                if event["type"] == FLOW_ENDED:
                    return
            if entries:
                continue
            try:
                ended, final = await in_store(lambda session: _end_in_store(session, flow_id))
            except SQLAlchemyError:  # an outage ends no stream: the next round asks again
                continue
            if ended:  # the stream is gone or its last event was lost: the store has the end
                if final is not None:
                    past = await past_the_stream(hub, flow_id)
                    yield ServerSentEvent(data=final, event=FLOW_ENDED, id=past)
                return


def _end_in_store(session: Session, flow_id: str) -> tuple[bool, dict[str, Any] | None]:
    """Whether the store says the flow has ended (or is gone), with its last event."""
    flow = session.get(Flow, flow_id)
    if flow is None:
        return True, None
    if flow.finished_at is None:
        return False, None
    owner = session.get_one(Owner, flow.owner_id)
    ended = present(session, flows.flow_jobs(session, owner=owner, flow_id=flow_id))
    event = {"type": FLOW_ENDED, "job_id": None, "at": utcnow().isoformat(), "flow_id": flow_id}
    return True, event | {"status": ended.status.value, "progress": ended.progress}
