"""Turning uploaded files into input artifacts, in two halves: copying, hashing and
checking the bytes (slow, no store connection held) and adding the rows (quick, in a
store call)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.requests import Request

from longplay.api import bodies
from longplay.framework import InputFile, JobKind
from longplay.jobs.checks import check_upload
from longplay.settings import get_settings
from longplay.store import files
from longplay.store.models import Artifact, ArtifactRole, Owner

BODY_LIMIT = get_settings().api.max_upload_bytes + 1024 * 1024
"""A request that carries files: the largest upload, and a little for the multipart
around it and its other fields."""


def within_limit(request: Request, what: str) -> Request:
    """``request``, its body read within :data:`BODY_LIMIT`; a refusal names the
    upload limit the operator set, not that plus the allowance for the form."""
    told = get_settings().api.max_upload_bytes
    return bodies.limited(request, BODY_LIMIT, f"{what} ({files.UPLOAD_SETTING})", told=told)


@dataclass(frozen=True)
class Received:
    """An upload copied into the store's incoming folder, not yet an artifact."""

    staged: files.StagedFile
    name: str
    media_type: str


_ESCAPED_BY_BROWSERS = {"%22": '"', "%0A": "\n", "%0D": "\r"}


def sent_name(filename: str | None) -> str | None:
    """A part's file name as its sender named the file: a browser writes ``"``, a line
    feed and a carriage return in it as ``%22``, ``%0A`` and ``%0D`` (the HTML
    standard's multipart encoding), which no one means literally."""
    if filename is None:
        return None
    for escaped, meant in _ESCAPED_BY_BROWSERS.items():
        filename = filename.replace(escaped, meant)
    return filename


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
    name = files.safe_name(sent_name(upload.filename), max_bytes=files.STORED_NAME_BYTES)
    return Received(stager.finish(), name, files.guess_media_type(name, upload.content_type))


def receive_all(uploads: Sequence[UploadFile], kind: JobKind[Any] | None = None) -> list[Received]:
    """Every upload received, or none: a failure removes the ones copied before it.
    Each file gets ``kind``'s look into it (:func:`~longplay.jobs.checks.check_upload`);
    a file that fails it refuses the submission, with the code the job would have
    failed with."""
    received: list[Received] = []
    try:
        for index, upload in enumerate(uploads):
            item = receive(upload)
            received.append(item)
            if kind is not None:
                check_upload(kind, _as_input(item), index)
    except BaseException:
        discard(received)
        raise
    return received


def _as_input(item: Received) -> InputFile:
    """The upload as a job's steps would get it, with no artifact id yet."""
    return InputFile(
        artifact_id="",
        name=item.name,
        media_type=item.media_type,
        path=item.staged.path,
        size=item.staged.size,
    )


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
