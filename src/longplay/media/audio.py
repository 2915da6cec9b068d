"""Probing and streaming decoding of audio, and of the audio track of video, with PyAV."""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.container
import numpy as np
import numpy.typing as npt

from longplay.framework.callbacks import Note, no_note
from longplay.framework.errors import InvalidInput
from longplay.framework.kinds import InputFile

log = logging.getLogger(__name__)

CUT_SLACK_S = 1.0
CUT_SLACK = 0.03
"""How far decoding may fall short of the length a file's header states, in seconds and
as a share of that length, before the file counts as cut short: room for headers that
estimate the length from the bit rate."""
OGG_LONGEST_PAGE = 27 + 255 + 255 * 255
LONGEST_GAP_S = 600.0
"""The longest gap in an audio stream's timestamps that :func:`decode` fills with
silence; a longer jump is taken for a clock that was reset or broken (an MPEG-TS
discontinuity), not for a pause, and the audio goes on straight after what came before."""


@dataclass
class UndecodableAudio(InvalidInput):
    """An input with no audio that FFmpeg can decode: text, an image, silent video, ..."""

    code: str = "undecodable_audio"


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` found out about a file's first audio stream."""

    duration: float
    """Seconds, from the file's header (an estimate for some formats) or, where the
    header does not say, from the timestamp of the stream's last packet."""
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

    Where the header states no length (WebM or Matroska written as a stream, as a
    browser's MediaRecorder does), the audio stream's packets are read to the end,
    without decoding them, for the last one's timestamp: a pass over the whole file,
    about a second for an hour of Opus, where decoding it takes half a minute or more
    (see :func:`_length_from_packets`).

    Raises :class:`UndecodableAudio` (naming the file as ``name``, by default the
    file's own name) when FFmpeg cannot open the file, finds no audio stream in it,
    or fails on its first audio frame.
    """
    label = name or path.name
    with _open(path, label) as container:
        stream, first = _first_frame(container, label)
        return AudioInfo(
            duration=_duration(container, stream) or _length_from_packets(path, label),
            sample_rate=first.sample_rate,
            channels=first.layout.nb_channels,
            codec=stream.codec_context.codec.canonical_name,
            container=container.format.name,
        )


def check_decodable(source: InputFile) -> None:
    """Raise :class:`UndecodableAudio` unless ``source`` holds audio that decodes, as
    :func:`probe` finds out from its first frame: the submit-time look (a
    :data:`~longplay.framework.UploadCheck`) of the kinds that read audio. It skips
    probe's pass over a file whose header states no length, which a submit need not
    wait for."""
    with _open(source.path, source.name) as container:
        _first_frame(container, source.name)


def decode(
    path: Path,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    block_seconds: float = 1.0,
    name: str | None = None,
    note: Note = no_note,
    from_container_start: bool = False,
) -> Generator[AudioBlock, None, None]:
    """Decode the first audio stream of ``path`` in blocks of about ``block_seconds``.

    Audio is converted to float32 and resampled to ``sample_rate`` and ``channels``
    (``None`` keeps the input's); only one block is in memory at a time. Raises
    :class:`UndecodableAudio` like :func:`probe`, also for a stream that turns out
    to be mostly broken once read to its end; a packet the decoder refuses part way
    through (an ID3 tag where MP3s were put end to end) is skipped, by the rule that
    :func:`_frames` states. Close the iterator (or exhaust it) to close the file.

    By default the samples follow one another as decoded, from the audio's first one.
    ``from_container_start`` puts them on the file's clock instead, as a transcript's
    times need: silence for the time between the file's start and the audio's (a
    video whose sound starts 2 s in) and for a gap in the audio's timestamps longer
    than a frame (up to :data:`LONGEST_GAP_S`). Playback would keep that time too, but
    a converted file is audio alone, so by default it starts with the sound.

    A file that turns out to be cut short (it stops well before the length its header
    states, where no packet was skipped, or see :func:`_cut_signs`) decodes as far as
    it goes, and ``note`` hears of it once the last block is out, with ``code``
    ``truncated_input``, ``seconds`` decoded and ``expected_seconds`` (the header's,
    where that is what showed it).
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
        clock = _Clock(container, stream) if from_container_start else None
        for frame in _frames(container, stream, label, damage):
            gap = clock.gap_before(frame) if clock else 0.0
            position += frame.samples / frame.sample_rate
            with _decoder_errors(label):
                arrays = floats.silence(gap, block_seconds, before=frame) if gap else []
                arrays.extend(floats.convert(frame))
            for samples in arrays:
                pending.append(samples)
                pending_frames += len(samples)
                if pending_frames >= block_seconds * floats.rate:
                    yield AudioBlock(np.concatenate(pending), floats.rate, position)
                    pending, pending_frames = [], 0
        with _decoder_errors(label):
            pending.extend(floats.flush())
        if pending:
            yield AudioBlock(np.concatenate(pending), floats.rate, position)
        expected = _duration(container, stream)
        # Skipped packets (a tag's cover art) are bytes that FFmpeg's length estimate
        # from the bit rate counts as audio, as it does for MP3s put end to end.
        short = not damage.refused_packets and (
            expected - position > max(CUT_SLACK_S, CUT_SLACK * expected)
        )
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
    22 kHz holds 26 ms). Once one frame has needed it, the rest follow it in order,
    until a frame comes in another rate, sample format or channel layout (two MP3s put
    end to end, a broadcast switching from stereo to 5.1): FFmpeg's resampler takes one
    kind of input only, so it is flushed and the next frame starts another.
    """

    def __init__(self, sample_rate: int | None = None, layout: str | None = None) -> None:
        self.rate = sample_rate or 0
        """The rate of every array, once the first frame is in."""
        self._layout: str | av.AudioLayout | None = layout
        self._started = False
        self._resampler: av.AudioResampler | None = None
        self._resampling: tuple[str, str, int] = ("", "", 0)
        """The format, layout and rate of the frames the resampler takes."""

    @property
    def channels(self) -> int:
        """The channels of every array, once the first frame is in."""
        return av.AudioLayout(self._layout or "mono").nb_channels

    def convert(self, frame: av.AudioFrame) -> list[npt.NDArray[np.float32]]:
        """The next frame's samples (none, one array or more)."""
        self._start(frame)
        arrays = []
        if self._resampler is not None and _kind(frame) != self._resampling:
            arrays = self.flush()
        if self._resampler is None and self._is_mono_float(frame):
            plane = memoryview(frame.planes[0])
            arrays.append(np.frombuffer(plane, np.float32, count=frame.samples)[:, None])
            return arrays
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="flt", layout=self._layout, rate=self.rate, options=_NO_CLIPPING_DOWNMIX
            )
            self._resampling = _kind(frame)
        arrays.extend(_to_array(out) for out in self._resampler.resample(frame))
        return arrays

    def silence(
        self, seconds: float, piece_seconds: float, *, before: av.AudioFrame
    ) -> list[npt.NDArray[np.float32]]:
        """What the resampler still holds, then ``seconds`` of silence to come before
        the frame ``before``, in pieces of at most ``piece_seconds`` that are views of
        one row of zeros: minutes of it take no memory until they are copied."""
        self._start(before)
        arrays = self.flush()
        zeros = np.zeros((1, self.channels), np.float32)
        left, piece = round(seconds * self.rate), max(1, round(piece_seconds * self.rate))
        for start in range(0, left, piece):
            arrays.append(np.broadcast_to(zeros, (min(piece, left - start), self.channels)))
        return arrays

    def flush(self) -> list[npt.NDArray[np.float32]]:
        """What the resampler still holds, after the last frame (or before a frame it
        cannot take); the next frame that needs one starts another."""
        if self._resampler is None:
            return []
        resampler, self._resampler = self._resampler, None
        return [_to_array(out) for out in resampler.resample(None)]

    def _start(self, frame: av.AudioFrame) -> None:
        """Settle the rate and layout of the output on the first frame."""
        if self._started:
            return
        self._started = True
        self.rate = self.rate or frame.sample_rate
        if self._layout is None:
            self._layout = "mono" if frame.layout.nb_channels == 1 else frame.layout

    def _is_mono_float(self, frame: av.AudioFrame) -> bool:
        return (
            self._layout == "mono"
            and frame.sample_rate == self.rate
            and frame.layout.nb_channels == 1
            and frame.format.name in ("flt", "fltp")
        )


def _kind(frame: av.AudioFrame) -> tuple[str, str, int]:
    """What FFmpeg's resampler needs to be the same in every frame it takes."""
    return frame.format.name, frame.layout.name, frame.sample_rate


class _Clock:
    """Where each frame of an audio stream falls on its file's clock, in seconds from
    the earliest start of any stream in the file, to find what :func:`decode` should
    fill with silence."""

    def __init__(self, container: av.container.InputContainer, stream: av.AudioStream) -> None:
        self._time_base = stream.time_base or Fraction(1, stream.sample_rate or 1)
        start = container.start_time
        self._origin = start / av.time_base if start is not None else None
        self._next = 0.0
        """Where the last frame ended."""

    def gap_before(self, frame: av.AudioFrame) -> float:
        """Seconds of silence to put before ``frame``: none for a frame without a
        timestamp, one that comes sooner than the last ended or within a frame of it."""
        if frame.pts is None:
            return 0.0
        at = float(frame.pts * self._time_base)
        if self._origin is None:
            self._origin = at
        seconds = frame.samples / frame.sample_rate
        gap = at - self._origin - self._next
        self._next = at - self._origin + seconds
        return gap if seconds < gap <= LONGEST_GAP_S else 0.0


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


def _first_frame(
    container: av.container.InputContainer, label: str
) -> tuple[av.AudioStream, av.AudioFrame]:
    """The first audio stream and its first decoded frame."""
    stream = _audio_stream(container, label)
    first = next(_frames(container, stream, label), None)
    if first is None:
        raise UndecodableAudio(f"{label} has an audio stream but no audio in it")
    return stream, first


@dataclass
class _Damage:
    """What reading a stream to its end found wrong with it."""

    corrupt_packets: int = 0
    """Packets the demuxer marked corrupt, as it does one it could not read in full."""
    decoded_packets: int = 0
    """Packets the decoder took, besides the empty one that drains it at the end."""
    refused_packets: int = 0
    """Packets the decoder refused after audio had decoded, and that were skipped."""
    last_packet_failed: bool = False
    """The decoder refused the last packet after decoding others: a frame cut in two,
    or junk after the audio."""


def _frames(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    label: str,
    damage: _Damage | None = None,
) -> Iterator[av.AudioFrame]:
    """The decoded frames of ``stream``, with FFmpeg's data errors as UndecodableAudio.

    A packet the decoder refuses after audio has decoded is skipped, and decoding goes
    on, as the ``ffmpeg`` tool does: an ID3 tag in the middle of the stream (tagged
    MP3s put end to end with ``cat``), a damaged frame, junk after the end. ``damage``
    counts the skipped packets and records whether the last one was refused (the file
    was cut in the middle of a frame, or ends in junk).

    The file fails as UndecodableAudio where

    - the decoder refuses a packet before any audio has decoded: the file is not
      audio, or its audio is broken from the start;
    - at the end of the stream, the decoder has refused more packets than it took: the
      file is more broken than audio, as random bytes are where a few of them pass for
      a frame. The blocks decoded before are out by then.

    It is a share of all the packets rather than a limit on refusals in a row, as a
    tag's cover art is a long run of them: FFmpeg's parser cuts what it cannot read
    into a packet per few kB, so 200 kB of it are as many packets as 1 s of audio.
    """
    damage = damage or _Damage()
    packets = container.demux(stream)
    seconds = 0.0
    while True:
        with _decoder_errors(label):
            packet = next(packets, None)
        if packet is None:
            break
        damage.corrupt_packets += bool(packet.is_corrupt)
        try:
            with _decoder_errors(label):
                frames = packet.decode()
        except UndecodableAudio as error:
            if not seconds:  # no audio yet
                raise
            damage.refused_packets += 1
            damage.last_packet_failed = True
            log.debug("%s: skipped the packet at byte %s: %s", label, packet.pos, error.__cause__)
            continue
        if packet.size:  # not the empty packet that drains the decoder at the end
            damage.decoded_packets += 1
            damage.last_packet_failed = False
        for frame in frames:
            seconds += frame.samples / frame.sample_rate
            yield frame
    if damage.refused_packets > damage.decoded_packets:
        total = damage.refused_packets + damage.decoded_packets
        raise UndecodableAudio(
            f"{label} is mostly not audio PyAV can decode: the decoder refused "
            f"{damage.refused_packets} of the {total} packets of its audio stream, after "
            f"{seconds:.1f} s of audio; check that it is the file you meant, or export it "
            "again"
        )
    if damage.refused_packets:
        log.info(
            "%s: skipped %d of %d audio packets the decoder refused",
            label,
            damage.refused_packets,
            damage.refused_packets + damage.decoded_packets,
        )


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
    except ValueError as error:  # PyAV's own checks on what FFmpeg gave it
        raise UndecodableAudio(f"{label} has audio PyAV cannot convert: {error}") from error


def _duration(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _length_from_packets(path: Path, label: str) -> float:
    """Seconds from the first audio packet's timestamp to the end of the last, for a
    file whose header states no length; 0.0 where the packets have no timestamps.

    Only the demuxer runs, no decoder: an hour of Opus (180,000 packets) reads in
    about a second.
    """
    with _open(path, label) as container:
        stream = _audio_stream(container, label)
        first = end = None
        with _decoder_errors(label):
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                first = packet.pts if first is None else first
                end = max(end or first, packet.pts + (packet.duration or 0))
        if first is None or end is None or stream.time_base is None:
            return 0.0
        return float((end - first) * stream.time_base)
