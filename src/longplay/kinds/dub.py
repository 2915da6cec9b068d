"""The ``dub`` kind: speech in one language → the same speech, voiced in another.

Three steps, each calling the library its kind calls and keeping what it made as artifacts:
``transcribe`` (the transcript as JSON, text, SRT and WebVTT), ``translate`` (the
transcript translated, as JSON and text) and ``speak`` (the translation voiced). The
runner skips a finished step on a retry, and each step reads what the one before it
kept through :meth:`StepContext.outputs`, so a job that fails while voicing resumes
there instead of transcribing and translating again.

The voicing follows the translated text, not the original timing: the dubbed audio
is as long as the translation takes to say.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from longplay.engines.models import check_heard
from longplay.engines.speech import SpeechOptions, synthesize_speech
from longplay.engines.stt import whisper_languages
from longplay.engines.transcription import MEDIA_TYPES, TranscriptionOptions, transcribe_file
from longplay.engines.translation import TranslationOptions, translate_file
from longplay.engines.voices import check_language_speakable, check_voice
from longplay.framework import (
    FieldError,
    InputFile,
    InvalidInput,
    JobKind,
    Step,
    StepContext,
    SubmittedInput,
    register,
)
from longplay.media import check_decodable

TRANSCRIPT_TYPES = {f".{fmt}": media_type for fmt, media_type in MEDIA_TYPES.items()}


class DubParams(TranslationOptions, SpeechOptions):
    """Parameters of a ``dub`` job: how to translate and how to voice the translation."""

    initial_prompt: str | None = Field(
        None,
        max_length=1000,
        description="For the transcription: names and spellings said in the audio.",
    )


def check(params: DubParams, inputs: Sequence[SubmittedInput]) -> None:
    """At submit: the voice is one the engine has and speaks the language dubbed into,
    and speech recognition knows the language the input is said to be in."""
    check_voice(params.voice)
    check_language_speakable(params.target, field="target_language")
    if params.source is not None and params.source.base not in whisper_languages():
        raise FieldError(
            f"speech recognition does not know {params.source.name} "
            f"({params.source.code!r}), so it cannot be dubbed from; leave "
            "source_language out to have the language detected",
            field="source_language",
        )
    if params.source is not None:
        check_heard(params.source.base, params.source.name, field="source_language")


def transcribe(ctx: StepContext[DubParams]) -> None:
    """Transcribe the input in its language (``source_language``, else detected)."""
    params, source = ctx.params, ctx.inputs[0]
    options = TranscriptionOptions(
        language=params.source.base if params.source else None,
        initial_prompt=params.initial_prompt,
    )
    made = transcribe_file(
        source,
        ctx.workdir,
        options,
        progress=ctx.advance,
        on_fallback=lambda f: ctx.note(f.describe()),
        note=ctx.note,
    )
    if not made.transcript.segments:
        raise InvalidInput(f"no speech found in {source.name}: there is nothing to dub")
    for path in made.files.values():
        ctx.add_output(path, media_type=TRANSCRIPT_TYPES[path.suffix])
    ctx.state["transcript"] = {
        "language": made.transcript.language,
        "duration": round(made.transcript.duration, 3),
        "segments": len(made.transcript.segments),
    }


def translate(ctx: StepContext[DubParams]) -> None:
    """Translate the JSON transcript the step before kept, segment by segment."""
    params = ctx.params
    transcript = _kept(ctx, "transcribe", ".json")
    translation = translate_file(
        transcript.path,
        ctx.workdir,
        params,
        name=transcript.name,
        progress=ctx.advance,
        note=ctx.note,
    )
    for path in translation.files:
        ctx.add_output(path, media_type=TRANSCRIPT_TYPES[path.suffix])
    ctx.state["translation"] = {"language": translation.language.code}


def speak(ctx: StepContext[DubParams]) -> None:
    """Voice the translation's plain text."""
    params = ctx.params
    text = _kept(ctx, "translate", ".txt")
    speech = synthesize_speech(
        text.path.read_text(encoding="utf-8"),
        ctx.workdir,
        params,
        progress=ctx.advance,
        stem=Path(text.name).stem,
        on_fallback=lambda f: ctx.note(f.describe()),
    )
    ctx.add_output(speech.path, media_type=speech.media_type)
    ctx.state["speech"] = {"duration": speech.duration, "sentences": speech.sentences}


def _kept(ctx: StepContext[DubParams], step: str, suffix: str) -> InputFile:
    """The file with ``suffix`` that ``step`` kept (in this run or an earlier attempt)."""
    for kept in ctx.outputs(step):
        if kept.name.endswith(suffix):
            return kept
    raise InvalidInput(f"the {step} step kept no {suffix} file to go on from")


register(
    JobKind(
        name="dub",
        description=(
            "Dub one audio or video file into another language: transcribe it, translate "
            "the transcript and voice the translation, keeping every stage's files."
        ),
        params=DubParams,
        steps=[
            Step("transcribe", transcribe, weight=3.0),
            Step("translate", translate, weight=4.0),
            Step("speak", speak, weight=3.0),
        ],
        min_inputs=1,
        max_inputs=1,
        input_types=("audio/", "video/"),
        check_upload=check_decodable,
        check=check,
    )
)
