"""Who may read a job: its owner's API key, or a viewer token of that one job.

The routes a browser needs to follow a job and play its results (the job, its live
events, its outputs' metadata and bytes) take either. A token comes as the usual
``Authorization: Bearer`` or as ``?token=``, because ``EventSource``, ``<audio src>``
and a download link cannot send a header. Anything a token does not read is a ``404``,
as another owner's job is to a key: a token says nothing of what else exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar
from urllib.parse import quote

from fastapi import Depends, Query
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from longplay.api import standing
from longplay.api.deps import KEY_IN_URL, authenticate, bearer, in_store, key_holds, unauthorized
from longplay.jobs import refusals
from longplay.store.models import Artifact, ArtifactRole, Owner
from longplay.store.viewer_tokens import is_viewer_token, job_of_token
from longplay.store.views import ArtifactPublic, JobPublic

T = TypeVar("T")


@dataclass(frozen=True)
class Reader:
    """The owner whose things are read, and, for a viewer token, the one job it reads."""

    owner: Owner
    token: str | None = None
    job_id: str | None = None

    def check_job(self, job_id: str) -> None:
        """A token reads its own job alone: another is not found."""
        if self.job_id is not None and job_id != self.job_id:
            raise refusals.NotFound(f"no job {job_id}")

    def check_artifact(self, artifact: Artifact) -> None:
        """A token reads its job's outputs alone (not what was uploaded to it)."""
        if self.job_id is not None and not (
            artifact.job_id == self.job_id and artifact.role == ArtifactRole.OUTPUT.value
        ):
            raise refusals.NotFound(f"no artifact {artifact.id}")

    def job(self, job: JobPublic) -> JobPublic:
        """``job`` with links a browser holding the token can follow as they are."""
        if self.token is None:
            return job
        links = job.links.model_copy(
            update={
                "self": self.signed(job.links.self),
                "cancel": None,  # a token cannot: a page following it would get a 401
                "events": self.signed(job.links.events),
            }
        )
        return job.model_copy(
            update={
                "links": links,
                "outputs": [self.artifact(a) for a in job.outputs],
                "callback_url": None,  # the owner's server, perhaps with a secret in it
            }
        )

    def artifact(self, artifact: ArtifactPublic) -> ArtifactPublic:
        if self.token is None:
            return artifact
        links = artifact.links.model_copy(
            update={
                "self": self.signed(artifact.links.self),
                "content": self.signed(artifact.links.content),
            }
        )
        return artifact.model_copy(update={"links": links})

    def signed(self, path: str) -> str:
        """``path`` with the token in its query."""
        return f"{path}?token={quote(self.token or '', safe='')}"


async def reader_credential(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[
        str | None,
        Query(
            description="A viewer token (`POST /v1/jobs/{id}/viewer-tokens`), for a browser "
            "that cannot send `Authorization`: `EventSource`, `<audio src>`, a link.",
            max_length=200,
        ),
    ] = None,
) -> str:
    """The API key or viewer token the request sent; checked with the store work."""
    if credentials is not None:
        return credentials.credentials
    if token and is_viewer_token(token):
        return token
    if token:
        raise unauthorized(KEY_IN_URL)
    raise unauthorized(
        "send an API key as 'Authorization: Bearer <key>' (longplay keys create makes "
        "one), or a viewer token of this job as ?token="
    )


ReaderDep = Annotated[str, Depends(reader_credential)]


def authenticate_reader(session: Session, credential: str) -> Reader:
    """The reader a credential is: a key's owner, or a live viewer token's job."""
    if not is_viewer_token(credential):
        return Reader(authenticate(session, credential))
    job = job_of_token(session, credential)
    owner = session.get(Owner, job.owner_id) if job is not None else None
    if job is None or owner is None:
        raise unauthorized("this viewer token is not valid (unknown, expired, or its job deleted)")
    return Reader(owner, token=credential, job_id=job.id)


async def as_reader(credential: str, work: Callable[[Session, Reader], T]) -> T:
    """Check the credential and run ``work(session, reader)`` in the same store call."""
    return await in_store(lambda session: work(session, authenticate_reader(session, credential)))


async def reader_holds(credential: str) -> bool:
    """Whether a credential a stream was opened with still holds: a key not revoked, a
    token not expired (:mod:`.standing`)."""
    if not is_viewer_token(credential):
        return await key_holds(credential)
    return await standing.holds(
        credential, lambda: in_store(lambda session: job_of_token(session, credential) is not None)
    )
