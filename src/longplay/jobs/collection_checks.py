"""The submit-time checks of collections: a kind whose params name a ``collection``
(the owner's, with passages to read; see :mod:`longplay.framework.library`), and a
file added as a document (one that cannot be a document is refused at once)."""

from __future__ import annotations

import codecs
import re
import zipfile
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.orm import Session

from longplay.framework.library import FillsCollection
from longplay.jobs.refusals import Invalid, NotFound
from longplay.store import library as queries
from longplay.text.documents import binary_document
from longplay.text.reading import WHAT_WE_READ

COLLECTION_FIELD = "collection"
HEAD_BYTES = 4096
"""How much of a file the document check reads (the reader's own sniff reads as much)."""
_NOT_DOCUMENTS = tuple(
    (re.compile(pattern, re.S), what)
    for pattern, what in (
        (rb"\A\x89PNG\r\n\x1a\n", "a PNG image"),
        (rb"\A\xff\xd8\xff", "a JPEG image"),
        (rb"\AGIF8[79]a", "a GIF image"),
        (rb"\ARIFF.{4}WEBP", "a WebP image"),
        (rb"\A(?:II\*\x00|MM\x00\*)", "a TIFF image"),
        (rb"\ABM.{4}\x00\x00\x00\x00", "a BMP image"),
        (rb"\ARIFF.{4}WAVE", "WAV audio"),
        (rb"\ARIFF.{4}AVI ", "an AVI video"),
        (rb"\A(?:ID3|\xff[\xf1-\xfb])", "MP3 or AAC audio"),
        (rb"\AOggS", "Ogg audio or video"),
        (rb"\AfLaC", "FLAC audio"),
        (rb"\A.{4}ftyp", "an MP4, MOV, M4A or HEIC file (video, audio or an image)"),
        (rb"\A\x1aE\xdf\xa3", "a Matroska or WebM video"),
        (rb"\A\x1f\x8b", "a gzip archive"),
        (rb"\ABZh[1-9]1AY&SY", "a bzip2 archive"),
        (rb"\A\xfd7zXZ\x00", "an xz archive"),
        (rb"\A7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (rb"\ARar!\x1a\x07", "a RAR archive"),
        (rb"\A.{257}ustar", "a tar archive"),
    )
)
"""How images, audio, video and archives start: what is never a document."""


def check_named_collection(
    session: Session, owner_id: str, params: BaseModel, *, waits: bool = False
) -> None:
    """The submit-time check of a job whose params name a ``collection``: another
    owner's or an unknown one is :class:`NotFound`; one without indexed passages is
    :class:`Invalid`, unless the job ``waits`` for others (which may fill it) or the
    field is marked :data:`~longplay.framework.library.FILLS_COLLECTION` (``index``)."""
    field = type(params).model_fields.get(COLLECTION_FIELD)
    collection_id = getattr(params, COLLECTION_FIELD, None)
    if field is None or not isinstance(collection_id, str):
        return
    if queries.collection_of(session, owner_id, collection_id) is None:
        raise NotFound(f"no collection {collection_id}")
    if waits or any(isinstance(m, FillsCollection) for m in field.metadata):
        return
    if queries.passage_count(session, collection_id) == 0:
        message = (
            f"collection {collection_id} has no indexed passages yet: add documents and "
            "wait for their index job to complete"
        )
        loc = ["body", "params", COLLECTION_FIELD]
        raise Invalid(message, [{"loc": loc, "msg": message, "type": "empty_collection"}])


def check_document(name: str, path: Path, loc: list[str | int]) -> None:
    """Refuse (:class:`Invalid`, ``unsupported_input``) a file added to a collection
    that its bytes show cannot be a document (an image, audio, video, an archive, other
    binary data), naming it and what a collection reads. Everything else is left to the
    ``index`` job, whose reader says why a document it cannot read fails."""
    what = _not_a_document(path)
    if what is not None:
        message = f"{name} is {what}, not a document; a collection reads {WHAT_WE_READ}"
        code = "unsupported_input"
        raise Invalid(message, [{"loc": loc, "msg": message, "type": code}], code=code)


def _not_a_document(path: Path) -> str | None:
    """What the file is, where it is none of what a collection reads."""
    try:
        with path.open("rb") as file:
            head = file.read(HEAD_BYTES)
    except OSError:  # gone: the index job says so
        return None
    what = next((what for pattern, what in _NOT_DOCUMENTS if pattern.match(head)), None)
    if what is not None:
        return what
    binary = binary_document(head)
    if binary == "docx":  # a zip: a .docx has its document part in it
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
            return None  # damaged: the reader says so
        return None if "word/document.xml" in names else "a zip archive (not a Word .docx)"
    if binary == "pdf" or head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None  # a PDF, or UTF-16 text with its byte-order mark
    return "binary data, not text" if b"\x00" in head else None
