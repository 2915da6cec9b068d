"""The little audio arithmetic the engines need: WAV bytes in and out, resampling."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import numpy.typing as npt

from longplay.framework.errors import PermanentError

Samples = npt.NDArray[np.float32]


def to_wav(samples: Samples, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV bytes from float samples in [-1, 1]."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def from_wav(data: bytes) -> tuple[Samples, int]:
    """Float samples and their rate from the 16-bit PCM mono WAV bytes :func:`to_wav`
    writes, read directly: much quicker than through FFmpeg. Raises ``wave.Error`` for
    another kind of file and ``EOFError`` for one cut short."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise wave.Error("not a 16-bit mono WAV")
        frames = wav.getnframes()
        pcm = wav.readframes(frames)
        if len(pcm) != 2 * frames:
            raise EOFError(f"the WAV holds {len(pcm) // 2} of its {frames} frames")
        return from_pcm16(pcm), wav.getframerate()


def from_pcm16(data: bytes) -> Samples:
    """Float samples from raw little-endian 16-bit mono PCM."""
    usable = len(data) - len(data) % 2
    return (np.frombuffer(data[:usable], dtype="<i2") / 32768.0).astype(np.float32)


def decode_audio(data: bytes, *, source: str = "the engine") -> tuple[Samples, int]:
    """Mono float samples and their rate from an audio file in memory (WAV, MP3, FLAC...);
    ``source`` names where it came from in the error when it is not audio."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.audio[0]
            rate = stream.rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts = [
                out.to_ndarray().reshape(-1)
                for frame in container.decode(stream)
                for out in resampler.resample(frame)
            ]
            parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except (av.error.FFmpegError, IndexError) as exc:
        found = f"{len(data):,} bytes" if data else "nothing"
        raise PermanentError(
            f"{source} answered with {found} that could not be decoded as audio",
            code="engine_bad_response",
        ) from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return samples.astype(np.float32), rate


def resample(samples: Samples, length: int) -> Samples:
    """``samples`` stretched or squeezed to ``length`` samples, band-limited (FFT).

    Squeezing drops the frequencies that would fold back above the new Nyquist limit
    instead of aliasing them, which a plain linear interpolation would not.
    """
    if length == len(samples) or len(samples) == 0:
        return samples.astype(np.float32)
    spectrum = np.fft.rfft(samples)
    bins = length // 2 + 1
    if bins <= len(spectrum):
        spectrum = spectrum[:bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - len(spectrum), spectrum.dtype)])
    return (np.fft.irfft(spectrum, n=length) * (length / len(samples))).astype(np.float32)
