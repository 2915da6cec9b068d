"""The ``transcribe-music`` kind on the real Basic Pitch model: music the test plays
itself (tones with harmonics at known pitches and times) comes back as the same notes.

Step-level tests run the model and the kind's steps in this process; the end-to-end
ones go through the API to the worker of the shared SQLite stack.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import mido
import mir_eval
import numpy as np
import pydantic
import pytest
from conftest import Stack, wait_for_status
from music21 import converter
from PIL import Image
from step_context import input_file, run_kind
from test_jobs_e2e import read_events
from test_worker_memory import in_a_pool_process

from longplay.engines.device import gpu_slot, load_on_device
from longplay.engines.notes import (
    SAMPLE_RATE,
    BasicPitchModel,
    NoteModel,
    detect_notes,
    get_note_model,
    model_file,
)
from longplay.framework import InvalidInput, PermanentError, get_kind
from longplay.kinds.transcribe_music import TranscribeMusicParams
from longplay.media import AudioEncoder
from longplay.music import Note, NoteTracker, TrackerOptions
from longplay.music.beat import Beat, Meter, find_beat
from longplay.music.quantize import QuantizedNote, quantize
from longplay.music.score import write_musicxml
from longplay.settings import Settings, get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job

DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
Played = list[tuple[float, float, int]]
"""What the test plays: (onset s, length s, MIDI pitch) per note."""

SCALE: Played = [(0.5 + 0.5 * i, 0.45, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]
MELODY: Played = [  # at 120 quarter notes a minute, with two rests of a beat or more
    (0.5, 0.5, 67),
    (1.0, 0.5, 64),
    (1.5, 1.0, 64),
    (3.0, 0.5, 65),
    (3.5, 0.5, 62),
    (4.0, 1.0, 62),
    (5.5, 0.25, 60),
    (5.75, 0.25, 62),
    (6.0, 0.5, 64),
    (6.5, 0.5, 65),
    (7.0, 1.0, 67),
]
CHORDS_HELD = [(48, 55, 64), (53, 57, 60), (43, 55, 62), (48, 52, 55)]
TUNE = [72, 74, 76, 79]
CHORDS: Played = [
    (0.5 + i, 0.9, pitch)
    for i, chord in enumerate([(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)])
    for pitch in chord
]

MELODY_OVER_CHORDS: Played = [
    *((2.0 * bar, 1.9, pitch) for bar, chord in enumerate(CHORDS_HELD) for pitch in chord),
    *((2.0 * bar + 0.5 * beat, 0.45, pitch) for bar in range(4) for beat, pitch in enumerate(TUNE)),
]


def tone(pitch: int, seconds: float) -> np.ndarray:
    """A plucked-string-like tone: five harmonics, a fast attack and a decay."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    wave = sum(0.6**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(5))
    envelope = np.minimum(1, t / 0.01) * np.exp(-2 * t) * np.minimum(1, (seconds - t) / 0.02)
    return np.asarray(wave * envelope, np.float32)


def play(notes: Played, seconds: float) -> np.ndarray:
    audio = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    for onset, length, pitch in notes:
        start = int(onset * SAMPLE_RATE)
        sound = tone(pitch, length)
        audio[start : start + len(sound)] += 0.2 * sound
    return audio


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with AudioEncoder(path, format="wav", sample_rate=SAMPLE_RATE, channels=1) as encoder:
        encoder.write(audio.astype(np.float32)[:, None])
    return path


def f_measure(played: Played, heard: list[Note]) -> float:
    """Note-level F-measure: onset within 50 ms, pitch exact, offsets ignored."""
    ref_intervals = np.array([[o, o + d] for o, d, _ in played])
    ref_pitches = np.array([440.0 * 2 ** ((p - 69) / 12) for _, _, p in played])
    est_intervals = np.array([[n.onset, n.offset] for n in heard]).reshape(-1, 2)
    est_pitches = np.array([440.0 * 2 ** ((n.pitch - 69) / 12) for n in heard])
    _, _, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_intervals,
        ref_pitches,
        est_intervals,
        est_pitches,
        onset_tolerance=0.05,
        pitch_tolerance=1.0,  # cents: the pitch must be the same key
        offset_ratio=None,
    )
    return float(f)


def musicxml_pitches(content: bytes) -> list[int]:
    """The MIDI pitches of a MusicXML file, in order, ties joined."""
    score = converter.parseData(content.decode(), format="musicxml")
    return [p.midi for n in score.stripTies().flatten().notes for p in n.pitches]


def run_steps(tmp_path: Path, audio: np.ndarray, name: str = "tune.wav", **params: Any) -> Any:
    source = input_file(write_wav(tmp_path / name, audio), "audio/wav")
    return run_kind("transcribe-music", TranscribeMusicParams(**params), [source], tmp_path / "w")


# -- the model and the steps ------------------------------------------------------------


@pytest.mark.parametrize(
    ("played", "seconds", "least"),
    [(SCALE, 5.0, 0.9), (MELODY, 8.5, 0.9), (CHORDS, 5.0, 0.7), (MELODY_OVER_CHORDS, 8.5, 0.9)],
    ids=["scale", "melody-with-rests", "chords", "melody-over-held-chords"],
)
def test_notes_played_are_the_notes_heard(played: Played, seconds: float, least: float) -> None:
    detection = detect_notes(play(played, seconds), TrackerOptions(), progress=lambda *a, **k: None)

    assert f_measure(played, detection.notes) >= least
    assert detection.device == "cpu"


class GpuWithoutMemory:
    """A GPU that has run out of memory: every call fails as ONNX Runtime's CUDA
    provider does then. Only its device name and its error are those of a GPU."""

    device = "cuda"

    def __init__(self, model: NoteModel) -> None:
        self.model = model.model
        self.calls = 0

    def activations(
        self, windows: np.ndarray, *, last: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        raise RuntimeError("CUDA failure 2: out of memory; GPU=0 BFCArena::AllocateRawInternal")

    def rest(self) -> None:
        """Nothing kept."""


# Run by ``in_a_pool_process``: the most resident memory while the windows run, and
# after the recording, heard to its end or stopped (as a cancelled job is) after STOP_AT
# windows, and the heap trimmed.
TWENTY_SECONDS = """
import numpy as np
from longplay.engines.notes import SAMPLE_RATE, detect_notes
from longplay.music import TrackerOptions

t = np.arange(20 * SAMPLE_RATE) / SAMPLE_RATE
audio = (0.2 * np.sin(2 * np.pi * 440 * t) * (t % 0.5 < 0.4)).astype(np.float32)
while_running = []

class Stop(Exception):
    pass

def progress(done, total, **details):
    while_running.append(resident_mib())
    if len(while_running) == STOP_AT:
        raise Stop

try:
    assert detect_notes(audio, TrackerOptions(), progress=progress).notes
except Stop:
    pass
assert give_memory_back()
print(max(while_running), resident_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")
@pytest.mark.parametrize("stop_at", [None, 10], ids=["heard", "stopped"])
def test_the_model_gives_back_the_memory_of_its_windows(
    tmp_path: Path, stop_at: int | None
) -> None:
    """ONNX Runtime keeps the buffers of its batches of windows (50-90 MB) for the life
    of the process, through every job of every kind after it; the recording's last
    batch tells it to give them back (here 55-78 MB, and 3 without), and a recording
    stopped part way does so all the same."""
    while_running, after = in_a_pool_process(
        f"STOP_AT = {stop_at}\n{TWENTY_SECONDS}",
        env={**os.environ, "LONGPLAY_DATA_DIR": str(tmp_path)},
    )

    assert while_running - after > 30, f"resident {while_running} MiB, then {after} MiB"


def test_out_of_gpu_memory_finishes_on_the_cpu_with_a_note(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    gpu = GpuWithoutMemory(get_note_model(settings))
    notes: list[tuple[str, Any]] = []

    detection = detect_notes(
        play(SCALE, 5.0),
        TrackerOptions(),
        progress=lambda *a, **k: None,
        note=lambda message, **data: notes.append((message, data.get("code"))),
        settings=settings,
        model=gpu,
    )

    assert gpu.calls == 1 and detection.device == "cpu"
    assert f_measure(SCALE, detection.notes) >= 0.9
    assert notes == [
        (
            "the music model ran out of GPU memory; the rest of the recording runs on the CPU",
            "cpu_fallback",
        )
    ]
    with gpu_slot("cuda", settings=settings, timeout_s=0.1):
        pass  # the job let go of the GPU


def test_a_cuda_session_that_runs_on_the_cpu_is_a_fallback() -> None:
    """Where ONNX Runtime has no CUDA provider the engine says so when asked for one:
    ``auto`` falls back to the CPU, ``cuda`` refuses."""
    import onnxruntime as ort

    path = model_file(get_settings())

    def load(device: Any) -> BasicPitchModel:
        return BasicPitchModel.load(path, device=device, threads=1)

    _, device, fallback = load_on_device("onnxruntime", load, "cuda", strict=False)

    if "CUDAExecutionProvider" in ort.get_available_providers():  # a GPU worker
        assert (device, fallback) == ("cuda", None)
    else:
        assert device == "cpu" and fallback is not None
        assert "no CUDA provider" in fallback.reason
        with pytest.raises(PermanentError) as refused:
            load_on_device("onnxruntime", load, "cuda", strict=True)
        assert refused.value.code == "engine_load_failed"


def test_the_steps_write_four_files_that_agree(tmp_path: Path) -> None:
    ctx = run_steps(tmp_path, play(MELODY, 8.5), "melody.wav")

    assert [(step, out.name, out.media_type) for step, out in ctx.kept] == [
        ("score", "melody.mid", "audio/midi"),
        ("score", "melody.musicxml", "application/vnd.recordare.musicxml+xml"),
        ("score", "melody.notes.json", "application/json"),
        ("score", "melody.pianoroll.png", "image/png"),
    ]
    files = {out.name.split(".", 1)[1]: out.path for _, out in ctx.kept}
    pitches = [p for _, _, p in MELODY]
    assert musicxml_pitches(files["musicxml"].read_bytes()) == pitches
    record = json.loads(files["notes.json"].read_text())
    assert [n["pitch"] for n in record["notes"]] == pitches
    assert record["tempo"]["bpm"] == pytest.approx(120, abs=2) and record["tempo"]["estimated"]
    assert record["grid"] == {"quantize": "sixteenth", "ticks_per_quarter": 24, "triplet_beats": 0}
    assert all(0 < n["velocity"] <= 127 and 0.5 <= n["confidence"] <= 1 for n in record["notes"])
    lengths = [q["length_quarters"] for q in record["quantized"]]
    assert lengths == [d * 2 for _, d, _ in MELODY]  # seconds at 120 a minute, in quarters
    midi = mido.MidiFile(files["mid"])
    ons = [m for m in midi.tracks[0] if m.type == "note_on" and m.velocity]
    assert [m.note for m in ons] == pitches
    assert mido.tempo2bpm(next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo")) == (
        pytest.approx(120, abs=2)
    )
    with Image.open(files["pianoroll.png"]) as picture:
        assert picture.format == "PNG" and picture.width > 8.5 * 60
    assert "notes" not in ctx.state and ctx.state["score"]["notes"] == len(MELODY)
    assert not (tmp_path / "w" / "audio-22050.f32").exists()
    details = ctx.details("notes")
    assert [d["windows"] for d in details] == list(range(1, len(details) + 1))
    assert details[-1]["seconds_done"] == 8.5 and details[-1]["notes_found"] == len(MELODY)


def test_given_tempo_key_and_instrument_are_used(tmp_path: Path) -> None:
    ctx = run_steps(
        tmp_path, play(SCALE, 5.0), tempo=60, key="G major", program=40, quantize="eighth"
    )

    files = {out.name.split(".", 1)[1]: out.path for _, out in ctx.kept}
    record = json.loads(files["notes.json"].read_text())
    assert record["tempo"]["bpm"] == 60 and not record["tempo"]["estimated"]
    assert record["key"] == {"name": "G major", "estimated": False}
    assert {q["length_quarters"] for q in record["quantized"]} == {0.5}  # 0.45 s at 60: ♪
    score = converter.parse(str(files["musicxml"]), forceSource=True, storePickle=False)
    assert score.parts[0].getInstrument().midiProgram == 40
    assert [ks.sharps for ks in score.recurse().getElementsByClass("KeySignature")] == [1]
    messages = list(mido.MidiFile(files["mid"]).tracks[0])
    assert [m.program for m in messages if m.type == "program_change"] == [40]
    assert [m.key for m in messages if m.type == "key_signature"] == ["G"]


def test_the_tracker_hears_the_same_notes_however_the_frames_come() -> None:
    """Activations fed in one chunk or in chunks of seven frames give the same notes:
    a note with a short dip that is forgiven, one struck again while it sounds, one that
    fades out; each note's velocity is how strongly it sounded over its frames."""
    frames, onsets = np.zeros((400, 88), np.float32), np.zeros((400, 88), np.float32)
    c4, e4, g4 = 60 - 21, 64 - 21, 67 - 21
    onsets[10, c4], frames[10:60, c4], frames[30:35, c4] = 0.9, 0.6, 0.1  # a 5-frame dip
    onsets[100, e4], frames[100:200, e4] = 0.8, 0.7
    onsets[150, e4] = 0.95  # struck again while it sounds
    onsets[250, g4], frames[250:300, g4] = 0.9, np.linspace(0.9, 0.3, 50)
    times = np.arange(400) * 256 / 22_050

    def heard(chunk: int) -> list[Note]:
        tracker = NoteTracker(TrackerOptions())
        notes = []
        for at in range(0, 400, chunk):
            part = slice(at, at + chunk)
            notes.extend(tracker.add(onsets[part], frames[part], times[part]))
        return notes + tracker.finish()

    whole = heard(400)
    assert whole == heard(7)
    assert [(n.pitch, round(n.onset / times[1])) for n in whole] == [
        (60, 10),
        (64, 100),
        (64, 150),
        (67, 250),
    ]
    # The second E sounds at 0.7 for 50 frames from its strike, then is silent for the
    # 11 frames the tracker waits out before it ends the note at the end of the sound.
    second = whole[2]
    assert second.offset == pytest.approx(times[200])
    assert second.velocity == round(127 * 0.7 * 50 / (50 + 11))


def test_triplets_where_they_fit_and_sixteenths_elsewhere() -> None:
    beat = Beat(bpm=60.0, first_downbeat=0.0, meter=Meter(4, 4), estimated=False)
    played = [0.0, 1 / 3, 2 / 3, 1.0, 1.25, 1.5, 1.75, 2.0]  # a triplet, then sixteenths
    notes = [Note(t + 0.01, t + 0.2, 60, 90, 0.9) for t in played]

    placed = quantize(notes, beat, "sixteenth")

    assert [q.offset for q in placed.notes] == [
        0,
        Fraction(1, 3),
        Fraction(2, 3),
        1,
        Fraction(5, 4),
        Fraction(3, 2),
        Fraction(7, 4),
        2,
    ]
    assert placed.triplet_beats == 1


def test_a_held_chord_under_a_moving_melody_reads_back_as_written(tmp_path: Path) -> None:
    """Notes that overlap with other lengths are written as tied chords; read back with
    the ties joined, the score holds exactly the notes written."""
    q = QuantizedNote
    written = [
        *(q(0, 48, pitch, 80) for pitch in (48, 60)),  # a half-note fifth...
        *(q(12 * i, 12, pitch, 90) for i, pitch in enumerate((72, 74, 76, 77))),  # ...under ♪
        q(60, 24, 79, 90),
        q(72, 60, 48, 80),  # across the bar line
    ]
    path = tmp_path / "held.musicxml"

    summary = write_musicxml(
        written, path, title="held", bpm=100, meter=Meter(4, 4), program=0, key=None
    )

    assert summary.notes == len(written) and summary.measures == 2
    parsed = converter.parse(str(path), forceSource=True, storePickle=False)
    chords = [c for c in parsed.flatten().notes if c.isChord]
    assert chords and any(n.tie is not None for c in chords for n in c.notes)


@pytest.mark.parametrize("meter", [Meter(4, 4), Meter(6, 8)], ids=str)
def test_eighths_are_beamed_in_every_bar(tmp_path: Path, meter: Meter) -> None:
    """Every eighth of three bars of eighths carries a beam and a stem, grouped by the
    meter's beats: in twos in 4/4, in threes in 6/8."""
    bar = int(meter.bar_quarters * 24)
    written = [QuantizedNote(start, 12, 72 + start % 5, 80) for start in range(0, 3 * bar, 12)]
    path = tmp_path / "eighths.musicxml"

    write_musicxml(written, path, title="e", bpm=100, meter=meter, program=0, key="C")

    measures = ET.parse(path).getroot().findall("part/measure")
    group = ["begin", "end"] if meter.unit == 4 else ["begin", "continue", "end"]
    for measure in measures:
        beams = [note.findtext("beam[@number='1']") for note in measure.findall("note")]
        assert beams == group * (bar // 12 // len(group)), f"measure {measure.get('number')}"
        stems = {note.findtext("stem") for note in measure.findall("note")}
        assert stems <= {"up", "down"}, f"measure {measure.get('number')}: stems {stems}"
    assert len(measures) == 3


def test_a_keyboard_reaching_both_clefs_is_written_on_a_grand_staff(tmp_path: Path) -> None:
    """Piano notes from C3 to G5 go on two staves of one part, treble over bass, split at
    middle C; the same notes for a violin stay on one staff, and a piano melody that
    fits the treble staff stays on it."""
    q = QuantizedNote
    written = [
        *(q(0, 24, pitch, 80) for pitch in (48, 64)),
        *(q(24, 24, pitch, 80) for pitch in (55, 79)),
        *(q(48, 48, pitch, 80) for pitch in (59, 60)),
    ]

    def staves(program: int, notes: list[QuantizedNote]) -> list[tuple[str, list[int]]]:
        path = tmp_path / f"{program}.musicxml"
        summary = write_musicxml(
            notes, path, title="t", bpm=100, meter=Meter(4, 4), program=program, key="C"
        )
        assert summary.notes == len(notes)
        xml = path.read_text()
        assert xml.count("<part ") == 1
        parsed = converter.parse(str(path), forceSource=True, storePickle=False)
        return [
            (
                part.recurse().getElementsByClass("Clef")[0].sign,
                [p.midi for n in part.flatten().notes for p in n.pitches],
            )
            for part in parsed.parts
        ]

    assert staves(0, written) == [("G", [64, 79, 60]), ("F", [48, 55, 59])]
    assert "<staves>2</staves>" in (tmp_path / "0.musicxml").read_text()
    assert staves(40, written) == [("G", [48, 64, 55, 79, 59, 60])]
    melody = [q(24 * i, 24, pitch, 80) for i, pitch in enumerate((60, 64, 67, 72))]
    assert staves(0, melody) == [("G", [60, 64, 67, 72])]


def test_a_piano_recording_reaching_both_clefs_comes_out_on_a_grand_staff(
    tmp_path: Path,
) -> None:
    ctx = run_steps(tmp_path, play(MELODY_OVER_CHORDS, 8.5), "piano.wav")

    files = {out.name.split(".", 1)[1]: out.path for _, out in ctx.kept}
    xml = files["musicxml"].read_text()
    assert "<staves>2</staves>" in xml
    parsed = converter.parse(xml, format="musicxml", forceSource=True)
    treble, bass = (
        [p.midi for n in part.flatten().notes for p in n.pitches] for part in parsed.parts
    )
    assert min(treble) >= 60 > max(bass)  # treble from middle C up, bass below it
    assert {48, 43} <= set(bass) and {64, 79} <= set(treble)
    assert ctx.state["score"]["notes"] == ctx.state["detection"]["notes"]


def test_the_beat_is_found_from_the_notes() -> None:
    # 3/4 at 150 a minute, starting on the third beat: bars start at 1.5 s, 2.7 s, ...
    # where a strong, long note falls; the first bar starts before the first note.
    strong = {0: (0.35, 100)}
    waltz = [
        Note(0.3 + 0.4 * i, 0.3 + 0.4 * i + length, 60, velocity, 0.9)
        for i in range(1, 16)
        for length, velocity in [strong.get(i % 3, (0.15, 50))]
    ]

    found = find_beat(waltz, Meter(3, 4))

    assert found.bpm == pytest.approx(150, abs=2)
    assert found.first_downbeat == pytest.approx(0.3, abs=0.03)
    assert found.estimated


def _waltz_heard_louder_on_two_and_three() -> list[Note]:
    notes = []
    for bar in range(8):
        start = 1.5 * bar
        notes.append(Note(start, start + 0.46, 48 if bar % 2 == 0 else 43, 77, 0.9))
        for beat, velocity in ((1, 86), (2, 72)):
            onset = start + 0.5 * beat
            notes += [Note(onset, onset + 0.5, pitch, velocity, 0.9) for pitch in (64, 67)]
    return notes


@pytest.mark.parametrize(
    ("notes", "meter", "bpm"),
    [
        # Eight quarters at 120, the model hearing some a little louder than others.
        (
            [Note(0.5 * i, 0.5 * i + 0.45, 60 + i, 76 + i % 3 % 2, 0.9) for i in range(8)],
            "4/4",
            None,
        ),
        # Sixteenths at 120, likewise.
        (
            [Note(i / 8, i / 8 + 0.11, 72 + i % 4, 48 + 8 * (i % 4 == 2), 0.9) for i in range(32)],
            "4/4",
            None,
        ),
        # Triplet eighths at 90 (C-E-G to a beat), all as loud.
        (
            [Note(i * 2 / 9, i * 2 / 9 + 0.2, (60, 64, 67)[i % 3], 80, 0.9) for i in range(24)],
            "4/4",
            90.0,
        ),
        (_waltz_heard_louder_on_two_and_three(), "3/4", None),
    ],
    ids=["quarters", "sixteenths", "triplets", "waltz"],
)
def test_evenly_played_music_starts_its_first_bar_on_its_first_note(
    notes: list[Note], meter: str, bpm: float | None
) -> None:
    """Where no beat is clearly heavier, the first note starts the first bar. Bars began
    wherever the model heard a note a little louder: eight even quarters began after a
    quarter rest, triplets across the beat lines, and a waltz whose chords on 2 and 3 are
    heard louder than its bass on 1 read "pah-pah | oom"."""
    found = find_beat(notes, Meter.parse(meter), bpm=bpm)

    assert found.quarters(notes[0].onset) == pytest.approx(0, abs=0.05), found


def test_chords_every_other_beat_do_not_halve_the_tempo() -> None:
    """A four-note chord every two beats and a melody in eighths, at 120 a minute (the
    bench's music): the beat is the quarter note, not the chords' half note."""
    chords = [
        Note(bar + 0.005 * k, bar + 0.95, pitch, 70, 0.9)
        for bar in range(16)
        for k, pitch in enumerate((48, 60, 64, 67))
    ]
    melody = [Note(i / 4, i / 4 + 0.24, 72 + i % 5, 90, 0.9) for i in range(64)]
    notes = sorted(chords + melody, key=lambda n: (n.onset, n.pitch))

    found = find_beat(notes, Meter(4, 4))

    assert found.bpm == pytest.approx(120, abs=2)


@pytest.mark.parametrize(
    ("program", "key", "written", "fifths"),
    [
        (56, "F", ["D4", "E4", "F#4", "G4", "A4", "C5"], 1),  # B-flat trumpet: a step up
        (66, "C", ["D5", "E5", "F#5", "G5", "A5", "C6"], 2),  # tenor sax: a ninth up
        (0, "C", ["C4", "D4", "E4", "F4", "G4", "B-4"], 0),  # piano: as it sounds
    ],
    ids=["trumpet", "tenor-sax", "piano"],
)
def test_a_transposing_instrument_is_written_as_its_players_read_it(
    tmp_path: Path, program: int, key: str, written: list[str], fifths: int
) -> None:
    """Its part at its written pitch and in its written key, with the <transpose> that
    tells a notation program what sounds: read back, the notes sound as played."""
    played = [60, 62, 64, 65, 67, 70]
    notes = [QuantizedNote(24 * k, 24, pitch, 80) for k, pitch in enumerate(played)]
    path = tmp_path / "part.musicxml"

    summary = write_musicxml(
        notes, path, title="t", bpm=100, meter=Meter(4, 4), program=program, key=key
    )

    assert summary.key == key and summary.notes == len(played)
    parsed = converter.parse(str(path), forceSource=True, storePickle=False)
    assert [n.pitch.nameWithOctave for n in parsed.flatten().notes] == written
    assert [n.pitch.midi for n in parsed.toSoundingPitch().flatten().notes] == played
    assert re.findall(r"<fifths>(-?\d+)</fifths>", path.read_text()) == [str(fifths)]


@pytest.mark.parametrize(
    ("program", "key", "named", "fifths"),
    [
        (0, None, "D-", -5),  # heard from MIDI numbers as C-sharp major, seven sharps
        (56, None, "D-", -3),  # on a B-flat trumpet: E-flat major, not D-sharp's nine
        (0, "C#", "C#", 7),  # asked for, and a key signature has seven
        (0, "E#", "F", -1),  # no key signature has eleven sharps
        (56, "F#", "F#", -4),  # on the trumpet G-sharp major's eight sharps: A-flat
    ],
)
def test_a_key_signature_is_spelled_with_the_fewest_accidentals_it_can_be(
    tmp_path: Path, program: int, key: str | None, named: str, fifths: int
) -> None:
    tune = [61, 65, 68, 73, 68, 65, 61, 63, 66, 70, 68, 65, 61]  # D-flat major's tones
    notes = [QuantizedNote(24 * k, 24, pitch, 80) for k, pitch in enumerate(tune)]
    path = tmp_path / "tune.musicxml"

    summary = write_musicxml(
        notes, path, title="t", bpm=100, meter=Meter(4, 4), program=program, key=key
    )

    assert summary.key == named
    assert re.findall(r"<fifths>(-?\d+)</fifths>", path.read_text()) == [str(fifths)]


@pytest.mark.parametrize(
    ("tune", "named"),
    [
        ([60, 62, 64, 65, 67, 69, 71, 72], "C"),  # fits A minor as well, by the lengths
        ([57, 59, 60, 62, 64, 65, 67, 69], "a"),
        ([67, 69, 71, 72, 74, 76, 78, 79], "G"),  # fits E minor as well
        ([64, 66, 67, 69, 71, 72, 74, 76], "e"),
        ([60, 60, 67, 67, 69, 69, 67, 65, 65, 64, 64, 62, 62, 60], "C"),  # a tune in C
    ],
    ids=["C major scale", "A minor scale", "G major scale", "E minor scale", "twinkle"],
)
def test_a_key_and_its_relative_are_told_apart_by_the_ending(
    tmp_path: Path, tune: list[int], named: str
) -> None:
    """Two keys of one signature fit a scale's sounding lengths alike: the note it ends
    on (then starts on) decides, where the lengths alone made every major scale minor."""
    notes = [QuantizedNote(24 * k, 24, pitch, 80) for k, pitch in enumerate(tune)]
    summary = write_musicxml(
        notes,
        tmp_path / "tune.musicxml",
        title="t",
        bpm=100,
        meter=Meter(4, 4),
        program=0,
        key=None,
    )
    assert (summary.key, summary.key_estimated) == (named, True)


@pytest.mark.parametrize(
    ("program", "clef"), [(24, ("G", "2")), (33, ("F", "4"))], ids=["guitar", "bass"]
)
def test_a_guitar_or_a_bass_is_written_on_an_octave_clef(
    tmp_path: Path, program: int, clef: tuple[str, str]
) -> None:
    """One staff an octave above the sound, marked 8vb, however low or high the notes:
    the file's pitches are the pitches that sound."""
    played = [40, 45, 52, 57, 64, 76]  # E2 to E5: a guitar from its low E to the 12th fret
    notes = [QuantizedNote(24 * k, 24, pitch, 80) for k, pitch in enumerate(played)]
    path = tmp_path / "part.musicxml"

    write_musicxml(notes, path, title="t", bpm=100, meter=Meter(4, 4), program=program, key="E")

    clefs = ET.parse(path).getroot().findall("part/measure/attributes/clef")
    assert [(c.findtext("sign"), c.findtext("line")) for c in clefs] == [clef]
    assert clefs[0].findtext("clef-octave-change") == "-1"
    parsed = converter.parse(str(path), forceSource=True, storePickle=False)
    assert [n.pitch.midi for n in parsed.flatten().notes] == played


def test_accidentals_are_shown_once_a_bar_and_not_on_tied_notes(tmp_path: Path) -> None:
    """In C: F#, then F (a natural), then F# again in one bar; in the next bar the F#
    tied over shows no sharp and the next F# does. In E flat, a black key is a flat."""
    q = QuantizedNote
    written = [q(0, 24, 66, 80), q(24, 24, 65, 80), q(48, 24, 66, 80), q(72, 48, 66, 80)]
    written.append(q(120, 24, 66, 80))
    path = tmp_path / "sharps.musicxml"

    write_musicxml(written, path, title="s", bpm=100, meter=Meter(4, 4), program=0, key="C")

    xml = path.read_text()
    assert re.findall(r"<accidental>(\w+)</accidental>", xml) == [
        "sharp",
        "natural",
        "sharp",
        "sharp",
    ]
    flat = tmp_path / "flat.musicxml"
    write_musicxml(
        [q(0, 24, 70, 80)], flat, title="f", bpm=100, meter=Meter(3, 4), program=0, key="E-"
    )
    parsed = converter.parse(str(flat), forceSource=True, storePickle=False)
    assert [n.pitch.name for n in parsed.flatten().notes] == ["B-"]


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        (np.zeros(3 * SAMPLE_RATE, np.float32), "silent_audio"),
        (play([(0.1, 0.5, 60)], 0.8), "audio_too_short"),
        (0.1 * np.random.default_rng(3).standard_normal(3 * SAMPLE_RATE), "no_notes_found"),
    ],
    ids=["silence", "short", "noise"],
)
def test_a_recording_without_notes_is_refused(tmp_path: Path, audio: np.ndarray, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        run_steps(tmp_path, audio)

    assert refused.value.code == code and not refused.value.retryable
    assert "tune.wav" in refused.value.message


def test_speech_has_no_notes(tmp_path: Path) -> None:
    speech = Path(__file__).parent.parent / "examples" / "hello.ogg"

    with pytest.raises(InvalidInput, match=r"no notes found in hello\.ogg") as refused:
        run_kind(
            "transcribe-music",
            TranscribeMusicParams(),
            [input_file(speech, "audio/ogg")],
            tmp_path,
        )

    assert refused.value.code == "no_notes_found"


def test_params() -> None:
    assert TranscribeMusicParams(time_signature=" 6/8 ").time_signature == "6/8"
    for bad in (
        {"time_signature": "4/5"},
        {"key": "H major"},
        {"min_pitch": 80, "max_pitch": 60},
        {"quantize": "triplet"},
        {"onset_threshold": 1.5},
        {"beam": 5},
    ):
        with pytest.raises(pydantic.ValidationError):
            TranscribeMusicParams.model_validate(bad)
    # Told at the field a person changes (it was told at params as a whole).
    with pytest.raises(pydantic.ValidationError) as refused:
        TranscribeMusicParams(min_pitch=80, max_pitch=60)
    [error] = refused.value.errors()
    assert error["loc"] == ("max_pitch",) and "below min_pitch (80)" in error["msg"]


def test_kind_is_registered() -> None:
    kind = get_kind("transcribe-music")

    assert kind is not None and kind.params is TranscribeMusicParams
    assert [s.name for s in kind.steps] == ["decode", "notes", "beat", "quantize", "score"]
    assert (kind.resource, kind.max_inputs, tuple(kind.input_types)) == (
        "cpu",
        1,
        ("audio/", "video/"),
    )


# -- through the API --------------------------------------------------------------------


def upload(client: httpx.Client, name: str, content: bytes, **form: str) -> httpx.Response:
    return client.post(
        "/v1/jobs",
        data={"kind": "transcribe-music", "params": "{}", **form},
        files={"file": (name, content, "application/octet-stream")},
    )


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return wait_for_status(client, job_id, {"completed", "failed"}, timeout=120)


@dataclass(frozen=True)
class Done:
    job: dict[str, Any]
    files: dict[str, bytes]
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def melody_job(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Done:
    client = stack.client("music-mia")
    wav = write_wav(tmp_path_factory.mktemp("music") / "melody.wav", play(MELODY, 8.5))
    response = upload(client, "melody.wav", wav.read_bytes(), dedupe="true")
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])
    assert job["status"] == "completed", job["error"]
    files = {o["name"]: client.get(o["links"]["content"]).content for o in job["outputs"]}
    return Done(job, files, read_events(client, job["id"]))


@DATABASE
def test_a_melody_comes_back_as_midi_and_a_score(melody_job: Done) -> None:
    assert sorted(melody_job.files) == [
        "melody.mid",
        "melody.musicxml",
        "melody.notes.json",
        "melody.pianoroll.png",
    ]
    pitches = [p for _, _, p in MELODY]
    assert musicxml_pitches(melody_job.files["melody.musicxml"]) == pitches
    midi = mido.MidiFile(file=io.BytesIO(melody_job.files["melody.mid"]))
    assert [m.note for m in midi.tracks[0] if m.type == "note_on" and m.velocity] == pitches
    heard = [
        Note(n["onset"], n["offset"], n["pitch"], n["velocity"], n["confidence"])
        for n in json.loads(melody_job.files["melody.notes.json"])["notes"]
    ]
    assert f_measure(MELODY, heard) >= 0.9
    assert melody_job.job["attempts"] == 1
    progress = [e["data"] for e in melody_job.events if e["event"] == "progress"]
    assert [p["step"] for p in progress] == sorted(
        (p["step"] for p in progress), key=["decode", "notes", "beat", "quantize", "score"].index
    )
    details = [p["step_details"] for p in progress if p["step"] == "notes"]
    windows = [d for d in details if "seconds_done" in d]
    assert [d["windows"] for d in windows] == list(range(1, len(windows) + 1))
    assert windows[-1]["seconds_done"] == 8.5
    assert windows[-1]["notes_found"] == len(MELODY)


@DATABASE
def test_the_worker_lists_the_music_model(stack: Stack, melody_job: Done) -> None:
    workers = stack.client("music-mia").get("/v1/workers").json()

    engines = [e for w in workers for e in w["engines"] if e["kind"] == "music"]
    assert engines and {(e["backend"], e["device"]) for e in engines} == {("onnxruntime", "cpu")}
    assert all(e["model"].endswith("nmp.onnx") for e in engines)


@DATABASE
def test_an_identical_resubmission_gets_the_same_job(
    stack: Stack, melody_job: Done, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "melody.wav", play(MELODY, 8.5))

    again = upload(stack.client("music-mia"), "melody.wav", wav.read_bytes(), dedupe="true")

    assert again.status_code == 200, again.text
    assert again.headers["longplay-deduplicated"] == "true"
    assert again.json()["id"] == melody_job.job["id"]


@DATABASE
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("hush.wav", "silent_audio"),
        ("blip.wav", "audio_too_short"),
        ("hiss.wav", "no_notes_found"),
    ],
)
def test_bad_input_fails_at_once_with_its_code(
    stack: Stack, tmp_path: Path, name: str, code: str
) -> None:
    made = {
        "hush.wav": np.zeros(2 * SAMPLE_RATE, np.float32),
        "blip.wav": play([(0.1, 0.4, 60)], 0.6),
        "hiss.wav": 0.1 * np.random.default_rng(5).standard_normal(2 * SAMPLE_RATE),
    }
    content = write_wav(tmp_path / name, made[name]).read_bytes()
    client = stack.client("music-mia")

    response = upload(client, name, content)
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])

    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["code"] == code and not job["error"]["retryable"]
    assert name in job["error"]["message"] and str(stack.data_dir) not in job["error"]["message"]
    assert not (stack.data_dir / "work" / job["id"]).exists()


@DATABASE
def test_a_file_that_is_not_audio_is_refused_at_submit(stack: Stack) -> None:
    client = stack.client("music-mia")
    before = client.get("/v1/jobs").json()["items"]

    response = upload(client, "minutes.wav", b"Minutes of the meeting\n" * 50)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "undecodable_audio"
    assert error["message"].startswith("minutes.wav is not an audio or video file")
    assert str(stack.data_dir) not in error["message"]
    assert client.get("/v1/jobs").json()["items"] == before


@DATABASE
def test_music_jobs_go_to_gpu_workers_when_routed_there(make_stack: Any, tmp_path: Path) -> None:
    """With ``LONGPLAY_MUSIC_RESOURCE=gpu`` music jobs queue for workers that take GPU
    work (this one takes nothing else); such a worker without a GPU runs the model on
    its CPU."""
    stack = make_stack()
    stack.env.update({"LONGPLAY_MUSIC_RESOURCE": "gpu", "LONGPLAY_WORKER_QUEUES": "gpu"})
    stack.start_api()
    stack.start_worker(concurrency=1)
    client = stack.client("music-gil")
    wav = write_wav(tmp_path / "scale.wav", play(SCALE, 5.0))

    response = upload(client, "scale.wav", wav.read_bytes())
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])

    assert job["status"] == "completed", job["error"]
    with session_scope(stack.database_url) as session:
        stored = session.get(Job, job["id"])
        assert stored is not None and stored.resource == "gpu"
    record = client.get(
        next(o for o in job["outputs"] if o["name"] == "scale.notes.json")["links"]["content"]
    ).json()
    assert [n["pitch"] for n in record["notes"]] == [p for _, _, p in SCALE]


def test_music_bench_runs_and_reports_the_overhead(bench_tmp: Path) -> None:
    """The bench works end to end at a tiny size, so it cannot rot unnoticed; its
    figures depend on the machine and are not checked."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "music.py"
    run = subprocess.run(
        [sys.executable, str(bench), "--seconds", "4", "--repeat", "1"],
        env={**os.environ, "TMPDIR": str(bench_tmp)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    number = r"(-?\d+\.\d+)%?"
    row = re.search(rf"^\s*{number}" + rf"\s+{number}" * 7 + r"$", run.stdout, re.MULTILINE)
    assert row is not None, run.stdout
    assert float(row[1]) == 4.0 and float(row[2]) > 0 and float(row[4]) > 0
    assert re.search(
        r"^aim: job overhead over the model under 10%: (met|NOT met)", run.stdout, re.M
    )
    # onnxruntime leaves a session file, music21 its (empty) scratch folder, by design.
    assert [p for p in bench_tmp.iterdir() if p.name not in (".ses", "music21")] == []
    assert not any((bench_tmp / "music21").glob("*")), "music21 kept a parse of a score"
