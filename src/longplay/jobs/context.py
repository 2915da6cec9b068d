"""The :class:`StepContext` the runner hands to each step, and the inputs it reads."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence, Sized
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from longplay.framework import (
    InputFile,
    ItemFn,
    JobError,
    PermanentError,
    RetryableError,
    StepContext,
    get_kind,
)
from longplay.framework.fanout import item_error
from longplay.framework.rules import check_step_name, output_path
from longplay.jobs.failures import job_error
from longplay.jobs.library import StoreLibrary
from longplay.jobs.progress import ProgressReporter
from longplay.jobs.records import StoreRecords, records_for
from longplay.jobs.unit import tell
from longplay.jobs.webhooks.outbox import ProgressWebhooks
from longplay.store import files
from longplay.store.db import session_scope
from longplay.store.models import Artifact, Job
from longplay.store.queries import outputs_of

log = logging.getLogger(__name__)


class ItemPool(Protocol):
    """Where :meth:`JobContext.map` spreads items (:class:`longplay.jobs.fanout.Pool`)."""

    @property
    def width(self) -> int: ...

    def map(
        self, ctx: StepContext[Any], step: str, fn: ItemFn[Any, Any, Any], items: Iterable[Any]
    ) -> list[Any]: ...


class JobContext(StepContext[BaseModel]):
    """What a step of a running job sees: its params, inputs, scratch folder and state;
    progress goes to the reporter (and the progress webhooks, when asked for)."""

    def __init__(
        self,
        job: Job,
        params: BaseModel,
        inputs: Sequence[InputFile],
        workdir: Path,
        reporter: ProgressReporter,
        progress_webhooks: ProgressWebhooks | None = None,
        pool: ItemPool | None = None,
    ) -> None:
        self.job_id = job.id
        self._job = job
        self.params = params
        self.inputs = inputs
        self._workdir = workdir
        self._workdir_made = False
        self.state = dict(job.checkpoint.get("state", {}))
        self.attempt = job.attempts
        self.warnings: list[dict[str, str]] = list(job.checkpoint.get("warnings", []))
        """What the steps noted, kept with the checkpoint and shown on the result."""
        self._reporter = reporter
        self._progress_webhooks = progress_webhooks
        self.pending_outputs: list[tuple[Path, str, str]] = []
        self._owner_id = job.owner_id
        self._streamed = 0
        self._pool = pool
        self._library = StoreLibrary(job.owner_id)

    @property
    def workdir(self) -> Path:  # type: ignore[override]  # read-only: the runner owns it
        """The job's scratch folder, made when a step first asks for it: a job whose
        steps write no file costs no folder to make and remove."""
        if not self._workdir_made:
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._workdir_made = True
        return self._workdir

    def advance(self, done: float, total: float, **details: Any) -> None:
        self._reporter.advance(done, total, **details)
        if self._progress_webhooks is not None:
            self._progress_webhooks.offer(self._reporter.snapshot())

    def add_output(
        self, path: Path, *, name: str | None = None, media_type: str | None = None
    ) -> None:
        """Refused at the call (:class:`PermanentError`, code ``invalid_output``): a path
        that is not a file, one outside the workdir, and a file this step already added
        (it is moved into the store when the step ends: copy it to keep it twice).

        The output's name (``name``, else the file's) is made to fit a file name: one
        longer than :data:`~longplay.store.files.NAME_MAX_BYTES` is cut before its
        extensions (``….summary.md``). A step names an output after something it was
        given (a collection's document keeps its name whole) through ``name``, writing
        the file under a short name of its own."""
        path = Path(path)
        resolved = output_path(path, self.workdir, (added for added, _, _ in self.pending_outputs))
        out_name = files.safe_name(name or path.name)
        media = files.guess_media_type(out_name, media_type)
        self.pending_outputs.append((resolved, out_name, media))  # resolved: compared above

    def outputs(self, step: str | None = None) -> list[InputFile]:
        """The outputs kept so far, or those of ``step``: a name the kind has no step
        of is refused (a typo would read as a step that kept nothing)."""
        kind = get_kind(self._job.kind)
        check_step_name(self._job.kind, [s.name for s in kind.steps] if kind else [], step)
        with session_scope() as session:
            return [input_file(a) for a in outputs_of(session, self.job_id, step=step)]

    def note(self, message: str, **data: Any) -> None:
        tell("note", self.job_id, known=self._job, message=message, **data)
        self.warnings.append({"code": str(data.get("code", "note")), "message": message})

    def stream(self, text: str) -> None:
        """A ``token`` event: the text and its ``offset``, the characters streamed
        before it (a follower can tell it missed none)."""
        tell("token", self.job_id, known=self._job, text=text, offset=self._streamed)
        self._streamed += len(text)

    def records(self) -> StoreRecords:
        return records_for(self.job_id, self._owner_id, self.params)

    def map(self, fn: ItemFn[Any, Any, Any], items: Iterable[Any]) -> list[Any]:
        if self._pool is None or self._pool.width == 1:
            return super().map(fn, items)
        if not isinstance(items, Sized):  # a generator: does it make two items at least?
            rest = iter(items)
            first = list(itertools.islice(rest, 2))
            items = first if len(first) < 2 else itertools.chain(first, rest)
        if isinstance(items, Sized) and len(items) < 2:  # nothing to share: no rows to write
            return super().map(fn, items)
        return self._pool.map(self, self._reporter.tracker.step or "", fn, items)

    def item_failed(self, index: int, exc: Exception) -> Exception:
        return item_failure(self._job, index, exc)

    @property
    def library(self) -> StoreLibrary:
        return self._library


def item_failure(job: Job, index: int, exc: Exception) -> JobError:
    """What item ``index`` of a map of ``job`` that raised ``exc`` fails its step with,
    in the job's own process or a helper: judged as the job's run would judge it
    (a bug is an ``internal_error``), its message naming the item."""
    return item_error(index, job_error(job, get_kind(job.kind), exc))


def input_file(artifact: Artifact) -> InputFile:
    """An artifact as a step sees it: its name short enough to name work files after."""
    return InputFile(
        artifact.id,
        files.shorten(artifact.name, files.UPLOAD_NAME_BYTES),
        artifact.media_type,
        files.path_of(artifact),
        artifact.size,
    )


def load_inputs(job: Job) -> list[InputFile]:
    """The job's input files, in order, another job's outputs found now; one that is
    gone (or an output that job did not make) fails the job for good."""
    if not job.inputs:
        return []
    with session_scope() as session:
        artifact_ids = [
            i if isinstance(i, str) else _output_named(session, job, i) for i in job.inputs
        ]
        rows = {
            a.id: a for a in session.scalars(select(Artifact).where(Artifact.id.in_(artifact_ids)))
        }
    inputs = []
    for artifact_id in artifact_ids:
        artifact = rows.get(artifact_id)
        path = files.path_of(artifact) if artifact is not None else None
        if artifact is None or path is None:
            raise PermanentError(
                f"input {artifact_id} no longer exists; upload it again", code="input_missing"
            )
        if not path.is_file():
            # Stored, but not in this machine's data folder: shared storage not mounted
            # here, most likely. Another worker (or this one, mended) may find it.
            log.warning("job %s: input %s is not at %s", job.id, artifact_id, path)
            raise RetryableError(
                f"input {artifact_id} is stored, but its file is not in this worker's data "
                "folder: is the storage the workers share (LONGPLAY_DATA_DIR) there on "
                "its machine?",
                code="storage_unavailable",
            )
        inputs.append(input_file(artifact))
    return inputs


def _output_named(session: Session, job: Job, ref: dict[str, str]) -> str:
    """The id of the output of another job of the owner's that ``ref`` names: by
    ``output`` (its name) or by ``suffix`` (the first, oldest, whose name ends so)."""
    upstream, name, suffix = ref["job"], ref.get("output"), ref.get("suffix")
    for artifact in outputs_of(session, upstream):
        if artifact.owner_id != job.owner_id:
            break
        if artifact.name == name or (suffix is not None and artifact.name.endswith(suffix)):
            return artifact.id
    if session.get(Job, upstream) is None:
        raise PermanentError(
            f"job {upstream}, whose output this job reads, was deleted", code="input_missing"
        )
    wanted = f"named {name}" if name is not None else f"ending with {suffix}"
    raise PermanentError(f"job {upstream} has no output {wanted}", code="input_missing")
