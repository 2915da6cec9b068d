"""The :class:`StepContext` the runner hands to each step, and the inputs it reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from longplay.framework import InputFile, PermanentError, StepContext
from longplay.jobs.progress import ProgressReporter
from longplay.jobs.unit import tell
from longplay.jobs.webhooks.outbox import ProgressWebhooks
from longplay.store import files
from longplay.store.db import session_scope
from longplay.store.models import Artifact, Job
from longplay.store.queries import outputs_of


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
    ) -> None:
        self.job_id = job.id
        self.params = params
        self.inputs = inputs
        self.workdir = workdir
        self.state = dict(job.checkpoint.get("state", {}))
        self.warnings: list[dict[str, str]] = list(job.checkpoint.get("warnings", []))
        """What the steps noted, kept with the checkpoint and shown on the result."""
        self._reporter = reporter
        self._progress_webhooks = progress_webhooks
        self.pending_outputs: list[tuple[Path, str, str]] = []

    def advance(self, done: float, total: float, **details: Any) -> None:
        self._reporter.advance(done, total, **details)
        if self._progress_webhooks is not None:
            self._progress_webhooks.offer(self._reporter.snapshot())

    def add_output(
        self, path: Path, *, name: str | None = None, media_type: str | None = None
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"output {path} is not a file")
        if not path.resolve().is_relative_to(self.workdir.resolve()):
            raise ValueError(f"output {path} is outside the job's workdir")
        out_name = files.safe_name(name or path.name)
        self.pending_outputs.append((path, out_name, files.guess_media_type(out_name, media_type)))

    def outputs(self, step: str | None = None) -> list[InputFile]:
        with session_scope() as session:
            return [input_file(a) for a in outputs_of(session, self.job_id, step=step)]

    def note(self, message: str, **data: Any) -> None:
        tell("note", self.job_id, message=message, **data)
        self.warnings.append({"code": str(data.get("code", "note")), "message": message})


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
    """The job's input files, in order; one that is gone fails the job for good."""
    if not job.inputs:
        return []
    with session_scope() as session:
        rows = {
            a.id: a for a in session.scalars(select(Artifact).where(Artifact.id.in_(job.inputs)))
        }
    inputs = []
    for artifact_id in job.inputs:
        artifact = rows.get(artifact_id)
        path = files.path_of(artifact) if artifact is not None else None
        if artifact is None or path is None or not path.is_file():
            raise PermanentError(
                f"input {artifact_id} no longer exists; upload it again", code="input_missing"
            )
        inputs.append(input_file(artifact))
    return inputs
