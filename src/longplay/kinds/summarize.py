"""The ``summarize`` kind: a transcript, subtitles, a text or Markdown file, or the
``text`` parameter, summarized with a template into ``NAME.summary.md`` and
``NAME.summary.json``.

The work is :func:`~longplay.engines.summaries.summarize_document`. An owner's own
template reaches the step as the ``sections`` parameter, which the service fills in
from the template's name when the job is submitted (``jobs/templates.py``): the job
keeps the template it was given, and this kind never reads the store.

The text is the ``text`` parameter, one uploaded file, or one ``document`` of a
``collection`` (both ids), read through ``ctx.library`` as it was indexed: its passages
in order, the overlap between neighbours taken out, headings kept, and a transcript's
or subtitles' times kept as cues. Another owner's collection is a 404 at submit (the
check every kind with a ``collection`` field gets); a document that is not an indexed
part of the collection fails the job with ``document_not_found``, naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

from pydantic import Field, field_validator

from longplay.engines.llm import get_language_model
from longplay.engines.summaries import SummaryOptions, summarize_document
from longplay.framework import (
    UPLOAD_READ_BYTES,
    FieldError,
    InputFile,
    InvalidInput,
    JobKind,
    PermanentError,
    Step,
    StepContext,
    register,
)
from longplay.framework.library import Library, Passage
from longplay.settings import get_settings
from longplay.text.documents import WHAT_WE_READ, Document
from longplay.text.sentences import has_words
from longplay.text.subtitles import Cue
from longplay.text.summary import write_summary

MEDIA_TYPES = {"md": "text/markdown", "json": "application/json"}


class SummarizeParams(SummaryOptions):
    """Parameters of a ``summarize`` job: the options, and the text unless a file is given."""

    text: str | None = Field(
        None, description="Text to summarize; leave out when a file is uploaded instead."
    )
    collection: str | None = Field(
        None, description="The collection (its id) that holds the document to summarize."
    )
    document: str | None = Field(
        None, description="The document of the collection to summarize (its id), as indexed."
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is empty: give the text to summarize, or upload a file")
        if value is not None and not has_words(value):
            raise ValueError(
                "text has no words to summarize (no letter or digit): give the text itself, "
                "or upload a file"
            )
        return value


def summarize(ctx: StepContext[SummarizeParams]) -> None:
    """Summarize the ``text`` parameter or the one input into the work folder."""
    params = ctx.params
    document = _document(ctx)
    settings = get_settings()
    llm = get_language_model(settings, on_fallback=lambda f: ctx.note(f.describe()))
    summary = summarize_document(
        document,
        params,
        llm=llm,
        context_tokens=settings.llm.context_tokens,
        progress=ctx.advance,
        note=ctx.note,
    )
    coverage = dataclasses.asdict(summary.coverage)
    read = summary.coverage
    ctx.note(
        f"read {read.characters_read} of {read.characters_total} characters"
        + (", the rest left out as max_characters allows" if read.left_out else " (all)")
        + f" in {read.chunks} chunk{'s' if read.chunks > 1 else ''} ({read.passes})",
        code="coverage",
        **coverage,
    )
    meta = {
        "template": summary.template,
        "language": summary.language,
        "length": params.length,
        "input": document.name,
        "model": llm.model if llm.device == "remote" else Path(llm.model).name,
        "coverage": coverage,
    }
    stem = Path(document.name).stem or "text"
    for path in write_summary(ctx.workdir, stem, summary.sections, meta):
        # Named here, not on disk: the context fits a name too long for a file.
        ctx.add_output(
            path, name=f"{stem}.{path.name}", media_type=MEDIA_TYPES[path.suffix.lstrip(".")]
        )
    ctx.state["summary"] = {
        "template": summary.template,
        "language": summary.language,
        "sections": [s.key for s in summary.sections],
        "retries": summary.retries,
        **coverage,
    }


def _document(ctx: StepContext[SummarizeParams]) -> Document:
    params = ctx.params
    one_source(params, ctx.inputs)
    if params.collection is not None and params.document is not None:
        return collection_document(ctx.library, params.collection, params.document)
    if params.text is not None:
        text = params.text
        return _said_of_summarizing(lambda: Document.from_text(text))
    return _read(ctx.inputs[0])


def _read(source: InputFile) -> Document:
    """The file as a document with words in it: one with none is an
    :class:`InvalidInput` (code ``no_words``), before any model runs."""
    document = _said_of_summarizing(lambda: Document.read(source.path, name=source.name))
    if not has_words("\n".join(document.lines())):
        raise InvalidInput(
            f"{source.name} has no words to summarize (no letter or digit)", code="no_words"
        )
    return document


def _said_of_summarizing(read: Callable[[], Document]) -> Document:
    """``read()``, its errors told of summarizing: the reader's speak of translating."""
    try:
        return read()
    except InvalidInput as exc:
        message = exc.message.replace("to translate", "to summarize")
        raise InvalidInput(
            message.replace("; translate takes", "; summarize takes"), code=exc.code
        ) from exc


def check_file(source: InputFile) -> None:
    """At submit: the file reads as something to summarize, with text in it (one of at
    most :data:`~longplay.framework.UPLOAD_READ_BYTES`; the step reads a larger one)."""
    if source.size <= UPLOAD_READ_BYTES:
        _read(source)


def one_source(params: SummarizeParams, inputs: Sequence[object]) -> None:
    """The text to summarize is the ``text`` parameter, one file, or a ``document`` of a
    ``collection``: exactly one of them. Checked at submit, and again by the step."""
    if (params.collection is None) != (params.document is None):
        field = "document" if params.document is None else "collection"
        raise FieldError(
            "a document of a collection is named by both collection and document (their ids)",
            field=field,
        )
    given = [params.text is not None, bool(inputs), params.collection is not None]
    if sum(given) > 1:
        raise FieldError(
            "give one thing to summarize: text, one file, or a collection and a document",
            field="collection" if given[2] else "text",
        )
    if not any(given):
        raise FieldError(
            "nothing to summarize: set the text parameter, upload one file "
            f"({WHAT_WE_READ}), or name a collection and a document",
            field="text",
        )


def collection_document(library: Library, collection: str, document: str) -> Document:
    """The ``document`` of ``collection`` as it was indexed: its passages in order
    without the overlap each passage repeats from the one before, with a Markdown line
    for each heading; or, where every passage has times (a transcript, subtitles),
    one timed cue per passage."""
    passages = sorted(
        (p for p in library.passages(collection) if p.document_id == document),
        key=lambda p: p.position,
    )
    if not passages:
        raise PermanentError(
            f"collection {collection} has no indexed document {document}: it is not in the "
            "collection, or it is not indexed yet, or its indexing failed",
            code="document_not_found",
        )
    name = passages[0].document_name
    texts = _without_overlaps(passages)
    if all(p.start is not None and p.end is not None for p in passages):
        cues: list[Cue] = []
        for before, passage, text in zip([None, *passages], passages, texts, strict=False):
            start = float(passage.start or 0)
            if before is not None and len(text.strip()) < len(passage.text.strip()):
                # What was cut from its head was said before the passage before it ended.
                start = max(start, float(before.end or 0))
            if text:
                cues.append(Cue(start, float(passage.end or 0), text))
        return Document(name, "srt", "srt", cues=cues)
    parts: list[str] = []
    heading = None
    for passage, text in zip(passages, texts, strict=True):
        if passage.heading and passage.heading != heading:
            parts.append(f"\n\n## {passage.heading}\n\n")
        heading = passage.heading
        if text:
            parts.append(text)
    return Document.from_text("".join(parts), name=name)


def _without_overlaps(passages: Sequence[Passage]) -> list[str]:
    """Each passage's text less what it repeats of the one before (the index cuts a
    section's passages to overlap by a few sentences), with the separator it had
    there (a blank line or a space) in front; the first passage whole."""
    texts = [passages[0].text] if passages else []
    for before, after in pairwise(passages):
        texts.append(
            _new_part(before.text, after.text)
            if before.heading == after.heading
            else "\n\n" + after.text
        )
    return texts


def _new_part(before: str, after: str) -> str:
    """``after`` less the longest end of ``before`` (from a word's start) it starts with."""
    for cut in range(max(0, len(before) - len(after)), len(before)):
        if (cut == 0 or before[cut - 1].isspace()) and after.startswith(before[cut:]):
            rest = after[len(before) - cut :]
            return rest if rest[:1].isspace() or not rest else " " + rest
    return "\n\n" + after


register(
    JobKind(
        name="summarize",
        description=(
            "Summarize a transcript (.json), subtitles (.srt, .vtt), text (.txt, .md) or the "
            "text parameter with a template: brief, key-points, meeting-notes, chapters, or "
            "your own (/v1/templates). Long inputs are read whole, in chunks."
        ),
        params=SummarizeParams,
        steps=[Step("summarize", summarize)],
        max_inputs=1,
        input_types=("text/", "application/json", "application/x-subrip"),
        check=one_source,
        check_upload=check_file,
        resource="cpu",
        priority="normal",
    )
)
