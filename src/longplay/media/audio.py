"""Probing and streaming decoding of audio, and of the audio track of video, with PyAV."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import av.container
import numpy as np
import numpy.typing as npt

from longplay.framework.errors import InvalidInput


@dataclass
class UndecodableAudio(InvalidInput):
    """An input with no audio that FFmpeg can decode: text, an image, silent video, ..."""

    code: str = "undecodable_audio"


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` found out about a file's first audio stream."""

    duration: float
    """Seconds, from the file's header: an estimate for some formats, 0.0 where the
    header does not say."""
    sample_rate: int
    channels: int
    codec: str
    container: str


@dataclass(frozen=True)
class AudioBlock:
    """Decoded audio: ``samples`` is float32 shaped ``(frames, channels)``."""

    samples: npt.NDArray[np.float32]
    sample_rate: int
    position: float
    """Seconds of the input decoded once this block is done, for progress."""

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


_NO_CLIPPING_DOWNMIX = {"rematrix_maxval": "1.0"}
"""Scale FFmpeg's downmix so it cannot clip, as FFmpeg does itself for integer output:
stereo to mono averages the channels instead of adding them 3 dB down, which would take
a full-scale mix to +3 dBFS. Mono to stereo stays 3 dB down on each side."""


def probe(path: Path, *, name: str | None = None) -> AudioInfo:
    """Describe the first audio stream of ``path`` after decoding its first frame.

    Raises :class:`UndecodableAudio` (naming the file as ``name``, by default the
    file's own name) when FFmpeg cannot open the file, finds no audio stream in it,
    or fails on its first audio frame.
    """
    label = name or path.name
    with _open(path, label) as container:
        stream = _audio_stream(container, label)
        first = next(_frames(container, stream, label), None)
        if first is None:
            raise UndecodableAudio(f"{label} has an audio stream but no audio in it")
        return AudioInfo(
            duration=_duration(container, stream),
            sample_rate=first.sample_rate,
            channels=first.layout.nb_channels,
            codec=stream.codec_context.codec.canonical_name,
            container=container.format.name,
        )


def decode(
    path: Path,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    block_seconds: float = 1.0,
    name: str | None = None,
) -> Generator[AudioBlock, None, None]:
    """Decode the first audio stream of ``path`` in blocks of about ``block_seconds``.

    Audio is converted to float32 and resampled to ``sample_rate`` and ``channels``
    (``None`` keeps the input's); only one block is in memory at a time. Raises
    :class:`UndecodableAudio` like :func:`probe`, also for a stream that turns out
    to be corrupt part way through. Close the iterator (or exhaust it) to close
    the file.
    """
    label = name or path.name
    layout = {1: "mono", 2: "stereo"}.get(channels) if channels else None
    if channels and layout is None:
        raise ValueError(f"can only decode to 1 or 2 channels, not {channels}")
    resampler = av.AudioResampler(
        format="flt", layout=layout, rate=sample_rate, options=_NO_CLIPPING_DOWNMIX
    )
    with _open(path, label) as container:
        stream = _audio_stream(container, label)
        pending: list[npt.NDArray[np.float32]] = []
        pending_frames = 0
        position = 0.0
        rate = 0
        for frame in _frames(container, stream, label):
            position += frame.samples / frame.sample_rate
            for out in resampler.resample(frame):
                rate = out.sample_rate
                pending.append(_to_array(out))
                pending_frames += out.samples
            if pending and pending_frames >= block_seconds * rate:
                yield AudioBlock(np.concatenate(pending), rate, position)
                pending, pending_frames = [], 0
        pending.extend(_to_array(out) for out in resampler.resample(None))
        if pending:
            yield AudioBlock(np.concatenate(pending), rate, position)


def _to_array(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    """A packed float frame as ``(frames, channels)``."""
    samples = cast(npt.NDArray[np.float32], frame.to_ndarray())
    return samples.reshape(frame.samples, frame.layout.nb_channels)


def _open(path: Path, label: str) -> av.container.InputContainer:
    with _decoder_errors(label):
        return av.open(str(path), "r")


def _audio_stream(container: av.container.InputContainer, label: str) -> av.AudioStream:
    if not container.streams.audio:
        found = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise UndecodableAudio(
            f"{label} has no audio stream: PyAV reads it as {container.format.name} "
            f"(streams: {found})"
        )
    return container.streams.audio[0]


def _frames(
    container: av.container.InputContainer, stream: av.AudioStream, label: str
) -> Iterator[av.AudioFrame]:
    """The decoded frames of ``stream``, with FFmpeg's data errors as UndecodableAudio."""
    frames = container.decode(stream)
    while True:
        with _decoder_errors(label):
            frame = next(frames, None)
        if frame is None:
            return
        yield frame


@contextmanager
def _decoder_errors(label: str) -> Iterator[None]:
    """Turn FFmpeg's complaints about the data into UndecodableAudio.

    A missing or unreadable file is not the input's fault, so OS errors go up as
    they are.
    """
    try:
        yield
    except av.FFmpegError as error:
        if isinstance(error, OSError):
            raise
        reason = error.strerror or str(error)
        raise UndecodableAudio(
            f"{label} is not an audio or video file PyAV can decode: {reason}"
        ) from error


def _duration(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0
