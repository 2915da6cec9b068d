"""Cutting a read document into passages: the pieces search finds and a script cites.

A passage is whole paragraphs (or cues) under one heading, up to about
``max_words``; it never runs across a heading, and the next passage of the same
section starts with the last sentences of the one before (about ``overlap_words``),
so a fact split between two passages is whole in one of them. A paragraph longer
than a passage is cut at sentence boundaries. Timed cues keep their times: a
passage of a transcript runs from its first cue's start to its last cue's end.

Words are counted as :func:`~longplay.text.sentences.count_words` counts them: a
Chinese or Japanese text, which has no spaces, counts a word a character, so it is cut
into passages as a text with spaces is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from longplay.framework.library import NewPassage
from longplay.text.chunks import chunk_text
from longplay.text.reading import Block, StructuredDocument
from longplay.text.sentences import count_words, split_sentences

HEADING_SEPARATOR = " > "
"""Between the headings of a passage's path (``Harbour history > Timetable``)."""
MAX_WORDS = 160
OVERLAP_WORDS = 30


@dataclass(frozen=True)
class _Piece:
    """A paragraph, a cue or a sentence of a long paragraph: what passages are made of."""

    text: str
    words: int
    start: float | None
    end: float | None
    sep: str = "\n\n"
    """What goes before it in a passage: a blank line before a paragraph, a space
    before the next sentence of the same one."""


def cut_passages(
    document: StructuredDocument, *, max_words: int = MAX_WORDS, overlap_words: int = OVERLAP_WORDS
) -> list[NewPassage]:
    """The document's passages in reading order, each with the heading it is under."""
    if max_words < 1 or not 0 <= overlap_words < max_words:
        raise ValueError("need max_words >= 1 and 0 <= overlap_words < max_words")
    passages: list[NewPassage] = []
    for heading, blocks in _sections(document.blocks):
        pieces = [piece for block in blocks for piece in _pieces(block, max_words)]
        if document.timed:  # cues run on: one paragraph
            pieces = [replace(piece, sep=" ") for piece in pieces]
        passages.extend(
            NewPassage(
                text="".join(p.sep + p.text for p in group).strip(),
                heading=heading,
                start=group[0].start,
                end=group[-1].end,
            )
            for group in _groups(pieces, max_words, overlap_words)
        )
    return passages


def _sections(blocks: Sequence[Block]) -> Iterator[tuple[str | None, list[Block]]]:
    """Paragraphs under each heading; the heading named as its path (``A > B``)."""
    path: list[tuple[int, str]] = []
    current: list[Block] = []
    for block in blocks:
        if block.kind == "heading":
            if current:
                yield _path(path), current
                current = []
            path = [(level, text) for level, text in path if level < block.level]
            path.append((block.level, block.text))
        else:
            current.append(block)
    if current:
        yield _path(path), current


def _path(path: Sequence[tuple[int, str]]) -> str | None:
    return HEADING_SEPARATOR.join(text for _, text in path) or None


def _pieces(block: Block, max_words: int) -> list[_Piece]:
    words = count_words(block.text)
    if words <= max_words:
        return [_Piece(block.text, words, block.start, block.end)]
    # Too long for one passage: its sentences (or cut where a sentence is too long).
    sentences = [
        sentence
        for chunk in chunk_text(block.text, max_tokens=max_words, count_tokens=count_words)
        for sentence in split_sentences(chunk)
    ]
    return [
        _Piece(s, count_words(s), block.start, block.end, " " if i else "\n\n")
        for i, s in enumerate(sentences)
    ]


def _groups(pieces: Sequence[_Piece], max_words: int, overlap_words: int) -> Iterator[list[_Piece]]:
    """Consecutive pieces of at most ``max_words``; each group after the first starts
    with the last pieces of the one before that fit in ``overlap_words``."""
    group: list[_Piece] = []
    fresh = 0  # pieces in the group that no group before it had
    for piece in pieces:
        if fresh and sum(p.words for p in group) + piece.words > max_words:
            yield group
            group = _tail(group, overlap_words)
            while group and sum(p.words for p in group) + piece.words > max_words:
                group.pop(0)
            fresh = 0
        group.append(piece)
        fresh += 1
    if fresh:
        yield group


def _tail(group: Sequence[_Piece], overlap_words: int) -> list[_Piece]:
    """The last sentences of a group, at most ``overlap_words`` together."""
    sentences = [
        _Piece(s, count_words(s), p.start, p.end, " " if i else p.sep)
        for p in group
        for i, s in enumerate(split_sentences(p.text))
    ]
    tail: list[_Piece] = []
    for sentence in reversed(sentences):
        if sum(p.words for p in tail) + sentence.words > overlap_words:
            break
        tail.insert(0, sentence)
    return tail
