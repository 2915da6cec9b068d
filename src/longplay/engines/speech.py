"""Speaking a text of any length into one audio file: wav, mp3 or ogg (Opus).

The text is cut into sentences (:func:`~longplay.text.sentences.speakable_sentences`)
and voiced one sentence at a time, with a pause after each and a longer one at a paragraph break
(a blank line). Each sentence goes straight into a :class:`~longplay.media.Spool` in
the work folder and through a :class:`~longplay.media.LevelTrace`, so nothing but one
sentence is ever in memory. The trace knows, once the last sentence is voiced, the
gain that brings the speech to the target loudness through a limiter that keeps the
true peak under ``TRUE_PEAK_DB`` (:func:`~longplay.media.mastering.gain_for_levels`
predicts it without reading the speech again), so mastering is one pass: the spool
read back through that gain and limiter into the encoder.

:func:`synthesize_speech` is the whole of it, for kinds that voice text as one stage
of their own (``dub``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from longplay.engines.audio import Samples, resample
from longplay.engines.device import FallbackCallback, gpu_slot
from longplay.engines.tts import Speech, Synthesizer, get_synthesizer
from longplay.engines.voices import unspeakable
from longplay.framework import InvalidInput, Progress
from longplay.media import (
    OUTPUT_FORMATS,
    AudioEncoder,
    Levels,
    LevelTrace,
    OutputFormatName,
    Spool,
    codec_gain_db,
)
from longplay.media.halves import Pause, encode_limited
from longplay.media.loudness import finite_or_none
from longplay.media.mastering import gain_for_levels
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
    """Measured before mastering, the gain applied, the deepest cut of the limiter, the
    loudness predicted for the output, and the target."""


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
    ``seconds`` of speech so far; while mastering ``mastering`` (true), ``seconds``
    of speech mastered and ``gain_db``. Raises
    :class:`InvalidInput` for a text with no words or in a script the voice cannot
    read, and the engine's ``InvalidParams``
    for a voice it does not have (naming the ones it has).
    """
    sentences = speakable_sentences(text)
    if not sentences:
        raise InvalidInput("nothing to say: the text has no words")
    if (reason := unspeakable(text)) is not None:
        raise InvalidInput(reason)
    synthesizer = get_synthesizer(on_fallback=on_fallback)
    path = folder / f"{stem}.{options.format}"
    with Spool(folder / f".{stem}.voiced.f32", channels=1) as voiced:
        levels, pauses = _voice(synthesizer, sentences, voiced, options, progress)
        loudness = _master(voiced, levels, pauses, path, options, progress)
    return SpeechFile(
        path=path,
        media_type=OUTPUT_FORMATS[options.format].media_type,
        duration=round(levels.loudness.duration, 3),
        sentences=len(sentences),
        loudness=loudness,
    )


def _voice(
    synthesizer: Synthesizer,
    sentences: Sequence[Sentence],
    voiced: Spool,
    options: SpeechOptions,
    progress: Progress,
) -> tuple[Levels, list[Pause]]:
    """Voice every sentence into ``voiced``, mono; returns the levels of the speech and
    where its pauses are.

    The engine then rests, done or not: memory it keeps between sentences goes back
    before the next job, of whatever kind, runs in this process."""
    with gpu_slot(synthesizer.device, timeout_s=get_settings().engines.gpu_wait_timeout):
        try:
            return _voice_each(synthesizer, sentences, voiced, options, progress)
        finally:
            synthesizer.rest()


def _voice_each(
    synthesizer: Synthesizer,
    sentences: Sequence[Sentence],
    voiced: Spool,
    options: SpeechOptions,
    progress: Progress,
) -> tuple[Levels, list[Pause]]:
    speeches = _spoken(synthesizer, sentences, options)
    first = next(speeches)  # its rate is the file's
    rate = first.sample_rate
    trace = LevelTrace(rate, 1)
    chars_total = sum(len(s.text) for s in sentences)
    chars = frames = 0
    pauses: list[Pause] = []
    spoken = zip(sentences, itertools.chain([first], speeches), strict=True)
    for index, (sentence, speech) in enumerate(spoken):
        pause = np.zeros(round(_pause_after(sentences, index, options) * rate), np.float32)
        samples = np.concatenate([_at_rate(speech, rate), pause])[:, None]
        voiced.write(samples)
        trace.add(samples)
        chars += len(sentence.text)
        frames += len(samples)
        pauses.append((frames - len(pause), frames))
        progress(
            VOICE_SHARE * chars / chars_total,
            1.0,
            sentences=index + 1,
            sentences_total=len(sentences),
            chars=chars,
            chars_total=chars_total,
            seconds=round(frames / rate, 1),
        )
    return trace.finish(), pauses


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
    voiced: Spool,
    levels: Levels,
    pauses: Sequence[Pause],
    path: Path,
    options: SpeechOptions,
    progress: Progress,
) -> dict[str, Any]:
    """Encode the voiced speech at the gain that brings it to the target, through the
    limiter, a long MP3 in two halves that meet in a pause
    (:func:`~longplay.media.halves.encode_limited`); returns what was measured, chosen
    and predicted.

    The aim is the target minus the codec's own gain (see
    :func:`~longplay.media.codec_gain_db`). The limiter runs at the voice's rate; an
    output at another rate (Opus: 48 kHz) is resampled by the encoder after it.
    """
    rate = OUTPUT_FORMATS[options.format].rate_for(levels.sample_rate)
    codec_gain = codec_gain_db(options.format, rate, 1)
    search = gain_for_levels(levels, options.loudness - codec_gain, TRUE_PEAK_DB)
    limiter = levels.limiter(search.gain, TRUE_PEAK_DB)
    duration = levels.loudness.duration
    encoder = AudioEncoder(
        path,
        format=options.format,
        sample_rate=rate,
        channels=1,
        input_rate=levels.sample_rate,
        speech=True,
    )
    with encoder:
        for done in encode_limited(
            encoder,
            voiced,
            limiter,
            frames=levels.frames,
            sample_rate=levels.sample_rate,
            pauses=pauses,
        ):
            progress(
                VOICE_SHARE + (1.0 - VOICE_SHARE) * done,
                1.0,
                mastering=True,
                seconds=round(done * duration, 1),
                gain_db=search.gain,
            )
    return {
        "measured": levels.loudness.as_dict(),
        "gain_db": search.gain,
        "limited_db": round(limiter.limited_db, 2),
        "predicted_lufs": finite_or_none(search.level + codec_gain),
        "target_lufs": options.loudness,
    }
