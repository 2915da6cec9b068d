"""A StepContext that records what steps report, to run a kind's steps without the queue."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from longplay.framework import InputFile, JobError, StepContext, get_kind
from longplay.framework.library import CollectionNotFound, NewPassage, Passage
from longplay.kinds import load as load_kinds


def input_file(path: Path, media_type: str, *, name: str | None = None) -> InputFile:
    """``path`` as a job's input, called ``name`` (by default its own name)."""
    return InputFile("art-in", name or path.name, media_type, path, path.stat().st_size)


class RecordingContext(StepContext[Any]):
    """Keeps the progress, outputs and notes of the steps run in it."""

    def __init__(self, params: BaseModel, inputs: Sequence[InputFile], workdir: Path) -> None:
        self.job_id = "job-1"
        self.params = params
        self.inputs = list(inputs)
        self.workdir = workdir
        self.state: dict[str, Any] = {}
        self.step = ""
        self.progress: list[tuple[str, float, float, dict[str, Any]]] = []
        self.kept: list[tuple[str, InputFile]] = []
        self.notes: list[str] = []
        self.streamed: list[str] = []
        self.shelf = MemoryLibrary()

    def advance(self, done: float, total: float, **details: Any) -> None:
        self.progress.append((self.step, done, total, details))

    def add_output(
        self, path: Path, *, name: str | None = None, media_type: str | None = None
    ) -> None:
        assert path.is_file() and path.parent == self.workdir
        kept = InputFile(f"out-{len(self.kept)}", name or path.name, media_type or "", path, 0)
        self.kept.append((self.step, kept))

    def outputs(self, step: str | None = None) -> list[InputFile]:
        return [kept for name, kept in self.kept if step is None or name == step]

    def note(self, message: str, **data: Any) -> None:
        self.notes.append(message)

    def stream(self, text: str) -> None:
        self.streamed.append(text)

    @property
    def library(self) -> MemoryLibrary:
        return self.shelf

    def details(self, step: str) -> list[dict[str, Any]]:
        return [details for name, _, _, details in self.progress if name == step]

    def fractions(self, step: str) -> list[float]:
        return [done / total for name, done, total, _ in self.progress if name == step]


class MemoryLibrary:
    """Collections held in memory (``collections``: id -> passages, in order); search
    ranks by the query words a passage shares. The ``index`` kind's writes land in
    ``documents``: id -> passages, or the error it failed with."""

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

    def keep_passages(self, document_id: str, passages: Sequence[NewPassage]) -> int:
        self.documents[document_id] = list(passages)
        return len(passages)

    def document_failed(self, document_id: str, error: JobError) -> None:
        self.documents[document_id] = error


def run_kind(
    kind_name: str, params: BaseModel, inputs: Sequence[InputFile], workdir: Path
) -> RecordingContext:
    """Run every step of a kind in order, passing state through JSON as the runner does."""
    load_kinds()
    kind = get_kind(kind_name)
    assert kind is not None
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = RecordingContext(params, inputs, workdir)
    for step in kind.steps:
        ctx.step = step.name
        step.run(ctx)
        ctx.state = json.loads(json.dumps(ctx.state, allow_nan=False))
    return ctx
