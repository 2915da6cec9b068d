"""Artifact files on disk: uploads streamed in with a size cap, outputs moved in.

Files live under ``<data>/files/<artifact id>``; their names, types and owners are
in the ``artifacts`` table, so no user-supplied name becomes a path here. An upload
keeps its name as given (up to :data:`STORED_NAME_BYTES`); kinds, which name their
work files after their inputs, see it shortened to :data:`UPLOAD_NAME_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePath

from longplay.settings import get_settings
from longplay.store.models import Artifact, ArtifactRole, new_id

CHUNK = 1024 * 1024
SERVED_FILE_HEADERS = {
    # A file a user uploaded (HTML, SVG) must never run as a page of this site, nor be
    # sniffed into a type other than the one it is served as.
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
    "X-Content-Type-Options": "nosniff",
}
"""The headers every answer that serves an artifact's bytes has (API and dashboard)."""


UPLOAD_SETTING = "LONGPLAY_MAX_UPLOAD_BYTES"


class NoDataFolder(Exception):
    """The data folder cannot be made (one line, naming its setting)."""


def make_data_folder(data_dir: Path) -> None:
    """Make the data folder, for its user alone, if it is not there; :class:`NoDataFolder`
    where it cannot be (a file where a folder goes, a folder this user cannot write in)."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise NoDataFolder(
            f"cannot make the data folder LONGPLAY_DATA_DIR={str(data_dir)!r}: {exc.strerror}"
        ) from None


def size_text(count: int) -> str:
    """A limit in bytes as a person reads it, exactly: ``512 MiB (536870912 bytes)``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.4g} {unit} ({count} bytes)"
    return f"{count} bytes"


class UploadTooLarge(Exception):
    """An upload passed ``max_upload_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an upload ({UPLOAD_SETTING}) may have at most {size_text(limit)}")
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


NAME_MAX_BYTES = 255
"""The longest file name most file systems take (ext4, XFS, APFS, NTFS), in bytes."""
STORED_NAME_BYTES = 1024
"""The longest name an artifact keeps, in UTF-8 bytes (its download carries it)."""
UPLOAD_NAME_BYTES = 200
"""The longest input name a kind sees, in UTF-8 bytes. Kinds name their files after their
inputs and add to the name (``-converted.mp3.part``, ``.en.srt``, ``.voiced.f32``), and
those names must still fit in :data:`NAME_MAX_BYTES`."""
_LONGEST_EXTENSION = 16


KEPT_FORMAT_CHARACTERS = frozenset("\u200c\u200d")
"""The invisible format characters a name keeps: the zero-width non-joiner and joiner,
which spell words (Persian ``می‌خواهم``) and join emoji (``👨‍👩‍👧``). Every other one goes,
the bidi controls (U+200E/200F, U+202A-202E, U+2066-2069) on purpose: after a
right-to-left override (U+202E), ``photo<RLO>gpj.exe`` shows as ``photoexe.jpg``."""
_LOOSE_ENDS = " " + "".join(KEPT_FORMAT_CHARACTERS)
"""What a shortened name does not end with before its extensions: a space, or a joiner
left without the character it joined."""


def safe_name(name: str | None, default: str = "upload", max_bytes: int = NAME_MAX_BYTES) -> str:
    """The last component of a client-given file name, in NFC, cleaned
    (:func:`clean_characters`), at most ``max_bytes`` long in UTF-8.

    NFC because macOS sends names decomposed (NFD) and most other systems composed: a
    name is stored, compared and shortened in one spelling. A longer name is cut on a
    character boundary before its extension, which it keeps (``long….mp3``), so it is
    still recognised by its type. ``.`` and ``..`` are no names.
    """
    base = PurePath((name or "").replace("\\", "/")).name
    cleaned = clean_characters(unicodedata.normalize("NFC", base)).strip()
    if cleaned in ("", ".", ".."):
        return default
    return shorten(cleaned, max_bytes)


def clean_characters(text: str) -> str:
    """``text`` without control characters, line breaks and invisible format characters
    other than :data:`KEPT_FORMAT_CHARACTERS`; any other space (no-break, ideographic)
    becomes a plain one. Variation selectors are marks, and stay."""
    return "".join(_cleaned(c) for c in text)


def _cleaned(char: str) -> str:
    if unicodedata.category(char) == "Zs":
        return " "
    return char if char.isprintable() or char in KEPT_FORMAT_CHARACTERS else ""


def shorten(name: str, max_bytes: int) -> str:
    """``name`` cut to ``max_bytes`` of UTF-8 before its extensions, on a character
    boundary: ``talk.summary.md`` keeps ``.summary.md`` (:func:`_extensions`). The stem
    is cut as far whatever its extensions, room left for the longest kept, so the
    outputs named after one long name (``….summary.md``, ``….summary.json``) still
    share their stem."""
    if len(name.encode()) <= max_bytes:
        return name
    suffix = _extensions(name)
    stem = name[: len(name) - len(suffix)].encode()
    for room in (max_bytes - _LONGEST_EXTENSION, max_bytes - len(suffix.encode())):
        cut = stem[: max(room, 0)].decode(errors="ignore").rstrip(_LOOSE_ENDS)
        if cut:
            return cut + suffix
    return name.encode()[:max_bytes].decode(errors="ignore")


def _extensions(name: str) -> str:
    """The extensions a shortened ``name`` keeps: as many of its last ones as fit in
    :data:`_LONGEST_EXTENSION` bytes together (``.summary.md``, ``.en.srt``)."""
    kept = ""
    for suffix in reversed(PurePath(name).suffixes):
        if len((suffix + kept).encode()) > _LONGEST_EXTENSION:
            break
        kept = suffix + kept
    return kept


GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", ""})
"""Declared types that say only "some bytes" (``binary/octet-stream``: S3's default)."""


def guess_media_type(name: str, declared: str | None = None) -> str:
    """The declared type unless it is generic, else one guessed from the name."""
    given = (declared or "").split(";")[0].strip().lower()
    if given not in GENERIC_TYPES and "/" in given:
        return given
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
        """The file written; where its last bytes cannot be (a full disk, on the flush
        that closing makes), it is removed and the error raised."""
        try:
            self._file.close()
        except OSError:
            self.discard()
            raise
        return StagedFile(self.path, self.size, self._hash.hexdigest())

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # what could not be flushed goes with the file
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
