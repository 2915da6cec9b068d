"""Speech to text: faster-whisper in the worker, or an OpenAI-compatible server.

A transcription hands over what it knows at once (language, duration, how much of it is
speech) and then its segments one by one as they are decoded, so a pipeline can report
progress per segment as ``segment.end / transcription.duration``. With ``vad=True``
faster-whisper's Silero VAD skips the silences first; segment times stay on the
original timeline. :func:`detect_speech` runs the same VAD alone, for cutting a long
file into pieces at silences.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from longplay.engines.audio import to_wav
from longplay.engines.cache import Loaded, cached_engine
from longplay.engines.device import (
    Device,
    FallbackCallback,
    choose_device,
    cpu_threads,
    is_out_of_memory,
    load_on_device,
)
from longplay.engines.http import EngineClient
from longplay.engines.models import whisper_model_dir
from longplay.framework.errors import InvalidInput, InvalidParams, PermanentError, RetryableError
from longplay.settings import Settings, get_settings

SAMPLE_RATE = 16_000
"""The rate :meth:`Transcriber.transcribe` takes audio at: float32, mono."""
COMPUTE_TYPES: dict[Device, str] = {"cpu": "int8", "cuda": "int8_float16"}
"""CTranslate2 quantization per device: int8 weights (the packaged model is float16,
which a CPU would otherwise run as float32, about twice as slow)."""

Audio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Word:
    """A word and when it is said, in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, usually a sentence or two."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass
class Transcription:
    """A transcription under way: what is known at once, and the segments to come."""

    language: str
    duration: float
    """Seconds of audio in."""
    speech_duration: float
    """Seconds left after the VAD dropped silence (``duration`` without VAD)."""
    segments: Iterator[Segment]
    """Consumed once; decoding happens as it is iterated."""
    language_probability: float | None = None
    """How sure the engine is of ``language`` (0-1); None where it did not detect it."""
    language_assumed: bool = False
    """True where no language was asked for and the model knows only one: ``language`` is
    that one, taken for granted rather than heard."""


@dataclass(frozen=True)
class SpeechSpan:
    """A stretch the VAD heard speech in, in seconds."""

    start: float
    end: float


class Transcriber(Protocol):
    """What every speech-to-text engine does."""

    model: str
    device: str

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
        vad: bool = True,
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 ``audio``; ``language=None`` detects it."""
        ...


class WhisperTranscriber:
    """faster-whisper on a CTranslate2 model folder."""

    def __init__(self, whisper: Any, *, model: str, device: Device) -> None:
        self._whisper = whisper
        self.model = model
        self.device: str = device

    @classmethod
    def load(cls, model_dir: Path, *, device: Device, threads: int) -> WhisperTranscriber:
        """Load the model; on CUDA also decode a second of silence, so that a missing
        or mismatched CUDA library fails here, where the CPU fallback can catch it."""
        from faster_whisper import WhisperModel

        whisper = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=COMPUTE_TYPES[device],
            cpu_threads=threads,
            local_files_only=True,
        )
        if device == "cuda":
            segments, _ = whisper.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
            list(segments)
        return cls(whisper, model=str(model_dir), device=device)

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
        vad: bool = True,
    ) -> Transcription:
        """See :meth:`Transcriber.transcribe`."""
        audio = _checked_audio(audio)
        # Checked here as well as in the params, so that a language the model lacks is
        # never the ValueError faster-whisper's tokenizer raises (an internal error).
        if language and language not in self._whisper.supported_languages:
            if not self._whisper.model.is_multilingual:
                raise InvalidParams(
                    f"the speech-to-text model here knows only English, not "
                    f"{language!r}; leave the language unset or 'en', or set "
                    "LONGPLAY_STT_MODEL to a multilingual Whisper model",
                )
            raise InvalidParams(
                f"the speech-to-text model here does not know the language "
                f"{language!r}; give a code such as 'en' or 'fr', or leave it unset",
            )
        try:
            segments, info = self._whisper.transcribe(
                audio,
                language=language,
                word_timestamps=word_timestamps,
                initial_prompt=initial_prompt,
                vad_filter=vad,
            )
        except RuntimeError as exc:
            raise _runtime_error(exc) from exc
        # An English-only model detects nothing: faster-whisper answers "en" with a
        # probability of 1.0 whatever the speech, which would claim a certainty it lacks.
        assumed = language is None and not self._whisper.model.is_multilingual
        return Transcription(
            language=info.language,
            language_probability=None if assumed else info.language_probability,
            language_assumed=assumed,
            duration=info.duration,
            speech_duration=info.duration_after_vad,
            segments=_whisper_segments(segments, info.duration),
        )


@functools.cache
def whisper_languages() -> frozenset[str]:
    """The language codes Whisper knows (``en``, ``fr``, ...; ISO 639-1, and ``haw``,
    ``yue``).

    faster-whisper lists them only as its tokenizer's private ``_LANGUAGE_CODES``: the
    public ``WhisperModel.supported_languages`` needs a loaded model, which the API
    checking a submission's params does not have (and should not load).
    """
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def detect_speech(
    audio: Audio, *, min_silence_s: float = 2.0, max_speech_s: float = float("inf")
) -> list[SpeechSpan]:
    """Where there is speech in 16 kHz ``audio``, by faster-whisper's Silero VAD.

    Spans are split at silences of at least ``min_silence_s``; one longer than
    ``max_speech_s`` is cut at its last short pause before that length.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        min_silence_duration_ms=round(min_silence_s * 1000), max_speech_duration_s=max_speech_s
    )
    spans = get_speech_timestamps(_checked_audio(audio), options, sampling_rate=SAMPLE_RATE)
    return [SpeechSpan(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in spans]


class HttpTranscriber:
    """An OpenAI-compatible ``POST /v1/audio/transcriptions`` server.

    The audio is sent as 16-bit WAV with ``response_format=verbose_json``. The server
    decides about silences (``vad`` is not part of that API) and answers all at once,
    so the segments arrive together.
    """

    device = "remote"

    def __init__(self, client: EngineClient, *, model: str) -> None:
        self._client = client
        self.model = model

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
        vad: bool = True,
    ) -> Transcription:
        """See :meth:`Transcriber.transcribe`."""
        audio = _checked_audio(audio)
        granularities = ["segment", "word"] if word_timestamps else ["segment"]
        form: dict[str, Any] = {
            "model": self.model,
            "response_format": "verbose_json",
            "timestamp_granularities[]": granularities,
        }
        if language:
            form["language"] = language
        if initial_prompt:
            form["prompt"] = initial_prompt
        body = self._client.post_json(
            "/v1/audio/transcriptions",
            data=form,
            files={"file": ("audio.wav", to_wav(audio, SAMPLE_RATE), "audio/wav")},
        )
        duration = float(body.get("duration") or len(audio) / SAMPLE_RATE)
        try:
            segments = _http_segments(body, duration)
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(
                f"the speech-to-text server answered segments without start, end or text: {exc}",
                code="engine_bad_response",
            ) from exc
        return Transcription(
            language=str(body.get("language") or language or ""),
            duration=duration,
            speech_duration=duration,
            segments=iter(segments),
        )


def get_transcriber(
    settings: Settings | None = None, *, on_fallback: FallbackCallback | None = None
) -> Transcriber:
    """This process's speech-to-text engine for ``settings``, loaded on first use."""
    return cached_engine("stt", settings or get_settings(), _load, on_fallback)


def _load(settings: Settings) -> Loaded[Transcriber]:
    if settings.stt.engine == "http":
        client = EngineClient(
            engine="speech-to-text",
            base_url=settings.stt.url,
            api_key=settings.stt.api_key,
            settings_prefix="LONGPLAY_STT",
            timeout_s=settings.stt.timeout,
            retry_within_s=settings.engines.engine_retry_within,
        )
        model = settings.stt.http_model
        return Loaded(HttpTranscriber(client, model=model), "http", model, "remote")
    import ctranslate2

    model_dir = whisper_model_dir(settings)
    threads = cpu_threads(settings)
    device = choose_device(
        settings.engines.device,
        engine="faster-whisper",
        cuda_available=ctranslate2.get_cuda_device_count() > 0,
    )
    engine, used, fallback = load_on_device(
        "faster-whisper",
        lambda d: WhisperTranscriber.load(model_dir, device=d, threads=threads),
        device,
        strict=settings.engines.device == "cuda",
    )
    return Loaded(engine, "faster-whisper", str(model_dir), used, fallback)


def _checked_audio(audio: Audio) -> Audio:
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 1:
        raise InvalidInput(f"audio must be mono (one dimension), not shape {array.shape}")
    if array.size == 0:
        raise InvalidInput("the audio is empty")
    return array


def _runtime_error(exc: RuntimeError) -> Exception:
    if is_out_of_memory(exc):
        return RetryableError(f"faster-whisper ran out of memory: {exc}", code="out_of_memory")
    return exc


def _whisper_segments(segments: Iterable[Any], duration: float) -> Iterator[Segment]:
    """Whisper's segments as ours, their times held inside the audio: with the VAD on,
    Whisper now and then puts the end of the last segment past the end of the input."""
    try:
        for segment in segments:
            words = tuple(
                Word(
                    start=min(w.start, duration),
                    end=min(w.end, duration),
                    text=w.word.strip(),
                    probability=w.probability,
                )
                for w in segment.words or ()
            )
            yield Segment(
                start=min(segment.start, duration),
                end=min(segment.end, duration),
                text=segment.text.strip(),
                words=words,
                avg_logprob=segment.avg_logprob,
                no_speech_prob=segment.no_speech_prob,
            )
    except RuntimeError as exc:
        raise _runtime_error(exc) from exc


def _http_segments(body: dict[str, Any], duration: float) -> list[Segment]:
    """Segments from a verbose_json body.

    OpenAI puts words at the top level (each goes to the segment it starts in); some
    servers (faster-whisper-server, speaches) put them inside each segment instead.
    """
    raw = body.get("segments") or [{"start": 0.0, "end": duration, "text": body.get("text", "")}]
    top_level = _words(body.get("words"))
    segments = []
    for index, item in enumerate(raw):
        start, end = float(item["start"]), float(item["end"])
        last = index == len(raw) - 1
        words = _words(item.get("words")) or tuple(
            w for w in top_level if w.start >= start and (w.start < end or last)
        )
        segments.append(
            Segment(
                start=start,
                end=end,
                text=str(item.get("text", "")).strip(),
                words=words,
                avg_logprob=item.get("avg_logprob"),
                no_speech_prob=item.get("no_speech_prob"),
            )
        )
    return segments


def _words(raw: list[dict[str, Any]] | None) -> tuple[Word, ...]:
    return tuple(
        Word(
            start=float(w["start"]),
            end=float(w["end"]),
            text=str(w["word"]).strip(),
            probability=w.get("probability"),
        )
        for w in raw or ()
    )
