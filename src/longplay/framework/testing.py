"""Run a kind's steps in your own tests: no queue, store, Redis or worker.

::

    from longplay.framework.testing import input_file, run_steps

    def test_count(tmp_path):
        ctx = run_steps(COUNT, {"words": 3}, [], tmp_path / "work")
        assert ctx.fractions("count")[-1] == 1.0
        assert ctx.outputs()[0].path.read_text() == "counted 3 words"

The steps run in order in this process, as a job's run would: the params validated by
the kind's model first, ``ctx.state`` passed from step to step through JSON (what
the runner keeps between steps), ``ctx.map`` run here with items and results through
JSON. What the steps report is kept for the test to read: progress (``progress``,
``details``, ``fractions``), outputs (``kept``), notes and streamed text. A real run
also bounds progress details, checks outputs as it moves them into the store, and can
be retried or cancelled between steps; a test of those runs the service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from longplay.framework.errors import InvalidParams, JobError
from longplay.framework.kinds import InputFile, JobKind, StepContext
from longplay.framework.library import CollectionNotFound, NewPassage, Passage
from longplay.framework.rules import check_step_name, checkpointable, output_path, returned_note
from longplay.framework.unknown_params import unknown_params


def input_file(path: Path, media_type: str, *, name: str | None = None) -> InputFile:
    """``path`` as a job's input, called ``name`` (by default its own name)."""
    return InputFile("art-in", name or path.name, media_type, path, path.stat().st_size)


class MemoryLibrary:
    """Collections held in memory (``collections``: id -> passages, in order); search
    ranks by the query words a passage shares. Passages a step keeps land in
    ``documents``: id -> passages, or the error its document failed with."""

    def __init__(self) -> None:
        self.collections: dict[str, list[Passage]] = {}
        self.documents: dict[str, list[NewPassage] | JobError] = {}

    def search(self, collection_id: str, query: str, limit: int = 10) -> list[Passage]:
        words = set(query.lower().split())
        scored = [
            replace(p, score=float(len(words & set(p.text.lower().split()))))
            for p in self.passages(collection_id)
        ]
        return sorted((p for p in scored if p.score), key=lambda p: -p.score)[:limit]

    def passages(self, collection_id: str) -> list[Passage]:
        if collection_id not in self.collections:
            raise CollectionNotFound(f"no collection {collection_id}")
        return list(self.collections[collection_id])

    def keep_passages(
        self,
        document_id: str,
        passages: Sequence[NewPassage],
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        self.documents[document_id] = list(passages)  # no embeddings: no progress to tell
        return len(passages)

    def document_failed(self, document_id: str, error: JobError) -> None:
        self.documents[document_id] = error


class RecordingContext(StepContext[Any]):
    """A step context that keeps what the steps run in it report."""

    def __init__(
        self,
        params: BaseModel,
        inputs: Sequence[InputFile],
        workdir: Path,
        kind: JobKind[Any] | None = None,
    ) -> None:
        self.job_id = "job-1"
        self.kind = kind
        """The kind whose steps run here (:func:`run_steps` sets it): ``outputs`` refuses
        a step it has not."""
        self.params = params
        self.inputs = list(inputs)
        self.workdir = workdir
        self.state: dict[str, Any] = {}
        self.attempt = 1
        self.step = ""
        self.progress: list[tuple[str, float, float, dict[str, Any]]] = []
        """Each ``advance``: the step, done, total and details."""
        self.kept: list[tuple[str, InputFile]] = []
        """Each output kept: the step that kept it, and the file."""
        self.notes: list[str] = []
        self.warnings: list[dict[str, str]] = []
        """Each note's code and message, as a job's result lists them."""
        self.streamed: list[str] = []
        self.shelf = MemoryLibrary()

    def advance(self, done: float, total: float, **details: Any) -> None:
        self.progress.append((self.step, done, total, details))

    def add_output(
        self, path: Path, *, name: str | None = None, media_type: str | None = None
    ) -> None:
        path = Path(path)
        added = (kept.path for name, kept in self.kept if name == self.step)
        resolved = output_path(path, self.workdir, added)
        kept = InputFile(f"out-{len(self.kept)}", name or path.name, media_type or "", resolved, 0)
        self.kept.append((self.step, kept))

    def outputs(self, step: str | None = None) -> list[InputFile]:
        if self.kind is not None:
            check_step_name(self.kind.name, [s.name for s in self.kind.steps], step)
        return [kept for name, kept in self.kept if step is None or name == step]

    def note(self, message: str, **data: Any) -> None:
        self.notes.append(message)
        self.warnings.append({"code": str(data.get("code", "note")), "message": message})

    def stream(self, text: str) -> None:
        self.streamed.append(text)

    @property
    def library(self) -> MemoryLibrary:
        return self.shelf

    def details(self, step: str) -> list[dict[str, Any]]:
        """The details of each ``advance`` of ``step``, in order."""
        return [details for name, _, _, details in self.progress if name == step]

    def fractions(self, step: str) -> list[float]:
        """How far ``step`` said it was at each ``advance`` (0 to 1)."""
        return [
            done / total if total > 0 else 1.0  # as a job's progress reads it
            for name, done, total, _ in self.progress
            if name == step
        ]


def run_steps(
    kind: JobKind[Any],
    params: BaseModel | Mapping[str, Any],
    inputs: Sequence[InputFile],
    workdir: Path,
    *,
    context: RecordingContext | None = None,
) -> RecordingContext:
    """Run every step of ``kind`` in order on ``inputs``, in ``workdir`` (made if need
    be); the context they ran in. ``params`` as a submission gives them (validated by
    the kind's model from their JSON, as strictly as the API does: ``"2"`` is not a
    number, ``0`` not a boolean) or as the model. ``context``: one made beforehand, to
    give it collections (``context.shelf.collections``) or state. A name the params
    model does not take, at any depth, is refused as a submission is
    (:class:`InvalidParams`); a value of the wrong type raises pydantic's
    ``ValidationError``, as the API answers it with a 422."""
    if isinstance(params, Mapping) and (unknown := unknown_params(kind.params, params)):
        raise InvalidParams(unknown[0].message(kind.name))  # as a submission is refused
    checked = kind.params_from_json(params) if isinstance(params, Mapping) else params
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = context or RecordingContext(checked, inputs, workdir)
    ctx.kind = kind
    for step in kind.steps:
        ctx.step = step.name
        note = returned_note(step.name, cast(Any, step.run)(ctx))
        if note is not None:
            ctx.note(note, code="step_returned_value")
        ctx.state = checkpointable(ctx.state)
    return ctx
