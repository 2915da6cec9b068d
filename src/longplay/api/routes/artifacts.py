"""Artifacts: upload inputs, read metadata, download (with Range requests, HEAD, ETag)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from longplay.api import bodies, content, uploads
from longplay.api.deps import KeyDep, UploaderKeyDep, as_owner
from longplay.api.errors import errors
from longplay.api.readers import Reader, ReaderDep, as_reader
from longplay.jobs import refusals, service
from longplay.store import files
from longplay.store.models import Artifact, Owner
from longplay.store.views import ArtifactPublic

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

UPLOAD_BODY: dict[str, Any] = {
    # Read by hand, after the key is checked and within uploads.BODY_LIMIT.
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "The file; its name is kept.",
                        }
                    },
                    "required": ["file"],
                }
            }
        },
    }
}

UPLOAD_PARTS = {"file": 1}
"""An upload is one file: a second, or any other field, is refused as it arrives."""
UPLOAD_TEXT_BYTES = 1024
"""A text part where the file belongs is refused anyway; this bounds what it holds."""


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtifactPublic,
    responses=errors(401, 413, 422),
    openapi_extra=UPLOAD_BODY,
)
async def upload(request: Request, key: UploaderKeyDep) -> ArtifactPublic:
    """Upload a file to use as a job's input; the reply's ``id`` goes in ``inputs``."""
    within = uploads.within_limit(request, "an upload")
    form = await bodies.read_form(
        within,
        "an upload's",
        UPLOAD_PARTS,
        max_part_size=UPLOAD_TEXT_BYTES,
        max_text_bytes=UPLOAD_TEXT_BYTES,
    )
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise refusals.Invalid(
                "send the file as a multipart part named 'file'",
                [{"loc": ["body", "file"], "msg": "no file", "type": "missing"}],
            )
        received = await run_in_threadpool(uploads.receive, file)
    finally:
        await form.close()

    def add(session: Session, owner: Owner) -> ArtifactPublic:
        artifact = uploads.adopt(session, owner, received)
        try:
            session.commit()
        except BaseException:
            files.remove(artifact)
            raise
        return ArtifactPublic.of(artifact)

    try:
        return await as_owner(key, add)
    except BaseException:
        uploads.discard([received])  # gone already if it was moved into the store
        raise


@router.get("/{artifact_id}", response_model=ArtifactPublic, responses=errors(401, 404, 410))
async def get_artifact(artifact_id: str, credential: ReaderDep) -> ArtifactPublic:
    """An artifact's name, type, size and checksum. Takes an API key, or a viewer token
    of the job that made it."""
    artifact, reader = await _readable(artifact_id, credential)
    return reader.artifact(ArtifactPublic.of(artifact))


async def _readable(artifact_id: str, credential: str) -> tuple[Artifact, Reader]:
    """The artifact, if the key's owner has it or the viewer token's job made it."""

    def read(session: Session, reader: Reader) -> tuple[Artifact, Reader]:
        artifact = service.get_artifact(
            session, owner=reader.owner, artifact_id=artifact_id, job_id=reader.job_id
        )
        reader.check_artifact(artifact)
        return artifact, reader

    return await as_reader(credential, read)


@router.delete(
    "/{artifact_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 409)
)
async def delete_artifact(artifact_id: str, key: KeyDep) -> Response:
    """Delete an upload no job and no collection document reads, with its file. A job's
    output goes with its job (``DELETE /v1/jobs/{id}``); an upload a job names stays
    while that job does (409)."""
    await as_owner(
        key,
        lambda session, owner: service.delete_artifact(
            session, owner=owner, artifact_id=artifact_id
        ),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The whole file, as its own media type (`Content-Type`); its name is in "
        "`Content-Disposition`.",
        "content": {"*/*": {}},
    },
    206: {
        "description": "The byte range `Range` asked for, placed by `Content-Range`.",
        "content": {"*/*": {}},
    },
    304: {"description": "`If-None-Match` names the file's `ETag`: the client's copy is current."},
    **errors(401, 404, 410, 416),
}


@router.get("/{artifact_id}/content", response_class=Response, responses=CONTENT_RESPONSES)
async def download(artifact_id: str, credential: ReaderDep, request: Request) -> Response:
    """The artifact's bytes. Honours `Range` (one range; an invalid one is ignored),
    `If-Range` and `If-None-Match` (the `ETag` is the file's SHA-256), as RFC 9110 says."""
    return await _content(artifact_id, credential, request)


@router.head(
    "/{artifact_id}/content",
    response_class=Response,
    responses={s: CONTENT_RESPONSES[s] for s in (200, 304, 401, 404, 410)},
)
async def download_headers(artifact_id: str, credential: ReaderDep, request: Request) -> Response:
    """The headers a `GET` of the artifact's bytes would answer, without the bytes;
    `Range` is for `GET` alone (RFC 9110), so it is ignored here."""
    return await _content(artifact_id, credential, request)


async def _content(artifact_id: str, credential: str, request: Request) -> Response:
    artifact, _ = await _readable(artifact_id, credential)
    path = files.path_of(artifact)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise refusals.NotFound(f"the file of artifact {artifact_id} is gone") from None
    response = content.file_response(
        request,
        path,
        size=size,
        etag=f'"{artifact.sha256}"',
        media_type=artifact.media_type,
        name=artifact.name,
    )
    response.headers.update(files.SERVED_FILE_HEADERS)
    return response
