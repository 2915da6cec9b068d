"""The ``index`` kind: documents of a collection read, cut into passages and indexed.

``POST /v1/collections/{id}/documents`` submits it (at low priority) with the new
documents' ids and their files as inputs, in the same order. Each document is read
(:mod:`longplay.text.reading`), cut into passages at paragraph and heading boundaries
with overlap (:mod:`longplay.text.passages`) and handed to ``ctx.library``, which
stores them in the full-text index. A document that cannot be read fails alone, with
its reason kept on the document; the job fails only when none could be read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field

from longplay.framework import (
    FieldError,
    InvalidInput,
    JobKind,
    PermanentError,
    Step,
    StepContext,
    SubmittedInput,
    register,
)
from longplay.framework.library import FILLS_COLLECTION
from longplay.text.passages import cut_passages
from longplay.text.reading import read_document


class IndexParams(BaseModel):
    """Parameters of an ``index`` job."""

    collection: Annotated[str, FILLS_COLLECTION] = Field(
        description="The collection the documents belong to."
    )
    documents: list[str] = Field(
        min_length=1, description="The documents to index: ids, one per input file, in order."
    )


def check(params: IndexParams, inputs: Sequence[SubmittedInput]) -> None:
    """One input file per document."""
    if len(params.documents) != len(inputs):
        raise FieldError(
            f"{len(params.documents)} documents named for {len(inputs)} input files; "
            "give one document id per input, in the same order",
            field="documents",
        )


def index(ctx: StepContext[IndexParams]) -> None:
    """Read, cut and index each document, reporting progress per document, and within
    one while its passages are embedded."""
    library, total = ctx.library, len(ctx.inputs)
    failed: list[str] = []
    passages = 0
    for done, (document_id, source) in enumerate(
        zip(ctx.params.documents, ctx.inputs, strict=True), start=1
    ):
        try:
            cut = cut_passages(read_document(source))
        except PermanentError as exc:
            library.document_failed(document_id, exc)
            ctx.note(exc.message, code=exc.code, document=document_id)
            failed.append(exc.message)
        else:
            so_far = {
                "indexed": done - 1 - len(failed),
                "failed": len(failed),
                "passages": passages,
            }
            embedding = _embedding(ctx, done - 1, total, document=source.name, **so_far)
            passages += library.keep_passages(document_id, cut, progress=embedding)
        ctx.advance(
            done,
            total,
            document=source.name,
            indexed=done - len(failed),
            failed=len(failed),
            passages=passages,
        )
    ctx.state["index"] = {
        "indexed": total - len(failed),
        "failed": len(failed),
        "passages": passages,
    }
    if len(failed) == total:
        raise InvalidInput(
            "no document could be read: " + "; ".join(failed), code="no_readable_document"
        )


def _embedding(
    ctx: StepContext[IndexParams], before: int, total: int, **details: Any
) -> Callable[[int, int], None]:
    """Progress within a document while its passages are embedded (minutes for a long
    one on a CPU), after the ``before`` documents done of ``total``."""

    def embedded(done: int, of: int) -> None:
        at = before + done / of
        ctx.advance(at, total, **details, passages_embedded=done, passages_total=of)

    return embedded


register(
    JobKind(
        name="index",
        description=(
            "Read documents of a collection (text, Markdown, HTML, PDF, Word, subtitles, "
            "transcripts), cut them into passages and index them for search. Submitted by "
            "POST /v1/collections/{id}/documents."
        ),
        params=IndexParams,
        steps=[Step("index", index)],
        min_inputs=1,
        check=check,
        priority="low",
    )
)
