"""Checking what a language model answered: numbered lines, and lines left as they were."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):]\s*(.*?)\s*$")
_NOT_WORD = re.compile(r"[\W_]+")
_WORD = re.compile(r"\w+")


def normal(text: str) -> str:
    """``text`` lower-cased with everything but words taken out: what two texts are
    compared by."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def is_copy(source: str, text: str) -> bool:
    """Left in the source language: the same words, and enough of them to tell (a name
    or "OK" may well stay as it is)."""
    return len(source.split()) >= 3 and normal(source) == normal(text)


def without_loop(text: str) -> str:
    """``text`` up to where it starts going round in a loop, as a small model does: a
    run of two to eight words said three times in a row, or one word five times, is
    kept once and what follows is dropped ("mit dem Plan mit dem Plan mit dem Plan …"
    → "mit dem Plan"; "Prozess-Prozess-Prozess-Prozess-Prozess" → "Prozess"). Text
    without such a loop comes back as it is. (A translation is cut only where its
    source does not repeat itself so.)"""
    words = list(_WORD.finditer(text))
    said = [w.group().lower() for w in words]
    for start in range(len(said)):
        for size in range(1, 9):
            times = 5 if size == 1 else 3
            if start + size * times > len(said):
                break
            run = said[start : start + size]
            if all(said[start + k * size : start + (k + 1) * size] == run for k in range(times)):
                return text[: words[start + size - 1].end()]
    return text


def loop_cut(source: str, text: str) -> str | None:
    """``text`` cut where it starts going round in a loop (:func:`without_loop`), when it
    does and ``source``, the line it translates, does not; else None."""
    cut = without_loop(text)
    return cut if cut != text and without_loop(source) == source else None


def parse_numbered(answer: str, sources: Sequence[str]) -> tuple[list[str] | None, str]:
    """The translations in a numbered answer, one per source line, or None and what is
    wrong with it: a count other than ``len(sources)``, numbers out of order, an empty or
    untranslated line, or one translation given for several different lines (a small
    model's loop). Lines without a number (a preamble, a note) are ignored."""
    numbered = [m.groups() for m in map(_NUMBERED.match, answer.splitlines()) if m]
    if len(numbered) != len(sources):
        return None, f"had {len(numbered)} numbered lines instead of {len(sources)}"
    if [int(n) for n, _ in numbered] != list(range(1, len(sources) + 1)):
        return None, "numbered its lines out of order"
    texts = [text for _, text in numbered]
    for number, (source, text) in enumerate(zip(sources, texts, strict=True), 1):
        if not normal(text):
            return None, f"left line {number} empty"
        if is_copy(source, text):
            return None, f"left line {number} untranslated"
    seen: dict[str, str] = {}
    for source, text in zip(sources, texts, strict=True):
        if seen.setdefault(normal(text), normal(source)) != normal(source):
            return None, "gave the same translation for different lines"
    return texts, ""
