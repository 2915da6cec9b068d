"""The ``synthesize`` kind: a text of any length in, speech out as wav, mp3 or ogg (Opus).

The text is cut into sentences (:func:`~longplay.text.split_sentences`) and voiced one
sentence at a time, with a pause after each and a longer one at a paragraph break
(a blank line). Each sentence goes straight into a 16-bit WAV in the work folder and
through a :class:`~longplay.media.LoudnessMeter`, so nothing but one sentence is ever
in memory. Mastering then reads that file back through the
:class:`~longplay.media.GainStage` the encoder uses: one gain to the target loudness,
a limiter that keeps the true peak under ``TRUE_PEAK_DB``.

:func:`synthesize_speech` is the whole of it, for kinds that voice text as one stage
of their own (``dub``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from longplay.config import get_settings
from longplay.engines import FallbackCallback, Speech, Synthesizer, get_synthesizer, gpu_slot
from longplay.engines.audio import Samples, resample
from longplay.jobs.errors import InvalidInput, InvalidParams
from longplay.jobs.registry import InputFile, JobKind, Step, StepContext, register
from longplay.media import (
    OUTPUT_FORMATS,
    AudioEncoder,
    GainStage,
    Loudness,
    LoudnessMeter,
    OutputFormatName,
    codec_gain_db,
    decode,
)
from longplay.text import split_sentences

Progress = Callable[..., None]
"""Called as ``progress(done, total, **details)``, like :meth:`StepContext.advance`,
which can be passed as it is; an exception it raises (``JobCancelled``) stops the work."""

PARAGRAPH_PAUSE_FACTOR = 2.5
"""A paragraph break is this many sentence pauses long."""
TRUE_PEAK_DB = -1.5
VOICE_SHARE = 0.9
"""The share of the progress bar that voicing takes; mastering has the rest."""
MAX_SIMULATIONS = 3
"""Passes, at most, that simulate the limiter to find the gain that reaches the target."""
TOLERANCE_LU = 0.2
MAX_BOOST_DB = 6.0
"""The most gain added to the plain gain to make up for what the limiter takes."""
MIN_RETURN = 0.1
"""LU per dB of added gain below which adding more only adds limiting."""
MAX_PARAM_CHARS = 100_000
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SPEAKABLE = re.compile(r"[^\W_]")  # a letter or a digit
_MARKDOWN = (
    (re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[^\n]*$", re.M | re.S), ""),  # code blocks
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),  # images
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: their text
    (re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.M), r"\n\1\n"),  # a heading: a paragraph
    (re.compile(r"^ {0,3}(?:>[ \t]?)+|^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.M), ""),  # quote, list
    (re.compile(r"[*`]+|(?<!\w)_+|_+(?!\w)"), ""),  # emphasis and code marks
)


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


class SynthesizeParams(SpeechOptions):
    """Parameters of a ``synthesize`` job: the text, or one text file as its input."""

    text: str | None = Field(
        default=None,
        max_length=MAX_PARAM_CHARS,
        description=(
            "The text to speak; or leave it out and give one text file (.txt or .md) as the "
            "job's input, which is also the way for longer texts."
        ),
    )

    @field_validator("text")
    @classmethod
    def _has_words(cls, value: str | None) -> str | None:
        if value is not None and not _SPEAKABLE.search(value):
            raise ValueError("text has no words to speak")
        return value


@dataclass(frozen=True)
class Sentence:
    """A piece of text voiced in one call, and whether a paragraph ends with it."""

    text: str
    ends_paragraph: bool


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


def speakable_sentences(text: str) -> list[Sentence]:
    """The sentences of ``text`` that have a letter or a digit in them, paragraph by
    paragraph (a lone ``* * *`` is a pause, not something to read out)."""
    sentences: list[Sentence] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        spoken = [s for s in split_sentences(paragraph) if _SPEAKABLE.search(s)]
        sentences.extend(Sentence(s, i == len(spoken) - 1) for i, s in enumerate(spoken))
    return sentences


def markdown_to_text(markdown: str) -> str:
    """Markdown as it is read aloud: no code blocks, images or markup; link texts
    without their addresses; each heading a paragraph of its own."""
    for pattern, replacement in _MARKDOWN:
        markdown = pattern.sub(replacement, markdown)
    return markdown


def _voice(
    synthesizer: Synthesizer,
    sentences: Sequence[Sentence],
    path: Path,
    options: SpeechOptions,
    progress: Progress,
) -> tuple[int, Loudness]:
    """Voice every sentence into a mono WAV at ``path``; returns its rate and loudness."""
    with gpu_slot(synthesizer.device, timeout_s=get_settings().gpu_wait_timeout):
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
    :func:`_gain_through_limiter` makes up for.
    """
    rate = OUTPUT_FORMATS[options.format].rate_for(voiced_rate)
    mastering = _Mastering(voiced, rate, measured.duration, progress)
    aim = options.loudness - codec_gain_db(options.format, rate, 1)
    gain = 0.0 if measured.is_silent else aim - measured.integrated
    if measured.true_peak + gain > TRUE_PEAK_DB + TOLERANCE_LU:
        gain = _gain_through_limiter(mastering.simulate, gain, aim)
    mastering.encode(path, options.format, gain)
    return gain


def _gain_through_limiter(simulate: Callable[[float], float], gain: float, aim: float) -> float:
    """Raise ``gain`` until the limited speech measures ``aim``, or as close as
    ``MAX_SIMULATIONS`` tries and ``MAX_BOOST_DB`` allow.

    The limiter only takes loudness away, and the more the higher the gain, so
    loudness rises at most a LU per dB of gain and by less and less: a step of the
    shortfall divided by the rate of return seen so far (1 before the second try)
    comes closer from below and never passes the aim. That holds for the last step
    too, the one not simulated. Where a dB buys less than ``MIN_RETURN`` LU, more gain
    would only add limiting, and the gain stays.
    """
    highest = gain + MAX_BOOST_DB
    rate_of_return = 1.0
    before: tuple[float, float] | None = None
    for _ in range(MAX_SIMULATIONS):
        level = simulate(gain)
        if before is not None:
            rate_of_return = (level - before[1]) / (gain - before[0])
            if not rate_of_return >= MIN_RETURN:
                break
        shortfall = aim - level
        if shortfall <= TOLERANCE_LU or gain >= highest:
            break
        before = (gain, level)
        gain = min(highest, gain + shortfall / rate_of_return)
    return gain


class _Mastering:
    """The passes over the voiced WAV, each an equal share of the rest of the bar:
    simulations of the limiter, then the encoding, which always takes the last."""

    def __init__(self, voiced: Path, rate: int, duration: float, progress: Progress) -> None:
        self.voiced, self.rate, self.duration, self.progress = voiced, rate, duration, progress
        self._passes = 0

    def simulate(self, gain: float) -> float:
        """Integrated loudness after the encoder's :class:`GainStage` at ``gain``."""
        stage = GainStage(self.rate, gain_db=gain, ceiling_db=TRUE_PEAK_DB)
        meter = LoudnessMeter(self.rate, 1, true_peak=False)  # the limiter sees to it
        for samples in self._read(self._passes, gain):
            meter.add(stage.process(samples))
        if len(tail := stage.flush()):
            meter.add(tail)
        return meter.result().integrated

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


# -- the kind -----------------------------------------------------------------------------


def speak(ctx: StepContext) -> None:
    """Voice the text of the job and keep the audio."""
    params = SynthesizeParams.model_validate(ctx.params)
    text, stem = _text_and_stem(params, ctx.inputs)
    speech = synthesize_speech(
        text,
        ctx.workdir,
        params,
        progress=ctx.advance,
        stem=stem,
        on_fallback=lambda f: ctx.note(f.describe()),
    )
    ctx.state["speech"] = {
        "voice": params.voice,
        "sentences": speech.sentences,
        "duration": speech.duration,
        "loudness": speech.loudness,
    }
    ctx.add_output(speech.path, media_type=speech.media_type)


def read_text(source: InputFile) -> str:
    """The text of a ``.txt`` or ``.md`` file (any ``text/`` type), UTF-8; Markdown as
    :func:`markdown_to_text` reads it."""
    suffix = Path(source.name).suffix.lower()
    if not (source.media_type.startswith("text/") or suffix in TEXT_SUFFIXES):
        raise InvalidInput(
            f"{source.name} is not a text file ({source.media_type}); give a .txt or .md file"
        )
    try:
        text = source.path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{source.name} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from exc
    if suffix in (".md", ".markdown") or source.media_type == "text/markdown":
        text = markdown_to_text(text)
    if not _SPEAKABLE.search(text):
        raise InvalidInput(f"{source.name} has no words to speak")
    return text


def _text_and_stem(params: SynthesizeParams, inputs: Sequence[InputFile]) -> tuple[str, str]:
    """The text to speak and the name of the output, from the params or the input file."""
    if params.text is not None and inputs:
        raise InvalidParams(
            "give the text either as the text parameter or as an input file, not both"
        )
    if params.text is not None:
        return params.text, "speech"
    if not inputs:
        raise InvalidParams(
            "nothing to speak: give the text parameter or one text file (.txt or .md) as input"
        )
    return read_text(inputs[0]), Path(inputs[0].name).stem or "speech"


register(
    JobKind(
        name="synthesize",
        description=(
            "Speak a text of any length, given as a parameter or a .txt/.md file: sentence "
            "by sentence with natural pauses, normalised to a target loudness, as wav, mp3 "
            "or ogg."
        ),
        params=SynthesizeParams,
        steps=[Step("speak", speak)],
        min_inputs=0,
        max_inputs=1,
        input_types=("text/",),
    )
)
