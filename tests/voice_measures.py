"""How high a voice sounds, measured over its loud 40 ms frames.

Both measures take a median over frames, not one figure over the whole recording: Piper
draws fresh noise on every call, and a few noisy fricatives ("s", "ch") move a
whole-recording spectral centroid by up to a fifth from one call to the next, enough to
blur a voice's real brightness.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

FRAME_SECONDS = 0.04
HOP_SECONDS = 0.01
LOUD_RMS = 0.05


def loud_frames(samples: np.ndarray, rate: int) -> Iterator[np.ndarray]:
    """The Hann-windowed frames whose RMS is at least :data:`LOUD_RMS`."""
    frame, hop = int(FRAME_SECONDS * rate), int(HOP_SECONDS * rate)
    window = np.hanning(frame)
    for start in range(0, len(samples) - frame, hop):
        chunk = samples[start : start + frame] * window
        if np.sqrt(np.mean(chunk**2)) >= LOUD_RMS:
            yield chunk


def median_pitch(samples: np.ndarray, rate: int) -> float:
    """Median F0 of the loud, clearly periodic frames, by autocorrelation (60 to 400 Hz)."""
    low, high = rate // 400, rate // 60
    pitches = []
    for chunk in loud_frames(samples, rate):
        corr = np.correlate(chunk, chunk, "full")[len(chunk) - 1 :]
        lag = low + int(np.argmax(corr[low:high]))
        if corr[lag] > 0.4 * corr[0]:
            pitches.append(rate / lag)
    assert len(pitches) > 20, "too few voiced frames to measure pitch"
    return float(np.median(pitches))


def spectral_centroid(samples: np.ndarray, rate: int) -> float:
    """Median over the loud frames of each frame's magnitude-weighted mean frequency."""
    centroids = []
    for chunk in loud_frames(samples, rate):
        magnitude = np.abs(np.fft.rfft(chunk))
        frequencies = np.fft.rfftfreq(len(chunk), 1 / rate)
        centroids.append((magnitude * frequencies).sum() / magnitude.sum())
    assert len(centroids) > 20, "too few loud frames to measure brightness"
    return float(np.median(centroids))
