"""Streaming loudness (EBU R 128 / ITU-R BS.1770-4) and true-peak measurement.

Audio arrives in blocks of any length as float arrays shaped ``(frames, channels)``;
nothing but a few floats per 100 ms of audio is kept, so an hour-long file is
measured in constant memory (about 0.6 MB of gating data per hour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import signal

Samples = npt.NDArray[np.floating]

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
_BLOCK_HOPS = 4
"""A gating block is 400 ms: four hops of 100 ms, so consecutive blocks overlap by 75%."""
_HOPS_PER_SECOND = 10
_OVERSAMPLING = 4
_INTERPOLATOR = signal.firwin(49, 1 / _OVERSAMPLING, window=("kaiser", 5.0)).astype(np.float32)
_CONTEXT = 8
"""Input samples the interpolator needs either side of a sample (24 taps / 4, rounded up)."""


def gain_to_db(gain: float) -> float:
    """Amplitude ratio in dB; ``-inf`` for zero."""
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


@dataclass(frozen=True)
class Loudness:
    """What :class:`LoudnessMeter` measured; ``-inf`` values mean silence."""

    integrated: float
    """Integrated loudness in LUFS; ``-inf`` when every block falls below the gates."""
    true_peak: float
    """Peak of the 4x oversampled signal in dBTP; NaN when the meter was told not to
    measure it."""
    sample_peak: float
    """Largest absolute sample value in dBFS."""
    duration: float
    """Seconds of audio measured."""

    @property
    def is_silent(self) -> bool:
        return math.isinf(self.integrated)

    def as_dict(self) -> dict[str, float | None]:
        """JSON-safe values: ``None`` stands for ``-inf``."""
        return {
            "integrated_lufs": finite_or_none(self.integrated),
            "true_peak_dbtp": finite_or_none(self.true_peak),
            "sample_peak_dbfs": finite_or_none(self.sample_peak),
            "duration": self.duration,
        }


def finite_or_none(value: float) -> float | None:
    """``value`` rounded to 0.01, or None for the -inf of silence (JSON has no infinity)."""
    return round(value, 2) if math.isfinite(value) else None


def k_weighting(sample_rate: int) -> list[tuple[Samples, Samples]]:
    """The two K-weighting biquads as ``(b, a)`` pairs, designed for ``sample_rate``.

    The analog prototypes are the ones libebur128 derives; at 48 kHz they reproduce
    the coefficients printed in BS.1770-4 and at other rates they keep its response.
    """
    shelf_hz, shelf_db, shelf_q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * shelf_hz / sample_rate)
    vh = 10.0 ** (shelf_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / shelf_q + k * k
    shelf = (
        np.array([vh + vb * k / shelf_q + k * k, 2.0 * (k * k - vh), vh - vb * k / shelf_q + k * k])
        / a0,
        np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / shelf_q + k * k) / a0]),
    )
    high_pass_hz, high_pass_q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * high_pass_hz / sample_rate)
    a0 = 1.0 + k / high_pass_q + k * k
    high_pass = (
        np.array([1.0, -2.0, 1.0]),
        np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / high_pass_q + k * k) / a0]),
    )
    return [shelf, high_pass]


class LoudnessMeter:
    """Integrated loudness, true peak and sample peak of a stream of audio blocks.

    Every channel has weight 1.0 (:class:`KWeighting`), which is right for mono and
    stereo (BS.1770 weighs surround channels 1.41 and leaves out LFE: downmix those
    first). Oversampling for the true peak costs most of the meter's time, so
    ``true_peak=False`` skips it, for audio whose peak is known already (the output
    of a limiter).
    """

    def __init__(self, sample_rate: int, channels: int, *, true_peak: bool = True) -> None:
        if sample_rate < _HOPS_PER_SECOND:
            raise ValueError(f"sample rate {sample_rate} is too low to measure")
        self.sample_rate = sample_rate
        self.channels = channels
        self._weighting = KWeighting(sample_rate, channels)
        self._frames = 0
        self._hops_done = 0
        self._unfinished_hop = np.empty(0)
        self._hop_energy: list[Samples] = []
        self._hop_length: list[Samples] = []
        self._oversampler = Oversampler() if true_peak else None
        self._true_peak = 0.0
        self._sample_peak = 0.0

    def add(self, samples: Samples) -> None:
        """Measure the next ``(frames, channels)`` block."""
        self.add_energy(self._weighting.energy(samples))
        if samples.size:
            self._sample_peak = max(self._sample_peak, float(np.abs(samples).max()))
        if self._oversampler is not None:
            self._add_true_peak(self._oversampler.push(samples))

    def result(self) -> Loudness:
        """The measurement of everything added: call it once, after the last block."""
        true_peak = math.nan
        if self._oversampler is not None:
            self._add_true_peak(self._oversampler.flush())
            true_peak = gain_to_db(self._true_peak)
        return Loudness(
            integrated=self._integrated(),
            true_peak=true_peak,
            sample_peak=gain_to_db(self._sample_peak),
            duration=self._frames / self.sample_rate,
        )

    def _add_true_peak(self, envelope: Samples) -> None:
        if envelope.size:
            self._true_peak = max(self._true_peak, float(envelope.max()))

    def add_energy(self, energy: Samples) -> None:
        """Measure the next frames by their K-weighted energy, as :class:`KWeighting`
        gives it: for audio weighted elsewhere already. Sums the energy of each 100 ms
        hop (:func:`hops_in`) that ``energy`` completes; the sample peak does not see
        these frames."""
        self._frames += energy.size
        pending = np.concatenate([self._unfinished_hop, energy])
        hops_done = hops_in(self._frames, self.sample_rate)
        if hops_done == self._hops_done:
            self._unfinished_hop = pending
            return
        bounds = hop_starts(self._hops_done, hops_done, self.sample_rate)
        bounds -= bounds[0]
        self._hop_energy.append(np.add.reduceat(pending[: bounds[-1]], bounds[:-1]))
        self._hop_length.append(np.diff(bounds).astype(np.float64))
        self._unfinished_hop = pending[bounds[-1] :]
        self._hops_done = hops_done

    def _integrated(self) -> float:
        if not self._hop_energy:
            return -math.inf
        return integrated_loudness(
            np.concatenate(self._hop_energy), np.concatenate(self._hop_length)
        )


class KWeighting:
    """The K-weighting filter of BS.1770 over a stream of ``(frames, channels)`` blocks:
    :meth:`energy` gives each frame's weighted energy, summed over the channels.

    Every channel has weight 1.0, which is right for mono and stereo.
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.channels = channels
        # Both biquads in one pass (second-order sections): a third quicker than one
        # lfilter call each for mono, half for stereo, with the same result to 1e-13.
        self._sections = np.array([np.concatenate([b, a]) for b, a in k_weighting(sample_rate)])
        self._state = np.zeros((len(self._sections), 2, channels))

    def energy(self, samples: Samples) -> Samples:
        """The weighted energy of each frame of the next block, as float64."""
        if samples.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {samples.shape[1]}")
        if not len(samples):  # which sosfilt refuses
            return np.zeros(0)
        weighted, self._state = signal.sosfilt(
            self._sections, samples.astype(np.float64), axis=0, zi=self._state
        )
        if self.channels == 1:  # numpy sums along a row of one slowly
            mono: Samples = np.square(weighted[:, 0])
            return mono
        energy: Samples = np.square(weighted).sum(axis=1)
        return energy


def hops_in(frames: int, sample_rate: int) -> int:
    """The 100 ms hops that ``frames`` frames complete: hop ``k`` spans frames
    ``[k*rate//10, (k+1)*rate//10)``, which also works for rates such as 11025 Hz whose
    hop is not a whole number of frames."""
    return (frames * _HOPS_PER_SECOND + _HOPS_PER_SECOND - 1) // sample_rate


def hop_starts(first: int, last: int, sample_rate: int) -> npt.NDArray[np.int64]:
    """The first frame of each hop from ``first`` to ``last``, both included."""
    return np.arange(first, last + 1, dtype=np.int64) * sample_rate // _HOPS_PER_SECOND


def integrated_loudness(hop_energy: Samples, hop_length: Samples) -> float:
    """BS.1770-4 integrated loudness from the K-weighted energy and the length in frames
    of consecutive 100 ms hops: the 400 ms gating blocks are four hops each. Audio
    shorter than one block measures as silence."""
    if len(hop_energy) < _BLOCK_HOPS:
        return -math.inf
    window = np.ones(_BLOCK_HOPS)
    energy = np.convolve(hop_energy, window, mode="valid")
    length = np.convolve(hop_length, window, mode="valid")
    return gated_loudness(energy / length)


def gated_loudness(block_power: Samples) -> float:
    """BS.1770-4 integrated loudness from the mean-square power of each 400 ms block."""
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10.0 * np.log10(block_power)
    above_absolute = block_loudness > ABSOLUTE_GATE_LUFS
    if not above_absolute.any():
        return -math.inf
    relative_gate = _power_to_lufs(block_power[above_absolute].mean()) + RELATIVE_GATE_LU
    gated = block_power[above_absolute & (block_loudness > relative_gate)]
    return _power_to_lufs(gated.mean())


def _power_to_lufs(power: float) -> float:
    return -0.691 + 10.0 * math.log10(power)


class Oversampler:
    """Streams the 4x oversampled magnitude envelope of a signal, one value per input frame.

    Each value is the largest absolute value of all channels over the four
    interpolated points that start at that frame, so its maximum is the BS.1770
    true peak. Interpolating needs a few frames of context after a frame, so
    :meth:`push` holds the last ``_CONTEXT`` frames back until the next call or
    :meth:`flush`; the envelopes it returns are always aligned with the input.
    """

    def __init__(self) -> None:
        self._pending: Samples | None = None
        self._history = 0
        """Frames at the start of ``_pending`` already returned, kept as left context."""

    def push(self, samples: Samples) -> Samples:
        pending = samples if self._pending is None else np.concatenate([self._pending, samples])
        return self._scan(pending, len(pending) - _CONTEXT)

    def flush(self) -> Samples:
        """The envelope of the held-back frames, as if silence followed them."""
        if self._pending is None:
            return np.empty(0)
        padding = np.zeros((_CONTEXT, self._pending.shape[1]), self._pending.dtype)
        return self._scan(np.concatenate([self._pending, padding]), len(self._pending))

    def _scan(self, pending: Samples, end: int) -> Samples:
        start = self._history
        if end <= start:
            self._pending = pending
            return np.empty(0)
        left = max(0, start - _CONTEXT)
        window = pending[left : end + _CONTEXT].astype(np.float32, copy=False)
        upsampled: Samples = signal.resample_poly(
            window, _OVERSAMPLING, 1, axis=0, window=_INTERPOLATOR
        )
        ours = upsampled[(start - left) * _OVERSAMPLING : (end - left) * _OVERSAMPLING]
        keep_from = max(0, end - _CONTEXT)
        self._pending = pending[keep_from:]
        self._history = end - keep_from
        return _row_maxima(np.abs(ours).reshape(end - start, -1))


def _row_maxima(rows: Samples) -> Samples:
    """The largest value of each row of a narrow array (a few columns): a maximum
    per column pair, which numpy does many times faster than ``max(axis=1)`` there."""
    maxima: Samples = rows[:, 0].copy()
    for column in range(1, rows.shape[1]):
        np.maximum(maxima, rows[:, column], out=maxima)
    return maxima
