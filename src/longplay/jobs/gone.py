"""What retention removed, remembered so that asking for it says why.

A client that comes back for a result a week later, or submits a job naming an upload
from the day before, used to hear "no artifact": as if the id were mistyped. The
cleanup now leaves a :class:`~longplay.store.models.GoneArtifact` row for each artifact
it removes, and a request for one answers ``410 Gone`` (a submission naming one, a 422)
with when it went and which setting removed it. An owner's own delete leaves no row:
they know. The rows go when they are older than ``LONGPLAY_JOB_RETENTION``, as
finished jobs do (never, where that is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from longplay.store.models import Artifact, GoneArtifact, utcnow

Reason = Literal["results", "job", "upload"]


def remember(session: Session, artifacts: Sequence[Artifact], reason: Reason) -> None:
    """Record ``artifacts`` as removed for ``reason``, in the transaction removing them
    (an artifact's row goes once, so its record is new)."""
    now = utcnow()
    session.add_all(
        GoneArtifact(
            id=artifact.id,
            owner_id=artifact.owner_id,
            job_id=artifact.job_id,
            name=artifact.name,
            reason=reason,
            removed_at=now,
        )
        for artifact in artifacts
    )


def why_gone(
    session: Session, *, owner_id: str, artifact_ids: Sequence[str], job_id: str | None = None
) -> dict[str, str]:
    """A sentence for each of ``artifact_ids`` the owner had and retention removed;
    with ``job_id`` (a viewer token's job), only those of that job."""
    query = select(GoneArtifact).where(
        GoneArtifact.id.in_(artifact_ids), GoneArtifact.owner_id == owner_id
    )
    if job_id is not None:
        query = query.where(GoneArtifact.job_id == job_id)
    return {gone.id: _sentence(gone) for gone in session.scalars(query)}


def _sentence(gone: GoneArtifact) -> str:
    on = gone.removed_at.strftime("%Y-%m-%d %H:%M UTC")
    what = f"artifact {gone.id} ({gone.name})"
    if gone.reason == "results":
        return (
            f"{what} is gone: the results of job {gone.job_id} were removed on {on}, as "
            "the service's LONGPLAY_RESULT_RETENTION says; submit the job again to make "
            "them anew"
        )
    if gone.reason == "job":
        return (
            f"{what} is gone with job {gone.job_id}, removed on {on} as the service's "
            "LONGPLAY_JOB_RETENTION says"
        )
    return (
        f"{what} is gone: no job named this upload, and it was removed on {on} as the "
        "service's LONGPLAY_UPLOAD_RETENTION says; upload the file again"
    )
