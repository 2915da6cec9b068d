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
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from longplay.engines.models import DEFAULT_VOICE_NAME, piper_voice_file, piper_voice_name
from longplay.engines.tts import SECOND_VOICE_NAME
from longplay.framework import FieldError, PermanentError
from longplay.settings import Settings, get_settings
from longplay.text.languages import LANGUAGES, Language, other_language
from longplay.text.writing import foreign_script, scripts_of_language


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


@dataclass(frozen=True)
class Speaks:
    """The language the voice speaks (its code, ``en``, and its name), and the scripts
    it reads."""

    voice: str
    code: str
    language: str
    scripts: frozenset[str]


def voice_speaks(settings: Settings | None = None) -> Speaks | None:
    """What the local Piper voice speaks, from its ``.onnx.json``; None for an HTTP
    engine (its server may speak many languages) or a voice file that is missing or
    does not say."""
    settings = settings or get_settings()
    if settings.tts.engine == "http":
        return None
    try:
        voice_file = piper_voice_file(settings)
    except PermanentError:
        return None
    return _piper_speaks(voice_file, piper_voice_name(settings, voice_file))


@cache
def _piper_speaks(voice_file: Path, name: str) -> Speaks | None:
    config = json.loads(Path(f"{voice_file}.json").read_text(encoding="utf-8"))
    language = config.get("language") or {}
    code = language.get("family") or language.get("code")
    if not code:
        return None
    return Speaks(name, code, language.get("name_english") or code, scripts_of_language(code))


def unspeakable(text: str) -> str | None:
    """Why the voice cannot speak ``text``, where most of it is in a script the voice
    does not read (it would say each letter's name); None where it can, or where the
    voice's language is not known."""
    speaks = voice_speaks()
    script = foreign_script(text, speaks.scripts) if speaks is not None else None
    if speaks is None or script is None:
        return None
    return (
        f"the voice {speaks.voice} speaks {speaks.language}, and this text is mostly in "
        f"{script} script, which it cannot read; {_ANOTHER_VOICE}"
    )


def check_speakable(text: str, field: str = "text") -> None:
    """Refuse a text the voice cannot speak (:class:`FieldError` naming ``field``)."""
    if (reason := unspeakable(text)) is not None:
        raise FieldError(reason, field=field)


def check_language_speakable(language: Language, field: str) -> None:
    """Refuse to voice ``language`` where it is not the voice's (:class:`FieldError`
    naming ``field``), as a podcast in it is refused: a Piper voice reads another
    language's words with its own language's sounds. One written in a script the
    voice does not read is told so, since it would not even be read."""
    speaks = voice_speaks()
    if speaks is None:
        return
    needed = scripts_of_language(language.code)
    if not needed & speaks.scripts:
        raise FieldError(
            f"the voice {speaks.voice} speaks {speaks.language} and cannot read "
            f"{language.name}, which is written in {' or '.join(sorted(needed))} script; "
            f"{_ANOTHER_VOICE}",
            field=field,
        )
    check_voice_language(language, field)


def check_voice_language(language: Language, field: str, *, besides: str = "") -> None:
    """Refuse ``language`` where the voice speaks another (:class:`FieldError` naming
    ``field``); ``besides`` adds a way out of the caller's own to the advice. An HTTP
    speech engine is not checked: it says nothing of its languages."""
    speaks = voice_speaks()
    if speaks is not None and speaks.code != language.base:
        raise FieldError(
            f"the voice {speaks.voice} speaks {speaks.language} only, not {language.name}; "
            f"{_ANOTHER_VOICE}{besides}",
            field=field,
        )


LANGUAGE_SAMPLE_CHARS = 5_000
"""How much of a text (its start) tells its language."""


def spoken_in_another_language(text: str) -> str | None:
    """Why ``text`` will sound wrong, where it is plainly in another language than the
    voice's, written in a script the voice reads (German for an English voice): read
    with the voice's own sounds, it is heard as nonsense; None where it is the voice's,
    cannot be told, or the voice's language is not known. Not refused: a name or a
    quotation in another language is common, and a text may be meant so."""
    speaks = voice_speaks()
    if speaks is None:
        return None
    other = other_language(text[:LANGUAGE_SAMPLE_CHARS], speaks.code)
    if other is None or other not in LANGUAGES:  # a script alone: check_speakable's
        return None
    return (
        f"the text is in {LANGUAGES[other]} and the voice {speaks.voice} speaks "
        f"{speaks.language}: it reads the words with {speaks.language} sounds; "
        f"{_ANOTHER_VOICE}"
    )


_ANOTHER_VOICE = (
    "set LONGPLAY_TTS_VOICE to a Piper voice of the language, or LONGPLAY_TTS_ENGINE=http "
    "for a speech server that speaks it"
)
