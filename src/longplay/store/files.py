"""Artifact files on disk: uploads streamed in with a size cap, outputs moved in.

Files live under ``<data>/files/<artifact id>``; their names, types and owners are
in the ``artifacts`` table, so no user-supplied name ever becomes a path.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath

from longplay.settings import get_settings
from longplay.store.models import Artifact, ArtifactRole, new_id

CHUNK = 1024 * 1024


class UploadTooLarge(Exception):
    """An upload passed ``max_upload_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the limit of {limit} bytes")
        self.limit = limit


@dataclass
class StagedFile:
    """An upload written to a temporary file, hashed, not yet an artifact."""

    path: Path
    size: int
    sha256: str


def files_dir() -> Path:
    path = get_settings().files_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def path_of(artifact: Artifact) -> Path:
    return files_dir() / artifact.path


def safe_name(name: str | None, default: str = "upload") -> str:
    """The last component of a client-given file name, without control characters."""
    base = PurePath((name or "").replace("\\", "/")).name
    cleaned = "".join(c for c in base if c.isprintable()).strip()
    return cleaned[:255] or default


def guess_media_type(name: str, declared: str | None = None) -> str:
    """The declared type unless it is generic, else one guessed from the name."""
    if declared and declared not in ("application/octet-stream", "") and "/" in declared:
        return declared.split(";")[0].strip().lower()
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


class Stager:
    """Writes an upload chunk by chunk to a temporary file, hashing and counting."""

    def __init__(self, max_bytes: int) -> None:
        tmp = files_dir() / ".incoming"
        tmp.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp)
        self._file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self._max = max_bytes

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max:
            self.discard()
            raise UploadTooLarge(self._max)
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> StagedFile:
        self._file.close()
        return StagedFile(self.path, self.size, self._hash.hexdigest())

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def adopt(
    source: Path,
    *,
    owner_id: str,
    name: str,
    media_type: str,
    role: ArtifactRole,
    job_id: str | None = None,
    step: str | None = None,
    sha256: str | None = None,
) -> Artifact:
    """Move a file into the store and return its (not yet added) artifact row."""
    artifact_id = new_id("art")
    size = source.stat().st_size
    digest = sha256 or sha256_of(source)
    shutil.move(source, files_dir() / artifact_id)
    return Artifact(
        id=artifact_id,
        owner_id=owner_id,
        job_id=job_id,
        role=role.value,
        step=step,
        name=name,
        media_type=media_type,
        size=size,
        sha256=digest,
        path=artifact_id,
    )


def remove(artifact: Artifact) -> None:
    path_of(artifact).unlink(missing_ok=True)
