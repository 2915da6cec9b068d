"""The beat of a recording, from the notes heard in it: a tempo and where bars start.

The onsets of the notes (each time weighted by its loudest note) make an onset signal at 100
frames a second, smoothed a little. Its autocorrelation, weighted towards moderate
tempos (a log-normal preference centred on 110 beats a minute, as beat trackers
commonly use), gives the beat period; the phase that puts the most onset weight on
the beats places them; and of the beats of a bar, the one whose onsets weigh most
(louder and longer notes count more) is the downbeat. Where the weights are close
(evenly played music, which the model hears a little louder here and there), the first
note is on a beat and starts a bar: music begins on a downbeat more often than with a
pickup. One tempo holds for the whole recording: music that speeds up or slows down
drifts off the grid.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from longplay.music.notes import Note

RATE = 100
"""Frames a second of the onset signal."""
MIN_BPM, MAX_BPM = 40.0, 220.0
PREFERRED_BPM = 110.0
DEFAULT_BPM = 120.0
MIN_ONSETS = 4
"""Distinct onsets needed to estimate a tempo; with fewer, :data:`DEFAULT_BPM`."""
PHASE_TIE = 0.15
"""Phases of the beat whose onset weight is within this fraction of the best's count as
the same: the first note decides between them."""
DOWNBEAT_TIE = 0.25
"""The first note's beat starts the bars unless another beat of the bar weighs more
than this fraction above it (a waltz's chords on 2 and 3 are heard louder than its bass
note on 1)."""
TIME_SIGNATURE = re.compile(r"^([1-9][0-9]?)/(1|2|4|8|16|32)$")


@dataclass(frozen=True)
class Meter:
    """A time signature such as ``3/4`` or ``6/8``."""

    beats: int
    unit: int

    @classmethod
    def parse(cls, text: str) -> Meter:
        match = TIME_SIGNATURE.match(text.strip())
        if match is None:
            raise ValueError(f"a time signature is written like 4/4 or 6/8, not {text!r}")
        return cls(int(match[1]), int(match[2]))

    @property
    def bar_quarters(self) -> Fraction:
        """The length of a bar in quarter notes."""
        return Fraction(4 * self.beats, self.unit)

    def __str__(self) -> str:
        return f"{self.beats}/{self.unit}"


@dataclass(frozen=True)
class Beat:
    """Where the quarter-note beats fall: ``first_downbeat + k * 60 / bpm`` seconds."""

    bpm: float
    first_downbeat: float
    """Seconds; the start of the first bar, at or before the first note."""
    meter: Meter
    estimated: bool
    """Whether the tempo was estimated (False: given)."""

    @property
    def seconds_per_quarter(self) -> float:
        return 60.0 / self.bpm

    def quarters(self, seconds: float) -> float:
        """Quarter notes from the first downbeat to ``seconds``."""
        return (seconds - self.first_downbeat) / self.seconds_per_quarter

    def as_dict(self) -> dict[str, object]:
        return {
            "bpm": round(self.bpm, 2),
            "first_downbeat": round(self.first_downbeat, 4),
            "time_signature": str(self.meter),
            "estimated": self.estimated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Beat:
        return cls(
            bpm=float(str(data["bpm"])),
            first_downbeat=float(str(data["first_downbeat"])),
            meter=Meter.parse(str(data["time_signature"])),
            estimated=bool(data["estimated"]),
        )


def find_beat(notes: list[Note], meter: Meter, *, bpm: float | None = None) -> Beat:
    """The beat of ``notes`` (sorted by onset) in ``meter``; ``bpm`` given is taken as
    it is, and only the beats' phase and the downbeat are found."""
    onsets = _onset_signal(notes)
    estimated = bpm is None
    if bpm is None:
        distinct = len({round(n.onset, 2) for n in notes})
        bpm = _tempo(onsets) if distinct >= MIN_ONSETS else DEFAULT_BPM
    period = RATE * 60.0 / bpm
    first = notes[0].onset if notes else 0.0
    phase = _phase(onsets, period, first * RATE)
    downbeat = _downbeat(notes, bpm, phase / RATE, meter)
    # The first bar starts at the last downbeat at or before the first note.
    bar = float(meter.bar_quarters) * 60.0 / bpm
    tolerance = 0.05 * 60.0 / bpm
    downbeat -= math.ceil((downbeat - first - tolerance) / bar) * bar
    return Beat(bpm=bpm, first_downbeat=downbeat, meter=meter, estimated=estimated)


def _onset_signal(notes: list[Note]) -> np.ndarray:
    end = max((n.onset for n in notes), default=0.0)
    signal = np.zeros(int(end * RATE) + RATE)
    # Each onset counts once, at its loudest note: a chord is one event, not one per
    # note, or chords every other beat outweigh the beats between them and the tempo
    # comes out at half.
    for note in notes:
        frame = round(note.onset * RATE)
        signal[frame] = max(signal[frame], note.velocity / 127)
    kernel = np.exp(-0.5 * (np.arange(-5, 6) / 2.0) ** 2)
    return np.convolve(signal, kernel, mode="same")


def _tempo(onsets: np.ndarray) -> float:
    """The beat rate whose period the onset signal repeats at best, by autocorrelation."""
    lags = np.arange(int(RATE * 60 / MAX_BPM), int(RATE * 60 / MIN_BPM) + 1)
    centred = onsets - onsets.mean()
    correlation = np.array([np.dot(centred[:-lag], centred[lag:]) for lag in lags])
    bpms = 60.0 * RATE / lags
    prior = np.exp(-0.5 * (np.log2(bpms / PREFERRED_BPM) / 0.9) ** 2)
    score = np.maximum(correlation, 0) * prior
    best = int(np.argmax(score))
    # Refine to a fraction of a frame with a parabola through the peak's neighbours.
    shift = 0.0
    if 0 < best < len(lags) - 1:
        a, b, c = score[best - 1], score[best], score[best + 1]
        if a - 2 * b + c < 0:
            shift = 0.5 * (a - c) / (a - 2 * b + c)
    return float(60.0 * RATE / (lags[best] + shift))


def _phase(onsets: np.ndarray, period: float, first_frame: float) -> float:
    """Frames from the start to the first beat: the offset that lands most onset
    weight on beats. Of the offsets within :data:`PHASE_TIE` of the best (evenly played
    notes, where the model's small differences in loudness would decide), the one
    with a beat nearest the first note: music starts on a beat far more often than
    off it."""
    steps = np.arange(0, period, 1.0)
    beats = np.arange(0, len(onsets), period)
    frames = np.clip(np.round(beats[None, :] + steps[:, None]).astype(int), 0, len(onsets) - 1)
    scores = onsets[frames].sum(axis=1)
    near = np.abs((first_frame - steps + period / 2) % period - period / 2)
    tied = scores >= (1 - PHASE_TIE) * scores.max()
    return float(steps[int(np.argmin(np.where(tied, near, np.inf)))])


def _downbeat(notes: list[Note], bpm: float, first_beat: float, meter: Meter) -> float:
    """The beat (seconds) that starts bars: of the bar's beats, the one whose onsets
    weigh most (each onset once, at its heaviest note: velocity times the square root
    of the length, so a chord weighs as much as one note). Where the first note's beat
    is within :data:`DOWNBEAT_TIE` of that, the first note's: a bar does not begin
    with a pickup unless a clearly heavier beat says so."""
    per_bar = max(1, round(float(meter.bar_quarters)))
    beat_s = 60.0 / bpm
    heaviest: dict[int, float] = {}
    for note in notes:
        position = (note.onset - first_beat) / beat_s
        if abs(position - round(position)) < 0.2:
            beat = round(position)
            heaviest[beat] = max(heaviest.get(beat, 0.0), note.velocity * math.sqrt(note.duration))
    weights = np.zeros(per_bar)
    for beat, weight in heaviest.items():
        weights[beat % per_bar] += weight
    best = int(np.argmax(weights))
    if notes:
        first = round((notes[0].onset - first_beat) / beat_s) % per_bar
        if weights[first] * (1 + DOWNBEAT_TIE) >= weights[best]:
            best = first
    return first_beat + best * beat_s
