"""Which writing systems a text's letters are in, and which a language is written in.

A voice reads the letters of its own language's script; given Arabic or Chinese, an
English Piper voice says "Arabic letter", "Chinese letter" for each, a long run of
nonsense with no error. So a text is checked against the voice before it is spoken.
The script of a letter is the first word of its Unicode name (``ARABIC LETTER MEEM``),
which needs no table of ranges to keep up to date.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

_SAME_SCRIPT = {"CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana"}
_WIDTHS = ("FULLWIDTH", "HALFWIDTH")
_NOT_A_SCRIPT = {"MODIFIER", "IDEOGRAPHIC", "SMALL", "CIRCLED", "PARENTHESIZED", "MATHEMATICAL"}

LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    "ar": frozenset({"Arabic"}), "fa": frozenset({"Arabic"}), "ur": frozenset({"Arabic"}),
    "he": frozenset({"Hebrew"}), "el": frozenset({"Greek"}),
    "ru": frozenset({"Cyrillic"}), "uk": frozenset({"Cyrillic"}),
    "bg": frozenset({"Cyrillic"}), "be": frozenset({"Cyrillic"}),
    "kk": frozenset({"Cyrillic"}), "mk": frozenset({"Cyrillic"}),
    "sr": frozenset({"Cyrillic", "Latin"}),
    "hi": frozenset({"Devanagari"}), "ne": frozenset({"Devanagari"}),
    "mr": frozenset({"Devanagari"}), "bn": frozenset({"Bengali"}),
    "ta": frozenset({"Tamil"}), "te": frozenset({"Telugu"}), "ml": frozenset({"Malayalam"}),
    "ka": frozenset({"Georgian"}), "th": frozenset({"Thai"}),
    "zh": frozenset({"Han"}), "ja": frozenset({"Han", "Kana"}), "ko": frozenset({"Hangul", "Han"}),
}  # fmt: skip
"""The scripts of the languages not written in Latin letters, by ISO 639-1 code."""
LATIN = frozenset({"Latin"})
FOREIGN_SHARE = 0.2
"""Above this share of a text's letters in scripts a voice cannot read, it is refused:
a name or a quoted word in another script is no reason to refuse a whole text."""


def script_of(char: str) -> str | None:
    """The script of a letter (``Latin``, ``Arabic``, ``Han``, ``Kana`` …); None for
    anything else."""
    if not char.isalpha():
        return None
    words = unicodedata.name(char, "").split(" ")
    if words[0] in _WIDTHS and len(words) > 1:
        words = words[1:]
    first = words[0]
    if not first or first in _NOT_A_SCRIPT:
        return None
    return _SAME_SCRIPT.get(first, first.title())


def scripts_of_language(code: str) -> frozenset[str]:
    """The scripts a language (``pt-BR``, ``zh_CN``, ``ja``) is written in."""
    return LANGUAGE_SCRIPTS.get(code.replace("_", "-").split("-")[0].lower(), LATIN)


def foreign_script(text: str, readable: frozenset[str]) -> str | None:
    """The script most of ``text``'s unreadable letters are in, where more than
    :data:`FOREIGN_SHARE` of its letters are in scripts not in ``readable``."""
    letters = Counter(script for script in map(script_of, text) if script is not None)
    total = sum(letters.values())
    foreign = Counter({script: n for script, n in letters.items() if script not in readable})
    if not total or sum(foreign.values()) <= FOREIGN_SHARE * total:
        return None
    return foreign.most_common(1)[0][0]
