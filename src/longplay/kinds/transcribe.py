"""The ``transcribe`` kind: one audio or video file of any length in, what is said in it
out as plain text, SRT, WebVTT and JSON (segments, words, language, duration).

The ``transcribe`` step keeps the JSON transcript, the full record; ``write`` renders
the text, SRT and WebVTT from it, so a retry after the first step does not pay for
the transcription again. The work is :mod:`longplay.engines.transcription`.

A recording longer than the ``stt.fan_out_above`` setting is cut at silences into
pieces of at most ``stt.fan_out_piece`` seconds, which free worker processes
transcribe side by side (``ctx.map``, up to ``FAN_OUT`` at once); the pieces'
transcripts are joined on the recording's timeline. A shorter one takes one pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from longplay.engines.models import check_heard
from longplay.engines.transcription import (
    MEDIA_TYPES,
    Transcript,
    TranscriptFormat,
    TranscriptionOptions,
    cut_into_pieces,
    join_pieces,
    read_transcript,
    stem_of,
    transcribe_audio,
    transcribe_piece,
    write_transcript,
)
from longplay.framework import (
    InputFile,
    ItemContext,
    JobKind,
    Step,
    StepContext,
    SubmittedInput,
    register,
)
from longplay.media import check_decodable, probe
from longplay.settings import get_settings

FAN_OUT = 8
"""Worker processes one long recording may keep busy at once."""
PIECES = "pieces"


class TranscribeParams(TranscriptionOptions):
    """Parameters of a ``transcribe`` job."""


def transcribe(ctx: StepContext[TranscribeParams]) -> None:
    """Transcribe the input and keep the JSON transcript."""
    params, source = ctx.params, ctx.inputs[0]
    stt = get_settings().stt
    if stt.engine == "local" and probe(source.path, name=source.name).duration > stt.fan_out_above:
        transcript = _side_by_side(ctx, source, stt.fan_out_piece)
    else:
        transcript = transcribe_audio(
            source,
            params,
            progress=ctx.advance,
            on_fallback=lambda f: ctx.note(f.describe()),
            note=ctx.note,
        )
    if not transcript.segments:
        ctx.note(f"no speech found in {source.name}: the transcript is empty")
    words = sum(len(s.words) for s in transcript.segments)
    ctx.state["transcript"] = {
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "segments": len(transcript.segments),
        "words": words if params.word_timestamps else None,
    }
    path = write_transcript(transcript, ctx.workdir, stem_of(source), ("json",))["json"]
    ctx.add_output(path, media_type=MEDIA_TYPES["json"])


def _side_by_side(
    ctx: StepContext[TranscribeParams], source: InputFile, piece_s: float
) -> Transcript:
    """A long recording cut into pieces that the pool transcribes side by side, each
    handed out as soon as it is cut."""
    pieces: list[dict[str, Any]] = []

    def cut() -> Iterator[dict[str, Any]]:
        for piece in cut_into_pieces(
            source,
            ctx.workdir / PIECES,
            piece_s=piece_s,
            language=ctx.params.language,
            note=ctx.note,
        ):
            pieces.append(piece)
            yield piece

    results = ctx.map(transcribe_one_piece, cut())
    return join_pieces(pieces, results, ctx.params.language, note=ctx.note)


def transcribe_one_piece(
    ctx: ItemContext[TranscribeParams], piece: dict[str, Any]
) -> dict[str, Any]:
    """One piece of a long recording, in whichever worker process takes it."""
    return transcribe_piece(piece, ctx.workdir / PIECES, ctx.params, progress=ctx.advance)


def check(params: TranscribeParams, inputs: Sequence[SubmittedInput]) -> None:
    """At submit: a language the local model cannot transcribe, where that can be told
    without loading it (the bundled model is English-only)."""
    check_heard(params.language, repr(params.language), field="language")


def write(ctx: StepContext[TranscribeParams]) -> None:
    """Render the text, SRT and WebVTT files from the JSON transcript."""
    [kept] = ctx.outputs("transcribe")
    transcript = read_transcript(kept.path)
    formats: tuple[TranscriptFormat, ...] = ("txt", "srt", "vtt")
    written = write_transcript(transcript, ctx.workdir, Path(kept.name).stem, formats)
    for done, (fmt, path) in enumerate(written.items(), start=1):
        ctx.add_output(path, media_type=MEDIA_TYPES[fmt])
        ctx.advance(done, len(written), file=path.name)


register(
    JobKind(
        name="transcribe",
        description=(
            "Transcribe one audio or video file of any length with Whisper: plain text, "
            "SRT and WebVTT subtitles, and JSON with segments, words and timings."
        ),
        params=TranscribeParams,
        steps=[Step("transcribe", transcribe, weight=19.0), Step("write", write, weight=1.0)],
        min_inputs=1,
        max_inputs=1,
        input_types=("audio/", "video/"),
        check=check,
        check_upload=check_decodable,
        fan_out=FAN_OUT,
    )
)
