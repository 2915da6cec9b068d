"""Sentence splitting for speech synthesis.

A TTS voice reads one sentence at a time, so a split in the wrong place is heard as a
pause in the middle of a name ("Dr. | Smith") or a number ("3. | 5"). The rules here
are deliberately plain — a period ends a sentence only when whitespace and a capital
(of any script; or a letter of a script without capitals, as Arabic), digit or quote
follow and the word before it is not a known abbreviation or an initial; the full
stops of Chinese and Japanese (``。`` and the full-width ! and ?) end one with no
space after them, and the danda (``।``) and the Arabic question mark (``؟``) before
whitespace — and every piece is cut below ``max_chars`` so one run-on sentence cannot
produce a minute of audio in one synthesis call.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from longplay.unspaced import DENSE_SCRIPT

DEFAULT_MAX_CHARS = 300

# Abbreviations that are followed by a capitalised word or a number without ending the
# sentence ("Dr. Smith", "approx. 5 km").
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "hon",
        "gen", "col", "capt", "lt", "sgt", "gov", "pres", "sen", "vs", "cf", "approx", "ca",
        "e.g", "i.e", "a.m", "p.m", "u.s", "u.k", "jan", "feb", "mar", "apr", "jun", "jul",
        "aug", "sep", "sept", "oct", "nov", "dec", "mär", "mrz", "okt", "dez", "des",
    }
)  # fmt: skip
# Abbreviations only before a number ("No. 5", "Fig. 3"); ordinary words before a capital
# ("The answer is no. Then ...").
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "vol", "fig", "figs", "eq", "ch", "sec", "art"})
_AFTER_ORDINAL = frozenset(
    {
        # German, with its abbreviations (Danish and Norwegian share most)
        "januar", "februar", "märz", "april", "mai", "juni", "juli", "august", "september",
        "oktober", "november", "dezember", "jan", "feb", "mär", "mrz", "apr", "jun", "jul",
        "aug", "sep", "sept", "okt", "nov", "dez",
        # Danish and Norwegian
        "marts", "mars", "maj", "december", "desember", "mar", "dec", "des",
        # Finnish
        "tammikuuta", "helmikuuta", "maaliskuuta", "huhtikuuta", "toukokuuta", "kesäkuuta",
        "heinäkuuta", "elokuuta", "syyskuuta", "lokakuuta", "marraskuuta", "joulukuuta",
        # Czech
        "ledna", "února", "března", "dubna", "května", "června", "července", "srpna",
        "září", "října", "listopadu", "prosince",
        # Polish
        "stycznia", "lutego", "marca", "kwietnia", "maja", "czerwca", "lipca", "sierpnia",
        "września", "października", "listopada", "grudnia",
        # Slovak
        "januára", "februára", "apríla", "mája", "júna", "júla", "augusta", "septembra",
        "októbra", "novembra", "decembra",
        # Croatian
        "siječnja", "veljače", "ožujka", "travnja", "svibnja", "lipnja", "srpnja",
        "kolovoza", "rujna", "studenoga", "studenog", "prosinca",
        # German nouns counted with an ordinal ("im 19. Jahrhundert", "zum 2. Mal")
        "jahrhundert", "jahrtausend", "weltkrieg", "jahrestag", "geburtstag", "mal", "tag",
        "woche", "stock", "etage", "klasse", "auflage", "kapitel", "runde", "halbzeit",
        "spieltag", "liga", "bundesliga",
    }
)  # fmt: skip
"""Words before which a period after a number of one or two digits is an ordinal's, not
a sentence's end: German, Danish, Norwegian, Finnish, Czech, Polish, Slovak and Croatian
write the day of a date so ("14. Oktober 2019", "14. lokakuuta"), and German counts
some nouns so. Only a capital after the period could end a sentence, so the months
matter most in German (the other languages write them in lower case but for headings
and capitals); the nouns are ones German counts with an ordinal and seldom begins a
sentence with. "Platz" is not one: it comes before its number ("auf Platz 2."). Swedish,
Dutch and Hungarian write no period between the day and the month. The price: an
English sentence ending in a small number before "April", "August" or "Stock" stays
joined to the next, a rarer thing than a German date."""
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
"""A blank line: where one paragraph ends and the next begins."""
_CLOSERS = "\"'\u201d\u2019)\\]\u300d\u300f\u3011\u3009\u300b\uff09"
"""Closing quotes and brackets, which go with the sentence they end."""
_FULL_WIDTH_ENDS = "\u3002\uff01\uff1f\uff61"
"""Chinese and Japanese sentence ends (。, the full-width ! and ?, ｡): no space follows
them."""
_UNCASED_ENDS = "\u0964\u0965\u061f\u06d4"
"""The danda and double danda (Hindi), the Arabic question mark and the Urdu full stop:
scripts without capitals, so whitespace after one is enough."""
# A candidate end: terminal punctuation, optional closing quotes/brackets, then
# whitespace; or a full-width end; or an uncased script's end before whitespace.
_CANDIDATE_END = re.compile(
    rf"[.!?\u2026]+[{_CLOSERS}]*(?=\s)"
    rf"|[{_FULL_WIDTH_ENDS}]+[{_CLOSERS}]*"
    rf"|[{_UNCASED_ENDS}]+[{_CLOSERS}]*(?=\s)"
)
_NEXT_STARTS_SENTENCE = re.compile(r"\s+[\"'\u201c\u2018(\[\u300c\u300e\u00ab\u00bf\u00a1]*(\w)")
_LAST_WORD = re.compile(r"([\w.]+)\.$")
_WORD = re.compile(r"\w+")
_LAST_WORD_REACH = 64
"""How far before a period :data:`_LAST_WORD` looks: searched from the paragraph's
start, it made splitting quadratic in a paragraph's length (13 s for one paragraph of
100 KB). A longer word is cut, and is no abbreviation either way."""
_CLAUSE_BREAK = re.compile(r"[,;:\u2013\u2014\u060c\u061b]\s|[\u3001\uff0c\uff1b\uff1a]")
"""Where a long sentence is cut: a comma, semicolon, colon or dash before a space
(Arabic's comma and semicolon too), or a Chinese or Japanese comma or semicolon."""
DENSE_PUNCTUATION = re.compile(
    r"[\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)
"""The full-width punctuation that goes with them (。、「」 and the like), no word of its own."""


SPEAKABLE = re.compile(r"[^\W_]")
"""A letter or a digit: what a text needs for there to be anything to say."""


def has_words(text: str) -> bool:
    """Whether ``text`` has a letter or a digit: anything to say, or to summarize."""
    return SPEAKABLE.search(text) is not None


def count_words(text: str) -> int:
    """How many words ``text`` has: its space-separated words, and each Chinese
    character or Japanese kana (a text in those scripts has no spaces to count)."""
    dense = len(DENSE_SCRIPT.findall(text))
    if not dense:
        return len(text.split())
    spaced = DENSE_PUNCTUATION.sub(" ", DENSE_SCRIPT.sub(" ", text))
    return dense + len(spaced.split())


@dataclass(frozen=True)
class Sentence:
    """A piece of text voiced in one call, and whether a paragraph ends with it."""

    text: str
    ends_paragraph: bool


EMOJI = re.compile(
    "[\U0001f000-\U0001f0ff\U0001f10d-\U0001faff"  # pictographs, less the circled digits
    "\u2190-\u21ff\u2900-\u297f\u2b00-\u2bff"  # arrows (↔ ↩ ⤴ ⬆) and stars
    "\u2300-\u23ff"  # technical symbols: ⌚ ⌛ ⏰ ⏩
    "\u25a0-\u2775\u2794-\u27bf"  # shapes, ☀ ✂ ❤ ➡, less the dingbat digits
    "\u00a9\u00ae\u2122\u203c\u2049\u24c2\u3030\u303d\u3297\u3299"  # © ® ™ ‼ ⁉ Ⓜ 〰 〽 ㊗ ㊙
    "\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f]"  # selectors, joiner, keycap, tags
    "|\u2139\ufe0f"  # the information source sign: a letter, without its emoji selector
)
"""Emoji and pictographs, with the joiners and selectors that build them: a voice reads
each out by its name ("We shipped it party popper", "alarm clock"), where a reader
passes over it. No letter or digit of any script is one."""


def speakable_sentences(text: str) -> list[Sentence]:
    """The sentences of ``text`` that have a letter or a digit in them, paragraph by
    paragraph (a lone ``* * *`` is a pause, not something to read out), without emoji."""
    sentences: list[Sentence] = []
    for paragraph in PARAGRAPH_BREAK.split(EMOJI.sub("", text)):
        spoken = [s for s in split_sentences(paragraph) if SPEAKABLE.search(s)]
        sentences.extend(Sentence(s, i == len(spoken) - 1) for i, s in enumerate(spoken))
    return sentences


def split_sentences(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Split ``text`` into sentences of at most ``max_chars`` characters each.

    Paragraph breaks (blank lines) always end a sentence; other whitespace is collapsed
    to single spaces. A sentence longer than ``max_chars`` is cut at the last clause
    break (comma, semicolon, colon, dash) that fits, else at the last space, else hard.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    sentences: list[str] = []
    for paragraph in PARAGRAPH_BREAK.split(text):
        flat = " ".join(paragraph.split())
        for sentence in _split_paragraph(flat):
            sentences.extend(_cut_long(sentence, max_chars))
    return sentences


def _split_paragraph(paragraph: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _CANDIDATE_END.finditer(paragraph):
        if _is_sentence_end(paragraph, match):
            sentences.append(paragraph[start : match.end()].strip())
            start = match.end()
    rest = paragraph[start:].strip()
    if rest:
        sentences.append(rest)
    return [s for s in sentences if s]


def _is_sentence_end(paragraph: str, match: re.Match[str]) -> bool:
    if match.group()[0] in _FULL_WIDTH_ENDS + _UNCASED_ENDS:
        return True
    following = _NEXT_STARTS_SENTENCE.match(paragraph, match.end())
    if following is None or not _starts_sentence(following.group(1)):
        return False
    if match.group().startswith(("!", "?", "\u2026", "..")):
        return True
    word = _LAST_WORD.search(paragraph, max(0, match.start() - _LAST_WORD_REACH), match.start() + 1)
    if word is None:
        return True
    token = word.group(1).lower()
    is_initial = len(token) == 1 and token.isalpha()
    before_number = token in _NUMBER_ABBREVIATIONS and following.group(1).isdigit()
    is_ordinal = token.isdecimal() and len(token) <= 2 and _next_word(following) in _AFTER_ORDINAL
    return token not in _ABBREVIATIONS and not is_initial and not before_number and not is_ordinal


def _next_word(following: re.Match[str]) -> str:
    """The word whose first letter ``following`` found, in lower case."""
    word = _WORD.match(following.string, following.start(1))
    return word.group().lower() if word else ""


def _starts_sentence(char: str) -> bool:
    """Whether a sentence may start with ``char``: a digit, or a letter that is not
    lower case (a capital of any script, or a letter of one without capitals)."""
    return char.isdigit() or (char.isalpha() and not char.islower())


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    while len(sentence) > max_chars:
        window = sentence[: max_chars + 1]
        clause = [m.end() for m in _CLAUSE_BREAK.finditer(window) if m.end() - 1 <= max_chars]
        if clause:
            cut = clause[-1]
        elif (space := window.rfind(" ")) > 0:
            cut = space
        else:
            cut = _whole_letter(sentence, max_chars)
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        pieces.append(sentence)
    return pieces


def _whole_letter(text: str, cut: int) -> int:
    """``cut``, moved back before any combining marks (a Devanagari vowel sign, an
    accent) that belong to the letter before it, so no letter is cut in two."""
    at = cut
    while at > 1 and (unicodedata.category(text[at])[0] == "M" or text[at] in "\u200c\u200d"):
        at -= 1
    return at
