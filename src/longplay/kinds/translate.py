"""The ``translate`` kind: text, a document or a transcript into another language.

The work is :func:`~longplay.engines.translation.translate_document`; documents are
read and written by :mod:`longplay.text.documents`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pydantic import Field, field_validator

from longplay.engines.translation import TranslationOptions, translate_document
from longplay.framework import (
    UPLOAD_READ_BYTES,
    FieldError,
    InputFile,
    JobKind,
    Step,
    StepContext,
    register,
)
from longplay.text.documents import MEDIA_TYPES, WHAT_WE_READ, Document


class TranslateParams(TranslationOptions):
    """Parameters of a ``translate`` job: the options, and the text unless a file is given."""

    text: str | None = Field(
        None, description="Text to translate; leave out when a file is uploaded instead."
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is empty: give the text to translate, or upload a file")
        return value


def translate(ctx: StepContext[TranslateParams]) -> None:
    """Translate the ``text`` parameter or the one input file into the work folder."""
    document = _document(ctx)
    result = translate_document(
        document, ctx.workdir, ctx.params, progress=ctx.advance, note=ctx.note
    )
    for path in result.files:
        ctx.add_output(path, media_type=MEDIA_TYPES[path.suffix.lstrip(".")])
    ctx.state["translation"] = {
        "language": result.language.code,
        **dataclasses.asdict(result.stats),
    }


def _document(ctx: StepContext[TranslateParams]) -> Document:
    params = ctx.params
    one_source(params, ctx.inputs)
    if params.text is not None:
        return Document.from_text(params.text)
    source = ctx.inputs[0]
    return Document.read(source.path, name=source.name)


def check_file(source: InputFile) -> None:
    """At submit: the file reads as a document to translate, with text in it (one of at
    most :data:`~longplay.framework.UPLOAD_READ_BYTES`; the step reads a larger one)."""
    if source.size <= UPLOAD_READ_BYTES:
        Document.read(source.path, name=source.name)


def one_source(params: TranslateParams, inputs: Sequence[object]) -> None:
    """The text to translate is the ``text`` parameter or one file, not both, not none:
    checked at submit, and again by the step."""
    if params.text is not None and inputs:
        raise FieldError("give either text or one file to translate, not both", field="text")
    if params.text is None and not inputs:
        raise FieldError(
            f"nothing to translate: set the text parameter or upload one file ({WHAT_WE_READ})",
            field="text",
        )


register(
    JobKind(
        name="translate",
        description=(
            "Translate text, a document (.txt, .md) or subtitles (.srt, .vtt, transcript "
            ".json) into another language; subtitles keep every cue and its timing."
        ),
        params=TranslateParams,
        steps=[Step("translate", translate)],
        max_inputs=1,
        input_types=("text/", "application/json", "application/x-subrip"),
        check=one_source,
        check_upload=check_file,
    )
)
