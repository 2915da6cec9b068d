"""The ``transcribe-music`` kind: a recording of an instrument in, the notes played out as
MIDI, a MusicXML score, JSON and a piano-roll picture.

Steps: ``decode`` (mono at the model's 22,050 Hz into a scratch file; too short or
silent fails here), ``notes`` (Basic Pitch over the audio in windows,
:mod:`longplay.engines.notes`; nothing found fails here), ``beat`` (tempo and
downbeats), ``quantize`` (onto the grid) and ``score`` (the four files; the MusicXML
is read back and checked). Notes pass from step to step in ``ctx.state``, so a retry
skips what is done; the score step drops them from the state once they are in files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from longplay.engines.notes import SAMPLE_RATE, detect_notes
from longplay.framework import InvalidInput, JobKind, PermanentError, Step, StepContext, register
from longplay.media import check_decodable, decode, probe
from longplay.music import Note, TrackerOptions
from longplay.music.beat import Beat, Meter, find_beat
from longplay.music.midi import write_midi
from longplay.music.pianoroll import draw_pianoroll
from longplay.music.quantize import TICKS, Grid, QuantizedNote, quantize
from longplay.music.score import ScoreMismatch, key_label, music21_key_name, write_musicxml
from longplay.settings import get_settings

MIN_SECONDS = 1.0
SILENT_PEAK = 10 ** (-60 / 20)
"""A recording whose loudest sample stays below -60 dBFS counts as silent."""
SCRATCH = "audio-22050.f32"
MEDIA_TYPES = {
    "mid": "audio/midi",
    "musicxml": "application/vnd.recordare.musicxml+xml",
    "notes.json": "application/json",
    "pianoroll.png": "image/png",
}


class TranscribeMusicParams(BaseModel):
    """Parameters of a ``transcribe-music`` job."""

    model_config = ConfigDict(extra="forbid")

    onset_threshold: float = Field(
        0.5, gt=0, lt=1, description="How sure the model must be that a note starts (0-1)."
    )
    frame_threshold: float = Field(
        0.3, gt=0, lt=1, description="How sure it must be that a note still sounds (0-1)."
    )
    min_note_ms: float = Field(80.0, ge=10, le=2000, description="Shorter notes are dropped.")
    min_pitch: int = Field(21, ge=21, le=108, description="Lowest MIDI pitch kept (21: A0).")
    max_pitch: int = Field(108, ge=21, le=108, description="Highest MIDI pitch kept (108: C8).")
    tempo: float | None = Field(
        None, ge=20, le=300, description="Quarter notes a minute; null: estimated."
    )
    time_signature: str = Field("4/4", description="The metre, such as 4/4, 3/4 or 6/8.")
    key: str | None = Field(
        None,
        description=(
            "The key as it sounds (concert pitch), such as 'C', 'F# minor' or 'Eb major'; "
            "null: estimated. A transposing instrument's part is written in its own key."
        ),
    )
    program: int = Field(
        0,
        ge=0,
        le=127,
        description=(
            "General MIDI instrument (0: piano). The score's part is written for it: a "
            "grand staff for a keyboard, an octave clef for a guitar or a bass, a "
            "transposing instrument at its written pitch."
        ),
    )
    quantize: Grid = Field(
        "sixteenth", description="The grid: quarter, eighth, sixteenth or thirty-second."
    )

    @field_validator("time_signature")
    @classmethod
    def _meter(cls, value: str) -> str:
        return str(Meter.parse(value))

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            music21_key_name(value)
        return value

    @field_validator("max_pitch")
    @classmethod
    def _pitch_range(cls, value: int, info: ValidationInfo) -> int:
        """Told at the field (``params.max_pitch``), as a model's check would not be."""
        lowest = info.data.get("min_pitch")
        if lowest is not None and value < lowest:
            raise ValueError(f"max_pitch ({value}) is below min_pitch ({lowest})")
        return value

    def tracker(self) -> TrackerOptions:
        return TrackerOptions(
            onset_threshold=self.onset_threshold,
            frame_threshold=self.frame_threshold,
            min_note_s=self.min_note_ms / 1000,
            min_pitch=self.min_pitch,
            max_pitch=self.max_pitch,
        )


def decode_audio(ctx: StepContext[TranscribeMusicParams]) -> None:
    """Decode the input to mono at the model's rate into a scratch file; refuse a
    recording too short or too quiet to hold notes."""
    source = ctx.inputs[0]
    seconds, peak = _decode_to_scratch(ctx)
    if seconds < MIN_SECONDS:
        raise InvalidInput(
            f"{source.name} is {seconds:.2f} s long: music transcription needs at least "
            f"{MIN_SECONDS:g} s",
            code="audio_too_short",
        )
    if peak < SILENT_PEAK:
        level = 20 * np.log10(peak) if peak > 0 else float("-inf")
        raise InvalidInput(
            f"{source.name} is silent (its loudest sample is {level:.0f} dBFS): there are no "
            "notes to transcribe",
            code="silent_audio",
        )
    ctx.state["audio"] = {"seconds": round(seconds, 3), "peak_dbfs": round(20 * np.log10(peak), 1)}


def detect(ctx: StepContext[TranscribeMusicParams]) -> None:
    """Run the model over the audio, window by window, and keep the notes it hears."""
    params, source = ctx.params, ctx.inputs[0]
    scratch = ctx.workdir / SCRATCH
    if not scratch.is_file():  # a retry after decode finished: the work folder is new
        _decode_to_scratch(ctx, report=False)
    audio = np.memmap(scratch, dtype=np.float32, mode="r")
    detection = detect_notes(audio, params.tracker(), progress=ctx.advance, note=ctx.note)
    del audio
    scratch.unlink()
    if not detection.notes:
        raise InvalidInput(
            f"no notes found in {source.name} above the thresholds (onset "
            f"{params.onset_threshold:g}, frame {params.frame_threshold:g}): it sounds like "
            "speech, noise or drums rather than notes of an instrument",
            code="no_notes_found",
        )
    ctx.state["notes"] = [n.as_list() for n in detection.notes]
    ctx.state["detection"] = {
        "notes": len(detection.notes),
        "device": detection.device,
        "windows": detection.windows,
    }


def beat(ctx: StepContext[TranscribeMusicParams]) -> None:
    """Find the tempo and the downbeats, or take the tempo given."""
    notes = _notes(ctx)
    found = find_beat(notes, Meter.parse(ctx.params.time_signature), bpm=ctx.params.tempo)
    ctx.state["beat"] = found.as_dict()
    ctx.advance(1, 1, bpm=round(found.bpm, 1), time_signature=str(found.meter))


def quantize_notes(ctx: StepContext[TranscribeMusicParams]) -> None:
    """Put the notes on the grid, triplets where they fit better."""
    found = Beat.from_dict(ctx.state["beat"])
    placed = quantize(_notes(ctx), found, ctx.params.quantize)
    ctx.state["quantized"] = [q.as_list() for q in placed.notes]
    ctx.state["grid"] = {
        "quantize": ctx.params.quantize,
        "ticks_per_quarter": TICKS,
        "triplet_beats": placed.triplet_beats,
    }
    ctx.advance(1, 1, notes=len(placed.notes), triplet_beats=placed.triplet_beats)


def score(ctx: StepContext[TranscribeMusicParams]) -> None:
    """Write the MIDI, the MusicXML (read back and checked), the JSON and the picture."""
    params, source = ctx.params, ctx.inputs[0]
    notes, found = _notes(ctx), Beat.from_dict(ctx.state["beat"])
    placed = [QuantizedNote.from_list(q) for q in ctx.state["quantized"]]
    stem = Path(source.name).stem or "music"
    paths = {ext: ctx.workdir / f"{stem}.{ext}" for ext in MEDIA_TYPES}
    key = music21_key_name(params.key) if params.key else None
    try:
        summary = write_musicxml(
            placed,
            paths["musicxml"],
            title=stem,
            bpm=found.bpm,
            meter=found.meter,
            program=params.program,
            key=key,
        )
    except ScoreMismatch as exc:
        raise PermanentError(str(exc), code="score_mismatch") from exc
    ctx.advance(1, 4, file=paths["musicxml"].name)
    write_midi(notes, paths["mid"], beat=found, program=params.program, key=summary.key, title=stem)
    ctx.advance(2, 4, file=paths["mid"].name)
    duration = float(ctx.state["audio"]["seconds"])
    draw_pianoroll(notes, paths["pianoroll.png"], beat=found, duration=duration)
    ctx.advance(3, 4, file=paths["pianoroll.png"].name)
    ctx.state["key"] = {"name": key_label(summary.key), "estimated": summary.key_estimated}
    ctx.state["score"] = {"measures": summary.measures, "notes": summary.notes}
    paths["notes.json"].write_text(json.dumps(_record(ctx, notes, placed), indent=1) + "\n")
    for ext, path in paths.items():
        ctx.add_output(path, media_type=MEDIA_TYPES[ext])
    ctx.advance(4, 4, file=paths["notes.json"].name)
    del ctx.state["notes"], ctx.state["quantized"]  # now in the files


def _decode_to_scratch(
    ctx: StepContext[TranscribeMusicParams], *, report: bool = True
) -> tuple[float, float]:
    """Decode the input into :data:`SCRATCH` (float32, mono, 22,050 Hz); its length in
    seconds and its peak."""
    source = ctx.inputs[0]
    info = probe(source.path, name=source.name)
    frames, peak = 0, 0.0
    blocks = decode(
        source.path, sample_rate=SAMPLE_RATE, channels=1, name=source.name, note=ctx.note
    )
    with (ctx.workdir / SCRATCH).open("wb") as scratch:
        for block in blocks:
            samples = block.samples[:, 0]
            scratch.write(samples.tobytes())
            frames += len(samples)
            peak = max(peak, float(np.abs(samples).max(initial=0.0)))
            if report:
                total = max(info.duration, block.position)
                ctx.advance(block.position, total, seconds_done=round(block.position, 1))
    return frames / SAMPLE_RATE, peak


def _notes(ctx: StepContext[TranscribeMusicParams]) -> list[Note]:
    return [Note.from_list(values) for values in ctx.state["notes"]]


def _record(
    ctx: StepContext[TranscribeMusicParams], notes: list[Note], placed: list[QuantizedNote]
) -> dict[str, Any]:
    """The JSON file: the notes as heard, the notes on the grid, and what was used."""
    params = ctx.params
    return {
        "source": ctx.inputs[0].name,
        "duration": ctx.state["audio"]["seconds"],
        "model": "basic-pitch icassp_2022 (nmp.onnx)",
        "device": ctx.state["detection"]["device"],
        "thresholds": {
            "onset": params.onset_threshold,
            "frame": params.frame_threshold,
            "min_note_ms": params.min_note_ms,
            "pitch_range": [params.min_pitch, params.max_pitch],
        },
        "tempo": ctx.state["beat"],
        "grid": ctx.state["grid"],
        "key": ctx.state["key"],
        "notes": [
            {
                "onset": round(n.onset, 4),
                "offset": round(n.offset, 4),
                "pitch": n.pitch,
                "velocity": n.velocity,
                "confidence": round(n.confidence, 3),
            }
            for n in notes
        ],
        "quantized": [
            {
                "start_quarters": float(q.offset),
                "length_quarters": float(q.quarter_length),
                "pitch": q.pitch,
                "velocity": q.velocity,
            }
            for q in placed
        ],
    }


register(
    JobKind(
        name="transcribe-music",
        description=(
            "Transcribe a recording of an instrument or a song into the notes played: MIDI, "
            "a MusicXML score, the notes as JSON and a piano-roll picture (Basic Pitch)."
        ),
        params=TranscribeMusicParams,
        steps=[
            Step("decode", decode_audio, weight=1.0),
            Step("notes", detect, weight=8.0),
            Step("beat", beat, weight=0.5),
            Step("quantize", quantize_notes, weight=0.5),
            Step("score", score, weight=2.0),
        ],
        min_inputs=1,
        max_inputs=1,
        input_types=("audio/", "video/"),
        check_upload=check_decodable,
        resource=get_settings().music.resource,
    )
)
