"""Streaming encoding of float audio to wav, mp3 or Ogg Opus, with a gain and a peak guard."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

import av
import av.container
import numpy as np

from longplay.media.audio import decode
from longplay.media.limiter import GainStage
from longplay.media.loudness import Samples, gain_to_db

OutputFormatName = Literal["wav", "mp3", "ogg"]


@dataclass(frozen=True)
class OutputFormat:
    """How longplay writes one output format."""

    name: OutputFormatName
    codec: str
    container: str
    media_type: str
    sample_rates: tuple[int, ...] | None
    """The rates the codec takes, best first; ``None``: any."""
    bitrates: tuple[int, int] | None
    """The range of bitrates in kbit/s; ``None``: not a lossy codec."""
    default_bitrate: int | None = None
    """kbit/s when none is asked for; ``None`` for a lossless codec."""
    scales_level: bool = False
    """The encoder turns the level down by a fixed amount: see :func:`codec_gain_db`."""
    speech_options: tuple[tuple[str, str], ...] = ()
    """Codec options for speech (:class:`AudioEncoder`'s ``speech``)."""

    def rate_for(self, input_rate: int) -> int:
        """The output rate for an input at ``input_rate`` when none is asked for:
        the input's own, or the lowest supported rate above it, or the highest."""
        if self.sample_rates is None or input_rate in self.sample_rates:
            return input_rate
        higher = [rate for rate in self.sample_rates if rate > input_rate]
        return min(higher) if higher else max(self.sample_rates)


OUTPUT_FORMATS: dict[OutputFormatName, OutputFormat] = {
    "wav": OutputFormat("wav", "pcm_s16le", "wav", "audio/wav", None, None),
    "mp3": OutputFormat(
        "mp3",
        "libmp3lame",
        "mp3",
        "audio/mpeg",
        (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
        (8, 320),
        192,
        scales_level=True,
        # LAME's quicker psychoacoustic model: a third less CPU, and on speech the same
        # waveform SNR at 192 kbit/s (56 dB against 55) and a better one at 96 (43
        # against 39), measured on Piper's voice.
        speech_options=(("compression_level", "7"),),
    ),
    "ogg": OutputFormat("ogg", "libopus", "ogg", "audio/ogg", (48000,), (6, 510), 96),
}
"""Opus is always written at 48 kHz: it codes at 48 kHz inside whatever it is given."""

_LAYOUTS = {1: "mono", 2: "stereo"}


@functools.cache
def codec_gain_db(
    format: OutputFormatName, sample_rate: int, channels: int, bitrate: int | None = None
) -> float:
    """The gain, in dB, that encoding with these settings applies to any audio.

    LAME scales its input down, whatever the audio, to leave room for the peaks
    that coding noise adds: by 0.95 (-0.45 dB) at 160 kbit/s and below, 0.97 at 192
    and 0.98 at 224 (at 32 kHz and up). This measures it once per
    setting, by encoding a second of a 997 Hz tone and comparing the levels, so it
    follows the LAME at hand. Other codecs keep the level (Opus below 64 kbit/s
    loses highs, which depends on the audio and is not a gain): 0.0 for them.
    """
    spec = OUTPUT_FORMATS[format]
    if not spec.scales_level:
        return 0.0
    frames = np.arange(sample_rate) / sample_rate
    tone = (0.25 * np.sin(2 * np.pi * 997.0 * frames)).astype(np.float32)
    samples = np.repeat(tone[:, None], channels, axis=1)
    with tempfile.TemporaryDirectory(prefix="longplay-") as folder:
        path = Path(folder) / f"tone.{spec.name}"
        with AudioEncoder(
            path, format=format, sample_rate=sample_rate, channels=channels, bitrate=bitrate
        ) as encoder:
            encoder.write(samples)
        decoded = np.concatenate([block.samples for block in decode(path)])
    middle = slice(sample_rate // 4, 3 * sample_rate // 4)  # clear of codec delay and padding
    rms = float(np.sqrt(np.mean(np.square(decoded[middle], dtype=np.float64))))
    return round(gain_to_db(rms / (0.25 / np.sqrt(2))), 2)


class AudioEncoder:
    """Encodes ``(frames, channels)`` float blocks into a file, block by block.

    Each block goes through a :class:`~longplay.media.limiter.GainStage`: multiplied
    by ``gain_db``, limited to a true peak under ``ceiling_db`` if one is given, and
    clipped to the ceiling (or to full scale) so nothing wraps around in the codec.
    Blocks come at ``sample_rate`` unless ``input_rate`` says otherwise; then the
    codec's own resampler (FFmpeg's, in PyAV) brings them to ``sample_rate``.
    ``speech`` tells a codec that has quicker settings for speech to use them.
    The file is written under a ``.part`` name and takes its
    real name only when :meth:`close` succeeds; used as a context manager, an
    exception removes it, so a failed or cancelled job never leaves half a file.
    """

    def __init__(
        self,
        path: Path,
        *,
        format: OutputFormatName,
        sample_rate: int,
        channels: int,
        bitrate: int | None = None,
        gain_db: float = 0.0,
        ceiling_db: float | None = None,
        input_rate: int | None = None,
        speech: bool = False,
    ) -> None:
        spec = OUTPUT_FORMATS[format]
        if spec.sample_rates is not None and sample_rate not in spec.sample_rates:
            raise ValueError(f"{format} cannot be written at {sample_rate} Hz")
        if channels not in _LAYOUTS:
            raise ValueError(f"can only write 1 or 2 channels, not {channels}")
        self.path = path
        self._partial = path.with_name(path.name + ".part")
        self._rate = input_rate or sample_rate
        self._layout = _LAYOUTS[channels]
        self._stage = GainStage(self._rate, gain_db=gain_db, ceiling_db=ceiling_db)
        self._frames = 0
        self._container: av.container.OutputContainer = av.open(
            str(self._partial), "w", format=spec.container
        )
        self._stream = cast(av.AudioStream, self._container.add_stream(spec.codec, sample_rate))
        self._stream.layout = self._layout
        if spec.default_bitrate is not None:
            self._stream.bit_rate = 1000 * (bitrate or spec.default_bitrate)
        if speech and spec.speech_options:
            self._stream.codec_context.options = dict(spec.speech_options)

    @property
    def limited_db(self) -> float:
        """The deepest gain reduction the limiter applied so far, in dB (0.0: none)."""
        return self._stage.limited_db

    def write(self, samples: Samples) -> None:
        """Encode the next block."""
        self._encode(self._stage.process(samples))

    def close(self) -> None:
        """Flush the limiter and the codec, finish the file and give it its name."""
        self._encode(self._stage.flush())
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._partial.replace(self.path)

    def abort(self) -> None:
        """Stop and remove the unfinished file."""
        self._container.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> AudioEncoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _encode(self, samples: Samples) -> None:
        if not len(samples):
            return
        packed = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=self._layout)
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._frames
        self._frames += len(samples)
        self._container.mux(self._stream.encode(frame))
