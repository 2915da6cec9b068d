"""Checking what a language model answered: numbered lines, and lines left as they were."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):]\s*(.*?)\s*$")
_NOT_WORD = re.compile(r"[\W_]+")


def normal(text: str) -> str:
    """``text`` lower-cased with everything but words taken out: what two texts are
    compared by."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def is_copy(source: str, text: str) -> bool:
    """Left in the source language: the same words, and enough of them to tell (a name
    or "OK" may well stay as it is)."""
    return len(source.split()) >= 3 and normal(source) == normal(text)


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
