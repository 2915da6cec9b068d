"""The ``synthesize`` kind: a text of any length in, speech out as wav, mp3 or ogg (Opus).

The text is the ``text`` parameter or one ``.txt``/``.md`` file; the work is
:func:`~longplay.engines.speech.synthesize_speech`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, field_validator

from longplay.engines.speech import SpeechOptions, synthesize_speech
from longplay.engines.voices import (
    check_speakable,
    check_voice,
    spoken_in_another_language,
    unspeakable,
)
from longplay.framework import (
    UPLOAD_READ_BYTES,
    FieldError,
    InputFile,
    InvalidInput,
    InvalidParams,
    JobKind,
    Step,
    StepContext,
    SubmittedInput,
    register,
)
from longplay.text.documents import read_prose
from longplay.text.sentences import has_words

MAX_PARAM_CHARS = 100_000


class SynthesizeParams(SpeechOptions):
    """Parameters of a ``synthesize`` job: the text, or one text file as its input."""

    text: str | None = Field(
        default=None,
        max_length=MAX_PARAM_CHARS,
        description=(
            "The text to speak; or leave it out and give one text file (.txt or .md) as the "
            "job's input, which is also the way for longer texts."
        ),
    )

    @field_validator("text")
    @classmethod
    def _has_words(cls, value: str | None) -> str | None:
        if value is not None and not has_words(value):
            raise ValueError("text has no words to speak")
        return value


def check(params: SynthesizeParams, inputs: Sequence[SubmittedInput]) -> None:
    """At submit: the text or one file, not both, not none; a voice the engine has, and
    a text it can read."""
    if params.text is not None and inputs:
        raise FieldError(
            "give the text either as the text parameter or as an input file, not both",
            field="text",
        )
    if params.text is None and not inputs:
        raise FieldError(
            "nothing to speak: give the text parameter or one text file (.txt or .md) as input",
            field="text",
        )
    check_voice(params.voice)
    if params.text is not None:
        check_speakable(params.text)


def speak(ctx: StepContext[SynthesizeParams]) -> None:
    """Voice the text of the job and keep the audio."""
    params = ctx.params
    text, stem = _text_and_stem(params, ctx.inputs)
    if (elsewhere := spoken_in_another_language(text)) is not None:
        ctx.note(elsewhere, code="voice_language")
    speech = synthesize_speech(
        text,
        ctx.workdir,
        params,
        progress=ctx.advance,
        stem=stem,
        on_fallback=lambda f: ctx.note(f.describe()),
    )
    ctx.state["speech"] = {
        "voice": params.voice,
        "sentences": speech.sentences,
        "duration": speech.duration,
        "loudness": speech.loudness,
    }
    ctx.add_output(speech.path, media_type=speech.media_type)


def _read_text(source: InputFile) -> str:
    """The text of the input file, which must have something to say."""
    text = read_prose(source)
    if not has_words(text):
        raise InvalidInput(f"{source.name} has no words to speak")
    if (reason := unspeakable(text)) is not None:
        raise InvalidInput(f"{source.name}: {reason}")
    return text


def check_file(source: InputFile) -> None:
    """At submit: the file is text with words to speak (one of at most
    :data:`~longplay.framework.UPLOAD_READ_BYTES`; the step reads a larger one)."""
    if source.size <= UPLOAD_READ_BYTES:
        _read_text(source)


def _text_and_stem(params: SynthesizeParams, inputs: Sequence[InputFile]) -> tuple[str, str]:
    """The text to speak and the name of the output, from the params or the input file."""
    if params.text is not None and inputs:
        raise InvalidParams(
            "give the text either as the text parameter or as an input file, not both"
        )
    if params.text is not None:
        return params.text, "speech"
    if not inputs:
        raise InvalidParams(
            "nothing to speak: give the text parameter or one text file (.txt or .md) as input"
        )
    return _read_text(inputs[0]), Path(inputs[0].name).stem or "speech"


register(
    JobKind(
        name="synthesize",
        description=(
            "Speak a text of any length, given as a parameter or a .txt/.md file: sentence "
            "by sentence with natural pauses, normalised to a target loudness, as wav, mp3 "
            "or ogg."
        ),
        params=SynthesizeParams,
        steps=[Step("speak", speak)],
        min_inputs=0,
        max_inputs=1,
        input_types=("text/",),
        check=check,
        check_upload=check_file,
    )
)
