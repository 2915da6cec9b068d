"""Viewer tokens: hand a browser one job to follow and play, not your API key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from longplay.api import bodies
from longplay.api.deps import KeyDep, as_owner
from longplay.api.errors import errors
from longplay.api.openapi import ref_of
from longplay.api.readers import Reader
from longplay.jobs import service
from longplay.store.models import Owner
from longplay.store.viewer_tokens import create_viewer_token

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

WEEK = 7 * 24 * 3600
HOUR = 3600


class ViewerTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in: int = Field(
        HOUR, ge=60, le=WEEK, description="Seconds the token reads the job: 1 minute to 7 days."
    )


class ViewerTokenLinks(BaseModel):
    self: str = Field(description="The job, readable with the token as it is.")
    events: str = Field(description="Its live events, for `new EventSource(…)`.")


class ViewerTokenPublic(BaseModel):
    token: str = Field(description="Shown once. Send it as `?token=` or as a Bearer token.")
    job_id: str
    expires_at: datetime
    links: ViewerTokenLinks


BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": ref_of(ViewerTokenCreate)}}},
    }
}


@router.post(
    "/{job_id}/viewer-tokens",
    response_model=ViewerTokenPublic,
    status_code=status.HTTP_201_CREATED,
    responses=errors(401, 404, 413, 422),
    openapi_extra=BODY,
)
async def create(job_id: str, key: KeyDep, request: Request) -> ViewerTokenPublic:
    """A token that reads this one job (`GET` it, its `/events`, its outputs and their
    `/content`) and nothing else, until it expires, the job is deleted or the key that
    made it is revoked. Made for a
    browser: your backend keeps the API key and hands the page this instead. The body
    is optional (an hour)."""
    _, raw = await bodies.read_json_body(request, empty=b"{}")
    seconds = bodies.validated(ViewerTokenCreate, raw).expires_in

    def make(session: Session, owner: Owner) -> ViewerTokenPublic:
        job = service.get_job(session, owner=owner, job_id=job_id)
        secret, token = create_viewer_token(session, job, key, seconds=seconds)
        reader = Reader(owner, token=secret, job_id=job.id)
        base = f"/v1/jobs/{job.id}"
        return ViewerTokenPublic(
            token=secret,
            job_id=job.id,
            expires_at=token.expires_at,
            links=ViewerTokenLinks(
                self=reader.signed(base), events=reader.signed(f"{base}/events")
            ),
        )

    return await as_owner(key, make)
