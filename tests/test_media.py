"""longplay.media and the ``convert`` kind, on audio the tests make themselves with PyAV."""

from __future__ import annotations

import json
import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pydantic
import pyloudnorm
import pytest
from scipy import signal

from longplay.framework import InputFile, InvalidInput, JobCancelled, StepContext, get_kind
from longplay.kinds.convert import ConvertParams
from longplay.media import (
    AudioEncoder,
    LevelTrace,
    LoudnessMeter,
    PeakLimiter,
    Spool,
    UndecodableAudio,
    decode,
    gain_to_db,
    halves,
    probe,
)
from longplay.media.loudness import Oversampler

Audio = npt.NDArray[np.float32]
RNG_SEED = 20261123


# --- making test audio -------------------------------------------------------------------


def tone(
    seconds: float, rate: int, *, freq: float = 440.0, amplitude: float = 0.5, channels: int = 1
) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def speechy_noise(seconds: float, rate: int, *, channels: int = 2, level: float = 0.1) -> Audio:
    """Noise in 100 Hz - 6 kHz (or 40% of the rate), swelling slowly like programme
    material: unlike white noise, lossy codecs keep nearly all of its energy."""
    rng = np.random.default_rng(RNG_SEED)
    frames = round(seconds * rate)
    sos = signal.butter(4, [100, min(6000, 0.4 * rate)], btype="bandpass", fs=rate, output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal((frames, channels)), axis=0)
    swell = 1.0 + 0.7 * np.sin(2 * np.pi * 0.4 * np.arange(frames) / rate)
    return (level * noise * swell[:, None]).astype(np.float32)


_CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".ogg": "libopus"}


def write_audio(path: Path, samples: Audio, rate: int) -> Path:
    """Write ``samples`` with PyAV, the codec chosen by the file's suffix."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(_CODECS[path.suffix], rate, layout=_layout(samples))
        _mux_audio(container, stream, samples, rate)
    return path


def write_video(path: Path, samples: Audio | None, rate: int = 44_100) -> Path:
    """An mp4 with one second of black mpeg4 video and, unless ``samples`` is None, AAC audio."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", 10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = None
        if samples is not None:
            audio = container.add_stream("aac", rate, layout=_layout(samples))
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None and samples is not None:
            _mux_audio(container, audio, samples, rate)
    return path


def _layout(samples: Audio) -> str:
    return "mono" if samples.shape[1] == 1 else "stereo"


def _mux_audio(container: Any, stream: Any, samples: Audio, rate: int, *, at: int = 0) -> None:
    """Encode and mux ``samples``, the first at ``at`` samples on the file's clock."""
    layout = _layout(samples)
    for start in range(0, len(samples), rate):
        block = np.ascontiguousarray(samples[start : start + rate])
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, at + start, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def decode_all(path: Path, **options: Any) -> Audio:
    return np.concatenate([block.samples for block in decode(path, **options)])


def measure(samples: Audio, rate: int, block: int = 4096) -> Any:
    meter = LoudnessMeter(rate, samples.shape[1])
    for start in range(0, len(samples), block):
        meter.add(samples[start : start + block])
    return meter.result()


def dominant_frequency(samples: Audio, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[:, 0] * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


# --- probe and decode --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "rate", "codec", "container"),
    [
        (".wav", 44_100, "pcm_s16le", "wav"),
        (".flac", 22_050, "flac", "flac"),
        (".mp3", 44_100, "mp3", "mp3"),
        (".ogg", 48_000, "opus", "ogg"),
    ],
)
def test_probe_describes_audio_files(
    tmp_path: Path, suffix: str, rate: int, codec: str, container: str
) -> None:
    path = write_audio(tmp_path / f"a{suffix}", tone(2.0, rate, channels=2), rate)

    info = probe(path)

    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert (info.sample_rate, info.channels) == (rate, 2)
    assert info.codec == codec
    assert info.container == container


def test_probe_and_decode_the_audio_of_a_video(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", tone(2.0, 44_100, freq=1000.0), 44_100)

    info = probe(path)
    audio = decode_all(path, sample_rate=16_000, channels=1)

    assert (info.codec, info.channels, info.sample_rate) == ("aac", 1, 44_100)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert len(audio) == pytest.approx(32_000, rel=0.03)
    assert dominant_frequency(audio, 16_000) == pytest.approx(1000.0, abs=5)


@pytest.mark.parametrize(
    ("source_channels", "rate", "channels"), [(2, 16_000, 1), (1, 48_000, 2), (2, None, None)]
)
def test_decode_resamples_and_remixes(
    tmp_path: Path, source_channels: int, rate: int | None, channels: int | None
) -> None:
    source = tone(3.0, 44_100, freq=1000.0, channels=source_channels)
    path = write_audio(tmp_path / "a.wav", source, 44_100)

    blocks = list(decode(path, sample_rate=rate, channels=channels, block_seconds=0.5))
    audio = np.concatenate([b.samples for b in blocks])

    out_rate, out_channels = rate or 44_100, channels or source_channels
    assert audio.dtype == np.float32 and audio.shape[1] == out_channels
    assert len(audio) == pytest.approx(3.0 * out_rate, abs=out_rate * 0.01)
    assert {b.sample_rate for b in blocks} == {out_rate}
    assert dominant_frequency(audio, out_rate) == pytest.approx(1000.0, abs=2)
    upmixed = out_channels > source_channels  # FFmpeg pans mono 3 dB down into each side
    expected_peak = 0.5 * (math.sqrt(0.5) if upmixed else 1.0)
    assert np.abs(audio).max() == pytest.approx(expected_peak, abs=0.02)
    positions = [b.position for b in blocks]
    assert positions == sorted(positions) and positions[-1] == pytest.approx(3.0, abs=0.01)
    assert max(b.duration for b in blocks) < 0.75


@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_decode_reads_mono_float_frames_as_the_resampler_would(tmp_path: Path, fmt: Any) -> None:
    # MP3 and Opus decode mono speech to float frames, which decode reads directly.
    rate = 22_050 if fmt == "mp3" else 48_000
    path = tmp_path / f"speech.{fmt}"
    with AudioEncoder(path, format=fmt, sample_rate=rate, channels=1) as encoder:
        encoder.write(speechy_noise(3.0, rate, channels=1))
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        frames = [*container.decode(audio=0), None]
        through_it = np.concatenate(
            [out.to_ndarray().reshape(-1) for f in frames for out in resampler.resample(f)]
        )

    blocks = list(decode(path, block_seconds=0.5))

    np.testing.assert_array_equal(np.concatenate([b.samples for b in blocks])[:, 0], through_it)
    assert {b.samples.shape[1] for b in blocks} == {1}
    assert {b.sample_rate for b in blocks} == {rate}
    assert len(blocks) >= 6  # still in blocks, not one array


@pytest.mark.parametrize(
    ("parts", "rate", "channels"),
    [
        ([(44_100, 1), (22_050, 1)], 16_000, 1),  # the rate changes
        ([(44_100, 2), (44_100, 1)], None, None),  # stereo, then mono
    ],
)
def test_decode_goes_on_where_the_rate_or_layout_changes(
    tmp_path: Path, parts: list[tuple[int, int]], rate: int | None, channels: int | None
) -> None:
    # MP3s put end to end with `cat`, bare (no ID3 tag, no Xing frame) as streams are.
    path = tmp_path / "joined.mp3"
    for n, (part_rate, part_channels) in enumerate(parts):
        part = tmp_path / f"part{n}.mp3"
        with av.open(str(part), "w", options={"id3v2_version": "0", "write_xing": "0"}) as out:
            samples = tone(2.0 + n, part_rate, freq=1000.0, channels=part_channels)
            stream = out.add_stream("libmp3lame", part_rate, layout=_layout(samples))
            _mux_audio(out, stream, samples, part_rate)
        with path.open("ab") as joined:
            joined.write(part.read_bytes())

    blocks = list(decode(path, sample_rate=rate, channels=channels))

    out_rate, out_channels = rate or parts[0][0], channels or parts[0][1]
    audio = np.concatenate([b.samples for b in blocks])
    assert {b.sample_rate for b in blocks} == {out_rate} and audio.shape[1] == out_channels
    assert len(audio) / out_rate == pytest.approx(5.0, abs=0.1)
    assert blocks[-1].position == pytest.approx(5.0, abs=0.1)
    assert dominant_frequency(audio, out_rate) == pytest.approx(1000.0, abs=2)


def test_probe_reads_the_length_of_a_stream_whose_header_does_not_state_it(
    tmp_path: Path,
) -> None:
    # WebM as a browser's MediaRecorder writes it: "live", with no Duration element.
    path = tmp_path / "recording.webm"
    with av.open(str(path), "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libopus", 48_000, layout="mono")
        _mux_audio(out, stream, speechy_noise(7.0, 48_000, channels=1), 48_000)
    with av.open(str(path)) as written:
        assert written.duration is None and written.streams.audio[0].duration is None

    assert probe(path).duration == pytest.approx(7.0, abs=0.05)


def test_decode_from_container_start_puts_late_audio_on_the_files_clock(tmp_path: Path) -> None:
    # A video from 0 s whose AAC sound starts at 2 s, with a tone at 3-4 s of the file.
    path, rate = tmp_path / "late.mkv", 48_000
    sound = np.zeros((4 * rate, 1), np.float32)
    sound[rate : 2 * rate] = tone(1.0, rate, freq=1000.0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", 10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream("aac", rate, layout="mono")
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        _mux_audio(out, audio, sound, rate, at=2 * rate)

    def tone_seconds(**options: Any) -> tuple[float, float]:
        loud = np.flatnonzero(np.abs(decode_all(path, sample_rate=16_000, **options)) > 0.1)
        return loud[0] / 16_000, loud[-1] / 16_000

    assert tone_seconds(from_container_start=True) == pytest.approx((3.0, 4.0), abs=0.01)
    assert tone_seconds() == pytest.approx((1.0, 2.0), abs=0.01)  # convert: the sound alone


def test_decode_keeps_memory_bounded_on_a_long_input(tmp_path: Path) -> None:
    """Ten minutes at 8 kHz: holding it whole would take 19 MB as float32."""
    rate, minutes = 8000, 10
    one_minute = speechy_noise(60.0, rate, channels=1)
    path = write_audio(tmp_path / "long.wav", np.tile(one_minute, (minutes, 1)), rate)
    baseline = _resident_bytes()
    growth = 0

    meter = LoudnessMeter(rate, 1)
    for block in decode(path):
        meter.add(block.samples)
        growth = max(growth, _resident_bytes() - baseline)
    result = meter.result()

    assert result.duration == pytest.approx(minutes * 60.0)
    assert result.integrated == pytest.approx(measure(one_minute, rate).integrated, abs=0.05)
    assert growth < 8_000_000


def _resident_bytes() -> int:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("needs Linux's /proc to read the resident set size")
    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


NOT_AUDIO = {
    "notes.txt": lambda path: path.write_text("Meeting notes\n- ship it\n" * 50),
    "noise.bin": lambda path: path.write_bytes(np.random.default_rng(1).bytes(50_000)),
    "empty.wav": lambda path: path.write_bytes(b""),
    "silent-film.mp4": lambda path: write_video(path, None),
    "picture.png": lambda path: _write_png(path),
}


def _write_png(path: Path) -> None:
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("name", sorted(NOT_AUDIO))
def test_non_audio_is_invalid_input_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    NOT_AUDIO[name](path)

    with pytest.raises(InvalidInput) as probed:
        probe(path)
    with pytest.raises(UndecodableAudio) as decoded:
        next(decode(path, name="upload.bin"))

    assert probed.value.code == "undecodable_audio" and not probed.value.retryable
    assert str(probed.value).startswith(f"{name} ")
    assert "upload.bin" in str(decoded.value)


def test_non_audio_reports_what_the_decoder_said(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    NOT_AUDIO["noise.bin"](path)

    with pytest.raises(InvalidInput, match="Invalid data found when processing input"):
        probe(path)


def test_an_empty_file_is_said_to_be_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    NOT_AUDIO["empty.wav"](path)

    with pytest.raises(UndecodableAudio, match=r"^empty\.wav is empty: 0 bytes$"):
        probe(path)


def test_a_missing_file_is_not_blamed_on_the_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "gone.wav")


# --- damaged and joined MP3s -------------------------------------------------------------


def id3v2_tag(title: str, *, picture: bytes = b"") -> bytes:
    """An ID3v2.4 tag as podcast tools write one: the title (TIT2) and, given
    ``picture``, a front cover (APIC) holding those bytes as a JPEG."""
    frames = _id3_frame(b"TIT2", b"\x03" + title.encode() + b"\x00")
    if picture:
        frames += _id3_frame(b"APIC", b"\x03image/jpeg\x00\x03\x00" + picture)
    return b"ID3\x04\x00\x00" + _synchsafe(len(frames)) + frames


def _id3_frame(frame_id: bytes, body: bytes) -> bytes:
    return frame_id + _synchsafe(len(body)) + b"\x00\x00" + body


def _synchsafe(size: int) -> bytes:
    """ID3v2's sizes: four bytes of seven bits each, so no byte looks like MPEG sync."""
    return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))


def write_tagged_mp3(path: Path, samples: Audio, rate: int, tag: bytes) -> Path:
    """An MP3 with a Xing header, as encoders write one, that starts with ``tag``."""
    with av.open(str(path), "w", options={"id3v2_version": "0"}) as out:
        stream = out.add_stream("libmp3lame", rate, layout=_layout(samples))
        _mux_audio(out, stream, samples, rate)
    path.write_bytes(tag + path.read_bytes())
    return path


@pytest.mark.parametrize(
    ("picture_bytes", "slack_frames"),
    [
        (0, 2),  # the second part's codec delay, no longer trimmed
        # FFmpeg's parser keeps a few frames after the cover with it, as many as its
        # random bytes lead it astray: 2.4 with PyAV 18.1.0's FFmpeg, 7.4 with 18.1.1's.
        (200_000, 9),
    ],
    ids=["title", "cover"],
)
def test_tagged_mp3s_put_end_to_end_decode_to_both_parts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, picture_bytes: int, slack_frames: int
) -> None:
    # Podcast segments joined with `cat`: the second one's ID3 tag sits in the middle
    # of the stream, and with a cover it is over 30 packets the decoder refuses.
    rate = 44_100
    picture = np.random.default_rng(RNG_SEED).bytes(picture_bytes)
    parts = [
        write_tagged_mp3(
            tmp_path / f"part{n}.mp3",
            tone(seconds, rate, freq=1000.0),
            rate,
            id3v2_tag(f"Part {n}", picture=picture),
        )
        for n, seconds in enumerate((2.0, 3.0))
    ]
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    assert all(part.read_bytes().startswith(b"ID3\x04") for part in parts)
    notes: list[str] = []

    with caplog.at_level(logging.INFO, logger="longplay.media.audio"):
        audio = decode_all(joined, note=lambda message, **data: notes.append(message))

    expected = sum(len(decode_all(part)) for part in parts)
    assert abs(len(audio) - expected) <= slack_frames * 1152
    assert np.abs(audio).max() < 0.6  # the tone, at most a click where the second part starts
    assert dominant_frequency(audio, rate) == pytest.approx(1000.0, abs=2)
    assert notes == []  # a tag in the middle is no sign of a cut
    [skipped] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert skipped.startswith("joined.mp3: skipped ")


@pytest.mark.parametrize(
    ("seed", "said"),
    [
        (0, "is not an audio or video file PyAV can decode: Invalid data found"),
        (1, "is mostly not audio PyAV can decode"),  # a few bytes pass for a frame
    ],
    ids=["refused-at-open", "mostly-refused"],
)
def test_random_bytes_named_mp3_are_undecodable(tmp_path: Path, seed: int, said: str) -> None:
    path = tmp_path / "episode.mp3"
    path.write_bytes(np.random.default_rng(seed).bytes(1_000_000))

    with pytest.raises(UndecodableAudio) as failed:
        decode_all(path)

    assert failed.value.code == "undecodable_audio" and not failed.value.retryable
    assert str(failed.value).startswith(f"episode.mp3 {said}")
    assert str(tmp_path) not in str(failed.value)


def test_an_mp3_followed_by_more_junk_than_audio_is_undecodable(tmp_path: Path) -> None:
    """More packets refused than decoded: whatever the file is, it is not mainly the
    audio of its first two seconds, so the job fails rather than pass those off as it."""
    rate = 22_050
    path = write_audio(tmp_path / "talk.mp3", tone(2.0, rate), rate)
    with path.open("ab") as file:
        file.write(np.random.default_rng(RNG_SEED).bytes(1_000_000))

    with pytest.raises(UndecodableAudio, match=r"^talk\.mp3 is mostly not audio") as failed:
        decode_all(path)

    assert "after 2.0 s of audio" in str(failed.value)
    assert str(tmp_path) not in str(failed.value)


def test_an_mp3_with_some_junk_after_it_decodes_with_a_note(tmp_path: Path) -> None:
    rate = 22_050
    path = write_audio(tmp_path / "talk.mp3", tone(2.0, rate), rate)
    with path.open("ab") as file:
        file.write(np.random.default_rng(RNG_SEED).bytes(20_000))
    codes: list[str | None] = []

    audio = decode_all(path, note=lambda message, **data: codes.append(data.get("code")))

    assert len(audio) / rate == pytest.approx(2.0, abs=0.1)
    assert np.abs(audio).max() < 0.55
    assert codes == ["truncated_input"]  # its audio stops before the file does


# --- loudness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "make"),
    [
        (48_000, lambda rate: tone(5.0, rate, freq=1000.0, amplitude=0.25)),
        (44_100, lambda rate: tone(5.0, rate, freq=100.0, amplitude=0.8, channels=2)),
        (48_000, lambda rate: speechy_noise(6.0, rate)),
        (44_100, lambda rate: _with_quiet_start(speechy_noise(8.0, rate), rate)),
    ],
    ids=["1k-mono", "100hz-stereo", "noise-stereo", "gated-noise"],
)
def test_integrated_loudness_matches_pyloudnorm(rate: int, make: Any) -> None:
    samples = make(rate)
    reference = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))

    assert measure(samples, rate).integrated == pytest.approx(reference, abs=0.1)


def _with_quiet_start(samples: Audio, rate: int) -> Audio:
    """The first 3 s 35 dB down: the relative gate must leave them out."""
    samples = samples.copy()
    samples[: 3 * rate] *= 10 ** (-35 / 20)
    return samples


def test_loudness_is_calibrated_to_bs1770() -> None:
    """A 997 Hz sine at 0 dBFS reads -3.01 LUFS (BS.1770-4, section 2.1)."""
    result = measure(tone(5.0, 48_000, freq=997.0, amplitude=1.0), 48_000)

    assert result.integrated == pytest.approx(-3.01, abs=0.01)
    assert result.sample_peak == pytest.approx(0.0, abs=0.01)


def test_loudness_does_not_depend_on_block_sizes() -> None:
    samples = speechy_noise(1.5, 11_025)
    whole = measure(samples, 11_025, block=len(samples))

    for block in (3, 97, 1103, 30_000):
        streamed = measure(samples, 11_025, block=block)
        assert streamed.integrated == pytest.approx(whole.integrated, abs=1e-9)
        assert streamed.true_peak == pytest.approx(whole.true_peak, abs=1e-9)
    meter = LoudnessMeter(11_025, 2)
    for block in np.array_split(samples, 7):
        meter.add(block)
        meter.add(block[:0])  # nothing ready yet, as a Playback often says
    assert meter.result().integrated == pytest.approx(whole.integrated, abs=1e-9)


def test_true_peak_sees_peaks_between_samples() -> None:
    """A quarter-rate sine sampled 45 degrees off its crests: samples peak 3 dB low."""
    t = np.arange(48_000)
    samples = np.sin(np.pi / 2 * t + np.pi / 4).astype(np.float32)[:, None]

    result = measure(samples, 48_000)

    assert result.sample_peak == pytest.approx(-3.01, abs=0.01)
    assert result.true_peak == pytest.approx(0.0, abs=0.2)


def test_silence_measures_minus_infinity_and_stays_json() -> None:
    silent = measure(np.zeros((48_000 * 2, 2), np.float32), 48_000)
    below_gate = measure(tone(2.0, 48_000, amplitude=1e-4), 48_000)
    too_short = measure(tone(0.3, 48_000), 48_000)

    assert silent.is_silent and below_gate.is_silent and too_short.is_silent
    assert silent.true_peak == -math.inf
    assert json.loads(json.dumps(silent.as_dict()))["integrated_lufs"] is None


def test_oversampler_envelope_is_aligned_and_complete() -> None:
    samples = speechy_noise(1.0, 16_000)
    oversampler = Oversampler()

    streamed = np.concatenate(
        [oversampler.push(samples[i : i + 999]) for i in range(0, 16_000, 999)]
    )
    envelope = np.concatenate([streamed, oversampler.flush()])

    assert len(envelope) == len(samples)
    assert np.all(envelope >= np.abs(samples).max(axis=1) - 0.02)


# --- limiter and encoder -----------------------------------------------------------------


def _limit(samples: Audio, rate: int, ceiling_db: float, block: int) -> tuple[Audio, float]:
    limiter = PeakLimiter(rate, ceiling_db)
    parts = [limiter.process(samples[i : i + block]) for i in range(0, len(samples), block)]
    return np.concatenate([*parts, limiter.flush()]), limiter.max_reduction_db


def test_limiter_keeps_the_true_peak_under_the_ceiling() -> None:
    rate = 44_100
    samples = tone(3.0, rate, amplitude=0.3, channels=2) + speechy_noise(3.0, rate, level=0.01)
    samples[rate : rate + 200] *= 4.0

    limited, reduction = _limit(samples, rate, -1.5, block=3001)

    assert limited.shape == samples.shape
    assert measure(samples, rate).true_peak > 2.0
    assert measure(limited, rate).true_peak <= -1.5 + 0.02
    assert reduction < -3.0
    quiet = slice(int(2.5 * rate), 3 * rate)  # recovered after the burst
    assert np.allclose(limited[quiet], samples[quiet], atol=1e-6)


def test_limiter_leaves_quiet_audio_alone() -> None:
    samples = tone(1.0, 48_000, amplitude=0.5)

    limited, reduction = _limit(samples, 48_000, -1.5, block=512)

    assert reduction == 0.0
    np.testing.assert_array_equal(limited, samples)


@pytest.mark.parametrize(("fmt", "codec"), [("wav", "pcm_s16le"), ("mp3", "mp3"), ("ogg", "opus")])
def test_encoder_writes_each_format(tmp_path: Path, fmt: Any, codec: str) -> None:
    samples = tone(1.5, 48_000, freq=1000.0, channels=2)
    path = tmp_path / f"out.{fmt}"

    with AudioEncoder(path, format=fmt, sample_rate=48_000, channels=2, gain_db=-6.0) as encoder:
        for start in range(0, len(samples), 7000):
            encoder.write(samples[start : start + 7000])

    decoded = decode_all(path)
    assert probe(path).codec == codec
    assert not path.with_name(path.name + ".part").exists()
    assert len(decoded) == pytest.approx(len(samples), abs=2000)
    assert gain_to_db(float(np.abs(decoded).max())) == pytest.approx(gain_to_db(0.25), abs=0.3)


@pytest.mark.parametrize(("fmt", "rate"), [("ogg", 48_000), ("wav", 44_100)])
def test_encoder_resamples_blocks_at_another_rate(tmp_path: Path, fmt: Any, rate: int) -> None:
    path = tmp_path / f"out.{fmt}"

    with AudioEncoder(path, format=fmt, sample_rate=rate, channels=1, input_rate=22_050) as encoder:
        for block in np.array_split(tone(2.0, 22_050, freq=1000.0, amplitude=0.3), 7):
            encoder.write(block)

    decoded = decode_all(path)
    assert probe(path).sample_rate == rate
    assert len(decoded) / rate == pytest.approx(2.0, abs=0.03)
    assert dominant_frequency(decoded, rate) == pytest.approx(1000.0, abs=5.0)
    middle = decoded[rate // 2 : 3 * rate // 2]
    assert float(np.sqrt(np.mean(np.square(middle)))) == pytest.approx(0.3 / np.sqrt(2), rel=0.03)


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 22_050), ("ogg", 48_000), ("wav", 22_050)])
def test_encoder_playback_hears_what_the_file_holds(tmp_path: Path, fmt: Any, rate: int) -> None:
    path = tmp_path / f"out.{fmt}"
    source = speechy_noise(3.0, 22_050, channels=1)
    heard = []

    with AudioEncoder(
        path, format=fmt, sample_rate=rate, channels=1, input_rate=22_050, playback=True
    ) as encoder:
        assert encoder.playback is not None
        for block in np.array_split(source, 9):
            encoder.write(block)
            heard.append(encoder.playback.take())
    heard.append(encoder.playback.take(wait=True))

    played = np.concatenate(heard)[:, 0]
    written = decode_all(path)[:, 0]
    assert encoder.playback.done
    assert len(written) / rate == pytest.approx(3.0, abs=0.03)
    # The same samples, the packets' ahead by the codec's delay (that the file's header
    # tells its decoder to skip): 1105 frames for LAME, none for the others.
    delay = 1105 if fmt == "mp3" else 0
    np.testing.assert_array_equal(played[delay : delay + len(written)], written)


def test_encoder_gives_its_codecs_failure_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp3"

    class FailingCodec:
        def __init__(self, stream: Any) -> None:
            self.stream, self.calls = stream, 0

        def encode(self, frame: Any) -> Any:
            self.calls += 1
            if self.calls == 3:
                raise av.error.InvalidDataError(22, "the codec refused a frame")
            return self.stream.encode(frame)

    with (
        pytest.raises(av.error.InvalidDataError, match="refused"),
        AudioEncoder(path, format="mp3", sample_rate=44_100, channels=1) as encoder,
    ):
        encoder._stream = FailingCodec(encoder._stream)  # FFmpeg failing, in its thread
        for _ in range(20):
            encoder.write(tone(0.5, 44_100, channels=1))

    assert list(tmp_path.iterdir()) == []


def test_encoder_leaves_no_file_when_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "out.mp3"

    with (
        pytest.raises(RuntimeError),
        AudioEncoder(path, format="mp3", sample_rate=44_100, channels=1) as encoder,
    ):
        encoder.write(tone(0.5, 44_100))
        raise RuntimeError("cancelled")

    assert list(tmp_path.iterdir()) == []


def bursts_between_pauses(rate: int) -> tuple[Audio, list[int]]:
    """Speech-like bursts with 0.45 s of silence after each, as an episode's turns
    are; and where each pause starts."""
    parts: list[Audio] = []
    pauses, frames = [], 0
    for seconds in (3.1, 2.2, 4.0, 2.7, 3.3):
        burst = speechy_noise(seconds, rate, channels=1, level=0.2)
        parts += [burst, np.zeros((round(0.45 * rate), 1), np.float32)]
        pauses.append(frames + len(burst))
        frames += len(burst) + len(parts[-1])
    return np.concatenate(parts), pauses


def note_tail_stops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """While the test runs, each MP3 encoded in two halves (``encode_tail``) adds the
    frame where its first half ends to the list returned."""
    stops: list[int] = []
    encode_tail = AudioEncoder.encode_tail

    def noting_tail(encoder: AudioEncoder, stop: int, blocks: Any) -> int:
        stops.append(stop)
        return encode_tail(encoder, stop, blocks)

    monkeypatch.setattr(AudioEncoder, "encode_tail", noting_tail)
    return stops


def blocks_of(audio: Audio, frames: int = 20_000) -> list[Audio]:
    return [audio[i : i + frames] for i in range(0, len(audio), frames)]


def snr_db(decoded: Audio, source: Audio) -> float:
    return float(10 * np.log10(np.sum(source**2) / np.sum((decoded - source) ** 2)))


@pytest.mark.parametrize("rate", [22_050, 44_100])  # MPEG-2 packets of 576, MPEG-1 of 1152
@pytest.mark.parametrize("after_pause", [0.1, 0.12, 0.2])
def test_an_mp3_encoded_in_two_parts_side_by_side_is_as_if_encoded_whole(
    tmp_path: Path, rate: int, after_pause: float
) -> None:
    """``encode_tail``: the start and the end meet in a pause, unheard, and each frame
    keeps its time (some stops make LAME flush a packet more, which the join leaves
    out). At 22,050 Hz, an episode's rate, the file decodes to the same samples as
    one encoded whole; at 44,100 the end's codec, started afresh, codes it a little
    differently, as well as the whole's does."""
    audio, pauses = bursts_between_pauses(rate)
    pause = slice(pauses[2], pauses[2] + round(0.45 * rate))
    stop = pauses[2] + round(after_pause * rate)
    with AudioEncoder(tmp_path / "whole.mp3", format="mp3", sample_rate=rate, channels=1) as whole:
        for block in blocks_of(audio):
            whole.write(block)
    with AudioEncoder(tmp_path / "parts.mp3", format="mp3", sample_rate=rate, channels=1) as parts:
        start = parts.encode_tail(stop, lambda start: blocks_of(audio[start:]))
        for block in blocks_of(audio[:stop]):
            parts.write(block)

    expected, joined = decode_all(tmp_path / "whole.mp3"), decode_all(tmp_path / "parts.mp3")
    assert stop < start < pause.stop - 0.05 * rate  # skips the end codec's delay, in the pause
    assert len(joined) == len(expected) == len(audio)
    end = slice(pause.stop, None)
    assert snr_db(joined, audio) > snr_db(expected, audio) - 0.3  # a misplaced frame: ~0 dB
    assert snr_db(joined[end], audio[end]) > snr_db(expected[end], audio[end]) - 0.3
    assert np.abs(joined[pause]).max() < np.abs(expected[pause]).max() + 1e-3
    if rate == 22_050:
        np.testing.assert_allclose(joined, expected, atol=1e-3)
    assert probe(tmp_path / "parts.mp3").duration == probe(tmp_path / "whole.mp3").duration


def test_a_tail_is_refused_where_the_parts_could_not_meet_and_its_failure_is_given(
    tmp_path: Path,
) -> None:
    def fails(start: int) -> Any:
        yield tone(1.0, 22_050)
        raise OSError("the spool could not be read")

    for refused in (
        {"format": "wav"},
        {"format": "mp3", "ceiling_db": -1.0},  # its limiter holds a state
        {"format": "mp3", "input_rate": 44_100},
    ):
        with AudioEncoder(tmp_path / "x", sample_rate=22_050, channels=1, **refused) as encoder:
            with pytest.raises(ValueError, match="only an MP3"):
                encoder.encode_tail(22_050, lambda start: [])
            encoder.write(tone(0.1, refused.get("input_rate", 22_050)))
    (tmp_path / "x").unlink()

    with (
        pytest.raises(OSError, match="spool"),
        AudioEncoder(tmp_path / "out.mp3", format="mp3", sample_rate=22_050, channels=1) as encoder,
    ):
        encoder.encode_tail(22_050, fails)
        encoder.write(tone(1.0, 22_050))

    assert list(tmp_path.iterdir()) == []


def test_a_long_mp3_splits_in_the_pause_nearest_its_middle_that_has_room() -> None:
    rate = 22_050
    minute = 60 * rate
    sentence = round(0.3 * rate)  # synthesize's pause after a sentence: room enough
    tight = round(0.2 * rate)  # too short for the second codec's late start

    assert halves.split_point([(minute // 2, minute // 2 + sentence)], minute - 1, rate) is None
    assert halves.split_point([(1000, 1000 + tight)], 2 * minute, rate) is None
    margin = round(halves.SPLIT_MARGIN_S * rate)
    pauses = [(10_000, 10_000 + sentence), (minute - 50_000, minute - 50_000 + sentence)]
    assert halves.split_point(pauses, 2 * minute, rate) == minute - 50_000 + margin
    # Never in the pause that ends the audio: there is no second half after it.
    ends = [(10_000, 10_000 + sentence), (2 * minute - sentence, 2 * minute)]
    assert halves.split_point(ends, 2 * minute, rate) == 10_000 + margin


def test_mastering_in_two_halves_that_meet_in_a_sentence_pause_is_as_if_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``encode_limited`` through the planned limiter, the halves meeting in a pause as
    short as synthesize's 0.3 s between sentences: the file decodes to the samples of
    the whole, and the shares it yields rise to 1."""
    rate = 22_050
    parts: list[Audio] = []
    pauses: list[tuple[int, int]] = []
    frames = 0
    for n, seconds in enumerate((2.1, 3.2, 2.6, 3.0, 2.4, 2.9)):
        burst = speechy_noise(seconds, rate, channels=1, level=0.05 + 0.05 * n)
        parts += [burst, np.zeros((round(0.3 * rate), 1), np.float32)]
        frames += len(burst) + len(parts[-1])
        pauses.append((frames - len(parts[-1]), frames))
    audio = np.concatenate(parts)
    tracer = LevelTrace(rate, 1)
    for block in blocks_of(audio):
        tracer.add(block)
    levels = tracer.finish()

    def master(name: str, split_above_s: float) -> list[float]:
        monkeypatch.setattr(halves, "SPLIT_ABOVE_S", split_above_s)
        limiter = levels.limiter(6.0, -1.5)
        assert limiter.limited_db < -1.0  # the loudest bursts meet the ceiling
        with (
            Spool(tmp_path / f"{name}.f32", channels=1) as spool,
            AudioEncoder(tmp_path / name, format="mp3", sample_rate=rate, channels=1) as out,
        ):
            spool.write(audio)
            return list(
                halves.encode_limited(
                    out, spool, limiter, frames=frames, sample_rate=rate, pauses=pauses
                )
            )

    split_shares = master("split.mp3", 5.0)
    whole_shares = master("whole.mp3", 3600.0)

    assert len(split_shares) < len(whole_shares)  # the second half went side by side
    for shares in (split_shares, whole_shares):
        assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)
    whole, split = decode_all(tmp_path / "whole.mp3"), decode_all(tmp_path / "split.mp3")
    np.testing.assert_allclose(split, whole, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.mp3", "whole.mp3"]


def test_a_spool_reads_back_any_stretch(tmp_path: Path) -> None:
    audio = np.arange(2 * 1000, dtype=np.float32).reshape(-1, 2)
    with Spool(tmp_path / "spool.f32", channels=2) as spool:
        spool.write(audio[:300])
        spool.write(audio[300:])
        whole = np.concatenate(list(spool.read(128)))
        middle = list(spool.read(128, start=250, stop=700))
        end = np.concatenate(list(spool.read(128, start=990)))

    np.testing.assert_array_equal(whole, audio)
    assert [len(block) for block in middle] == [128, 128, 128, 66]
    np.testing.assert_array_equal(np.concatenate(middle), audio[250:700])
    np.testing.assert_array_equal(end, audio[990:])
    assert not (tmp_path / "spool.f32").exists()


# --- the convert kind --------------------------------------------------------------------


class RecordingContext(StepContext[ConvertParams]):
    """A StepContext that keeps what the steps report, for the tests to look at."""

    def __init__(self, params: ConvertParams, source: Path, workdir: Path) -> None:
        self.job_id = "job-1"
        self.params = params
        self.inputs = [InputFile("art-1", source.name, "audio/x", source, source.stat().st_size)]
        self.workdir = workdir
        self.state: dict[str, Any] = {}
        self.step = ""
        self.progress: list[tuple[str, float, float, dict[str, Any]]] = []
        self.written: list[tuple[Path, str | None]] = []
        """What the steps kept with add_output: (path, media type)."""
        self._kept: list[tuple[str, InputFile]] = []
        self.notes: list[str] = []
        self.cancel_after: int | None = None

    def advance(self, done: float, total: float, **details: Any) -> None:
        if self.cancel_after is not None and len(self.progress) >= self.cancel_after:
            raise JobCancelled(self.job_id)
        self.progress.append((self.step, done, total, details))

    def add_output(
        self, path: Path, *, name: str | None = None, media_type: str | None = None
    ) -> None:
        self.written.append((path, media_type))
        kept = InputFile(f"out-{len(self._kept)}", name or path.name, media_type or "", path, 0)
        self._kept.append((self.step, kept))

    def outputs(self, step: str | None = None) -> list[InputFile]:
        return [kept for name, kept in self._kept if step is None or name == step]

    def note(self, message: str, **data: Any) -> None:
        self.notes.append(message)

    def fractions(self, step: str) -> list[float]:
        return [done / total for name, done, total, _ in self.progress if name == step]


def run_convert(source: Path, workdir: Path, **params: Any) -> RecordingContext:
    """Run each step of ``convert``, passing state through JSON as the runner's store does."""
    kind = get_kind("convert")
    assert kind is not None
    workdir.mkdir(exist_ok=True)
    ctx = RecordingContext(ConvertParams(**params), source, workdir)
    for step in kind.steps:
        ctx.step = step.name
        step.run(ctx)
        ctx.state = json.loads(json.dumps(ctx.state, allow_nan=False))
    return ctx


def assert_progress_is_sound(ctx: RecordingContext) -> None:
    for step in ("measure", "encode"):
        fractions = ctx.fractions(step)
        assert fractions, f"{step} reported no progress"
        assert fractions == sorted(fractions), f"{step} went backwards: {fractions}"
        _, done, total, _ = [p for p in ctx.progress if p[0] == step][-1]
        assert done == total
    json.dumps([details for *_, details in ctx.progress], allow_nan=False)


@pytest.mark.parametrize(
    ("source_name", "fmt", "params"),
    [
        ("talk.wav", "mp3", {}),
        ("talk.flac", "ogg", {"loudness": -20.0, "channels": 1}),
        ("talk.ogg", "wav", {"loudness": -14.0, "sample_rate": 22_050}),
        ("talk.mp4", "wav", {"loudness": -23.0}),
    ],
)
def test_convert_normalises_to_the_target(
    tmp_path: Path, source_name: str, fmt: str, params: dict[str, Any]
) -> None:
    rate = 48_000 if source_name.endswith(".ogg") else 44_100
    samples = speechy_noise(4.0, rate, level=0.03)
    source = tmp_path / source_name
    if source.suffix == ".mp4":
        write_video(source, samples, rate)
    else:
        write_audio(source, samples, rate)

    ctx = run_convert(source, tmp_path / "work", format=fmt, **params)

    assert_progress_is_sound(ctx)
    [(output, media_type)] = ctx.written
    assert output == tmp_path / "work" / f"talk.{fmt}"
    assert media_type == {"mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav"}[fmt]
    info = probe(output)
    target = ConvertParams(**params).loudness
    assert info.sample_rate == params.get("sample_rate", 48_000 if fmt == "ogg" else rate)
    assert info.channels == params.get("channels", 2)
    result = measure(decode_all(output), info.sample_rate)
    assert result.integrated == pytest.approx(target, abs=0.5)
    assert result.true_peak <= -1.5 + (0.05 if fmt == "wav" else 0.5)
    *_, last_details = ctx.progress[-1]
    assert last_details["input"] == source_name and last_details["target_lufs"] == target
    loudness = ctx.state["loudness"]
    assert loudness["target_lufs"] == target
    if not loudness["limiter"]:  # else the gain also makes up for what the limiter takes
        plain_gain = target - loudness["codec_gain_db"] - loudness["measured"]["integrated_lufs"]
        assert loudness["gain_db"] == pytest.approx(plain_gain, abs=0.02)


def test_convert_limits_peaks_a_plain_gain_would_clip(tmp_path: Path) -> None:
    samples = speechy_noise(4.0, 44_100, level=0.03)
    samples[44_100:44_200] *= 8.0  # a clap: 18 dB over the rest, 2 ms long
    source = write_audio(tmp_path / "clap.wav", samples, 44_100)

    ctx = run_convert(source, tmp_path / "work", format="wav", loudness=-14.0)

    result = measure(decode_all(ctx.written[0][0]), 44_100)
    assert ctx.state["loudness"]["limiter"] is True
    assert ctx.state["loudness"]["limited_db"] < -3.0
    assert result.true_peak <= -1.5 + 0.05
    assert result.integrated == pytest.approx(-14.0, abs=0.5)


def test_convert_applies_no_gain_to_silence(tmp_path: Path) -> None:
    source = write_audio(tmp_path / "hush.wav", np.zeros((44_100 * 2, 2), np.float32), 44_100)

    ctx = run_convert(source, tmp_path / "work", format="mp3")

    assert_progress_is_sound(ctx)
    assert ctx.state["loudness"]["gain_db"] == 0.0
    assert ctx.state["loudness"]["measured"]["integrated_lufs"] is None
    assert ctx.notes and "hush.wav is silent" in ctx.notes[0]
    assert np.abs(decode_all(ctx.written[0][0])).max() < 1e-3


def test_convert_can_keep_the_level(tmp_path: Path) -> None:
    samples = speechy_noise(3.0, 44_100, level=0.02)
    (tmp_path / "work").mkdir()
    source = write_audio(tmp_path / "work" / "keep.wav", samples, 44_100)

    ctx = run_convert(source, tmp_path / "work", format="wav", loudness=None)

    assert ctx.written[0][0].name == "keep-converted.wav"
    assert ctx.fractions("measure") == [1.0]
    assert ctx.state["loudness"]["gain_db"] == 0.0
    output = decode_all(ctx.written[0][0])
    assert measure(output, 44_100).integrated == pytest.approx(
        measure(samples, 44_100).integrated, abs=0.05
    )


def test_convert_rejects_non_audio_in_its_first_step(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    NOT_AUDIO["notes.txt"](source)

    with pytest.raises(InvalidInput, match=r"^notes\.txt "):
        run_convert(source, tmp_path / "work")


def test_convert_cancelled_mid_encode_leaves_no_output(tmp_path: Path) -> None:
    source = write_audio(tmp_path / "talk.wav", speechy_noise(3.0, 16_000), 16_000)
    ctx = RecordingContext(ConvertParams(), source, tmp_path)
    kind = get_kind("convert")
    assert kind is not None
    measure_step, encode_step = kind.steps
    measure_step.run(ctx)
    ctx.cancel_after = len(ctx.progress) + 1

    with pytest.raises(JobCancelled):
        encode_step.run(ctx)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.wav"]


def test_convert_kind_is_registered() -> None:
    kind = get_kind("convert")

    assert kind is not None and kind.params is ConvertParams
    assert [(s.name, s.weight) for s in kind.steps] == [("measure", 1.0), ("encode", 2.0)]
    assert (kind.min_inputs, kind.max_inputs) == (1, 1)
    assert tuple(kind.input_types) == ("audio/", "video/")


@pytest.mark.parametrize(
    "params",
    [
        {"format": "ogg", "sample_rate": 44_100},
        {"format": "mp3", "sample_rate": 96_000},
        {"format": "wav", "bitrate": 128},
        {"format": "mp3", "bitrate": 500},
        {"format": "flac"},
        {"loudness": 3.0},
        {"channels": 6},
        {"volume": 1},
    ],
)
def test_convert_params_reject_what_cannot_be_honoured(params: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ConvertParams(**params)


def test_convert_params_defaults() -> None:
    params = ConvertParams()

    assert (params.format, params.loudness, params.true_peak) == ("mp3", -16.0, -1.5)
    assert (params.sample_rate, params.channels, params.bitrate) == (None, None, None)
