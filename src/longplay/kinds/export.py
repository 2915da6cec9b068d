"""The ``export`` kind: an owner's jobs and their files as one zip.

The zip holds ``manifest.json`` (each job as ``GET /v1/jobs/{id}`` answers it, a summary
of its events and the list of its files) and the files, in ``jobs/<job id>/outputs/``
and, with ``include_inputs``, ``jobs/<job id>/inputs/``. It is written to disk as it
goes: jobs are read a page at a time, files copied in chunks and the manifest written
entry by entry to a file of its own, so memory does not grow with the export. A file
that retention deleted is listed as ``expired`` and the export goes on.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, Literal, TextIO

from pydantic import Field, field_validator, model_validator

from longplay.framework import (
    FieldError,
    JobKind,
    Step,
    StepContext,
    SubmittedInput,
    all_kinds,
    register,
)
from longplay.framework.records import (
    FileRecord,
    ForOwner,
    JobRecord,
    JobRecords,
    RecordQuery,
    RecordTotals,
)

FORMAT = "longplay-export/1"
CHUNK = 1024 * 1024
PROGRESS_BYTES = 32 * CHUNK
"""Inside a large file, progress is reported each time this much more is copied."""
COMPRESSED = ("text/", "application/json", "application/x-subrip")
"""Media types worth deflating; the rest (audio, video, zips) are stored as they are."""
DATE_ALONE = re.compile(r"\d{4}-\d{2}-\d{2}")
Status = Literal["waiting", "queued", "running", "completed", "failed", "cancelled", "expired"]


class ExportParams(ForOwner):
    """Which jobs to export; by default every one of the owner's."""

    kinds: list[str] = Field(
        default_factory=list,
        description=(
            "Only jobs of these kinds. Empty: every kind but earlier exports, whose zips "
            "hold the same files again."
        ),
    )
    statuses: list[Status] = Field(default_factory=list, description="Only jobs in these states.")
    since: datetime | None = Field(
        None,
        description="Only jobs created at or after this time (no offset: UTC; a date "
        "alone: its start).",
    )
    until: datetime | None = Field(
        None,
        description="Only jobs created before this time (no offset: UTC; a date alone: its start).",
    )
    include_inputs: bool = Field(False, description="Add each job's input files too.")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _a_day_is_its_start(cls, value: object) -> object:
        """A date alone (``2026-12-01``, ISO 8601 too) is the start of that day."""
        if isinstance(value, str) and DATE_ALONE.fullmatch(value.strip()):
            try:
                return datetime.fromisoformat(value.strip())
            except ValueError:  # no such day: told as any bad time is
                return value
        return value

    @field_validator("since", "until")
    @classmethod
    def _in_utc_unless_said(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value

    @model_validator(mode="after")
    def _since_before_until(self) -> ExportParams:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must come before until")
        return self

    def query(self) -> RecordQuery:
        return RecordQuery(
            kinds=self.kinds,
            except_kinds=() if self.kinds else ("export",),
            statuses=self.statuses,
            since=self.since,
            until=self.until,
            include_inputs=self.include_inputs,
        )


def check(params: ExportParams, inputs: Sequence[SubmittedInput]) -> None:
    """At submit: every kind filtered for is one a job can have (a typo would export
    nothing and look like an empty account)."""
    known = sorted(kind.name for kind in all_kinds())
    for name in params.kinds:
        if name not in known:
            raise FieldError(f"no kind {name!r}; the kinds are {', '.join(known)}", field="kinds")


class _Progress:
    """Files and bytes copied of the totals, reported through ``ctx.advance``."""

    def __init__(self, ctx: StepContext[ExportParams], totals: RecordTotals) -> None:
        self._ctx = ctx
        self.totals = totals
        self.files_done = 0
        self.bytes_done = 0
        self.expired = 0

    def report(self) -> None:
        done, total = (
            (self.bytes_done, self.totals.bytes)
            if self.totals.bytes
            else (self.files_done, self.totals.files)
        )
        self._ctx.advance(
            done,
            total,
            files_done=self.files_done,
            files_total=self.totals.files,
            bytes_done=self.bytes_done,
            bytes_total=self.totals.bytes,
        )


def export(ctx: StepContext[ExportParams]) -> None:
    """Write the owner's matching jobs and files into one zip, kept as the job's output."""
    records = ctx.records()
    query = ctx.params.query()
    progress = _Progress(ctx, records.totals(query))
    progress.report()
    archive = ctx.workdir / "export.zip"
    manifest = ctx.workdir / "manifest.json"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zipped:
        with manifest.open("w", encoding="utf-8") as listing:
            _write_head(listing, records, ctx.params)
            for number, record in enumerate(records.jobs(query)):
                entry = {
                    "job": record.view,
                    "events": record.events,
                    "files": list(_copy_files(zipped, record, progress)),
                }
                listing.write((",\n" if number else "\n") + json.dumps(entry, ensure_ascii=False))
                progress.report()  # a checkpoint between jobs too, files or not
            listing.write(f'\n],\n"totals": {json.dumps(_totals(progress))}\n}}\n')
        zipped.write(manifest, "manifest.json", compress_type=zipfile.ZIP_DEFLATED)
    manifest.unlink()
    ctx.add_output(archive, name=f"export-{records.owner}.zip", media_type="application/zip")


def _write_head(listing: TextIO, records: JobRecords, params: ExportParams) -> None:
    """The manifest's opening: what was exported, for whom, then the jobs' list."""
    head = {
        "format": FORMAT,
        "owner": records.owner,
        "exported_at": datetime.now(UTC).isoformat(),
        "filter": params.model_dump(mode="json", exclude={"owner"}),
    }
    listing.write(json.dumps(head, ensure_ascii=False)[:-1] + ',\n"jobs": [')


def _totals(progress: _Progress) -> dict[str, int]:
    return {
        "files": progress.files_done,
        "bytes": progress.bytes_done,
        "expired_files": progress.expired,
    }


def _copy_files(
    zipped: zipfile.ZipFile, record: JobRecord, progress: _Progress
) -> Iterator[dict[str, Any]]:
    """Copy the job's files into its folder of the zip; the manifest's line for each."""
    taken: dict[str, set[str]] = {"input": set(), "output": set()}
    for item in record.files:
        folder = f"jobs/{record.job_id}/{item.role}s"
        line: dict[str, Any] = {
            "artifact_id": item.artifact_id,
            "name": item.name,
            "role": item.role,
            "media_type": item.media_type,
            "size": item.size,
            "sha256": item.sha256,
        }
        path = f"{folder}/{_free_name(item.name, taken[item.role])}"
        if item.path is None or not _copy(zipped, item, path, progress):
            progress.expired += 1
            yield {**line, "status": "expired", "path": None}
            continue
        progress.files_done += 1
        progress.report()
        yield {**line, "status": "included", "path": path}


def _copy(zipped: zipfile.ZipFile, item: FileRecord, path: str, progress: _Progress) -> bool:
    """Copy one file into the zip in chunks; False when it is gone (deleted meanwhile)."""
    assert item.path is not None
    try:
        source = item.path.open("rb")
    except FileNotFoundError:
        return False
    with source:
        stat = os.fstat(source.fileno())
        info = zipfile.ZipInfo(path, time.gmtime(stat.st_mtime)[:6])
        info.file_size = stat.st_size
        info.external_attr = 0o644 << 16
        if item.media_type.startswith(COMPRESSED):
            info.compress_type = zipfile.ZIP_DEFLATED
        reported = progress.bytes_done
        with zipped.open(info, "w", force_zip64=info.file_size >= zipfile.ZIP64_LIMIT) as target:
            while chunk := source.read(CHUNK):
                target.write(chunk)
                progress.bytes_done += len(chunk)
                if progress.bytes_done - reported >= PROGRESS_BYTES:
                    reported = progress.bytes_done
                    progress.report()
    return True


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2.ext``, ``name-3.ext``... when the folder already has it."""
    candidate, number = name, 1
    stem, suffix = PurePath(name).stem, PurePath(name).suffix
    while candidate in taken:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    taken.add(candidate)
    return candidate


register(
    JobKind(
        name="export",
        description=(
            "Everything an owner has, or a filtered part, as one zip: manifest.json "
            "(each job as the API shows it, its events summary and its files) and the files."
        ),
        params=ExportParams,
        steps=[Step("export", export)],
        check=check,
        max_inputs=0,
        priority="low",
    )
)
