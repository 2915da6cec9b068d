"""A look-ahead peak limiter that keeps the true (4x oversampled) peak under a ceiling,
the gain stage that puts it between the decoder and the codec, and the same limiter
planned in advance for audio whose peaks are known (:class:`PlannedLimiter`)."""

from __future__ import annotations

import copy

import numpy as np

from longplay.media.loudness import Oversampler, Samples, db_to_gain

RELEASE_DB_PER_SECOND = 60.0
"""How fast the limiter's gain recovers: 6 dB in 100 ms, a usual limiter release.

Much slower releases hold the gain down between the syllables of speech, whose peaks
come a few times a second: at 20 dB/s a speech file 5 dB over the ceiling lost
2.4 LU where 60 dB/s loses 1.9, and making that up took 12 dB more gain (and 13 dB
of limiting) instead of 4."""


class PeakLimiter:
    """Streams audio through a brick-wall limiter with 5 ms of look-ahead.

    The signal is cut into short blocks; each block may have at most the gain that
    brings its true peak down to the ceiling, and the gain recovers from a reduction
    at ``release_db_per_second``. The gain ramps linearly from one block boundary to
    the next, and a boundary takes the lower gain of the two blocks it separates, so
    no sample gets more gain than its own block allows. A block is therefore held
    back until the next block's peak is known: output lags input by a few
    milliseconds, and :meth:`flush` returns the rest. The output depends on the
    input and the parameters only, not on how the input is split into calls.
    """

    def __init__(
        self,
        sample_rate: int,
        ceiling_db: float,
        *,
        block_seconds: float = 0.005,
        release_db_per_second: float = RELEASE_DB_PER_SECOND,
    ) -> None:
        self._ceiling = db_to_gain(ceiling_db)
        self._block = limiter_block(sample_rate, block_seconds)
        self._release_db = release_db_per_second * self._block / sample_rate
        self._oversampler = Oversampler()
        self._audio: Samples | None = None
        self._envelope: Samples = np.empty(0)
        self._gain_db = 0.0
        self.max_reduction_db = 0.0
        """The deepest gain reduction applied so far, in dB (0.0 or negative)."""

    def process(self, samples: Samples) -> Samples:
        """Limit the next ``(frames, channels)`` block; returns the frames now ready."""
        self._audio = samples if self._audio is None else np.concatenate([self._audio, samples])
        self._envelope = np.concatenate([self._envelope, self._oversampler.push(samples)])
        return self._emit(len(self._envelope) // self._block - 1, final=False)

    def flush(self) -> Samples:
        """Every frame still held back, limited as if silence followed."""
        if self._audio is None:
            return np.empty((0, 1), np.float32)
        self._envelope = np.concatenate([self._envelope, self._oversampler.flush()])
        frames = len(self._audio)
        blocks = -(-frames // self._block)
        padding = blocks * self._block - frames
        self._audio = np.pad(self._audio, ((0, padding), (0, 0)))
        self._envelope = np.pad(self._envelope, (0, padding))
        return self._emit(blocks, final=True)[:frames]

    def _emit(self, blocks: int, *, final: bool) -> Samples:
        """Apply the gain to the first ``blocks`` blocks and drop them from the buffers."""
        assert self._audio is not None
        if blocks <= 0:
            return self._audio[:0]
        size = self._block
        known = len(self._envelope) // size
        peaks = self._envelope[: known * size].reshape(known, size).max(axis=1)
        gain_db = _block_gains(peaks, self._ceiling, self._release_db, self._gain_db)
        boundary_db = _boundary_gains(gain_db, self._gain_db, final=final)
        gain = _ramps(_db_to_amplitude(boundary_db[: blocks + 1]), size)
        out: Samples = (self._audio[: blocks * size] * gain[:, None]).astype(self._audio.dtype)
        self._gain_db = float(gain_db[blocks - 1])
        self.max_reduction_db = min(self.max_reduction_db, float(gain_db[:blocks].min()))
        self._audio = self._audio[blocks * size :]
        self._envelope = self._envelope[blocks * size :]
        return out


class PlannedLimiter:
    """The :class:`GainStage` of a gain and a :class:`PeakLimiter`, for audio whose block
    peaks were measured in an earlier pass (:class:`~longplay.media.levels.LevelTrace`).

    Every block's gain is worked out at once, from the peaks, exactly as the limiter
    would work it out, and then applied to the audio as it streams by: no second
    oversampling, no look-ahead, so the output keeps pace with the input. The gain
    curve is also what :meth:`~longplay.media.levels.Levels.limited_loudness` predicts
    the loudness from.
    """

    def __init__(
        self,
        block_peaks: Samples,
        sample_rate: int,
        *,
        gain_db: float,
        ceiling_db: float,
        release_db_per_second: float = RELEASE_DB_PER_SECOND,
    ) -> None:
        self.block = limiter_block(sample_rate)
        ceiling = db_to_gain(ceiling_db)
        release = release_db_per_second * self.block / sample_rate
        gain = db_to_gain(gain_db)
        gains_db = _block_gains(block_peaks * gain, ceiling, release, 0.0)
        self.limited_db = min(0.0, float(gains_db.min(initial=0.0)))
        """The deepest gain reduction the limiter applies, in dB (0.0: none)."""
        self.boundaries = gain * _db_to_amplitude(_boundary_gains(gains_db, 0.0, final=True))
        """The gain (an amplitude ratio) at the start of each block and at the end of the
        last: within a block it goes linearly from one boundary to the next."""
        self._clip = ceiling
        self._position = 0

    def at(self, position: int) -> PlannedLimiter:
        """The same limiter, for the audio from frame ``position`` on: a part of the
        audio can go through it apart from the rest, on another thread."""
        part = copy.copy(self)
        part._position = position
        return part

    def process(self, samples: Samples) -> Samples:
        """The next ``(frames, channels)`` block with its gain, clipped to the ceiling."""
        frames = self._position + np.arange(len(samples))
        block, offset = np.divmod(frames, self.block)
        start = self.boundaries[block]
        gain = start + (self.boundaries[block + 1] - start) * (offset / self.block)
        self._position += len(samples)
        limited: Samples = np.clip(samples * gain[:, None], -self._clip, self._clip)
        return limited.astype(np.float32)


def limiter_block(sample_rate: int, block_seconds: float = 0.005) -> int:
    """Frames in one of the limiter's blocks."""
    return max(1, round(sample_rate * block_seconds))


def _block_gains(peaks: Samples, ceiling: float, release_db: float, start_db: float) -> Samples:
    """The limiter's gain in dB for each block of true ``peaks``, following a block at
    ``start_db``: the most that keeps the block's peak under ``ceiling`` (an amplitude),
    and never more than ``release_db`` above the block before,
    ``g[i] = min(allowed[i], g[i-1] + release)``, worked out without a loop.

    Unrolled, ``g[i] = i*r + min(g[-1] + r, min over k <= i of (allowed[k] - k*r))``.
    """
    with np.errstate(divide="ignore"):
        allowed = np.minimum(0.0, 20.0 * np.log10(ceiling / peaks))
    steps = np.arange(len(allowed)) * release_db
    floor = np.minimum.accumulate(allowed - steps)
    gains: Samples = steps + np.minimum(start_db + release_db, floor)
    return gains


def _boundary_gains(gains_db: Samples, start_db: float, *, final: bool) -> Samples:
    """The gain in dB where each block starts: the lower of the two blocks it separates,
    so no sample gets more than its own block allows; ``final`` adds the end of the
    last block."""
    boundaries: Samples = np.minimum(np.concatenate([[start_db], gains_db[:-1]]), gains_db)
    return np.concatenate([boundaries, gains_db[-1:]]) if final else boundaries


def _ramps(boundaries: Samples, size: int) -> Samples:
    """Per-frame gain for whole blocks of ``size`` frames, going linearly from each
    boundary gain (amplitude) to the next: one block fewer than ``boundaries``."""
    start, end = boundaries[:-1], boundaries[1:]
    ramp = np.arange(size) / size
    gains: Samples = (start[:, None] + (end - start)[:, None] * ramp).reshape(-1)
    return gains


def _db_to_amplitude(db: Samples) -> Samples:
    amplitude: Samples = 10.0 ** (db / 20.0)
    return amplitude


class GainStage:
    """Everything between the decoder and the codec: a gain, a limiter and a clip.

    Each block is multiplied by ``gain_db``; with a ``ceiling_db`` a
    :class:`PeakLimiter` then keeps the true peak below it. Samples are finally
    clipped to the ceiling (or to full scale) so nothing wraps around in a codec.
    The encoder and the loudness simulation of the ``convert`` kind both use this
    class, so what was simulated is what gets encoded, sample for sample.
    """

    def __init__(
        self, sample_rate: int, *, gain_db: float = 0.0, ceiling_db: float | None = None
    ) -> None:
        self._gain = np.float32(db_to_gain(gain_db))
        self._clip = db_to_gain(ceiling_db) if ceiling_db is not None else 1.0
        self._limiter = PeakLimiter(sample_rate, ceiling_db) if ceiling_db is not None else None

    @property
    def limited_db(self) -> float:
        """The deepest gain reduction the limiter applied so far, in dB (0.0: none)."""
        return self._limiter.max_reduction_db if self._limiter else 0.0

    def process(self, samples: Samples) -> Samples:
        """The next ``(frames, channels)`` block; returns the frames now ready, which
        lag the input by a few milliseconds when limiting."""
        scaled = samples * self._gain
        if self._limiter is not None:
            scaled = self._limiter.process(scaled)
        return self._clipped(scaled)

    def flush(self) -> Samples:
        """The frames still held back (none without a limiter; maybe none at all)."""
        if self._limiter is None:
            return np.empty((0, 1), np.float32)
        return self._clipped(self._limiter.flush())

    def _clipped(self, samples: Samples) -> Samples:
        clipped: Samples = np.clip(samples, -self._clip, self._clip, dtype=np.float32)
        return clipped
