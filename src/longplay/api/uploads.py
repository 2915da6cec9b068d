"""Turning uploaded files into input artifacts."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from longplay.settings import get_settings
from longplay.store import files
from longplay.store.models import Artifact, ArtifactRole, Owner


def store_upload(
    session: Session, owner: Owner, upload: UploadFile, *, job_id: str | None = None
) -> Artifact:
    """Copy an upload into the store, hashing it and enforcing the size limit."""
    stager = files.Stager(get_settings().api.max_upload_bytes)
    try:
        upload.file.seek(0)
        while chunk := upload.file.read(files.CHUNK):
            stager.write(chunk)
    except BaseException:
        stager.discard()
        raise
    staged = stager.finish()
    name = files.safe_name(upload.filename)
    artifact = files.adopt(
        staged.path,
        owner_id=owner.id,
        name=name,
        media_type=files.guess_media_type(name, upload.content_type),
        role=ArtifactRole.INPUT,
        job_id=job_id,
        sha256=staged.sha256,
    )
    session.add(artifact)
    return artifact
