"""Notes on a grid: onsets and lengths in whole ticks of a quarter note, ready for notation.

Notation programs (and music21, which writes the MusicXML) need durations they can
spell: a note 0.47 quarter notes long is not one. Each onset is moved to the nearest
line of the grid (sixteenths by default); within each beat, the triplet grid takes
over where it fits the onsets there clearly better (less than half the error), so a
beat of three even notes is written as a triplet instead of a sixteenth pattern. Ends
are snapped the same way, and every note lasts at least one step of its grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from longplay.music.beat import Beat
from longplay.music.notes import Note

TICKS = 24
"""Ticks in a quarter note: enough for thirty-seconds (3) and triplets of eighths (8)
and sixteenths (4)."""
Grid = Literal["quarter", "eighth", "sixteenth", "thirty-second"]
STEPS: dict[Grid, int] = {"quarter": 24, "eighth": 12, "sixteenth": 6, "thirty-second": 3}
TRIPLET_STEPS: dict[Grid, int | None] = {
    "quarter": None,
    "eighth": 8,
    "sixteenth": 8,
    "thirty-second": 4,
}
"""The triplet grid each grid may switch to within a beat: eighth-note triplets for
eighths and sixteenths, sixteenth-note triplets for thirty-seconds."""
TRIPLET_GAIN = 0.5


@dataclass(frozen=True)
class QuantizedNote:
    """A note on the grid: start and length in :data:`TICKS` per quarter note, from the
    first downbeat."""

    start: int
    length: int
    pitch: int
    velocity: int

    @property
    def offset(self) -> Fraction:
        """The start in quarter notes, as music21 counts."""
        return Fraction(self.start, TICKS)

    @property
    def quarter_length(self) -> Fraction:
        return Fraction(self.length, TICKS)

    def as_list(self) -> list[int]:
        return [self.start, self.length, self.pitch, self.velocity]

    @classmethod
    def from_list(cls, values: list[int]) -> QuantizedNote:
        start, length, pitch, velocity = values
        return cls(int(start), int(length), int(pitch), int(velocity))


@dataclass(frozen=True)
class Quantized:
    """The notes on the grid, and how many beats went to triplets."""

    notes: list[QuantizedNote]
    triplet_beats: int


def quantize(notes: list[Note], beat: Beat, grid: Grid = "sixteenth") -> Quantized:
    """``notes`` on ``grid`` (with triplets where they fit better) from ``beat``."""
    straight, triplet = STEPS[grid], TRIPLET_STEPS[grid]
    ticks = [(beat.quarters(n.onset) * TICKS, beat.quarters(n.offset) * TICKS) for n in notes]
    steps = _steps_per_beat([start for start, _ in ticks], straight, triplet)
    placed: dict[tuple[int, int], QuantizedNote] = {}
    for note, (start, end) in zip(notes, ticks, strict=True):
        step = steps.get(_beat_of(start, straight), straight)
        first = max(0, _snap(start, step))
        end_step = steps.get(_beat_of(end, straight), straight)
        length = max(step, _snap(end, end_step) - first)
        key = (first, note.pitch)
        if key in placed:  # two onsets of one key on one grid line: keep the longer
            length = max(length, placed[key].length)
        placed[key] = QuantizedNote(first, length, note.pitch, note.velocity)
    ordered = sorted(placed.values(), key=lambda q: (q.start, q.pitch))
    return Quantized(ordered, sum(1 for s in steps.values() if s != straight))


def _steps_per_beat(starts: list[float], straight: int, triplet: int | None) -> dict[int, int]:
    """The grid step for each beat that has onsets: triplet where it fits clearly better."""
    by_beat: dict[int, list[float]] = {}
    for start in starts:
        by_beat.setdefault(_beat_of(start, straight), []).append(start)
    chosen = {}
    for index, onsets in by_beat.items():
        chosen[index] = straight
        if triplet is None:
            continue
        straight_error = sum(abs(t - _snap(t, straight)) for t in onsets)
        triplet_error = sum(abs(t - _snap(t, triplet)) for t in onsets)
        if triplet_error < TRIPLET_GAIN * straight_error:
            chosen[index] = triplet
    return chosen


def _beat_of(tick: float, straight: int) -> int:
    """The beat a position belongs to: the half step before a beat counts to it."""
    return int((tick + straight / 2) // TICKS)


def _snap(tick: float, step: int) -> int:
    return round(tick / step) * step
