"""The voice names the text-to-speech engine answers to, known without loading it: the
API checks a submission's ``voice`` with them before anything is stored.

The local engine's names come from the Piper voice's ``.onnx.json`` (a multi-speaker
model's speakers, else the model's name and the second voice made from it, as
:func:`longplay.engines.tts._styles` makes them); an HTTP engine's from
``LONGPLAY_TTS_HTTP_VOICES``, its default first, unless that says ``*`` (any name goes
through to the server).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from longplay.engines.models import DEFAULT_VOICE_NAME, piper_voice_file, piper_voice_name
from longplay.engines.tts import SECOND_VOICE_NAME
from longplay.framework import FieldError, PermanentError
from longplay.settings import Settings, get_settings


def known_voices(settings: Settings | None = None) -> tuple[str, ...] | None:
    """The voice names, the default first; None when the engine does not say (HTTP) or
    its voice file is missing (the job fails at run time naming the file)."""
    settings = settings or get_settings()
    if settings.tts.engine == "http":
        return _http_voices(settings.tts.http_voice, settings.tts.http_voices)
    try:
        voice_file = piper_voice_file(settings)
    except PermanentError:
        return None
    return _piper_voices(voice_file, piper_voice_name(settings, voice_file))


def _http_voices(default: str, listed: str) -> tuple[str, ...] | None:
    names = [name.strip() for name in listed.split(",") if name.strip()]
    if not names or "*" in names:
        return None
    return (default, *(name for name in names if name != default))


@cache
def _piper_voices(voice_file: Path, name: str) -> tuple[str, ...]:
    config = json.loads(Path(f"{voice_file}.json").read_text(encoding="utf-8"))
    speakers = config.get("speaker_id_map") or {}
    if config.get("num_speakers", 1) > 1 and speakers:
        return tuple(speakers)
    return (name, SECOND_VOICE_NAME if name == DEFAULT_VOICE_NAME else f"{name}-alt")


def check_voice(voice: str | None, field: str = "voice") -> None:
    """Refuse a voice the engine does not have (:class:`FieldError` naming ``field``)."""
    voices = known_voices()
    if voice is not None and voices is not None and voice not in voices:
        raise FieldError(f"no voice {voice!r}; the voices are {', '.join(voices)}", field=field)
