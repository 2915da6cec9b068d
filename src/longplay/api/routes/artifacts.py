"""Artifacts: upload inputs, read metadata, download (with Range requests)."""

from __future__ import annotations

from fastapi import APIRouter, UploadFile, status
from fastapi.responses import FileResponse

from longplay.api.deps import OwnerDep, SessionDep
from longplay.api.uploads import store_upload
from longplay.jobs import refusals, service
from longplay.settings import get_settings
from longplay.store import files
from longplay.store.views import ArtifactPublic

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtifactPublic,
    max_body_size=get_settings().api.max_upload_bytes + 1024 * 1024,
)
def upload(file: UploadFile, session: SessionDep, owner: OwnerDep) -> ArtifactPublic:
    """Upload a file to use as a job's input; the reply's ``id`` goes in ``inputs``."""
    artifact = store_upload(session, owner, file)
    try:
        session.commit()
    except BaseException:
        files.remove(artifact)
        raise
    return ArtifactPublic.of(artifact)


@router.get("/{artifact_id}", response_model=ArtifactPublic)
def get_artifact(artifact_id: str, session: SessionDep, owner: OwnerDep) -> ArtifactPublic:
    """An artifact's name, type, size and checksum."""
    return ArtifactPublic.of(service.get_artifact(session, owner=owner, artifact_id=artifact_id))


@router.get("/{artifact_id}/content", response_class=FileResponse)
def download(artifact_id: str, session: SessionDep, owner: OwnerDep) -> FileResponse:
    """The artifact's bytes; honours ``Range`` so players can seek."""
    artifact = service.get_artifact(session, owner=owner, artifact_id=artifact_id)
    path = files.path_of(artifact)
    if not path.is_file():
        raise refusals.NotFound(f"the file of artifact {artifact_id} is gone")
    return FileResponse(
        path,
        media_type=artifact.media_type,
        filename=artifact.name,
        headers={"ETag": f'"{artifact.sha256}"'},
    )
