"""Cutting a document into pieces that fit an LLM's context.

Token counts here are estimates (about four characters of English per token, as for
the Gemma and GPT tokenizers), good enough to plan chunks; an engine that can count
exactly (``LanguageModel.count_tokens``) can check a prompt before it is sent.
"""

from __future__ import annotations

import math

from longplay.text.sentences import PARAGRAPH_BREAK, split_sentences

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` takes: never fewer than its words."""
    return max(math.ceil(len(text) / CHARS_PER_TOKEN), len(text.split()))


def chunk_text(text: str, *, max_tokens: int) -> list[str]:
    """Pack ``text`` into chunks of at most about ``max_tokens`` tokens each.

    Chunks end at paragraph boundaries where they can, else at sentence boundaries
    (a paragraph too long for one chunk is split into sentences), and a sentence too
    long for a chunk is cut at a clause break or a space. Paragraphs inside a chunk
    stay separated by a blank line.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    pieces: list[tuple[str, str]] = []  # (text, separator before it)
    for paragraph in PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if estimate_tokens(paragraph) <= max_tokens:
            pieces.append((paragraph, "\n\n"))
            continue
        sentences = _sentences_within(paragraph, max_tokens)
        pieces.append((sentences[0], "\n\n"))
        pieces.extend((sentence, " ") for sentence in sentences[1:])
    return _pack(pieces, max_tokens)


def _sentences_within(paragraph: str, max_tokens: int) -> list[str]:
    sentences: list[str] = []
    for sentence in split_sentences(paragraph, max_chars=max_tokens * CHARS_PER_TOKEN):
        if estimate_tokens(sentence) <= max_tokens:
            sentences.append(sentence)
        else:  # many very short words: cut by word count instead
            words = sentence.split()
            sentences.extend(
                " ".join(words[i : i + max_tokens]) for i in range(0, len(words), max_tokens)
            )
    return sentences


def _pack(pieces: list[tuple[str, str]], max_tokens: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for piece, separator in pieces:
        candidate = f"{current}{separator}{piece}" if current else piece
        if current and estimate_tokens(candidate) > max_tokens:
            chunks.append(current)
            current = piece
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks
