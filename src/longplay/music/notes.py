"""Notes from a transcription model's activations: where notes start, how long they sound.

A frame-level model such as Basic Pitch gives, for every frame (about 11.6 ms) and each
of the 88 piano keys, two numbers between 0 and 1: how likely a note *starts* there
(the onset activation) and how likely one *sounds* there (the frame activation).
:class:`NoteTracker` reads those frames in time order, as the model makes them, and
turns them into notes:

- a note starts where a key's onset activation reaches ``onset_threshold`` and is at
  a peak in time (it is no lower than the frame before and higher than the next);
- it lasts while the key's frame activation stays at or above ``frame_threshold``,
  forgiving dips of up to ``GAP_FRAMES``; a clear new onset of the same key (see
  :data:`CLEAR`) ends it and starts the next;
- a note shorter than ``min_note_s`` is dropped, and so is one whose frame activation
  averages below ``frame_threshold``, or whose onset and sound are both unclear (the
  flickers noise and speech give);
- of two onsets a semitone apart in the same frame only the stronger starts a note
  (the model smears a tone over its neighbour keys).

:func:`drop_overtones` then removes the ghosts of strong notes' overtones.

Frames arrive in chunks with their times, so a long recording never sits whole in
memory and progress can say how many notes were found so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

LOWEST_KEY = 21
"""MIDI pitch of the first of the model's 88 keys (A0)."""
KEYS = 88
GAP_FRAMES = 11
"""Frames (about 128 ms) a key's activation may dip below the threshold inside a note."""

CLEAR = 0.5
"""How far from a threshold towards 1 an activation must reach to be *clear*: a clear
onset strikes again a key that is still sounding, and a note whose onset is not clear
must sound clearly (0.75 and 0.65 with the default thresholds)."""

Activations = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Note:
    """A note heard in the recording."""

    onset: float
    """Seconds from the start of the recording."""
    offset: float
    pitch: int
    """MIDI pitch (60 is middle C)."""
    velocity: int
    """1-127, from how strongly the model hears the note while it sounds."""
    confidence: float
    """The onset activation at the note's start, 0-1."""

    @property
    def duration(self) -> float:
        return self.offset - self.onset

    def as_list(self) -> list[float | int]:
        """``[onset, offset, pitch, velocity, confidence]``, rounded, for JSON."""
        return [
            round(self.onset, 4),
            round(self.offset, 4),
            self.pitch,
            self.velocity,
            round(self.confidence, 3),
        ]

    @classmethod
    def from_list(cls, values: list[float | int]) -> Note:
        onset, offset, pitch, velocity, confidence = values
        return cls(float(onset), float(offset), int(pitch), int(velocity), float(confidence))


@dataclass(frozen=True)
class TrackerOptions:
    """How activations become notes (a ``transcribe-music`` job's detection params)."""

    onset_threshold: float = 0.5
    frame_threshold: float = 0.3
    min_note_s: float = 0.08
    min_pitch: int = LOWEST_KEY
    max_pitch: int = LOWEST_KEY + KEYS - 1


class NoteTracker:
    """Turns frames of onset and frame activations into :class:`Note` s, chunk by chunk.

    Feed it with :meth:`add` in time order and call :meth:`finish` once at the end; both
    return the notes they completed. The last frame of each chunk waits for the next
    one, since whether it is an onset peak depends on the frame after it.
    """

    def __init__(self, options: TrackerOptions) -> None:
        self.options = options
        keys = np.arange(KEYS) + LOWEST_KEY
        self._allowed = (keys >= options.min_pitch) & (keys <= options.max_pitch)
        self._held: tuple[Activations, Activations, float] | None = None
        """The last frame added (onset, frame, time), waiting for the one after it."""
        self._before = np.zeros(KEYS, np.float32)
        """The onset activations of the frame before the held one."""
        self._active = np.zeros(KEYS, bool)
        self._start = np.zeros(KEYS)
        self._last_on = np.zeros(KEYS)
        """Time of the end of the last frame at or above the threshold, per key."""
        self._dip = np.zeros(KEYS, int)
        self._heard = np.zeros(KEYS)
        """Each key's frame activations summed over every frame stepped through so far;
        a note's strength is the growth of its key's sum while it sounds."""
        self._frames = 0
        """Frames stepped through so far."""
        self._heard_at_start = np.zeros(KEYS)
        self._frame_at_start = np.zeros(KEYS, int)
        self._peak = np.zeros(KEYS)
        self._frame_s = 0.0
        self.found = 0
        """Notes completed so far."""

    def add(
        self, onsets: Activations, frames: Activations, times: npt.NDArray[np.float64]
    ) -> list[Note]:
        """Take ``(n, 88)`` onset and frame activations whose frames start at ``times``.

        What does not depend on the notes already sounding (which frames sound, which
        onsets peak) is worked out for the whole chunk at once; only the notes' state
        goes frame by frame."""
        if len(times) == 0:
            return []
        if len(times) > 1:
            self._frame_s = float(times[1] - times[0])
        onsets = np.where(self._allowed, onsets, 0.0).astype(np.float32)
        frames = np.where(self._allowed, frames, 0.0).astype(np.float32)
        if self._held is not None:
            onsets = np.vstack([self._held[0], onsets])
            frames = np.vstack([self._held[1], frames])
            times = np.concatenate([[self._held[2]], times])
        self._held = (onsets[-1], frames[-1], float(times[-1]))
        return self._steps(onsets, frames, times, following=onsets[1:])

    def finish(self) -> list[Note]:
        """Close every note still sounding at the end of the recording."""
        notes: list[Note] = []
        if self._held is not None:
            onset, frame, time = self._held
            last = np.zeros((1, KEYS), np.float32)
            notes.extend(self._steps(onset[None], frame[None], np.array([time]), following=last))
            self._held = None
        for key in np.flatnonzero(self._active):
            notes.extend(
                self._close(int(key), float(self._last_on[key]), self._heard, self._frames)
            )
        return notes

    def _steps(
        self,
        onsets: Activations,
        frames: Activations,
        times: npt.NDArray[np.float64],
        *,
        following: Activations,
    ) -> list[Note]:
        """Step through the first ``len(following)`` frames, each with the onsets of the
        frame after it."""
        options = self.options
        notes: list[Note] = []
        count = len(following)
        if count == 0:
            return notes
        onsets, frames = onsets[:count], frames[:count]
        before = np.vstack([self._before, onsets[:-1]])
        sounding = frames >= options.frame_threshold
        peaks = (onsets >= options.onset_threshold) & (onsets >= before) & (onsets > following)
        strikes = _stronger_than_neighbours(peaks, onsets)
        clear = onsets >= _clear(options.onset_threshold)
        struck = np.asarray(strikes.any(axis=1), dtype=bool)
        # heard[i]: the sums through the frame before frame i, as a note closed at
        # frame i (before it is added) or one started there counts from.
        heard = np.vstack([self._heard, self._heard + np.cumsum(frames, axis=0, dtype=np.float64)])
        active, last_on = self._active, self._last_on
        for index in range(count):
            time = float(times[index])
            end = time + self._frame_s
            frame = self._frames + index
            # Keys whose note has faded for longer than the gap end where it was last heard.
            dip = self._dip = np.where(active & ~sounding[index], self._dip + 1, 0)
            if dip.max() > GAP_FRAMES:
                for key in np.flatnonzero(dip > GAP_FRAMES):
                    notes.extend(self._close(int(key), float(last_on[key]), heard[index], frame))
            # A key already sounding is struck again only by a clear onset: the model
            # also stirs a held note's onset when other notes start over it.
            if struck[index]:
                starting = strikes[index] & (~active | clear[index])
                for key in np.flatnonzero(starting & active):
                    notes.extend(self._close(int(key), time, heard[index], frame))
                active |= starting
                self._start[starting] = time
                self._peak[starting] = onsets[index][starting]
                self._heard_at_start[starting] = heard[index][starting]
                self._frame_at_start[starting] = frame
                last_on[starting] = end
            np.copyto(last_on, end, where=active & sounding[index])
        self._heard = heard[-1]
        self._frames += count
        self._before = onsets[-1]
        return notes

    def _close(
        self, key: int, offset: float, heard: npt.NDArray[np.float64], frame: int
    ) -> list[Note]:
        """End ``key``'s note at ``offset``; ``heard`` and ``frame``: the sums and the
        count of frames up to (not including) the frame it ends in."""
        self._active[key] = False
        onset = float(self._start[key])
        if offset - onset < self.options.min_note_s:
            return []
        frames = max(1, frame - int(self._frame_at_start[key]))
        strength = float((heard[key] - self._heard_at_start[key]) / frames)
        if strength < self.options.frame_threshold:
            return []  # a flicker: on average it never sounded above the threshold
        if self._peak[key] < _clear(self.options.onset_threshold) and strength < _clear(
            self.options.frame_threshold
        ):
            return []  # neither its start nor its sound is clear: noise, as a rule
        self.found += 1
        return [
            Note(
                onset=onset,
                offset=offset,
                pitch=key + LOWEST_KEY,
                velocity=int(np.clip(round(127 * strength), 1, 127)),
                confidence=float(self._peak[key]),
            )
        ]


def _stronger_than_neighbours(
    peaks: npt.NDArray[np.bool_], onset: Activations
) -> npt.NDArray[np.bool_]:
    """``peaks`` without those whose key a semitone down (or up, at equal strength)
    peaks stronger in the same frame."""
    beaten = np.zeros_like(peaks)  # keys are the last axis: one frame or many
    beaten[..., 1:] |= peaks[..., :-1] & (onset[..., :-1] > onset[..., 1:])
    beaten[..., :-1] |= peaks[..., 1:] & (onset[..., 1:] >= onset[..., :-1])
    return peaks & ~beaten


OVERTONES = (12, 19, 24, 28, 31, 36)
"""Semitones from a note to its 2nd, 3rd, 4th, 5th, 6th and 8th harmonics."""
OVERTONE_ONSET_S = 0.05
OVERTONE_STRENGTH = 0.6
"""An overtone's ghost is heard at most this share as strongly as its note."""


def drop_overtones(notes: list[Note]) -> list[Note]:
    """``notes`` without the ghosts the model hears at a strong note's harmonics: a note
    that starts within ``OVERTONE_ONSET_S`` of a note an octave, a twelfth, ... below it
    (:data:`OVERTONES`), ends no later than it, and is heard at most
    ``OVERTONE_STRENGTH`` as strongly. Played octaves sound as strong as their root and
    stay. ``notes`` must be sorted by onset."""
    kept = []
    for index, note in enumerate(notes):
        lo = index
        while lo > 0 and note.onset - notes[lo - 1].onset <= OVERTONE_ONSET_S:
            lo -= 1
        hi = index
        while hi + 1 < len(notes) and notes[hi + 1].onset - note.onset <= OVERTONE_ONSET_S:
            hi += 1
        ghost = any(
            note.pitch - other.pitch in OVERTONES
            and note.velocity <= OVERTONE_STRENGTH * other.velocity
            and note.offset <= other.offset + OVERTONE_ONSET_S
            for other in notes[lo : hi + 1]
        )
        if not ghost:
            kept.append(note)
    return kept


def _clear(threshold: float) -> float:
    """The level at which an activation is clear, given its threshold (see :data:`CLEAR`)."""
    return threshold + (1 - threshold) * CLEAR
