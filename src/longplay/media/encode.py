"""Streaming encoding of float audio to wav, mp3 or Ogg Opus, with a gain and a peak guard."""

from __future__ import annotations

import functools
import logging
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

import av
import av.container
import numpy as np

from longplay.media.audio import FloatFrames, decode
from longplay.media.limiter import GainStage
from longplay.media.loudness import Samples, gain_to_db

log = logging.getLogger(__name__)

OutputFormatName = Literal["wav", "mp3", "ogg"]


@dataclass(frozen=True)
class OutputFormat:
    """How longplay writes one output format."""

    name: OutputFormatName
    codec: str
    decoder: str
    """FFmpeg's decoder of what ``codec`` writes, for :class:`Playback`."""
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
    "wav": OutputFormat("wav", "pcm_s16le", "pcm_s16le", "wav", "audio/wav", None, None),
    "mp3": OutputFormat(
        "mp3",
        "libmp3lame",
        "mp3float",
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
    "ogg": OutputFormat("ogg", "libopus", "opus", "ogg", "audio/ogg", (48000,), (6, 510), 96),
}
"""Opus is always written at 48 kHz: it codes at 48 kHz inside whatever it is given."""

_LAYOUTS = {1: "mono", 2: "stereo"}
QUEUED_BLOCKS = 4
"""How many blocks :class:`AudioEncoder` holds for its codec thread before ``write`` waits."""
MP3_DELAY = 1105
"""Frames an MP3 from LAME is late by when its packets are decoded one after another:
the encoder's 576 and the decoder's 529 (the file's LAME tag tells players to skip them)."""


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
    ``playback`` decodes what is written as it is written: see :class:`Playback`.

    The codec runs in a thread of its own, a few blocks behind :meth:`write`: FFmpeg
    lets go of the GIL while it encodes, so the caller's next block (decoding,
    mastering, reading a spool) is made on another core meanwhile. An error of the
    codec comes out of the next :meth:`write` or of :meth:`close`.

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
        playback: bool = False,
    ) -> None:
        spec = OUTPUT_FORMATS[format]
        if spec.sample_rates is not None and sample_rate not in spec.sample_rates:
            raise ValueError(f"{format} cannot be written at {sample_rate} Hz")
        if channels not in _LAYOUTS:
            raise ValueError(f"can only write 1 or 2 channels, not {channels}")
        self.path = path
        self.format = spec
        self.sample_rate = sample_rate
        self.channels = channels
        self.layout = _LAYOUTS[channels]
        self._partial = path.with_name(path.name + ".part")
        self._rate = input_rate or sample_rate
        self._gain_db, self._ceiling_db = gain_db, ceiling_db
        self._stage = GainStage(self._rate, gain_db=gain_db, ceiling_db=ceiling_db)
        self._frames = 0
        self._container: av.container.OutputContainer = av.open(
            str(self._partial), "w", format=spec.container
        )
        self._stream = cast(av.AudioStream, self._container.add_stream(spec.codec, sample_rate))
        self._stream.layout = self.layout
        if spec.default_bitrate is not None:
            self._stream.bit_rate = 1000 * (bitrate or spec.default_bitrate)
        if speech and spec.speech_options:
            self._stream.codec_context.options = dict(spec.speech_options)
        self.extradata: bytes | None = None
        """The codec's header data, once its first packet is written."""
        self.playback = Playback(self) if playback else None
        self._queue: queue.Queue[av.AudioFrame | None] = queue.Queue(maxsize=QUEUED_BLOCKS)
        self._failure: BaseException | None = None
        self._dropping = False
        self._packets = 0
        self._playback_ended = False
        self._tail: _Tail | None = None
        self._last: list[av.Packet] = []
        """The packets of the codec's flush, when a tail is to follow them."""
        self._codec = threading.Thread(target=self._run_codec, name="encode", daemon=True)
        self._codec.start()

    @property
    def limited_db(self) -> float:
        """The deepest gain reduction the limiter applied so far, in dB (0.0: none)."""
        return self._stage.limited_db

    def write(self, samples: Samples) -> None:
        """Encode the next block."""
        self._encode(self._stage.process(samples))

    @property
    def can_encode_tail(self) -> bool:
        """Whether :meth:`encode_tail` can be used: an MP3 written at its input's rate,
        without a ceiling (whose limiter holds a state the two parts cannot share)."""
        same_rate = self._rate == self.sample_rate
        return self.format.name == "mp3" and same_rate and self._ceiling_db is None

    def encode_tail(self, stop: int, blocks: Callable[[int], Iterable[Samples]]) -> int:
        """Encode the end of an MP3 on a thread of its own, side by side with the
        start, which :meth:`write` is then given only up to frame ``stop``; :meth:`close`
        puts the end after the start in the file. LAME is a single thread, and for a
        long file it is most of the time taken.

        ``blocks(start)`` gives the end's audio from frame ``start`` on, where
        ``start`` (returned) lies a little past ``stop``: the second codec starts
        late by :data:`MP3_DELAY` frames, and the first pads its last packet out,
        so the frames in between are left out and every later frame keeps its time.
        They, and some frames around them, must be silence, for the two codecs to
        meet there unheard: the file then decodes as if it had been encoded whole
        (``tests/test_media.py``). Only where :attr:`can_encode_tail`.
        """
        if not self.can_encode_tail:
            raise ValueError("only an MP3 at its input's rate, without a ceiling, has a tail")
        codec = cast(av.AudioCodecContext, av.CodecContext.create(self.format.codec, "w"))
        codec.sample_rate = self.sample_rate
        codec.layout = self.layout
        codec.format = "flt"
        codec.time_base = Fraction(1, self.sample_rate)
        codec.bit_rate = self._stream.bit_rate
        codec.options = dict(self._stream.codec_context.options)
        codec.open()
        start = ((stop + MP3_DELAY) // codec.frame_size + 1) * codec.frame_size
        stage = GainStage(self._rate, gain_db=self._gain_db)  # no ceiling: no state to share
        self._tail = _Tail(codec, stage, blocks(start), self.layout, start)
        return start

    def close(self) -> None:
        """Flush the limiter and the codec, put the tail after it if there is one,
        finish the file and give it its name."""
        self._encode(self._stage.flush())
        self._stop_codec()
        if self._tail is not None and self._failure is None:
            try:
                self._append(self._tail)
            except BaseException as exc:
                self._failure = exc
        if self._failure is not None:
            self.abort()
            raise self._failure
        self._end_playback()
        self._container.close()
        self._partial.replace(self.path)

    def abort(self) -> None:
        """Stop and remove the unfinished file."""
        self._dropping = True
        self._stop_codec()
        if self._tail is not None:
            self._tail.stop()
        self._end_playback()
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
        if self._failure is not None:
            raise self._failure
        if not len(samples):
            return
        frame = _frame(samples, self.layout, self._rate, self._frames)
        self._frames += len(samples)
        self._queue.put(frame)

    def _run_codec(self) -> None:
        """Encode and write the queued frames until ``None``, then flush the codec.

        After a failure, or once :meth:`abort` is called, it takes the rest of the
        queue without encoding it, so that no ``put`` waits for it forever.
        """
        while (frame := self._queue.get()) is not None:
            if self._failure is not None or self._dropping:
                continue
            try:
                self._write(self._stream.encode(frame))
            except BaseException as exc:  # given to the caller by write or close
                self._failure = exc
        if self._failure is None and not self._dropping:
            try:
                last = self._stream.encode(None)
                if self._tail is None:
                    self._write(last)
                else:  # the tail decides how many of them are needed
                    self._last = last
            except BaseException as exc:
                self._failure = exc

    def _write(self, packets: list[av.Packet]) -> None:
        if self.playback is not None:
            if self.extradata is None and packets:
                self.extradata = self._stream.codec_context.extradata or b""
            for packet in packets:
                self.playback.packets.put(bytes(packet))
        self._packets += len(packets)
        self._container.mux(packets)

    def _append(self, tail: _Tail) -> None:
        """Mux the start's last packets and the tail's after them, on the file's
        timeline. Depending on the audio before it, LAME's flush now and then ends in
        one packet more than the start's length needs; that packet holds only the
        silence after the start, and is left out."""
        packets = tail.packets()
        past = self._packets + len(self._last) - tail.start // tail.frame_size
        self._write(self._last[: len(self._last) - min(max(0, past), len(self._last))])
        offset = self._packets * tail.frame_size
        if offset != tail.start:
            log.warning("an MP3's end is %d frames off its time", offset - tail.start)
        for packet in packets:
            assert packet.pts is not None
            packet.pts += offset
            packet.dts = packet.pts
            packet.stream = self._stream
        self._write(packets)

    def _end_playback(self) -> None:
        if self.playback is not None and not self._playback_ended:
            self._playback_ended = True
            self.playback.packets.put(b"")  # the end

    def _stop_codec(self) -> None:
        if self._codec.is_alive():
            self._queue.put(None)
            self._codec.join()


def _frame(samples: Samples, layout: str, rate: int, pts: int) -> av.AudioFrame:
    """``(frames, channels)`` float samples as a packed frame that starts ``pts``
    frames in."""
    packed = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=layout)
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = pts
    return frame


class _Tail:
    """The end of an MP3, encoded on a thread of its own (:meth:`AudioEncoder.encode_tail`)."""

    def __init__(
        self,
        codec: av.AudioCodecContext,
        stage: GainStage,
        blocks: Iterable[Samples],
        layout: str,
        start: int,
    ) -> None:
        self.frame_size = codec.frame_size
        self.start = start
        """The frame of the whole its first block is."""
        self._codec = codec
        self._stage = stage
        self._layout = layout
        self._packets: list[av.Packet] = []
        self._failure: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(blocks,), name="encode-tail", daemon=True
        )
        self._thread.start()

    def packets(self) -> list[av.Packet]:
        """Every packet of the tail, once it is all encoded; its error, if it had one."""
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._packets

    def stop(self) -> None:
        self._stopping = True
        self._thread.join()

    def _run(self, blocks: Iterable[Samples]) -> None:
        frames = 0
        try:
            for samples in blocks:
                if self._stopping:
                    return
                frame = _frame(
                    self._stage.process(samples), self._layout, self._codec.sample_rate, frames
                )
                frames += len(samples)
                self._packets.extend(self._codec.encode(frame))
            self._packets.extend(self._codec.encode(None))
        except BaseException as exc:  # given to the caller by packets()
            self._failure = exc


class Playback:
    """Decodes what an :class:`AudioEncoder` made with ``playback=True`` writes, while
    it is still encoding (``encoder.playback``): the audio as a listener will hear it,
    measured on the caller's core while the codec's thread encodes, instead of by
    decoding the file after.

    The packets are decoded as they are, without the container's note of the codec's
    delay and padding: an MP3 plays about 70 ms longer here than from its file, in
    silence at its ends.
    """

    def __init__(self, encoder: AudioEncoder) -> None:
        self._encoder = encoder
        self.packets: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        """Each packet written, then ``b""`` once the codec is done."""
        self._decoder: av.AudioCodecContext | None = None
        self._floats = FloatFrames(encoder.sample_rate, encoder.layout)
        self._nothing = np.zeros((0, encoder.channels), np.float32)
        self.done = False
        """Whether the encoder's last packet has been decoded."""

    def take(self, *, wait: bool = False) -> Samples:
        """The audio of the packets written since the last call, as one ``(frames,
        channels)`` block; ``wait``: of all of them, once the encoder is closed (or
        aborted)."""
        blocks: list[Samples] = []
        while not self.done:
            try:
                packet = self.packets.get(block=wait)
            except queue.Empty:
                break
            if not packet:
                self.done = True
                blocks.extend(self._decode(None))
                blocks.extend(self._floats.flush())
            else:
                blocks.extend(self._decode(av.Packet(packet)))
        return np.concatenate([self._nothing, *blocks])

    def _decode(self, packet: av.Packet | None) -> list[Samples]:
        if self._decoder is None:
            if packet is None:
                return []
            decoder = cast(
                av.AudioCodecContext, av.CodecContext.create(self._encoder.format.decoder, "r")
            )
            decoder.sample_rate = self._encoder.sample_rate
            decoder.layout = self._encoder.layout
            if self._encoder.extradata:
                decoder.extradata = self._encoder.extradata
            self._decoder = decoder
        return [
            samples
            for frame in self._decoder.decode(packet)
            for samples in self._floats.convert(frame)
        ]
