"""Translating a document, a text or a subtitle file: the whole ``translate`` job
without the job, which ``dub`` also calls between transcription and speech.

The lines of a :class:`~longplay.text.documents.Document` go to a translator of
:mod:`longplay.engines.translators` in chunks that fit the model's context, and the
translation is written in the document's own format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longplay.engines.http import briefly
from longplay.engines.llm import HttpLanguageModel, LanguageModel, get_language_model
from longplay.engines.translators import (
    ANSWER_FACTOR,
    MAX_CHUNK_TOKENS,
    MIN_CHUNK_TOKENS,
    Run,
    Tally,
    TranslationOptions,
    TranslationStats,
    Translator,
    translator_for,
)
from longplay.framework import Note, Progress, no_note, no_progress
from longplay.framework.errors import PermanentError
from longplay.settings import Settings, get_settings
from longplay.text.answers import normal
from longplay.text.chunks import estimate_tokens
from longplay.text.documents import Document
from longplay.text.languages import Language
from longplay.text.subtitles import Cue

__all__ = [
    "Translation",
    "TranslationOptions",
    "TranslationStats",
    "translate_document",
    "translate_file",
    "translate_lines",
]


def translate_lines(
    lines: Sequence[str],
    options: TranslationOptions,
    *,
    llm: LanguageModel,
    context_tokens: int,
    progress: Progress = no_progress,
    note: Note = no_note,
    **details: Any,
) -> tuple[list[str], TranslationStats]:
    """One translation per line of ``lines``, in order; a line with no word in it (empty,
    ``---``) stays as it is.

    Chunks of lines fit ``context_tokens`` with room for the answer; ``progress`` hears
    of each line and chunk done, with ``details`` added to what it is told. Raises
    :class:`PermanentError` when not one line came back translated: the "translation"
    would be the input itself.
    """
    refusals: list[str] = []
    if isinstance(llm, HttpLanguageModel):
        llm = llm.noting_refusals(refusals.append)
    todo = [i for i, line in enumerate(lines) if normal(line)]
    translator = translator_for(llm, options)
    chunks = _chunks([lines[i] for i in todo], translator, context_tokens)
    stats = TranslationStats(lines=len(todo), chunks=len(chunks))
    tally = Tally(progress, [lines[i] for i in todo], len(chunks), **details)
    run = Run(context_tokens, tally, note, stats)
    tally.report()
    translated = list(lines)
    position = 0
    for number, size in enumerate(chunks, 1):
        run.chunk_number = number
        indices = todo[position : position + size]
        chunk = [lines[i] for i in indices]
        texts = translator.translate_chunk(chunk, run)
        for index, text in zip(indices, texts, strict=True):
            translated[index] = text
        tally.chunk_done(chunk)
        position += size
    if stats.looping_lines:
        note(
            f"{stats.looping_lines} of {stats.lines} lines went round in a loop and were cut "
            "where it began; a stronger model does better (see the README)"
        )
    if stats.lines and stats.untranslated_lines == stats.lines:
        raise _nothing_translated(stats.lines, refusals)
    if stats.untranslated_lines:
        note(
            f"{stats.untranslated_lines} of {stats.lines} lines came back empty or untranslated "
            "and stand as they were; a stronger model does better (see the README)"
        )
    return translated, stats


def _nothing_translated(lines: int, refusals: Sequence[str]) -> PermanentError:
    """The failure of a translation in which the LLM translated no line at all (it
    answered with nothing, or with the input as it was), with what it said if it
    refused (OpenAI's ``message.refusal``)."""
    why = f"; it refused, saying: {briefly(refusals[0])}" if refusals else ""
    return PermanentError(
        f"the LLM returned no translation for any of the {lines} lines (each came back "
        f"empty or as it was){why}. Try again with another model (LONGPLAY_LLM_HTTP_MODEL "
        "or LONGPLAY_LLM_MODEL), or check that the text is one the model will translate",
        code="nothing_translated",
    )


def _chunks(lines: Sequence[str], translator: Translator, context_tokens: int) -> list[int]:
    """Sizes of consecutive chunks: lines whose prompt and answer fit the context."""
    room = (context_tokens - translator.overhead_tokens()) / (1 + ANSWER_FACTOR)
    budget = int(max(MIN_CHUNK_TOKENS, min(MAX_CHUNK_TOKENS, room)))
    sizes: list[int] = []
    size = tokens = 0
    for line in lines:
        cost = estimate_tokens(line) + 2  # its number
        if size and (size == translator.chunk_lines or tokens + cost > budget):
            sizes.append(size)
            size = tokens = 0
        size, tokens = size + 1, tokens + cost
    if size:
        sizes.append(size)
    return sizes


@dataclass(frozen=True)
class Translation:
    """What :func:`translate_file` made."""

    files: list[Path]
    """The translation in the input's format, then (for cues) the same as plain text."""
    language: Language
    text: str
    """The whole translation as plain text."""
    cues: list[Cue] | None
    """The translated cues with the input's timings; None for prose."""
    stats: TranslationStats


def translate_document(
    document: Document,
    out_dir: Path,
    options: TranslationOptions,
    *,
    progress: Progress = no_progress,
    note: Note = no_note,
    llm: LanguageModel | None = None,
    settings: Settings | None = None,
) -> Translation:
    """Translate ``document`` into files in ``out_dir``, named after it with the target's
    code (``talk.srt`` → ``talk.de.srt``, plus ``talk.de.txt`` for cues)."""
    settings = settings or get_settings()
    if llm is None:
        llm = get_language_model(settings, on_fallback=lambda f: note(f.describe()))
    language = options.target
    lines = document.lines()
    translated, stats = translate_lines(
        lines,
        options,
        llm=llm,
        context_tokens=settings.llm.context_tokens,
        progress=progress,
        note=note,
        input=document.name,
        language=language.code,
    )
    files, text, cues = document.write_translation(out_dir, translated, language)
    return Translation(files, language, text, cues, stats)


def translate_file(
    source: Path,
    out_dir: Path,
    options: TranslationOptions,
    *,
    name: str | None = None,
    progress: Progress = no_progress,
    note: Note = no_note,
    llm: LanguageModel | None = None,
    settings: Settings | None = None,
) -> Translation:
    """Translate one text, subtitle or transcript file into files in ``out_dir``.

    ``name`` is what the file is called in errors and output names (an upload's name;
    default: the file's). Progress goes to ``progress(characters_done, characters_total,
    chunks_done=, chunks_total=, …)`` after each line and chunk, which is also where a
    :meth:`StepContext.advance` stops a cancelled job; notes (retries, fallbacks) to
    ``note``. The engine is ``llm``, else the one the settings name. Raises
    :class:`InvalidInput` for an empty or unreadable file and the engine's
    :class:`~longplay.framework.errors.RetryableError` for a timeout.
    """
    document = Document.read(source, name=name)
    return translate_document(
        document, out_dir, options, progress=progress, note=note, llm=llm, settings=settings
    )
