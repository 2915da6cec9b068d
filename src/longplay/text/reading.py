"""Reading a document of any common kind into headings and paragraphs (or timed cues).

:func:`read_document` takes text (``.txt``), Markdown, HTML (the article only: its
navigation, scripts, styles, headers, footers, asides, forms and ads are dropped),
PDF (its text layer), Word (``.docx``), subtitles (``.srt``, ``.vtt``) and the
transcript JSON that ``transcribe`` writes, and gives a :class:`StructuredDocument`:
blocks in reading order, each a heading (with its level) or a paragraph, with the
timings of subtitles and transcripts kept. What the name says is checked against
what the bytes are; a file that yields no text raises :class:`InvalidInput` with a
reason a person can act on (``empty``, ``no_text``, ``encrypted``, ``unreadable``,
``unsupported_input``).
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from longplay.framework import InputFile, InvalidInput
from longplay.text.documents import (
    binary_document,
    decode_text,
    markdown_to_text,
    unseen_markdown_out,
)
from longplay.text.sentences import PARAGRAPH_BREAK
from longplay.text.subtitles import Cue, parse_srt, parse_transcript_json, parse_vtt

if TYPE_CHECKING:
    from pypdf import PdfReader
    from selectolax.lexbor import LexborNode

DocumentFormat = Literal["txt", "md", "html", "pdf", "docx", "srt", "vtt", "transcript"]
BlockKind = Literal["heading", "paragraph"]

WHAT_WE_READ = (
    "text (.txt), Markdown (.md), HTML (.html), PDF (.pdf), Word (.docx), "
    "subtitles (.srt, .vtt) or a transcript (.json)"
)
_FORMAT_OF_SUFFIX: dict[str, DocumentFormat] = {
    ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".html": "html",
    ".htm": "html", ".xhtml": "html", ".pdf": "pdf", ".docx": "docx", ".srt": "srt",
    ".vtt": "vtt", ".json": "transcript",
}  # fmt: skip
_FORMAT_OF_MEDIA_TYPE: dict[str, DocumentFormat] = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/x-subrip": "srt",
    "text/vtt": "vtt",
    "application/json": "transcript",
}
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Block:
    """A heading or a paragraph of a document, in reading order."""

    text: str
    kind: BlockKind = "paragraph"
    level: int = 0
    """A heading's level, 1 (the title) to 6; 0 for a paragraph."""
    start: float | None = None
    """Seconds into the recording, for a cue of subtitles or a transcript."""
    end: float | None = None


@dataclass(frozen=True)
class StructuredDocument:
    """A document as read: its blocks, headings and paragraphs in reading order."""

    name: str
    format: DocumentFormat
    blocks: list[Block] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The whole text, one block a paragraph."""
        return "\n\n".join(block.text for block in self.blocks)

    @property
    def timed(self) -> bool:
        """Whether its blocks are timed cues (subtitles, a transcript)."""
        return any(block.start is not None for block in self.blocks)


def read_document(source: InputFile) -> StructuredDocument:
    """Read ``source`` into headings and paragraphs; :class:`InvalidInput` when it is
    not a kind of document this reads, not what its name says, or has no text."""
    data = source.path.read_bytes()
    format = _format_of(source, data)
    blocks = [b for b in _READERS[format](source.name, data) if b.text]
    if not any(b.kind == "paragraph" for b in blocks):
        raise InvalidInput(
            f"{source.name} has no text: it is empty, or its text is not in the file "
            "(check that it is the file you meant)",
            code="empty",
        )
    return StructuredDocument(source.name, format, blocks)


def _format_of(source: InputFile, data: bytes) -> DocumentFormat:
    """The format its name (or media type) says, checked against how its bytes start;
    where the name says nothing, the bytes tell."""
    named = _FORMAT_OF_SUFFIX.get(Path(source.name).suffix.lower()) or _FORMAT_OF_MEDIA_TYPE.get(
        source.media_type.split(";")[0].strip().lower()
    )
    sniffed = binary_document(data)
    if named in ("pdf", "docx") and sniffed != named:
        raise InvalidInput(
            f"{source.name} is not a {named.upper()} file: its content does not start as "
            f"one does; upload the document itself, or give it the right extension",
            code="unsupported_input",
        )
    if named is not None and sniffed is not None and named != sniffed:
        raise InvalidInput(
            f"{source.name} is a {sniffed.upper()} file under another name; "
            f"give it a .{sniffed} extension",
            code="unsupported_input",
        )
    if named is not None:
        return named
    if sniffed is not None:
        return sniffed
    head = _decode(source.name, data[:4096], strict=False).lstrip("\ufeff \t\r\n").lower()
    if head.startswith(("<!doctype html", "<html")):
        return "html"
    if head.startswith("webvtt"):
        return "vtt"
    if head[:1] in "{[":
        return "transcript"
    first_block = PARAGRAPH_BREAK.split(head, maxsplit=1)[0].splitlines()[:2]
    return "srt" if any("-->" in line for line in first_block) else "txt"


def _decode(name: str, data: bytes, *, strict: bool = True) -> str:
    """The text of a document, as every kind decodes text (:func:`decode_text`); not
    ``strict``, the best guess at text, for a look at how a file begins."""
    if strict:
        return decode_text(data, name, takes=f"a collection reads {WHAT_WE_READ}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="ignore")


def _flat(text: str) -> str:
    """One line of text: its spaces collapsed, soft hyphens (breaks that show only at
    a line's end) out."""
    return _SPACES.sub(" ", text.replace("\xad", "")).strip()


def _paragraphs(text: str) -> list[Block]:
    return [Block(_flat(p)) for p in PARAGRAPH_BREAK.split(text) if p.strip()]


def _read_txt(name: str, data: bytes) -> list[Block]:
    return _paragraphs(_decode(name, data))


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[^\n]*$", re.M | re.S)
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _read_md(name: str, data: bytes) -> list[Block]:
    """Headings (``#`` and underlined) as headings; everything else as
    :func:`~longplay.text.documents.markdown_to_text` reads it, paragraph by paragraph."""
    blocks: list[Block] = []
    text = _FENCE.sub("", unseen_markdown_out(_decode(name, data)))
    for chunk in PARAGRAPH_BREAK.split(text):
        lines = [line for line in chunk.splitlines() if line.strip()]
        if len(lines) == 2 and _SETEXT_UNDERLINE.match(lines[1]):
            level = 1 if lines[1].strip().startswith("=") else 2
            blocks.append(Block(_flat(markdown_to_text(lines[0])), "heading", level))
            continue
        body: list[str] = []
        for line in lines:
            heading = _ATX_HEADING.match(line)
            if heading is None:
                body.append(line)
                continue
            blocks.extend(_paragraphs(markdown_to_text("\n".join(body))))
            body = []
            text = _flat(markdown_to_text(heading.group(2)))
            blocks.append(Block(text, "heading", len(heading.group(1))))
        blocks.extend(_paragraphs(markdown_to_text("\n".join(body))))
    return blocks


_HTML_DROPPED = (
    "script, style, noscript, template, iframe, object, svg, canvas, form, button, select, "
    "nav, header, footer, aside, menu, dialog, "
    "[role=navigation], [role=banner], [role=contentinfo], [role=complementary], "
    "[role=search], [role=dialog], [aria-hidden=true], [hidden]"
)
"""What is never the article: code, page furniture, and what assistive technology is
told to skip."""
_HTML_AD = re.compile(
    r"(?:^|[\s_-])(ads?|advert\w*|sponsor\w*|promo\w*|banner|cookie\w*|newsletter|"
    r"share|social|related|breadcrumbs?|comments?|sidebar|popup|modal)(?:$|[\s_-])",
    re.I,
)
"""Class or id words that mark advertising and the like inside an article."""
_HTML_BLOCKS = "h1, h2, h3, h4, h5, h6, p, li, blockquote, pre, dt, dd, figcaption, td, th"
_HTML_ROOTS = ("article", "main", "[role=main]", "body")
_HTML_KEPT = frozenset({"html", "body", "article", "main"})


def _read_html(name: str, data: bytes) -> list[Block]:
    """The article of a web page, parsed with selectolax (lexbor): page furniture and
    ads dropped, the ``<article>`` (or ``<main>``) kept, each heading and paragraph a
    block; a block inside another (a ``<p>`` in an ``<li>``) is part of it."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode(name, data))
    dropped = tree.css(_HTML_DROPPED) + [
        node
        for node in tree.css("[class], [id]")
        if node.tag not in _HTML_KEPT
        and _HTML_AD.search(
            f"{node.attributes.get('class') or ''} {node.attributes.get('id') or ''}"
        )
    ]
    _outermost(dropped, lambda node: node.decompose())
    for line_break in tree.css("br"):  # inline text joins with no space; a break is one
        line_break.replace_with(" ")
    root = next((n for n in (tree.css_first(s) for s in _HTML_ROOTS) if n is not None), None)
    if root is None:
        return []
    blocks: list[Block] = []

    def add(node: LexborNode) -> None:
        text = _flat(node.text(deep=True, separator="", strip=False))
        tag = node.tag or ""
        if tag[:1] == "h" and tag[1:].isdigit():
            blocks.append(Block(text, "heading", int(tag[1:])))
        else:
            blocks.append(Block(text))

    _outermost(root.css(_HTML_BLOCKS), add)
    if not any(b.kind == "paragraph" for b in blocks):  # text straight in <div>s
        blocks = [Block(_flat(root.text(deep=True, separator=" ")))]
    return blocks


def _outermost(nodes: list[LexborNode], do: Callable[[LexborNode], None]) -> None:
    """``do`` each node that is not inside another of ``nodes``, in document order
    (removing a node removes what is inside it; a block inside a block is part of it)."""
    chosen = {node.mem_id for node in nodes}
    outermost = []
    for node in nodes:
        parent = node.parent
        while parent is not None and parent.mem_id not in chosen:
            parent = parent.parent
        if parent is None:
            outermost.append(node)
    for node in outermost:
        do(node)


def _read_pdf(name: str, data: bytes) -> list[Block]:
    """The text layer of each page, paragraph by paragraph; an encrypted PDF that opens
    without a password is read, one that needs one is refused."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _opens_without_password(reader):
            raise InvalidInput(
                f"{name} is encrypted with a password; save a copy without one and upload that",
                code="encrypted",
            )
        # Layout mode keeps the gaps between paragraphs as blank lines.
        pages = [page.extract_text(extraction_mode="layout") or "" for page in reader.pages]
    except InvalidInput:
        raise
    except Exception as exc:  # a damaged file breaks the parser in many ways
        raise InvalidInput(
            f"{name} could not be read as a PDF ({exc}); it may be damaged", code="unreadable"
        ) from exc
    blocks = [block for page in pages for block in _paragraphs(page)]
    if not blocks:
        raise InvalidInput(
            f"{name} has no text layer (a scan, or pages of images); run it through OCR, "
            "or upload the text itself",
            code="no_text",
        )
    return blocks


def _opens_without_password(reader: PdfReader) -> bool:
    """Whether an encrypted PDF opens with the empty password (many are only locked
    against printing or copying); a cipher pypdf cannot run counts as no."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # pypdf's DependencyError, a damaged encryption dictionary
        return False


_DOCX_HEADING = re.compile(r"^(?:heading\s*(\d)|title)$", re.I)


MAX_UNPACKED_GROWTH = 64 * 1024**2
"""How much bigger than itself a zip-based document (.docx) may unpack: its reader
holds every part in memory. Pictures barely compress, so a long illustrated report
grows little; a zip bomb grows by hundreds of MiB."""
MAX_ENTRY_RATIO = 100
"""The most a large part may be compressed (unpacked size to packed size)."""
_RATIO_FROM = 4 * 1024**2
"""A part from this size up is held to :data:`MAX_ENTRY_RATIO`; small ones may be
anything (XML of empty table cells compresses very well)."""


def _check_unpacked_size(name: str, data: bytes) -> None:
    """Refuse (``unreadable``) a zip-based document whose parts would unpack to much
    more than it is, from the sizes its zip declares (Python's zipfile reads no more
    than those). One that is not a zip at all is left to its reader to refuse."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        return
    total = sum(e.file_size for e in entries)
    mib = total / 1024**2
    if total - len(data) > MAX_UNPACKED_GROWTH:
        raise InvalidInput(
            f"{name} unpacks to {mib:.0f} MiB, more than {MAX_UNPACKED_GROWTH // 1024**2} "
            "MiB beyond its own size; it is not read (save it without the oversized "
            "content, or split it)",
            code="unreadable",
        )
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size >= _RATIO_FROM and ratio > MAX_ENTRY_RATIO:
            raise InvalidInput(
                f"{name} unpacks to {mib:.0f} MiB: its part {entry.filename} is "
                f"compressed {ratio:.0f} to 1, beyond the {MAX_ENTRY_RATIO} to 1 a real "
                "document reaches; it is not read",
                code="unreadable",
            )


def _read_docx(name: str, data: bytes) -> list[Block]:
    """Paragraphs of a Word document; those in a Title or Heading style are headings.
    Table cells are paragraphs after the body's text."""
    import docx

    _check_unpacked_size(name, data)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # PackageNotFoundError, BadZipFile, KeyError, ...
        raise InvalidInput(
            f"{name} is not a Word document (.docx) that can be opened; a .doc from an "
            "older Word needs saving as .docx first",
            code="unreadable",
        ) from exc
    blocks: list[Block] = []
    for paragraph in document.paragraphs:
        style = paragraph.style.name if paragraph.style is not None else ""
        heading = _DOCX_HEADING.match(style or "")
        text = _flat(paragraph.text)
        if heading is not None:
            # Word's Title sits above its Heading 1: the title is level 1, Heading N
            # is N + 1 (a heading path is read from the levels' order alone).
            level = min(6, int(heading.group(1)) + 1) if heading.group(1) else 1
            blocks.append(Block(text, "heading", level))
        else:
            blocks.append(Block(text))
    for table in document.tables:
        for row in table.rows:
            blocks.extend(Block(_flat(cell.text)) for cell in row.cells)
    return blocks


def _timed(name: str, parse: Callable[[str], list[Cue]], text: str) -> list[Block]:
    try:
        cues = parse(text)
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc.message}", code="unreadable") from exc
    return [Block(_flat(c.text), start=c.start, end=c.end) for c in cues]


def _read_srt(name: str, data: bytes) -> list[Block]:
    return _timed(name, parse_srt, _decode(name, data))


def _read_vtt(name: str, data: bytes) -> list[Block]:
    return _timed(name, parse_vtt, _decode(name, data))


def _read_transcript(name: str, data: bytes) -> list[Block]:
    return _timed(name, parse_transcript_json, _decode(name, data))


_READERS: dict[DocumentFormat, Callable[[str, bytes], Iterable[Block]]] = {
    "txt": _read_txt,
    "md": _read_md,
    "html": _read_html,
    "pdf": _read_pdf,
    "docx": _read_docx,
    "srt": _read_srt,
    "vtt": _read_vtt,
    "transcript": _read_transcript,
}
