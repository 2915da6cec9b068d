"""Queries more than one layer asks: the outputs a job kept."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from longplay.store.models import Artifact, ArtifactRole


def outputs_of(session: Session, job_id: str, *, step: str | None = None) -> list[Artifact]:
    """The files a job kept as results (of one ``step``, or all), oldest first."""
    query = select(Artifact).where(
        Artifact.job_id == job_id, Artifact.role == ArtifactRole.OUTPUT.value
    )
    if step is not None:
        query = query.where(Artifact.step == step)
    return list(session.scalars(query.order_by(Artifact.created_at, Artifact.id)))


def outputs_of_many(session: Session, job_ids: Sequence[str]) -> dict[str, list[Artifact]]:
    """:func:`outputs_of` for each of ``job_ids``, in one query."""
    if not job_ids:
        return {}
    found: dict[str, list[Artifact]] = {}
    for artifact in session.scalars(
        select(Artifact)
        .where(Artifact.job_id.in_(job_ids), Artifact.role == ArtifactRole.OUTPUT.value)
        .order_by(Artifact.created_at, Artifact.id)
    ):
        found.setdefault(artifact.job_id or "", []).append(artifact)
    return found
