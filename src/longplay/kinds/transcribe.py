"""The ``transcribe`` kind: one audio or video file of any length in, what is said in it
out as plain text, SRT, WebVTT and JSON (segments, words, language, duration).

The ``transcribe`` step keeps the JSON transcript, the full record; ``write`` renders
the text, SRT and WebVTT from it, so a retry after the first step does not pay for
the transcription again. The work is :mod:`longplay.engines.transcription`.
"""

from __future__ import annotations

from pathlib import Path

from longplay.engines.transcription import (
    MEDIA_TYPES,
    TranscriptFormat,
    TranscriptionOptions,
    read_transcript,
    stem_of,
    transcribe_audio,
    write_transcript,
)
from longplay.framework import JobKind, Step, StepContext, register


class TranscribeParams(TranscriptionOptions):
    """Parameters of a ``transcribe`` job."""


def transcribe(ctx: StepContext[TranscribeParams]) -> None:
    """Transcribe the input and keep the JSON transcript."""
    params, source = ctx.params, ctx.inputs[0]
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
    )
)
