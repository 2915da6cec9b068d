"""The ``translate`` kind: text, a document or a transcript into another language.

What goes to the LLM is a list of lines: a subtitle cue's text is one line (its own line
breaks joined), a paragraph of prose one line or, when long, a few sentences at a time
(cut by :func:`~longplay.text.chunk_text`). Lines are translated in order, a chunk at a
time, and come back one for one, so cues keep their timings and count and prose keeps
its paragraphs however the model behaves:

- A chat model (an OpenAI-compatible server) gets a chunk as numbered lines and must
  answer with the same numbered lines. An answer with the wrong count, an empty line, a
  line left in the source language or the same line twice for different sources is
  asked for once more with a stricter prompt that says what was wrong; if that fails
  too, the chunk's lines are translated one at a time.
- The local llama.cpp model (the bundled Gemma 3 270M is a base model, not
  instruction-tuned) continues a document of ``English: … / German: …`` pairs: two
  fixed examples, the last few pairs it wrote, then the line, stopped at the end of the
  line; one line in, one line out. Measured on Gemma 270M, numbered batches made it
  repeat one line for the rest of a chunk and copy the examples; line by line with its
  own last pairs as context it translates noticeably better, at about a second a line
  on two cores. A chunk is then only the unit of progress.

:func:`translate_file` is the whole job without the job: ``dub`` calls it between
transcription and speech.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from longplay.config import Settings, get_settings
from longplay.engines import LanguageModel, LlamaCppModel, Message, get_language_model
from longplay.jobs.errors import InvalidInput, InvalidParams
from longplay.jobs.registry import JobKind, Step, StepContext, register
from longplay.text import (
    Cue,
    chunk_text,
    estimate_tokens,
    format_srt,
    format_vtt,
    parse_srt,
    parse_transcript_json,
    parse_vtt,
)

# -- languages ---------------------------------------------------------------------------

LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech",
    "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "ga": "Irish", "gl": "Galician", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian",
    "ms": "Malay", "mt": "Maltese", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian",
    "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "zh": "Chinese",
    "en-GB": "British English", "en-US": "American English", "es-MX": "Mexican Spanish",
    "fr-CA": "Canadian French", "pt-BR": "Brazilian Portuguese",
    "pt-PT": "European Portuguese", "zh-Hans": "Simplified Chinese",
    "zh-Hant": "Traditional Chinese",
}  # fmt: skip
"""Codes (ISO 639-1, and a few regional variants) and the English names prompts use."""
_ALIASES = {"nb": "no", "zh-cn": "zh-Hans", "zh-sg": "zh-Hans", "zh-tw": "zh-Hant"}
_CODES = {
    **{key.lower(): code for key, code in _ALIASES.items()},
    **{code.lower(): code for code in LANGUAGES},
}
_LOOKUP = {**_CODES, **{name.lower(): code for code, name in LANGUAGES.items()}}


@dataclass(frozen=True)
class Language:
    """A language as prompts name it (``German``) and files are named after it (``de``)."""

    code: str
    name: str

    @classmethod
    def find(cls, value: str) -> Language:
        """``de``, ``DE``, ``de_DE``'s base, ``German`` or ``german`` → German (``de``)."""
        key = value.strip().replace("_", "-").lower()
        code = _LOOKUP.get(key) or _LOOKUP.get(key.split("-")[0])
        if code is None:
            raise ValueError(
                f"unknown language {value!r}: give an ISO 639-1 code such as 'de' or an "
                "English name such as 'German'"
            )
        return cls(code, LANGUAGES[code])


# -- parameters --------------------------------------------------------------------------

Formality = Literal["default", "formal", "informal"]


class TranslationOptions(BaseModel):
    """How to translate: what ``translate`` takes besides its input, and what ``dub`` passes on."""

    model_config = ConfigDict(extra="forbid")

    target_language: str = Field(
        description="Language to translate into: a code (de) or an English name (German)."
    )
    source_language: str | None = Field(
        None, description="Language of the input; null: the model works it out."
    )
    formality: Formality = Field(
        "default", description="formal or informal address (Sie/du, vous/tu) where it applies."
    )
    glossary: dict[str, str] = Field(
        default_factory=dict,
        max_length=500,
        description='Terms and how to translate them, e.g. {"cloud": "Cloud"}.',
    )
    instructions: str | None = Field(
        None,
        max_length=2000,
        description='Context and style for the translator ("a medical talk; short lines").',
    )

    @field_validator("target_language", "source_language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        return None if value is None else Language.find(value).name

    @field_validator("glossary")
    @classmethod
    def _no_blank_terms(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not term.strip() or not meaning.strip() for term, meaning in value.items()):
            raise ValueError("glossary terms and their translations must not be blank")
        return value

    @property
    def target(self) -> Language:
        return Language.find(self.target_language)

    @property
    def source(self) -> Language | None:
        return Language.find(self.source_language) if self.source_language else None


class TranslateParams(TranslationOptions):
    """Parameters of a ``translate`` job: the options, and the text unless a file is given."""

    text: str | None = Field(
        None, description="Text to translate; leave out when a file is uploaded instead."
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text is empty: give the text to translate, or upload a file")
        return value


# -- documents ---------------------------------------------------------------------------

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
_WHAT_WE_READ = "UTF-8 text (.txt, .md), subtitles (.srt, .vtt) or a transcript (.json)"
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
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
        paragraphs = [_paragraph(block) for block in _PARAGRAPH_BREAK.split(text.strip())]
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
        text = _decode(path.read_bytes(), name)
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


def _cues(text: str, format: DocumentFormat) -> tuple[list[Cue], Any]:
    """The cues, and for a transcript the JSON they came from."""
    if format == "vtt":
        return parse_vtt(text), None
    if format == "srt":
        return parse_srt(text), None
    try:
        transcript = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc}") from exc
    return parse_transcript_json(transcript), transcript


def _decode(data: bytes, name: str) -> str:
    """UTF-8 (or UTF-16 with its byte-order mark), else Windows-1252 as many subtitle
    files are; anything with control characters is not text."""
    text: str | None = None
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
            f"{name} is not text; translate takes {_WHAT_WE_READ}", code="unsupported_input"
        )
    return text


def _sniff(text: str) -> DocumentFormat:
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith("WEBVTT"):
        return "vtt"
    if head[:1] in "{[":
        return "json"
    first_block = _PARAGRAPH_BREAK.split(head, maxsplit=1)[0].splitlines()[:2]
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


# -- progress ----------------------------------------------------------------------------


class Progress(Protocol):
    """Where progress goes: :meth:`StepContext.advance` or anything called like it."""

    def __call__(self, done: float, total: float, **details: Any) -> None: ...


class Note(Protocol):
    """Where notes go: :meth:`StepContext.note` or anything called like it."""

    def __call__(self, message: str, **data: Any) -> None: ...


def _no_progress(done: float, total: float, **details: Any) -> None:
    """Progress nobody follows."""


def _no_note(message: str, **data: Any) -> None:
    """Notes nobody reads."""


@dataclass
class TranslationStats:
    """How the translation went, for the job's state and for a person judging it."""

    lines: int = 0
    chunks: int = 0
    retried_chunks: int = 0
    """Chunks whose first answer failed the checks and were asked for again."""
    fallback_lines: int = 0
    """Lines translated once more on their own after the answer for them failed the checks."""
    untranslated_lines: int = 0
    """Lines the model gave back empty (kept in the source language) or untranslated."""


class _Tally:
    """Counts the characters of source done, by line where lines go one at a time and
    by chunk, and reports them."""

    def __init__(
        self, progress: Progress, lines: Sequence[str], chunks: int, **details: Any
    ) -> None:
        self.progress, self.details = progress, details
        self.total = sum(len(line) for line in lines)
        self.done = self.chunk_start = 0
        self.chunks_done, self.chunks_total = 0, chunks

    def line_done(self, line: str) -> None:
        self.done += len(line)
        self.report()

    def chunk_done(self, chunk: Sequence[str]) -> None:
        self.done = self.chunk_start = self.chunk_start + sum(len(line) for line in chunk)
        self.chunks_done += 1
        self.report()

    def report(self) -> None:
        self.progress(
            min(self.done, self.total),
            max(self.total, 1),
            chunks_done=self.chunks_done,
            chunks_total=self.chunks_total,
            characters_done=min(self.done, self.total),
            characters_total=self.total,
            **self.details,
        )


# -- checking an answer ------------------------------------------------------------------

_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):]\s*(.*?)\s*$")
_NOT_WORD = re.compile(r"[\W_]+")


def _normal(text: str) -> str:
    return _NOT_WORD.sub(" ", text.lower()).strip()


def _is_copy(source: str, text: str) -> bool:
    """Left in the source language: the same words, and enough of them to tell (a name
    or "OK" may well stay as it is)."""
    return len(source.split()) >= 3 and _normal(source) == _normal(text)


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
        if not _normal(text):
            return None, f"left line {number} empty"
        if _is_copy(source, text):
            return None, f"left line {number} untranslated"
    seen: dict[str, str] = {}
    for source, text in zip(sources, texts, strict=True):
        if seen.setdefault(_normal(text), _normal(source)) != _normal(source):
            return None, "gave the same translation for different lines"
    return texts, ""


# -- prompting ---------------------------------------------------------------------------

_EXAMPLES = {
    "en": ("Where is the nearest pharmacy?",
           "We planted three apple trees in the garden last spring."),
    "de": ("Wo ist die nächste Apotheke?",
           "Wir haben im letzten Frühling drei Apfelbäume im Garten gepflanzt."),
    "fr": ("Où est la pharmacie la plus proche ?",
           "Nous avons planté trois pommiers dans le jardin au printemps dernier."),
    "es": ("¿Dónde está la farmacia más cercana?",
           "Plantamos tres manzanos en el jardín la primavera pasada."),
    "it": ("Dov'è la farmacia più vicina?",
           "La primavera scorsa abbiamo piantato tre meli in giardino."),
    "pt": ("Onde fica a farmácia mais próxima?",
           "Plantamos três macieiras no jardim na primavera passada."),
    "nl": ("Waar is de dichtstbijzijnde apotheek?",
           "Vorig voorjaar hebben we drie appelbomen in de tuin geplant."),
    "pl": ("Gdzie jest najbliższa apteka?",
           "Zeszłej wiosny posadziliśmy w ogrodzie trzy jabłonie."),
    "ru": ("Где ближайшая аптека?", "Прошлой весной мы посадили в саду три яблони."),
    "ja": ("一番近い薬局はどこですか？", "去年の春、庭にリンゴの木を三本植えました。"),  # noqa: RUF001
    "zh": ("最近的药店在哪里？", "去年春天，我们在花园里种了三棵苹果树。"),  # noqa: RUF001
}  # fmt: skip
"""The same two sentences in several languages: the worked examples a base model needs
to see what is asked of it. Deliberately unlike what people translate, so that a small
model that copies an example instead of translating the line is caught doing it."""
HISTORY_PAIRS = 3
"""Earlier pairs a base model sees before each line: enough to carry names and tone."""
ANSWER_FACTOR = 2.5
"""Tokens an answer may take per token of source: German is longer than English, and
tokenizers spend more tokens on most other scripts."""
MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS = 64, 1000
CHAT_CHUNK_LINES = 24
"""Most lines a chat model gets at once: past this even good models start to merge lines."""
BASE_CHUNK_LINES = 4
"""Lines per chunk for a base model, which translates line by line: the progress unit."""
_FORMALITY = {
    "formal": "Use the formal form of address (Sie, vous, usted, Lei, …).",
    "informal": "Use the informal form of address (du, tu, tú, …).",
}


def _language_of(code: str) -> str:
    return code.split("-")[0]


def _glossary_for(options: TranslationOptions, lines: Sequence[str]) -> dict[str, str]:
    """The glossary entries whose term occurs in ``lines``: a long glossary costs no
    context where it has nothing to say."""
    text = " ".join(lines).lower()
    return {term: meaning for term, meaning in options.glossary.items() if term.lower() in text}


class _Translator(Protocol):
    chunk_lines: int

    def overhead_tokens(self) -> int:
        """Tokens a prompt takes besides the lines and the answer."""
        ...

    def translate_chunk(self, lines: Sequence[str], run: _Run) -> list[str]:
        """One translation per line, in order."""
        ...


@dataclass
class _Run:
    """What a translation in progress shares with its translator."""

    context_tokens: int
    tally: _Tally
    note: Note
    stats: TranslationStats
    chunk_number: int = 0

    def answer_tokens(self, lines: Sequence[str], prompt_tokens: int) -> int:
        wanted = int(ANSWER_FACTOR * sum(estimate_tokens(line) for line in lines))
        wanted += 8 * len(lines) + 16
        return max(16, min(wanted, self.context_tokens - prompt_tokens))

    def settle(self, source: str, text: str) -> str:
        """The translation kept for ``source``: the source itself where the model gave
        nothing back, so that no line goes missing."""
        text = " ".join(text.split())
        if not _normal(text) or _is_copy(source, text):
            self.stats.untranslated_lines += 1
        return text if _normal(text) else source


class ChatTranslator:
    """Numbered lines to a chat model, with the count guard described in the module."""

    chunk_lines = CHAT_CHUNK_LINES

    def __init__(self, llm: LanguageModel, options: TranslationOptions) -> None:
        self.llm, self.options = llm, options

    def overhead_tokens(self) -> int:
        return self.llm.count_tokens(self._system(CHAT_CHUNK_LINES, [])) + 64

    def _direction(self) -> str:
        source = self.options.source
        origin = f" from {source.name}" if source else ""
        return f"{origin} into {self.options.target.name}"

    def _rules(self, lines: Sequence[str]) -> list[str]:
        rules = []
        if self.options.formality in _FORMALITY:
            rules.append(_FORMALITY[self.options.formality])
        if glossary := _glossary_for(self.options, lines):
            terms = "; ".join(f"{term} → {meaning}" for term, meaning in glossary.items())
            rules.append(f"Translate these terms as given: {terms}.")
        if self.options.instructions:
            rules.append(f"Notes from the client: {self.options.instructions.strip()}")
        return rules

    def _system(self, count: int, lines: Sequence[str]) -> str:
        return "\n".join(
            [
                "You are a professional translator. Translate the user's numbered lines"
                f"{self._direction()}.",
                f"Answer with exactly {count} lines, numbered 1 to {count} like the input: "
                "line k of your answer is the translation of line k of the input.",
                "Never merge, split, skip or add lines, even where a sentence runs on over "
                "several lines; keep names, numbers and markup as they are.",
                "Write nothing but the numbered translation.",
                *self._rules(lines),
            ]
        )

    def translate_chunk(self, lines: Sequence[str], run: _Run) -> list[str]:
        texts = self._numbered(lines, run) if len(lines) > 1 else [self._one(lines[0], run)]
        if texts is None:
            run.stats.fallback_lines += len(lines)
            texts = [self._one(line, run) for line in lines]
        return [run.settle(source, text) for source, text in zip(lines, texts, strict=True)]

    def _numbered(self, lines: Sequence[str], run: _Run) -> list[str] | None:
        """The chunk as numbered lines, asked for twice at most; None: it failed both times."""
        count = len(lines)
        messages: list[Message] = [
            {"role": "system", "content": self._system(count, lines)},
            {"role": "user", "content": "\n".join(f"{i}. {t}" for i, t in enumerate(lines, 1))},
        ]
        answer = self._ask(messages, lines, run)
        texts, problem = parse_numbered(answer, lines)
        if texts is not None:
            return texts
        run.stats.retried_chunks += 1
        run.note(f"chunk {run.chunk_number}: the answer {problem}; asking again, more strictly")
        messages += [
            {"role": "assistant", "content": answer},
            {
                "role": "user",
                "content": f"Your answer {problem}. Translate the same {count} lines again: "
                f"exactly {count} lines numbered 1 to {count}, one for each line of the "
                "input in the same order, each translated, and nothing else.",
            },
        ]
        texts, problem = parse_numbered(self._ask(messages, lines, run), lines)
        if texts is None:
            run.note(
                f"chunk {run.chunk_number}: the answer {problem} again; translating its "
                f"{count} lines one by one"
            )
        return texts

    def _ask(self, messages: Sequence[Message], lines: Sequence[str], run: _Run) -> str:
        prompt_tokens = sum(self.llm.count_tokens(m["content"]) for m in messages)
        return self.llm.chat(messages, max_tokens=run.answer_tokens(lines, prompt_tokens))

    def _one(self, line: str, run: _Run) -> str:
        system = "\n".join(
            [
                f"You are a professional translator. Translate the user's text{self._direction()}.",
                "Answer with the translation alone, on one line.",
                *self._rules([line]),
            ]
        )
        messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "user", "content": line},
        ]
        text = self._ask(messages, [line], run)
        run.tally.line_done(line)
        return text


class CompletionTranslator:
    """Line by line through a base model, as described in the module."""

    chunk_lines = BASE_CHUNK_LINES

    def __init__(self, llm: LanguageModel, options: TranslationOptions) -> None:
        self.llm, self.options = llm, options
        target, source = options.target, options.source
        self.target = target.name
        self.source = source.name if source else "Original"
        example_from = source.code if source and source.code != target.code else "en"
        if _language_of(target.code) == "en" and example_from == "en":
            example_from = "de"
        pairs = zip(
            _EXAMPLES.get(_language_of(example_from), ()),
            _EXAMPLES.get(_language_of(target.code), ()),
            strict=False,
        )
        self.examples = list(pairs)
        self.history: list[tuple[str, str]] = []

    def overhead_tokens(self) -> int:
        return self.llm.count_tokens(self._prompt("", with_history=True)) + 16

    def _prompt(self, line: str, *, with_history: bool) -> str:
        formality = "" if self.options.formality == "default" else f"{self.options.formality} "
        head = [f"{self.source} sentences and their {formality}{self.target} translations."]
        if glossary := _glossary_for(self.options, [line]):
            head.append("Glossary: " + "; ".join(f"{k} = {v}" for k, v in glossary.items()))
        if self.options.instructions:
            head.append(f"Notes: {' '.join(self.options.instructions.split())}")
        pairs = [*self.examples, *(self.history[-HISTORY_PAIRS:] if with_history else [])]
        shown = "".join(f"{self.source}: {s}\n{self.target}: {t}\n\n" for s, t in pairs)
        return "\n".join(head) + "\n\n" + shown + f"{self.source}: {line}\n{self.target}:"

    def translate_chunk(self, lines: Sequence[str], run: _Run) -> list[str]:
        return [self._line(line, run) for line in lines]

    def _line(self, line: str, run: _Run) -> str:
        text = self._ask(line, run, with_history=True)
        if not self._usable(line, text):
            # Its own earlier lines can lead a small model astray: try with the examples only.
            run.stats.fallback_lines += 1
            text = self._ask(line, run, with_history=False)
        run.tally.line_done(line)
        text = run.settle(line, text)
        self.history.append((line, text))
        return text

    def _usable(self, line: str, text: str) -> bool:
        """Not empty, not the line itself, not one of the examples' translations."""
        copied = any(_normal(text) == _normal(example) for _, example in self.examples)
        return bool(_normal(text)) and not _is_copy(line, text) and not copied

    def _ask(self, line: str, run: _Run, *, with_history: bool) -> str:
        prompt = self._prompt(line, with_history=with_history)
        max_tokens = run.answer_tokens([line], self.llm.count_tokens(prompt))
        return self.llm.complete(prompt, max_tokens=max_tokens, stop=["\n"])


def translator_for(llm: LanguageModel, options: TranslationOptions) -> _Translator:
    """A llama.cpp model is prompted as a base model (which an instruction-tuned GGUF
    follows too); any other engine is taken to be a chat model."""
    if isinstance(llm, LlamaCppModel):
        return CompletionTranslator(llm, options)
    return ChatTranslator(llm, options)


# -- translating -------------------------------------------------------------------------


def translate_lines(
    lines: Sequence[str],
    options: TranslationOptions,
    *,
    llm: LanguageModel,
    context_tokens: int,
    progress: Progress = _no_progress,
    note: Note = _no_note,
    **details: Any,
) -> tuple[list[str], TranslationStats]:
    """One translation per line of ``lines``, in order; a line with no word in it (empty,
    ``---``) stays as it is.

    Chunks of lines fit ``context_tokens`` with room for the answer; ``progress`` hears
    of each line and chunk done, with ``details`` added to what it is told.
    """
    todo = [i for i, line in enumerate(lines) if _normal(line)]
    translator = translator_for(llm, options)
    chunks = _chunks([lines[i] for i in todo], translator, context_tokens)
    stats = TranslationStats(lines=len(todo), chunks=len(chunks))
    tally = _Tally(progress, [lines[i] for i in todo], len(chunks), **details)
    run = _Run(context_tokens, tally, note, stats)
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
    if stats.untranslated_lines:
        note(
            f"{stats.untranslated_lines} of {stats.lines} lines came back empty or untranslated "
            "and stand as they were; a stronger model does better (see the README)"
        )
    return translated, stats


def _chunks(lines: Sequence[str], translator: _Translator, context_tokens: int) -> list[int]:
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
    progress: Progress = _no_progress,
    note: Note = _no_note,
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
        context_tokens=settings.llm_context_tokens,
        progress=progress,
        note=note,
        input=document.name,
        language=language.code,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _stem(document.name)
    if document.format == "txt":
        text = _join_prose(document.paragraphs, translated)
        path = _write(out_dir / f"{stem}.{language.code}.{document.suffix}", text + "\n")
        return Translation([path], language, text, None, stats)
    cues = [
        Cue(cue.start, cue.end, _wrap_like(cue.text, text))
        for cue, text in zip(document.cues, translated, strict=True)
    ]
    text = "\n".join(t for t in translated if t)
    main = out_dir / f"{stem}.{language.code}.{document.suffix}"
    if document.format == "json":
        body = _transcript(document.transcript, translated, language)
        _write(main, json.dumps(body, ensure_ascii=False, indent=2) + "\n")
    else:
        _write(main, format_srt(cues) if document.format == "srt" else format_vtt(cues))
    plain = _write(out_dir / f"{stem}.{language.code}.txt", text + "\n")
    return Translation([main, plain], language, text, cues, stats)


def translate_file(
    source: Path,
    out_dir: Path,
    options: TranslationOptions,
    *,
    name: str | None = None,
    progress: Progress = _no_progress,
    note: Note = _no_note,
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
    :class:`~longplay.jobs.errors.RetryableError` for a timeout.
    """
    document = Document.read(source, name=name)
    return translate_document(
        document, out_dir, options, progress=progress, note=note, llm=llm, settings=settings
    )


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
    return base if base and last.lower() in _CODES else stem


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the job kind ------------------------------------------------------------------------


def translate(ctx: StepContext) -> None:
    """Translate the ``text`` parameter or the one input file into the work folder."""
    params = TranslateParams.model_validate(ctx.params)
    document = _document(ctx, params)
    result = translate_document(document, ctx.workdir, params, progress=ctx.advance, note=ctx.note)
    for path in result.files:
        ctx.add_output(path, media_type=MEDIA_TYPES[path.suffix.lstrip(".")])
    ctx.state["translation"] = {
        "language": result.language.code,
        **dataclasses.asdict(result.stats),
    }


def _document(ctx: StepContext, params: TranslateParams) -> Document:
    if params.text is not None and ctx.inputs:
        raise InvalidParams("give either text or one file to translate, not both")
    if params.text is not None:
        return Document.from_text(params.text)
    if not ctx.inputs:
        raise InvalidParams(
            f"nothing to translate: set the text parameter or upload one file ({_WHAT_WE_READ})"
        )
    source = ctx.inputs[0]
    return Document.read(source.path, name=source.name)


register(
    JobKind(
        name="translate",
        description=(
            "Translate text, a document (.txt, .md) or subtitles (.srt, .vtt, transcript "
            ".json) into another language; subtitles keep every cue and its timing."
        ),
        params=TranslateParams,
        steps=[Step("translate", translate)],
        max_inputs=1,
        input_types=("text/", "application/json", "application/x-subrip"),
    )
)
