"""Documents as longplay reads them: text and Markdown, subtitles and transcripts.

:class:`Document` is what ``translate`` works on: prose as paragraphs of lines, or
timed cues, read from UTF-8, UTF-16 or Windows-1252 bytes with the format sniffed
from the content where the extension says little, and written back in the same
format once translated. :func:`read_prose` reads text meant to be spoken, decoded the
same way (:func:`decode_text`), Markdown reduced to what is read aloud.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from longplay.framework import InputFile, InvalidInput
from longplay.text.chunks import chunk_text
from longplay.text.languages import Language, is_language_code
from longplay.text.sentences import PARAGRAPH_BREAK
from longplay.text.subtitles import (
    Cue,
    format_srt,
    format_vtt,
    load_json,
    parse_srt,
    parse_transcript_json,
    parse_vtt,
)

DocumentFormat = Literal["txt", "srt", "vtt", "json"]
_FORMAT_OF_SUFFIX: dict[str, DocumentFormat] = {
    ".srt": "srt", ".vtt": "vtt", ".json": "json",
    ".txt": "txt", ".text": "txt", ".md": "txt", ".markdown": "txt",
}  # fmt: skip
MEDIA_TYPES = {
    "txt": "text/plain",
    "md": "text/markdown",
    "markdown": "text/markdown",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "json": "application/json",
}
WHAT_WE_READ = "UTF-8 text (.txt, .md), subtitles (.srt, .vtt) or a transcript (.json)"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
BINARY_DOCUMENTS: dict[bytes, Literal["pdf", "docx"]] = {b"%PDF-": "pdf", b"PK\x03\x04": "docx"}
"""How the binary document formats start (a .docx is a zip file): such a file can pass
for Windows-1252 text without a control character (a PDF with its streams compressed)."""


def binary_document(data: bytes) -> Literal["pdf", "docx"] | None:
    """The binary document format ``data`` starts as (:data:`BINARY_DOCUMENTS`), if any."""
    return next((f for start, f in BINARY_DOCUMENTS.items() if data.startswith(start)), None)


_BLOCK_MARKER = re.compile(r"^(#{1,6}\s+|[-*+]\s+|>\s*|\d{1,3}[.)]\s+)")
"""Markdown that starts a line and is kept out of what the model sees: headings, list
items, quotes."""
UNIT_TOKENS = 80
"""Longest piece of a paragraph sent as one line: whole paragraphs up to this, else a
few sentences; a small model keeps long lines badly."""


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of prose as lines to translate: sentences (joined by a space) or the
    lines of a list (joined by a line break), each after its Markdown marker."""

    markers: list[str]
    lines: list[str]
    joiner: str

    def join(self, translated: Sequence[str]) -> str:
        return self.joiner.join(m + t for m, t in zip(self.markers, translated, strict=True))


@dataclass(frozen=True)
class Document:
    """Something to translate, read: prose as paragraphs, or timed cues."""

    name: str
    format: DocumentFormat
    suffix: str
    """Extension of the translation, without the dot: the input's (``md`` stays ``md``)."""
    paragraphs: list[Paragraph] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)
    transcript: Any = None
    """The transcript JSON as read, so that the translation keeps its other keys."""

    @classmethod
    def from_text(cls, text: str, *, name: str = "text.txt") -> Document:
        """Prose; an empty text is an :class:`InvalidInput`."""
        paragraphs = [_paragraph(block) for block in PARAGRAPH_BREAK.split(text.strip())]
        paragraphs = [p for p in paragraphs if any(line.strip() for line in p.lines)]
        if not paragraphs:
            raise InvalidInput(f"{name} is empty: there is no text to translate", code="empty")
        suffix = Path(name).suffix.lstrip(".").lower()
        return cls(name, "txt", suffix if suffix in ("md", "markdown") else "txt", paragraphs)

    @classmethod
    def read(cls, path: Path, *, name: str | None = None) -> Document:
        """Read a file; ``name`` (default: the file's) is what errors and outputs call it.

        The format comes from the content where the extension says little (``WEBVTT``
        first, JSON, an SRT timing line in the first block, else prose): subtitles saved
        as ``.txt`` are still subtitles.
        """
        name = name or path.name
        text = decode_text(path.read_bytes(), name, takes=f"translate takes {WHAT_WE_READ}")
        format = _FORMAT_OF_SUFFIX.get(Path(name).suffix.lower())
        if format in (None, "txt"):
            sniffed = _sniff(text)
            format = sniffed if format is None or sniffed in ("srt", "vtt") else format
        if format == "txt":
            return cls.from_text(text, name=name)
        try:
            cues, transcript = _cues(text, format)
        except InvalidInput as exc:
            raise InvalidInput(f"{name}: {exc.message}", code=exc.code) from exc
        if not any(cue.text.strip() for cue in cues):
            raise InvalidInput(
                f"{name} has no subtitle cues with text to translate; check that it is the "
                f"file you meant (a {format.upper()} file with at least one cue)",
                code="empty",
            )
        return cls(name, format, format, cues=cues, transcript=transcript)

    def lines(self) -> list[str]:
        """What the model translates, one entry per line of the translation."""
        if self.format == "txt":
            return [line for p in self.paragraphs for line in p.lines]
        return [" ".join(cue.text.split()) for cue in self.cues]

    def write_translation(
        self, out_dir: Path, translated: Sequence[str], language: Language
    ) -> tuple[list[Path], str, list[Cue] | None]:
        """Write ``translated`` (one entry per :meth:`lines`) into ``out_dir``, named after
        the document with the language's code (``talk.srt`` → ``talk.de.srt``, plus
        ``talk.de.txt`` for cues). Returns the files, the whole translation as plain text
        and, for cues, the translated cues with their timings."""
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = _stem(self.name)
        if self.format == "txt":
            text = _join_prose(self.paragraphs, translated)
            path = _write(out_dir / f"{stem}.{language.code}.{self.suffix}", text + "\n")
            return [path], text, None
        cues = [
            replace(cue, text=_wrap_like(cue.text, text))
            for cue, text in zip(self.cues, translated, strict=True)
        ]
        text = "\n".join(t for t in translated if t)
        main = out_dir / f"{stem}.{language.code}.{self.suffix}"
        if self.format == "json":
            body = _transcript(self.transcript, translated, language)
            _write(main, json.dumps(body, ensure_ascii=False, indent=2) + "\n")
        else:
            _write(main, format_srt(cues) if self.format == "srt" else format_vtt(cues))
        plain = _write(out_dir / f"{stem}.{language.code}.txt", text + "\n")
        return [main, plain], text, cues


def _cues(text: str, format: DocumentFormat) -> tuple[list[Cue], Any]:
    """The cues, and for a transcript the JSON they came from."""
    if format == "vtt":
        return parse_vtt(text), None
    if format == "srt":
        return parse_srt(text), None
    transcript = load_json(text, "the transcript")
    return parse_transcript_json(transcript), transcript


def decode_text(data: bytes, name: str, *, takes: str) -> str:
    """The text of a file: UTF-8 (or UTF-16 with its byte-order mark), else Windows-1252
    (Latin-1) as many subtitle and older text files are. Anything with control
    characters, a PDF or a zip, or what reads as Windows-1252 only as a jumble of
    accented letters (another encoding), is not text: an :class:`InvalidInput` naming the file
    and ending with ``takes``, what the reader takes (``translate takes ...``)."""
    binary = binary_document(data)
    if binary is not None:
        raise InvalidInput(
            f"{name} is a {binary.upper()} file, not text; {takes}", code="unsupported_input"
        )
    text: str | None = None
    encoding = "utf-16"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
    else:
        for encoding in ("utf-8-sig", "cp1252"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    if text is None or _CONTROL.search(text):
        raise InvalidInput(
            f"{name} is not text: it has bytes that no UTF-8, UTF-16 or Windows-1252 text "
            f"has; if it is text, save it as UTF-8 and give that; {takes}",
            code="unsupported_input",
        )
    if encoding == "cp1252" and _misread(text):
        raise InvalidInput(
            f"{name} is not UTF-8, and read as Windows-1252 it is mostly accented letters "
            "and symbols, so it is in another encoding (GBK, Big5, Windows-1251 or -1256, "
            f"KOI8-R ...); save it as UTF-8 and give that; {takes}",
            code="unsupported_input",
        )
    return text


MISREAD_SHARE = 0.3
"""Windows-1252 text in a Latin-script language has a few accented letters in a
hundred; Chinese, Arabic or Russian bytes read as Windows-1252 are nearly all accented
letters and symbols."""


def _misread(text: str) -> bool:
    """Whether ``text``, decoded as Windows-1252, is rather another encoding misread."""
    seen = [char for char in text if not char.isspace()]
    beyond_ascii = sum(1 for char in seen if ord(char) > 0x7F)
    return beyond_ascii >= 20 and beyond_ascii > MISREAD_SHARE * len(seen)


def _sniff(text: str) -> DocumentFormat:
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith("WEBVTT"):
        return "vtt"
    if head[:1] in "{[":
        return "json"
    first_block = PARAGRAPH_BREAK.split(head, maxsplit=1)[0].splitlines()[:2]
    return "srt" if any("-->" in line for line in first_block) else "txt"


def _paragraph(block: str) -> Paragraph:
    rows = [row.strip() for row in block.splitlines() if row.strip()]
    if len(rows) > 1 and all(_BLOCK_MARKER.match(row) for row in rows):
        split = [_split_marker(row) for row in rows]
        return Paragraph([m for m, _ in split], [line for _, line in split], "\n")
    marker, body = _split_marker(" ".join(rows))
    lines = chunk_text(body, max_tokens=UNIT_TOKENS) or [""]
    return Paragraph([marker] + [""] * (len(lines) - 1), lines, " ")


def _split_marker(row: str) -> tuple[str, str]:
    match = _BLOCK_MARKER.match(row)
    return (match.group(1), row[match.end() :]) if match else ("", row)


def _join_prose(paragraphs: Sequence[Paragraph], translated: Sequence[str]) -> str:
    texts, position = [], 0
    for paragraph in paragraphs:
        count = len(paragraph.lines)
        texts.append(paragraph.join(translated[position : position + count]))
        position += count
    return "\n\n".join(texts)


def _wrap_like(source: str, text: str) -> str:
    """A cue that had two or more lines gets its translation on two balanced lines."""
    words = text.split()
    if len(source.strip().splitlines()) < 2 or len(words) < 2:
        return text
    half = len(text) / 2
    cut = min(range(1, len(words)), key=lambda i: abs(len(" ".join(words[:i])) - half))
    return " ".join(words[:cut]) + "\n" + " ".join(words[cut:])


def _transcript(data: Any, texts: Sequence[str], language: Language) -> dict[str, Any]:
    """The input transcript with its segments' texts translated and ``language`` the
    target's. Word timings belonged to the source's words: their lists are emptied, so
    that what reads longplay's transcripts still reads this one."""
    segments: list[dict[str, Any]] = data["segments"] if isinstance(data, dict) else data
    top = _without_words(data) if isinstance(data, dict) else {}
    if "language" in top:
        top["source_language"] = top["language"]
    return {
        **top,
        "language": language.code,
        "text": " ".join(t for t in texts if t),
        "segments": [
            {**_without_words(segment), "text": text}
            for segment, text in zip(segments, texts, strict=True)
        ],
    }


def _without_words(part: dict[str, Any]) -> dict[str, Any]:
    emptied: dict[str, list[Any]] = {key: [] for key in ("words", "tokens") if key in part}
    return {**part, **emptied}


def _stem(name: str) -> str:
    """The input's name without extension, nor a language code before it (``talk.en``)."""
    stem = Path(name).stem or "translation"
    base, _, last = stem.rpartition(".")
    return base if base and is_language_code(last) else stem


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
PROSE_TAKES = "give a text (.txt) or Markdown (.md) file"
_ADDRESS = r"(?:[^()]|\([^()]*\))*"
"""A link's address and title, which may hold parentheses in pairs (``Foo_(bar)``)."""
_UNSEEN_MARKDOWN = (
    # Front matter (Jekyll, Hugo, Obsidian): YAML between --- lines, or TOML between +++.
    re.compile(r"\A\ufeff?(---|\+\+\+)[ \t]*\n.*?\n(?:\1|\.\.\.)[ \t]*(?:\n|\Z)", re.S),
    re.compile(r"<!--.*?(?:-->|\Z)", re.S),  # comments: notes to the writers
)
_TABLE_RULE = re.compile(
    r"^(?=[^\n]*\|) {0,3}\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*(?:\n|\Z)",
    re.M,
)
_TABLE_ROW = re.compile(r"^ {0,3}\|(.*)\|[ \t]*$", re.M)


def unseen_markdown_out(markdown: str) -> str:
    """Markdown without what a reader of it rendered never sees: its front matter and
    its comments (a draft's "<!-- TODO: check these numbers -->" was read out in a
    podcast)."""
    for pattern in _UNSEEN_MARKDOWN:
        markdown = pattern.sub("", markdown)
    return markdown


def _table_row(row: re.Match[str]) -> str:
    """A table's row as a line that reads: its cells, a comma between each."""
    cells = [cell.strip() for cell in row[1].split("|")]
    line = ", ".join(cell for cell in cells if cell)
    return f"{line}." if line and line[-1] not in ".!?:;" else line


_MARKDOWN = (
    (re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[^\n]*$", re.M | re.S), ""),  # code blocks
    (_TABLE_RULE, ""),  # a table's rule under its head
    (_TABLE_ROW, _table_row),  # its rows: cells
    (re.compile(rf"!\[[^\]]*\]\({_ADDRESS}\)"), ""),  # images
    (re.compile(rf"\[([^\]]+)\]\({_ADDRESS}\)"), r"\1"),  # links: their text
    (re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.M), r"\n\1\n"),  # a heading: a paragraph
    (re.compile(r"^ {0,3}(?:>[ \t]?)+|^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.M), ""),  # quote, list
    (re.compile(r"[*`]+|(?<!\w)_+|_+(?!\w)"), ""),  # emphasis and code marks
)


def markdown_to_text(markdown: str) -> str:
    """Markdown as it is read aloud: no front matter, comments, code blocks, images or
    markup; link texts without their addresses; a table's rows as lines of cells; each
    heading a paragraph of its own."""
    markdown = unseen_markdown_out(markdown)
    for pattern, replacement in _MARKDOWN:
        markdown = pattern.sub(replacement, markdown)
    return markdown


def read_prose(source: InputFile) -> str:
    """The text of a ``.txt`` or ``.md`` file (any ``text/`` type), decoded as
    ``translate`` and ``summarize`` decode theirs (:func:`decode_text`); Markdown as
    :func:`markdown_to_text` reads it."""
    suffix = Path(source.name).suffix.lower()
    if not (source.media_type.startswith("text/") or suffix in TEXT_SUFFIXES):
        raise InvalidInput(
            f"{source.name} is not a text file ({source.media_type}); give a .txt or .md file"
        )
    text = decode_text(source.path.read_bytes(), source.name, takes=PROSE_TAKES)
    if suffix in (".md", ".markdown") or source.media_type == "text/markdown":
        text = markdown_to_text(text)
    return text
