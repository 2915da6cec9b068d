"""Speaking a text of any length into one audio file: wav, mp3 or ogg (Opus).

The text is cut into sentences (:func:`~longplay.text.sentences.speakable_sentences`)
and voiced one sentence at a time, with a pause after each and a longer one at a paragraph break
(a blank line). Each sentence goes straight into a 16-bit WAV in the work folder and
through a :class:`~longplay.media.LoudnessMeter`, so nothing but one sentence is ever
in memory. Mastering then reads that file back through the
:class:`~longplay.media.GainStage` the encoder uses: one gain to the target loudness
(:mod:`longplay.media.mastering`), a limiter that keeps the true peak under
``TRUE_PEAK_DB``.

:func:`synthesize_speech` is the whole of it, for kinds that voice text as one stage
of their own (``dub``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from longplay.engines.audio import Samples, resample
from longplay.engines.device import FallbackCallback, gpu_slot
from longplay.engines.tts import Speech, Synthesizer, get_synthesizer
from longplay.framework import InvalidInput, Progress
from longplay.media import (
    OUTPUT_FORMATS,
    AudioEncoder,
    Loudness,
    LoudnessMeter,
    OutputFormatName,
    codec_gain_db,
    decode,
)
from longplay.media.mastering import (
    MAX_SIMULATIONS,
    TOLERANCE_LU,
    gain_through_limiter,
    limited_loudness,
)
from longplay.settings import get_settings
from longplay.text.sentences import Sentence, speakable_sentences

PARAGRAPH_PAUSE_FACTOR = 2.5
"""A paragraph break is this many sentence pauses long."""
TRUE_PEAK_DB = -1.5
VOICE_SHARE = 0.9
"""The share of the progress bar that voicing takes; mastering has the rest."""


class SpeechOptions(BaseModel):
    """How text is voiced: the options of :func:`synthesize_speech`."""

    model_config = ConfigDict(extra="forbid")

    voice: str | None = Field(
        default=None,
        description=(
            "Voice name; null: the engine's first. The bundled voices are 'joe' (the default) "
            "and 'alex', a higher voice made from the same model."
        ),
    )
    rate: float = Field(
        default=1.0,
        ge=0.5,
        le=2.0,
        description="Speaking speed: 1.25 is a quarter faster, 0.8 slower.",
    )
    pause: float = Field(
        default=0.3,
        ge=0.0,
        le=5.0,
        description=(
            f"Seconds of silence added after each sentence; a paragraph break (a blank line) "
            f"gets {PARAGRAPH_PAUSE_FACTOR:g} times as much."
        ),
    )
    format: OutputFormatName = Field(
        default="mp3", description="Output format: wav, mp3 or ogg (Opus)."
    )
    loudness: float = Field(
        default=-16.0,
        ge=-35.0,
        le=-10.0,
        description=(
            f"Integrated loudness of the speech in LUFS (EBU R 128); the true peak stays "
            f"under {TRUE_PEAK_DB:g} dBTP."
        ),
    )


@dataclass(frozen=True)
class SpeechFile:
    """What :func:`synthesize_speech` wrote."""

    path: Path
    media_type: str
    duration: float
    sentences: int
    loudness: dict[str, Any]
    """Measured before mastering, the gain applied, and the target."""


def synthesize_speech(
    text: str,
    folder: Path,
    options: SpeechOptions,
    *,
    progress: Progress,
    stem: str = "speech",
    on_fallback: FallbackCallback | None = None,
) -> SpeechFile:
    """Speak ``text`` into ``folder/<stem>.<format>``, loudness-normalised.

    ``progress`` hears done and total as fractions of the work, with details: while
    voicing ``sentences``, ``sentences_total``, ``chars``, ``chars_total`` and
    ``seconds`` of speech so far; while mastering ``mastering`` (the pass over the
    speech, from 1), ``seconds`` and ``gain_db``. Raises
    :class:`InvalidInput` for a text with no words and the engine's ``InvalidParams``
    for a voice it does not have (naming the ones it has).
    """
    sentences = speakable_sentences(text)
    if not sentences:
        raise InvalidInput("nothing to say: the text has no words")
    synthesizer = get_synthesizer(on_fallback=on_fallback)
    voiced = folder / f".{stem}.voiced.wav"
    try:
        rate, measured = _voice(synthesizer, sentences, voiced, options, progress)
        path = folder / f"{stem}.{options.format}"
        gain = _master(voiced, rate, measured, path, options, progress)
    finally:
        voiced.unlink(missing_ok=True)
    return SpeechFile(
        path=path,
        media_type=OUTPUT_FORMATS[options.format].media_type,
        duration=round(measured.duration, 3),
        sentences=len(sentences),
        loudness={
            "measured": measured.as_dict(),
            "gain_db": round(gain, 2),
            "target_lufs": options.loudness,
        },
    )


def _voice(
    synthesizer: Synthesizer,
    sentences: Sequence[Sentence],
    path: Path,
    options: SpeechOptions,
    progress: Progress,
) -> tuple[int, Loudness]:
    """Voice every sentence into a mono WAV at ``path``; returns its rate and loudness."""
    with gpu_slot(synthesizer.device, timeout_s=get_settings().engines.gpu_wait_timeout):
        speeches = _spoken(synthesizer, sentences, options)
        first = next(speeches)  # its rate is the file's
        rate = first.sample_rate
        meter = LoudnessMeter(rate, 1)
        chars_total = sum(len(s.text) for s in sentences)
        chars = frames = 0
        with AudioEncoder(path, format="wav", sample_rate=rate, channels=1) as encoder:
            spoken = zip(sentences, itertools.chain([first], speeches), strict=True)
            for index, (sentence, speech) in enumerate(spoken):
                pause = np.zeros(round(_pause_after(sentences, index, options) * rate), np.float32)
                samples = np.concatenate([_at_rate(speech, rate), pause])
                encoder.write(samples[:, None])
                meter.add(samples[:, None])
                chars += len(sentence.text)
                frames += len(samples)
                progress(
                    VOICE_SHARE * chars / chars_total,
                    1.0,
                    sentences=index + 1,
                    sentences_total=len(sentences),
                    chars=chars,
                    chars_total=chars_total,
                    seconds=round(frames / rate, 1),
                )
    return rate, meter.result()


def _spoken(
    synthesizer: Synthesizer, sentences: Sequence[Sentence], options: SpeechOptions
) -> Iterator[Speech]:
    for sentence in sentences:
        yield synthesizer.synthesize(
            sentence.text, voice=options.voice, length_scale=1.0 / options.rate
        )


def _pause_after(sentences: Sequence[Sentence], index: int, options: SpeechOptions) -> float:
    """Seconds of silence after sentence ``index``: none after the last."""
    if index == len(sentences) - 1:
        return 0.0
    return options.pause * (PARAGRAPH_PAUSE_FACTOR if sentences[index].ends_paragraph else 1.0)


def _at_rate(speech: Speech, rate: int) -> Samples:
    """The speech's samples at ``rate`` (an HTTP engine may answer at another rate)."""
    if speech.sample_rate == rate:
        return speech.samples
    return resample(speech.samples, round(len(speech.samples) * rate / speech.sample_rate))


def _master(
    voiced: Path,
    voiced_rate: int,
    measured: Loudness,
    path: Path,
    options: SpeechOptions,
    progress: Progress,
) -> float:
    """Encode the voiced WAV at the gain that brings it to the target; returns the gain.

    The gain is the target minus the measured loudness (and minus the codec's own
    gain, see :func:`~longplay.media.codec_gain_db`). Where that takes the true peak
    over the ceiling the limiter will take some loudness away too, which
    :func:`~longplay.media.mastering.gain_through_limiter` makes up for.
    """
    rate = OUTPUT_FORMATS[options.format].rate_for(voiced_rate)
    mastering = _Mastering(voiced, rate, measured.duration, progress)
    aim = options.loudness - codec_gain_db(options.format, rate, 1)
    gain = 0.0 if measured.is_silent else aim - measured.integrated
    overshoot = measured.true_peak + gain - TRUE_PEAK_DB
    if overshoot > TOLERANCE_LU:
        gain = gain_through_limiter(mastering.simulate, gain, aim, overshoot).gain
    mastering.encode(path, options.format, gain)
    return gain


class _Mastering:
    """The passes over the voiced WAV, each an equal share of the rest of the bar:
    simulations of the limiter, then the encoding, which always takes the last."""

    def __init__(self, voiced: Path, rate: int, duration: float, progress: Progress) -> None:
        self.voiced, self.rate, self.duration, self.progress = voiced, rate, duration, progress
        self._passes = 0

    def simulate(self, gain: float) -> float:
        """Integrated loudness after the encoder's :class:`GainStage` at ``gain``."""
        blocks = self._read(self._passes, gain)
        return limited_loudness(blocks, self.rate, 1, gain=gain, ceiling=TRUE_PEAK_DB)

    def encode(self, path: Path, format: OutputFormatName, gain: float) -> None:
        encoder = AudioEncoder(
            path,
            format=format,
            sample_rate=self.rate,
            channels=1,
            gain_db=gain,
            ceiling_db=TRUE_PEAK_DB,
        )
        with encoder:
            for samples in self._read(MAX_SIMULATIONS, gain):
                encoder.write(samples)

    def _read(self, index: int, gain: float) -> Iterator[Samples]:
        self._passes += 1
        share = (1.0 - VOICE_SHARE) / (MAX_SIMULATIONS + 1)
        with closing(decode(self.voiced, sample_rate=self.rate)) as blocks:
            for block in blocks:
                yield block.samples
                seconds = min(block.position, self.duration)
                fraction = seconds / self.duration if self.duration else 1.0
                self.progress(
                    VOICE_SHARE + share * (index + fraction),
                    1.0,
                    mastering=self._passes,
                    seconds=round(seconds, 1),
                    gain_db=round(gain, 2),
                )
