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

from longplay.framework.callbacks import Note, no_note
from longplay.framework.errors import InvalidInput
from longplay.framework.kinds import InputFile

CUT_SLACK_S = 1.0
CUT_SLACK = 0.03
"""How far decoding may fall short of the length a file's header states, in seconds and
as a share of that length, before the file counts as cut short: room for headers that
estimate the length from the bit rate."""
OGG_LONGEST_PAGE = 27 + 255 + 255 * 255


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


def check_decodable(source: InputFile) -> None:
    """Raise :class:`UndecodableAudio` unless ``source`` holds audio that decodes, as
    :func:`probe` finds out from its first frame: the submit-time look (a
    :data:`~longplay.framework.UploadCheck`) of the kinds that read audio."""
    probe(source.path, name=source.name)


def decode(
    path: Path,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    block_seconds: float = 1.0,
    name: str | None = None,
    note: Note = no_note,
) -> Generator[AudioBlock, None, None]:
    """Decode the first audio stream of ``path`` in blocks of about ``block_seconds``.

    Audio is converted to float32 and resampled to ``sample_rate`` and ``channels``
    (``None`` keeps the input's); only one block is in memory at a time. Raises
    :class:`UndecodableAudio` like :func:`probe`, also for a stream that turns out
    to be corrupt part way through. Close the iterator (or exhaust it) to close
    the file.

    A file that turns out to be cut short (it stops well before the length its header
    states, or see :func:`_cut_signs`) decodes as far as it goes, and ``note`` hears
    of it once the last block is out, with ``code`` ``truncated_input``, ``seconds``
    decoded and ``expected_seconds`` (the header's, where that is what showed it).
    """
    label = name or path.name
    layout = {1: "mono", 2: "stereo"}.get(channels) if channels else None
    if channels and layout is None:
        raise ValueError(f"can only decode to 1 or 2 channels, not {channels}")
    floats = FloatFrames(sample_rate, layout)
    with _open(path, label) as container:
        stream = _audio_stream(container, label)
        pending: list[npt.NDArray[np.float32]] = []
        pending_frames = 0
        position = 0.0
        damage = _Damage()
        for frame in _frames(container, stream, label, damage):
            position += frame.samples / frame.sample_rate
            for samples in floats.convert(frame):
                pending.append(samples)
                pending_frames += len(samples)
            if pending and pending_frames >= block_seconds * floats.rate:
                yield AudioBlock(np.concatenate(pending), floats.rate, position)
                pending, pending_frames = [], 0
        pending.extend(floats.flush())
        if pending:
            yield AudioBlock(np.concatenate(pending), floats.rate, position)
        expected = _duration(container, stream)
        short = expected - position > max(CUT_SLACK_S, CUT_SLACK * expected)
        if short or _cut_signs(path, container.format.name, damage):
            stated = f" of the {expected:.1f} s its header states" if short else ""
            note(
                f"{label} looks cut short: its audio stops after {position:.1f} s{stated}; "
                "the job used what there is",
                code="truncated_input",
                seconds=round(position, 3),
                expected_seconds=round(expected, 3) if short else None,
            )


class FloatFrames:
    """Decoded frames as float32 ``(frames, channels)`` arrays at ``sample_rate`` and in
    ``layout`` (``None`` keeps the first frame's).

    A frame that is already mono float audio at that rate, as MP3 and Opus decoders
    give speech, is read straight from its plane; the rest go through FFmpeg's
    resampler, whose call per frame costs more than decoding the frame (an MP3 frame at
    22 kHz holds 26 ms). Once one frame has needed it, the rest follow it in order.
    """

    def __init__(self, sample_rate: int | None = None, layout: str | None = None) -> None:
        self.rate = sample_rate or 0
        """The rate of every array, once the first frame is in."""
        self._layout = layout
        self._started = False
        self._resampler: av.AudioResampler | None = None

    def convert(self, frame: av.AudioFrame) -> list[npt.NDArray[np.float32]]:
        """The next frame's samples (none, one array or more)."""
        if not self._started:
            self._started = True
            self.rate = self.rate or frame.sample_rate
            if self._layout is None and frame.layout.nb_channels == 1:
                self._layout = "mono"
        if self._resampler is None and self._is_mono_float(frame):
            plane = memoryview(frame.planes[0])
            return [np.frombuffer(plane, np.float32, count=frame.samples)[:, None]]
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="flt", layout=self._layout, rate=self.rate, options=_NO_CLIPPING_DOWNMIX
            )
        return [_to_array(out) for out in self._resampler.resample(frame)]

    def flush(self) -> list[npt.NDArray[np.float32]]:
        """What the resampler still holds, after the last frame."""
        if self._resampler is None:
            return []
        return [_to_array(out) for out in self._resampler.resample(None)]

    def _is_mono_float(self, frame: av.AudioFrame) -> bool:
        return (
            self._layout == "mono"
            and frame.sample_rate == self.rate
            and frame.layout.nb_channels == 1
            and frame.format.name in ("flt", "fltp")
        )


def _to_array(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    """A packed float frame as ``(frames, channels)``."""
    samples = cast(npt.NDArray[np.float32], frame.to_ndarray())
    return samples.reshape(frame.samples, frame.layout.nb_channels)


def _open(path: Path, label: str) -> av.container.InputContainer:
    if path.stat().st_size == 0:  # else FFmpeg's "Invalid data found", which hides why
        raise UndecodableAudio(f"{label} is empty: 0 bytes")
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


@dataclass
class _Damage:
    """What reading a stream to its end found wrong with it."""

    corrupt_packets: int = 0
    """Packets the demuxer marked corrupt, as it does one it could not read in full."""
    last_packet_failed: bool = False
    """The decoder refused the last packet after decoding others: a frame cut in two."""


def _frames(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    label: str,
    damage: _Damage | None = None,
) -> Iterator[av.AudioFrame]:
    """The decoded frames of ``stream``, with FFmpeg's data errors as UndecodableAudio.

    A packet the decoder refuses fails the file, unless audio came before it and no
    data after it: then the file was cut in the middle of a frame, which ``damage``
    records, and decoding ends there.
    """
    damage = damage or _Damage()
    packets = container.demux(stream)
    refused: UndecodableAudio | None = None
    decoded = False
    while True:
        with _decoder_errors(label):
            packet = next(packets, None)
        if packet is None:
            break
        if refused is not None and packet.size:
            raise refused  # more data after the damage: corrupt, not cut
        damage.corrupt_packets += bool(packet.is_corrupt)
        try:
            with _decoder_errors(label):
                frames = packet.decode()
        except UndecodableAudio as error:
            if not decoded:
                raise
            refused = refused or error
            continue
        for frame in frames:
            decoded = True
            yield frame
    damage.last_packet_failed = refused is not None


def _cut_signs(path: Path, container_format: str, damage: _Damage) -> bool:
    """Whether a file decoded to its end shows signs of having been cut, besides
    stopping short of its header's length (MP3, FLAC): the demuxer marked a packet
    corrupt (a short read: WAV), the last packet did not decode (FLAC cut in a frame),
    or an Ogg file lacks its closing page (its length is read from the last page there
    is, so only that shows it)."""
    if damage.corrupt_packets or damage.last_packet_failed:
        return True
    return "ogg" in container_format.split(",") and not _ogg_closed(path)


def _ogg_closed(path: Path) -> bool:
    """Whether an Ogg file ends with a whole page that has the end-of-stream flag, as
    every complete Ogg file does; a cut one ends part way through a page, or after a
    page that is not the last."""
    size = path.stat().st_size
    with path.open("rb") as file:
        file.seek(max(0, size - OGG_LONGEST_PAGE))
        tail = file.read()
    start = tail.rfind(b"OggS")
    while start >= 0:
        page = tail[start:]
        if len(page) >= 27 and len(page) >= 27 + page[26]:
            segments = page[27 : 27 + page[26]]
            if 27 + len(segments) + sum(segments) == len(page):
                return bool(page[5] & 0x04)
        start = tail.rfind(b"OggS", 0, start)
    return False


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
