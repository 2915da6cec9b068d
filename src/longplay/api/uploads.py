"""Turning uploaded files into input artifacts, in two halves: copying and hashing the
bytes (slow, no store connection held) and adding the rows (quick, in a store call)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from longplay.settings import get_settings
from longplay.store import files
from longplay.store.models import Artifact, ArtifactRole, Owner


@dataclass(frozen=True)
class Received:
    """An upload copied into the store's incoming folder, not yet an artifact."""

    staged: files.StagedFile
    name: str
    media_type: str


def receive(upload: UploadFile) -> Received:
    """Copy an upload into the store, hashing it and enforcing the size limit."""
    stager = files.Stager(get_settings().api.max_upload_bytes)
    try:
        upload.file.seek(0)
        while chunk := upload.file.read(files.CHUNK):
            stager.write(chunk)
    except BaseException:
        stager.discard()
        raise
    name = files.safe_name(upload.filename, max_bytes=files.STORED_NAME_BYTES)
    return Received(stager.finish(), name, files.guess_media_type(name, upload.content_type))


def receive_all(uploads: Sequence[UploadFile]) -> list[Received]:
    """Every upload received, or none: a failure removes the ones copied before it."""
    received: list[Received] = []
    try:
        for upload in uploads:
            received.append(receive(upload))
    except BaseException:
        discard(received)
        raise
    return received


def discard(received: Sequence[Received]) -> None:
    for item in received:
        item.staged.path.unlink(missing_ok=True)


def adopt(session: Session, owner: Owner, received: Received) -> Artifact:
    """The received file moved into the store as the owner's input artifact (added)."""
    artifact = files.adopt(
        received.staged.path,
        owner_id=owner.id,
        name=received.name,
        media_type=received.media_type,
        role=ArtifactRole.INPUT,
        sha256=received.staged.sha256,
    )
    session.add(artifact)
    return artifact
