"""What one pass over audio learns for mastering it, so that no other pass measures
anything: :class:`LevelTrace` follows the audio as it is made (a voice speaking
sentence by sentence) and :class:`Levels` is what it learned.

Besides what a :class:`~longplay.media.LoudnessMeter` tells (loudness, true peak), a
trace keeps the true peak of each 5 ms block of the limiter, and the K-weighted energy
of the audio before every block start and every 100 ms hop start: about 210 numbers a
second, 15 MB for an hour. From those :meth:`Levels.limited_loudness` predicts in
milliseconds what the audio will measure after any gain through the limiter, so the
search for the gain that reaches a target makes no pass over the audio, and
:meth:`Levels.limiter` applies that limiter without measuring the peaks again.

A trace measures the peaks on a thread of its own, side by side with the energy and
with whatever its caller does between blocks (voicing the next sentence, reading the next
turn): oversampling is most of its work, and numpy and scipy let go of the interpreter
while they filter.

The prediction applies the limiter's gain after the K-weighting filter instead of
before it, and takes the energy within a few milliseconds to be even. The gain moves
over milliseconds and the filter's memory is about as short, so over the 400 ms gating
blocks the two orders measure within a few hundredths of a LU
(``tests/test_levels.py`` holds them to 0.05).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from longplay.media.limiter import PlannedLimiter, limiter_block
from longplay.media.loudness import (
    KWeighting,
    Loudness,
    Oversampler,
    Samples,
    gain_to_db,
    hop_starts,
    hops_in,
    integrated_loudness,
)

Frames = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Levels:
    """What a :class:`LevelTrace` learned about the audio it followed."""

    loudness: Loudness
    sample_rate: int
    block_peaks: Samples
    """The true peak (an amplitude) of each of the limiter's blocks, the last maybe short."""
    cuts: Frames
    """Every frame where a limiter block or a hop starts, from 0, and the end: the audio
    between two consecutive cuts lies in one block and one hop."""
    cut_energy: Samples
    """The K-weighted energy of the audio between each cut and the next."""
    hop_bounds: Frames
    """Where each whole hop starts, and where the last one ends."""

    @property
    def frames(self) -> int:
        """How many frames the trace followed."""
        return int(self.cuts[-1])

    def limiter(self, gain_db: float, ceiling_db: float) -> PlannedLimiter:
        """The gain and the limiter that keeps this audio's true peak under
        ``ceiling_db``, ready to apply to the same audio in a second pass."""
        return PlannedLimiter(
            self.block_peaks, self.sample_rate, gain_db=gain_db, ceiling_db=ceiling_db
        )

    def limited_loudness(self, gain_db: float, ceiling_db: float) -> float:
        """The integrated loudness (LUFS) of this audio after :meth:`limiter`, predicted."""
        limiter = self.limiter(gain_db, ceiling_db)
        block = limiter.block
        starts, ends = self.cuts[:-1], self.cuts[1:]
        index = starts // block
        first = limiter.boundaries[index]
        slope = (limiter.boundaries[index + 1] - first) / block
        at_start = first + slope * (starts - index * block)
        at_end = first + slope * (ends - index * block)
        # The mean square of a gain going linearly from at_start to at_end.
        mean_square = (at_start**2 + at_start * at_end + at_end**2) / 3.0
        hops = len(self.hop_bounds) - 1
        hop = np.searchsorted(self.hop_bounds, starts, side="right") - 1
        counted = hop < hops
        weighted = (self.cut_energy * mean_square)[counted]
        hop_energy = np.bincount(hop[counted], weighted, minlength=hops).astype(np.float64)
        return integrated_loudness(hop_energy, np.diff(self.hop_bounds).astype(np.float64))


class LevelTrace:
    """Measures ``(frames, channels)`` blocks as they come for :class:`Levels`: call
    :meth:`finish` once, after the last. A trace left unfinished (the work failed)
    lets its thread go when it is collected."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.block = limiter_block(sample_rate)
        self._weighting = KWeighting(sample_rate, channels)
        self._oversampler = Oversampler()
        self._frames = 0
        self._energy = 0.0
        """The K-weighted energy of every frame so far."""
        self._cuts: list[Frames] = [np.zeros(1, np.int64)]
        self._energy_before: list[Samples] = [np.zeros(1)]
        self._envelope: Samples = np.empty(0, np.float32)
        """Oversampled peaks of the frames after the last whole block."""
        self._peaks: list[Samples] = []
        self._sample_peak = 0.0
        self._peaker = ThreadPoolExecutor(1, thread_name_prefix="level-trace")
        self._peaking: Future[None] | None = None
        """The peaks of the last block added, being measured."""

    def add(self, samples: Samples) -> Samples:
        """Measure the next block; returns the K-weighted energy of each of its frames.

        The block's peaks are still being measured when this returns: it must not
        change until the next call or :meth:`finish`."""
        self._wait_for_peaks()
        self._peaking = self._peaker.submit(self._add_peaks, samples)
        energy = self._weighting.energy(samples)
        start, end = self._frames, self._frames + len(energy)
        cuts = self._cuts_after(start, end)
        before = self._energy + np.cumsum(energy)  # before[i]: up to frame start + i + 1
        self._cuts.append(cuts)
        self._energy_before.append(before[cuts - start - 1])
        if len(energy):
            self._energy = float(before[-1])
        self._frames = end
        return energy

    def finish(self) -> Levels:
        """What the trace learned about everything added."""
        try:
            self._wait_for_peaks()
        finally:
            self._peaker.shutdown()
        self._add_envelope(self._oversampler.flush(), final=True)
        cuts = np.concatenate(self._cuts)
        before = np.concatenate(self._energy_before)
        if cuts[-1] < self._frames:
            cuts = np.append(cuts, self._frames)
            before = np.append(before, self._energy)
        hop_bounds = hop_starts(0, hops_in(self._frames, self.sample_rate), self.sample_rate)
        hop_energy = np.diff(before[np.searchsorted(cuts, hop_bounds)])
        peaks = np.concatenate([np.empty(0, np.float32), *self._peaks])
        loudness = Loudness(
            integrated=integrated_loudness(hop_energy, np.diff(hop_bounds).astype(np.float64)),
            true_peak=gain_to_db(float(peaks.max(initial=0.0))),
            sample_peak=gain_to_db(self._sample_peak),
            duration=self._frames / self.sample_rate,
        )
        return Levels(loudness, self.sample_rate, peaks, cuts, np.diff(before), hop_bounds)

    def _wait_for_peaks(self) -> None:
        """Until the peaks of the last block are measured (raising what that raised)."""
        if self._peaking is not None:
            peaking, self._peaking = self._peaking, None
            peaking.result()

    def _add_peaks(self, samples: Samples) -> None:
        """On the trace's thread: the sample peak, and the true peak of each block."""
        if samples.size:
            self._sample_peak = max(self._sample_peak, float(np.abs(samples).max()))
        self._add_envelope(self._oversampler.push(samples), final=False)

    def _cuts_after(self, start: int, end: int) -> Frames:
        """The block and hop starts in frames ``(start, end]``, in order."""
        blocks = np.arange(start // self.block + 1, end // self.block + 1) * self.block
        first_hop = hops_in(start, self.sample_rate) + 1
        hops = hop_starts(first_hop, hops_in(end, self.sample_rate), self.sample_rate)
        cuts: Frames = np.union1d(blocks.astype(np.int64), hops)
        return cuts

    def _add_envelope(self, envelope: Samples, *, final: bool) -> None:
        """Keep the peak of each whole block of the envelope (and of a short last one
        when ``final``)."""
        pending = np.concatenate([self._envelope, envelope])
        done = len(pending) if final else len(pending) // self.block * self.block
        if done:
            starts = np.arange(0, done, self.block)
            self._peaks.append(np.maximum.reduceat(pending[:done], starts))
        self._envelope = pending[done:]
