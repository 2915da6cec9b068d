"""Cutting a document into pieces that fit an LLM's context.

Token counts here are estimates, good enough to plan chunks, and they lean high: about
four characters of English per token (as for the Gemma and GPT tokenizers), two of
another alphabet or abugida (Cyrillic, Greek, Arabic, Devanagari...), and a token for
each Chinese character, Japanese kana or full-width mark. An engine that can count exactly
(``LanguageModel.count_tokens``) can check a prompt before it is sent, and
:func:`chunk_text` can be handed its count instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from longplay.text.sentences import DENSE_PUNCTUATION, PARAGRAPH_BREAK, split_sentences
from longplay.unspaced import DENSE_SCRIPT

CHARS_PER_TOKEN = 4
"""Characters of English (or another Latin-script text) per token."""
OTHER_LETTERS_PER_TOKEN = 2
"""Letters of another alphabet or abugida per token: their tokenizers' vocabularies hold
fewer of their words, so a word takes more tokens."""

_OTHER_LETTERS = re.compile(r"[^\W\d_\u0000-\u024f\u1e00-\u1eff]")
"""Letters outside the Latin script (and the dense ones, each a token, counted apart)."""

TokenCount = Callable[[str], int]
"""How many tokens a text takes: :func:`estimate_tokens` or a model's exact count."""


def estimate_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` takes (rather more than fewer): never fewer
    than its words."""
    dense = len(DENSE_SCRIPT.findall(text))
    other = len(_OTHER_LETTERS.findall(text)) - dense
    dense += len(DENSE_PUNCTUATION.findall(text))
    rest = len(text) - dense - other
    tokens = dense + other / OTHER_LETTERS_PER_TOKEN + rest / CHARS_PER_TOKEN
    return max(math.ceil(tokens), len(text.split()))


def chunk_text(
    text: str, *, max_tokens: int, count_tokens: TokenCount = estimate_tokens
) -> list[str]:
    """Pack ``text`` into chunks of at most ``max_tokens`` tokens each, as
    ``count_tokens`` counts them (an estimate unless a model's count is given).

    Chunks end at paragraph boundaries where they can, else at sentence boundaries
    (a paragraph too long for one chunk is split into sentences), and a sentence too
    long for a chunk is cut at a clause break or a space (or between two characters
    of a text without spaces). Paragraphs inside a chunk stay separated by a blank line.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    pieces: list[tuple[str, str]] = []  # (text, separator before it)
    for paragraph in PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if count_tokens(paragraph) <= max_tokens:
            pieces.append((paragraph, "\n\n"))
            continue
        sentences = [
            piece
            for sentence in split_sentences(paragraph, max_chars=max_tokens * CHARS_PER_TOKEN)
            for piece in _cut_to_fit(sentence, max_tokens, count_tokens)
        ]
        pieces.append((sentences[0], "\n\n"))
        pieces.extend((sentence, " ") for sentence in sentences[1:])
    return _pack(pieces, max_tokens, count_tokens)


def _cut_to_fit(sentence: str, max_tokens: int, count_tokens: TokenCount) -> list[str]:
    """``sentence`` in pieces of at most ``max_tokens`` tokens: cut (at clause breaks
    or spaces where it has them) into pieces of as many characters as the tokens it
    takes on average allow, and a piece still too long cut again, shorter."""
    tokens = count_tokens(sentence)
    if tokens <= max_tokens or len(sentence) <= 1:
        return [sentence]
    size = max(1, min(len(sentence) - 1, len(sentence) * max_tokens // tokens))
    return [
        fitting
        for piece in split_sentences(sentence, max_chars=size)
        for fitting in _cut_to_fit(piece, max_tokens, count_tokens)
    ]


def _pack(pieces: list[tuple[str, str]], max_tokens: int, count_tokens: TokenCount) -> list[str]:
    chunks: list[str] = []
    current = ""
    for piece, separator in pieces:
        candidate = f"{current}{separator}{piece}" if current else piece
        if current and count_tokens(candidate) > max_tokens:
            chunks.append(current)
            current = piece
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks
