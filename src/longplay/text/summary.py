"""Summary templates, the JSON a model's summary must be, and that JSON read and written.

A template is a list of sections. Each section has a ``form``: ``prose`` (a paragraph),
``list`` (short items), and for the built-in templates ``actions`` (action items with
an owner and a due date) and ``chapters`` (titled spans of a transcript). From a
template and a ``length`` comes a JSON Schema (:func:`answer_schema`) that the model
is held to, and from the model's JSON the checked :class:`SummarySection` values
(:func:`read_answer`), which :func:`write_summary` writes as Markdown and as JSON.

Chapters name the segment they start at by its number, never a time: the times come
from the transcript (:func:`chapter_times`), so they always fall inside it, in order.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from longplay.text.languages import Language
from longplay.text.sentences import DENSE_PUNCTUATION, split_sentences
from longplay.unspaced import DENSE_SCRIPT

Form = Literal["prose", "list", "actions", "chapters"]
OwnForm = Literal["prose", "list"]
Length = Literal["short", "medium", "long"]

_KEY = re.compile(r"[\W_]+")
"""What a section's key is without: anything but the letters and digits of any script."""
TEMPLATE_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"
"""What an own template may be called: a short lower-case slug, like a job kind."""


@dataclass(frozen=True)
class Bounds:
    """How much a ``length`` allows: characters of a paragraph and of an item, items
    in a list, chapters, and the tokens an answer may take."""

    prose_chars: int
    item_chars: int
    items: int
    chapters: int


LENGTHS: dict[str, Bounds] = {
    "short": Bounds(prose_chars=400, item_chars=140, items=3, chapters=4),
    "medium": Bounds(prose_chars=900, item_chars=180, items=5, chapters=8),
    "long": Bounds(prose_chars=1800, item_chars=240, items=8, chapters=12),
}


class TemplateSection(BaseModel):
    """One section of an owner's own template."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60, description="Its heading, e.g. Risks.")
    instruction: str = Field(
        min_length=1,
        max_length=1000,
        description="What the model writes there, e.g. 'Risks named, each with who raised it'.",
    )
    form: OwnForm = Field("prose", description="`prose` (a paragraph) or `list` (items).")

    @field_validator("name", "instruction")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("name")
    @classmethod
    def _one_heading(cls, value: str) -> str:
        """The name is the heading's text: Markdown's ``#`` marks are the summary's to
        write (a name "## Risks" would be drawn "## ## Risks"), and a heading is one line."""
        if "\n" in value or "\r" in value:
            raise ValueError("a section's name is one line, its heading")
        name = value.lstrip("#").strip()
        if not name:
            raise ValueError("a section's name needs words besides #")
        return name


class TemplateBody(BaseModel):
    """What an own template is: its sections, in order."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field("", max_length=500)
    sections: list[TemplateSection] = Field(min_length=1, max_length=12)

    @field_validator("sections")
    @classmethod
    def _distinct_names(cls, sections: list[TemplateSection]) -> list[TemplateSection]:
        return distinct_sections(sections)


def distinct_sections(sections: list[TemplateSection]) -> list[TemplateSection]:
    """``sections``, if each has a JSON key of its own (``Risks`` and ``risks!`` share
    one, ``???`` has none); else :class:`ValueError`."""
    keys = [section_key(s.name) for s in sections]
    if "" in keys:
        raise ValueError("a section name needs a letter or a digit")
    if len(set(keys)) != len(keys):
        raise ValueError("two sections have the same name")
    return sections


@dataclass(frozen=True)
class SectionSpec:
    """A section as the summarizer uses it: its JSON key, heading, instruction and form."""

    key: str
    name: str
    instruction: str
    form: Form


@dataclass(frozen=True)
class Template:
    """A template ready to use: built-in or an owner's own."""

    name: str
    sections: tuple[SectionSpec, ...]

    @property
    def chapters(self) -> bool:
        return any(s.form == "chapters" for s in self.sections)


def section_key(name: str) -> str:
    """The JSON key of a section called ``name``: ``Open questions`` → ``open_questions``,
    ``要点`` → ``要点``, ``Шаг 1`` → ``шаг_1`` (the same key however its accents were
    typed)."""
    return _KEY.sub("_", unicodedata.normalize("NFC", name).lower()).strip("_")[:60]


def own_template(name: str, sections: Sequence[TemplateSection]) -> Template:
    """An owner's template as the summarizer uses it."""
    specs = tuple(SectionSpec(section_key(s.name), s.name, s.instruction, s.form) for s in sections)
    return Template(name, specs)


BUILTIN_TEMPLATES: dict[str, Template] = {
    "brief": Template(
        "brief",
        (SectionSpec("summary", "Summary", "One paragraph: what the text is about.", "prose"),),
    ),
    "key-points": Template(
        "key-points",
        (SectionSpec("key_points", "Key points", "The main points, one per item.", "list"),),
    ),
    "meeting-notes": Template(
        "meeting-notes",
        (
            SectionSpec("summary", "Summary", "What the meeting was about.", "prose"),
            SectionSpec("decisions", "Decisions", "What was decided.", "list"),
            SectionSpec(
                "action_items",
                "Action items",
                "Tasks someone agreed to do: the task, the person who will do it as "
                "named in the text, and the due date when one was said.",
                "actions",
            ),
            SectionSpec("open_questions", "Open questions", "Questions left open.", "list"),
        ),
    ),
    "chapters": Template(
        "chapters",
        (
            SectionSpec(
                "chapters",
                "Chapters",
                "Where each topic starts: the number of its first segment, a title and "
                "a one-line gist.",
                "chapters",
            ),
        ),
    ),
}


def builtin_template(name: str) -> Template | None:
    return BUILTIN_TEMPLATES.get(name)


# -- the JSON the model is held to -------------------------------------------------------


_TOKEN = re.compile(r"[^\W\d_][\w'\u2019]*")
NOT_NAMES = frozenset(
    {
        *("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        *("january", "february", "march", "april", "may", "june", "july", "august"),
        *("september", "october", "november", "december"),
        *("i", "i'm", "i'll", "i've", "i'd", "ok", "okay"),
    }
)
"""Words written with a capital that name no one."""
LABELS = frozenset(
    {
        *("agenda", "attendees", "present", "absent", "summary", "notes", "note", "minutes"),
        *("decision", "decisions", "action", "actions", "items", "task", "tasks", "todo"),
        *("question", "questions", "topic", "topics", "update", "updates", "next", "steps"),
        *("risk", "risks", "blockers", "outcome", "outcomes", "date", "time", "subject"),
    }
)
"""Words of the labels that head a part of some notes ("Decisions:", "Next steps:"): at
a line's start before a colon they name no speaker."""
MAX_NAMES = 24


def names_in(text: str, limit: int = MAX_NAMES) -> tuple[str, ...]:
    """The names ``text`` says, in order of first use (``limit`` at most): runs of
    capitalised words that do not start a sentence ("Action item: Bob will..."), less
    the first word where they do ("Then Bob will..."), and speakers' labels ("Carol: I
    will..."); days, months, "I" and the labels of notes ("Decisions:") left out.

    An action item's owner is chosen from these (:func:`section_schema`), so that even
    a small model can only name someone the text names."""
    found: dict[str, None] = {}
    for line in text.splitlines():
        label_end = None
        for start, end, words in _capitalised_runs(line):
            before = line[:start].rstrip()
            after_label = label_end is not None and line[label_end:start].strip() == ":"
            if not before and line[end:].startswith(":"):
                if not {w.lower() for w in words} <= LABELS:
                    found[" ".join(words)] = None
                label_end = end
            elif before and before[-1] not in ".!?" and not after_label:
                found[" ".join(words)] = None
            elif len(words) > 1:  # it starts a sentence, or what a speaker says
                found[" ".join(words[1:])] = None
    return tuple(found)[:limit]


def _capitalised_runs(line: str) -> Iterator[tuple[int, int, list[str]]]:
    """Where each run of capitalised words (one space apart) starts and ends, and its
    words."""
    run: list[str] = []
    start = end = 0
    for match in _TOKEN.finditer(line):
        word = match.group()
        name_like = word[0].isupper() and word.lower() not in NOT_NAMES
        if run and (not name_like or line[end : match.start()] != " "):
            yield start, end, run
            run = []
        if name_like:
            start = start if run else match.start()
            run.append(word)
            end = match.end()
    if run:
        yield start, end, run


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_chars}


def section_schema(
    spec: SectionSpec,
    bounds: Bounds,
    segments: tuple[int, int] = (1, 1),
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON Schema of one section's value; chapters start at a segment numbered
    within ``segments`` (first, last); an action item's owner is one of ``names`` (the
    people the text names: :func:`names_in`) or ``""``."""
    if spec.form == "prose":
        return _text(bounds.prose_chars)
    if spec.form == "list":
        return {"type": "array", "items": _text(bounds.item_chars), "maxItems": bounds.items}
    if spec.form == "actions":
        item = {
            "type": "object",
            "properties": {
                "owner": {"enum": ["", *names]},
                "task": _text(bounds.item_chars),
                "due": _text(30),
            },
            "required": ["owner", "task", "due"],
            "additionalProperties": False,
        }
        return {"type": "array", "items": item, "maxItems": bounds.items}
    chapter = {
        "type": "object",
        "properties": {
            "start_segment": {"type": "integer", "minimum": segments[0], "maximum": segments[1]},
            "title": _text(80),
            "gist": _text(bounds.item_chars),
        },
        "required": ["start_segment", "title", "gist"],
        "additionalProperties": False,
    }
    return {"type": "array", "items": chapter, "minItems": 1, "maxItems": bounds.chapters}


def answer_schema(
    template: Template,
    length: str,
    segments: tuple[int, int] = (1, 1),
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON Schema of a whole answer: one key per section, all required.
    ``segments`` are the numbers (first, last) of the segments a chapter may start at,
    ``names`` the people an action item's owner may be.

    Lists come before prose: a grammar makes a model write the keys in this order, and
    a small model asked for a paragraph first copies the text into it and then has
    nothing left to list. The sections are read back in the template's order."""
    bounds = LENGTHS[length]
    ordered = sorted(template.sections, key=lambda s: s.form == "prose")
    return {
        "type": "object",
        "properties": {s.key: section_schema(s, bounds, segments, names) for s in ordered},
        "required": [s.key for s in ordered],
        "additionalProperties": False,
    }


def answer_tokens(template: Template, length: str) -> int:
    """Tokens enough for the longest answer the schema allows, JSON's quotes and keys
    included (about four characters a token, as :mod:`longplay.text.chunks` counts)."""
    bounds = LENGTHS[length]
    chars = 0
    for spec in template.sections:
        if spec.form == "prose":
            chars += bounds.prose_chars
        elif spec.form == "list":
            chars += bounds.items * (bounds.item_chars + 4)
        elif spec.form == "actions":
            chars += bounds.items * (bounds.item_chars + 110)
        else:
            chars += bounds.chapters * (bounds.item_chars + 130)
    return chars // 4 + 16 * len(template.sections) + 16


# -- the answer read back -----------------------------------------------------------------

_THINKING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


class UnusableAnswer(ValueError):
    """The model's answer is not the JSON the template asks for."""


@dataclass(frozen=True)
class ActionItem:
    task: str
    owner: str | None
    due: str | None


@dataclass(frozen=True)
class Chapter:
    """A span of the input: its segments (numbered from 1) and, for timed input, times."""

    title: str
    gist: str
    first_segment: int
    last_segment: int
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class SummarySection:
    """A section as written: ``text`` for prose, ``items`` for the other forms."""

    key: str
    name: str
    form: Form
    text: str = ""
    items: list[Any] = field(default_factory=list)


def strip_thinking(answer: str) -> str:
    """The answer without a model's reasoning blocks or a Markdown code fence."""
    answer = _THINKING.sub("", answer)
    answer = re.sub(r"^.*?</(think|thinking|reasoning)>", "", answer, flags=re.S | re.I)
    return _FENCE.sub("", answer.strip()).strip()


def parse_json_answer(answer: str) -> dict[str, Any]:
    """The JSON object in ``answer``, past any reasoning the model wrote around it.

    An object cut short is closed first (:func:`closed`): a small model that loops
    runs out of tokens before its grammar's length bound ends the string, and what it
    wrote before the loop is still an answer (:func:`read_answer` keeps each sentence
    once and drops the one cut off)."""
    text = strip_thinking(answer)
    start = text.find("{")
    if start < 0:
        raise UnusableAnswer("the answer holds no JSON object")
    whole = closed(text[start:])
    if whole is None:
        raise UnusableAnswer("the answer holds no JSON object")
    try:
        # A grammar's strings may hold raw line breaks, which strict JSON refuses.
        value = json.loads(whole, strict=False)
    except json.JSONDecodeError as exc:
        raise UnusableAnswer(f"the answer is not valid JSON ({exc.msg})") from exc
    except (ValueError, RecursionError) as exc:  # a huge number, or too deeply nested
        raise UnusableAnswer(f"the answer is JSON that cannot be read ({exc})") from exc
    if not isinstance(value, dict):
        raise UnusableAnswer("the answer is not a JSON object")
    return value


_DANGLING = re.compile(r'(?:,\s*)?(?:"(?:[^"\\]|\\.)*"\s*:\s*)?$')
"""What a cut leaves after the last whole value: a comma, a key and its colon."""


def closed(text: str) -> str | None:
    """``text``, which starts with a JSON object, up to where the object ends; or, when
    it was cut short, with what it left open closed: a string that is an object's
    value ended where it was cut, a list's last item that was cut dropped, a key
    without its value dropped, then each open list and object ended. None when there
    is no object to close (a closing bracket with nothing open)."""
    opened: list[str] = []
    string_at: int | None = None  # where the string being read began
    escaped = False
    for at, char in enumerate(text):
        if string_at is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                string_at = None
        elif char == '"':
            string_at = at
        elif char in "{[":
            opened.append("}" if char == "{" else "]")
        elif char in "}]":
            if not opened or opened.pop() != char:
                return None
            if not opened:
                return text[: at + 1]
    kept = text
    if string_at is not None:
        before = text[:string_at].rstrip()
        a_value = before.endswith(":")
        kept = text[:string_at] + (text[string_at:].rstrip("\\") + '"' if a_value else "")
    kept = _DANGLING.sub("", kept.rstrip()) if not kept.rstrip().endswith(("{", "[")) else kept
    return kept + "".join(reversed(opened)) if opened else None


def _clean(value: Any) -> str:
    return " ".join(str(value).split()) if isinstance(value, str | int | float) else ""


def read_answer(
    answer: Mapping[str, Any], template: Template, *, segments: tuple[int, int] = (1, 1)
) -> list[SummarySection]:
    """The sections of ``answer``, checked: every section there and of its form, no
    empty text where prose was asked for, chapter starts among the ``segments`` (first,
    last). Chapters come back as ``(first segment, title, gist)``; :func:`chapter_times`
    makes them :class:`Chapter` once every part of the input has been read."""
    sections = []
    for spec in template.sections:
        if spec.key not in answer:
            raise UnusableAnswer(f"the answer has no {spec.key!r}")
        value = answer[spec.key]
        if spec.form == "prose":
            text = _once_each(_clean(value))
            if not text:
                raise UnusableAnswer(f"{spec.key!r} is empty")
            sections.append(SummarySection(spec.key, spec.name, spec.form, text=text))
            continue
        if not isinstance(value, list):
            raise UnusableAnswer(f"{spec.key!r} is not a list")
        items: list[Any]
        if spec.form == "list":
            items = _distinct(t for t in map(_clean, value) if t)
        elif spec.form == "actions":
            items = _actions(value)
        else:
            items = _chapter_starts(value, segments)
        sections.append(SummarySection(spec.key, spec.name, spec.form, items=items))
    return sections


_WORD = re.compile(r"[^\W\d_]{3,}")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def _runs(text: str, length: int = 3) -> set[tuple[str, ...]]:
    """Every ``length`` words in a row in ``text``, lower case."""
    return set(_runs_in_order(text, length))


def _runs_in_order(text: str, length: int = 3) -> list[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return [tuple(words[i : i + length]) for i in range(len(words) - length + 1)]


COPIED_SHARE = 0.8
"""The share of three-word runs a task's sentences after its first take from the text
for them to be the text copied on, not more of the task."""


def _one_task(task: str, source_runs: set[tuple[str, ...]]) -> str:
    """``task`` cut after its first sentence where the rest is the summarized text copied
    on: a small model writes "Write the press release by Friday. Action item Carol will
    test the checkout page next week. We still do not know who …" as Bob's task. A
    second sentence of the task's own ("Send the draft. Ask Dana to check the figures")
    takes few of its word runs from the text, and stays."""
    sentences = split_sentences(task)
    if len(sentences) < 2:
        return task
    runs = _runs_in_order(" ".join(sentences[1:]))
    if len(runs) < 4 or sum(r in source_runs for r in runs) < COPIED_SHARE * len(runs):
        return task
    return sentences[0].strip()


def without_echoes(
    sections: list[SummarySection], *, source: str, instructions: str, example: str = ""
) -> tuple[list[SummarySection], list[str]]:
    """``sections`` without what only repeats the prompt's instructions (a small model
    given "Questions left open." as the instruction writes it back as an open
    question), and the texts taken out. An action item's task that runs on into the
    text is cut where it does (:func:`_one_task`), and not counted as taken out.

    A text echoes when every word of it is in ``instructions`` and some are not in
    ``source`` (the text summarized): "Risk: flooding" draws on a text about floods and
    stays. Echoing sentences leave the prose (all of them where all echo: the caller
    puts something in its place); echoing items leave their list; an action item's
    owner not named in ``source`` becomes unsaid (the instruction asks for a person
    named in the text), and so does an echoing due date.

    ``example`` is a worked example the prompt showed: its words count as the
    instructions' do, and a text that takes three words in a row from it which
    ``source`` does not have ("Maria ordered the six electric buses") echoes too."""
    said, asked = _words(source), _words(instructions) | _words(example)
    source_runs = _runs(source)
    borrowed = _runs(example) - source_runs

    def echoes(text: str) -> bool:
        words = _words(text)
        return (bool(words - said) and words <= asked) or bool(_runs(text) & borrowed)

    taken: list[str] = []

    def keep(text: str) -> bool:
        if echoes(text):
            taken.append(text)
            return False
        return True

    cleaned = []
    for section in sections:
        if (kept := _kept_texts(section, keep)) is not None:
            cleaned.append(kept)
        elif section.form == "actions":
            items = []
            for item in section.items:
                if not keep(item.task):
                    continue
                task = _one_task(item.task, source_runs)
                owner = item.owner if item.owner and not (_words(item.owner) - said) else None
                if owner != item.owner:
                    taken.append(f"owner {item.owner}")
                due = item.due if item.due and keep(item.due) else None
                items.append(ActionItem(task, owner, due))
            cleaned.append(replace(section, items=items))
        else:
            cleaned.append(section)
    return cleaned, taken


# -- numbers and web addresses the text has -----------------------------------------------

_ADDRESS = re.compile(r"(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", re.I)
_NUMBER = re.compile(r"\d+(?:[.,'\u2019]\d+)*")
"""A number as written, with its thousands separators or decimal mark: 4,2 or 4.200."""
_SPACED_THOUSANDS = re.compile(r"(?<!\d)\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)")
"""A number with spaces between its thousands: 4 200 000."""
FREE_NUMBER = 10
"""A whole number up to this needs no figure in the text: it may spell it as a word
("six buses", "sechs Busse")."""


def _digits(number: str) -> str:
    """The digits of a number as written, without separators or leading zeros: 4,2 and
    4.2 are both ``42``, 4.200 and 4 200 both ``4200``."""
    digits = "".join(str(unicodedata.decimal(c)) for c in number if c.isdecimal())
    return digits.lstrip("0") or "0"


def _address(url: str) -> str:
    """A web address without its scheme, ``www.``, case or closing punctuation."""
    bare = re.sub(r"^(?:https?://)?(?:www\.)?", "", url.lower())
    return bare.rstrip("/.,;:!?")


@dataclass(frozen=True)
class Grounds:
    """The numbers and web addresses of a text, as a summary of it may write them."""

    numbers: frozenset[str]
    """Each number's digits (:func:`_digits`) and each of its parts' (1.3.2026 has 1,
    3 and 2026)."""
    text: str
    """The text in lower case, web addresses without scheme or ``www.``."""

    @classmethod
    def of(cls, source: str) -> Grounds:
        flat = unicodedata.normalize("NFKC", source)
        numbers: set[str] = set()
        for match in [*_NUMBER.finditer(flat), *_SPACED_THOUSANDS.finditer(flat)]:
            numbers.add(_digits(match.group()))
            numbers.update(_digits(part) for part in re.findall(r"\d+", match.group()))
        text = _ADDRESS.sub(lambda m: _address(m.group()), flat.lower())
        return cls(frozenset(numbers), text)

    def missing(self, text: str) -> list[str]:
        """The numbers and web addresses of ``text`` that the source does not have, in
        any of its spellings (4,2 or 4.2; 12 % or 12%; 4,200 or 4 200; 4,2 million as
        4,200,000); a small whole number (:data:`FREE_NUMBER`) is never missing."""
        flat = unicodedata.normalize("NFKC", text)
        urls = [url.rstrip(".,;:!?") for url in _ADDRESS.findall(flat)]
        missing = [url for url in urls if _address(url) not in self.text]
        for match in _NUMBER.finditer(_ADDRESS.sub(" ", flat)):
            if not self._has_number(match.group()):
                missing.append(match.group())
        return missing

    def _has_number(self, number: str) -> bool:
        digits = _digits(number)
        if digits in self.numbers:
            return True
        separated = not number.isdecimal()
        if not separated:
            return int(digits) <= FREE_NUMBER
        if digits.rstrip("0") in {n.rstrip("0") for n in self.numbers}:
            return True  # 4,2 million written out as 4,200,000
        parts = re.findall(r"\d+", number)
        return len(parts) > 2 and all(_digits(p) in self.numbers for p in parts)  # a date


def without_ungrounded(
    sections: list[SummarySection], source: str
) -> tuple[list[SummarySection], list[tuple[str, list[str]]]]:
    """``sections`` without the sentences and items that say a number or a web address
    ``source`` (the text summarized) does not (:meth:`Grounds.missing`), and each text
    taken out with what it said that the source does not. A small model writes years,
    percentages and addresses of its own ("a 5% increase" of a text that says a 5 %
    drop, a library's made-up website): a sentence leaves its prose, an item its list,
    an action item goes with its task and loses a due date, a chapter its gist. Nothing
    else is checked: a right number in a wrong claim stays."""
    grounds = Grounds.of(source)
    taken: list[tuple[str, list[str]]] = []

    def keep(text: str) -> bool:
        missing = grounds.missing(text)
        if missing:
            taken.append((text, missing))
        return not missing

    cleaned = []
    for section in sections:
        if (kept := _kept_texts(section, keep)) is not None:
            cleaned.append(kept)
        elif section.form == "actions":
            items = [
                replace(item, due=item.due if item.due and keep(item.due) else None)
                for item in section.items
                if keep(item.task)
            ]
            cleaned.append(replace(section, items=items))
        else:
            items = [(at, title, gist if keep(gist) else "") for at, title, gist in section.items]
            cleaned.append(replace(section, items=items))
    return cleaned, taken


def _kept_texts(section: SummarySection, keep: Callable[[str], bool]) -> SummarySection | None:
    """A prose section without the sentences ``keep`` refuses, a list without such
    items; None for a section of another form, which its caller sees to."""
    if section.form == "prose":
        return replace(section, text=joined(t for t in split_sentences(section.text) if keep(t)))
    if section.form == "list":
        return replace(section, items=[t for t in section.items if keep(t)])
    return None


def _once_each(text: str) -> str:
    """Prose with each sentence once, and without a last sentence the length bound cut
    off: a small model loops on a sentence until the grammar stops it."""
    sentences = split_sentences(_clause_loop_cut(text))
    # A sentence cut off may be several pieces: a run-on one is split at its commas.
    ended = [at for at, sentence in enumerate(sentences) if sentence.rstrip()[-1:] in _ENDS]
    if ended:
        sentences = sentences[: ended[-1] + 1]
    return joined(_distinct(sentences))


def joined(sentences: Iterable[str]) -> str:
    """Sentences as one text: a space between two, unless the first ends with a Chinese
    or Japanese character or full stop ("…休館します。工事は…"): those scripts are
    written without spaces."""
    text = ""
    for sentence in sentences:
        last = text[-1:]
        dense = bool(last) and bool(DENSE_SCRIPT.match(last) or DENSE_PUNCTUATION.match(last))
        text = f"{text}{'' if dense or not text else ' '}{sentence}"
    return text


_ENDS = ".!?…\"')"
"""What a finished sentence ends with."""


def _clause_loop_cut(text: str) -> str:
    """``text`` with a clause said again and again said once: a small model loops on a
    clause too ("…, with the team deciding, with the team deciding, with the te"). Where
    the loop ran to the end of the answer, the clause it was cut in goes and the
    sentence is closed."""
    clauses = text.split(", ")
    kept, looped = [clauses[0]], ""
    for clause in clauses[1:]:
        said = clause.strip().lower()
        if said and (kept[-1].lower() == said or kept[-1].lower().endswith(" " + said)):
            looped = said
            continue
        kept.append(clause)
    if not looped:
        return text
    cut = kept[-1].rstrip(" .…-").strip().lower()
    if len(kept) > 1 and cut and looped.startswith(cut) and cut != looped:
        return ", ".join(kept[:-1]).rstrip(" ,;:-") + "."
    return ", ".join(kept)


def _distinct(texts: Any) -> list[str]:
    """Items in order, each once: a small model repeats itself."""
    seen: set[str] = set()
    kept = []
    for text in texts:
        if text.lower() not in seen:
            seen.add(text.lower())
            kept.append(text)
    return kept


def _actions(value: list[Any]) -> list[ActionItem]:
    items, seen = [], set()
    for entry in value:
        if not isinstance(entry, Mapping):
            raise UnusableAnswer("an action item is not an object")
        task = _clean(entry.get("task"))
        if task and task.lower() not in seen:
            seen.add(task.lower())
            owner, due = _clean(entry.get("owner")), _clean(entry.get("due"))
            items.append(ActionItem(task, owner or None, due or None))
    return items


def _chapter_starts(value: list[Any], segments: tuple[int, int]) -> list[tuple[int, str, str]]:
    """(first segment, title, gist) of each chapter, ordered, one per start; the first
    chapter starts at the first segment whatever the model said."""
    starts: dict[int, tuple[str, str]] = {}
    for entry in value:
        if not isinstance(entry, Mapping):
            raise UnusableAnswer("a chapter is not an object")
        try:
            first = int(entry.get("start_segment", 0))
        except (TypeError, ValueError) as exc:
            raise UnusableAnswer("a chapter's start_segment is not a number") from exc
        title = _clean(entry.get("title"))
        if segments[0] <= first <= segments[1] and title and first not in starts:
            starts[first] = (title, _clean(entry.get("gist")))
    if not starts:
        raise UnusableAnswer("no chapter starts at a segment of the input")
    ordered = sorted(starts.items())
    ordered[0] = (segments[0], ordered[0][1])
    return [(first, title, gist) for first, (title, gist) in ordered]


def chapter_times(
    starts: Sequence[tuple[int, str, str]], spans: Sequence[tuple[float, float] | None]
) -> list[Chapter]:
    """Chapters from their first segments (numbered from 1 among ``spans``): each runs
    to the segment before the next one's start, the last to the end; times are the
    segments' own, or None for untimed input."""
    chapters = []
    for index, (first, title, gist) in enumerate(starts):
        last = starts[index + 1][0] - 1 if index + 1 < len(starts) else len(spans)
        head, tail = spans[first - 1], spans[last - 1]
        chapters.append(
            Chapter(
                title,
                gist,
                first,
                last,
                head[0] if head else None,
                tail[1] if tail else None,
            )
        )
    return chapters


# -- written out --------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def action_text(item: ActionItem) -> str:
    """``task (owner: Ana; due Friday)``, with what was said of the two."""
    said = [f"owner: {item.owner}" if item.owner else "", f"due {item.due}" if item.due else ""]
    extra = "; ".join(s for s in said if s)
    return f"{item.task} ({extra})" if extra else item.task


def render_markdown(
    title: str, sections: Sequence[SummarySection], *, none: str = "_None._"
) -> str:
    """The summary as Markdown: a heading per section, prose as a paragraph, the rest
    as bullets (action items with owner and due date, chapters with their times), and
    ``none`` for an empty list."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.name}", ""]
        if section.form == "prose":
            lines.append(section.text)
        elif not section.items:
            lines.append(none)
        for item in section.items:
            if isinstance(item, ActionItem):
                lines.append(f"- {action_text(item)}")
            elif isinstance(item, Chapter):
                when = (
                    f"{_clock(item.start)}-{_clock(item.end)} "
                    if item.start is not None and item.end is not None
                    else ""
                )
                lines.append(f"- {when}**{item.title}**: {item.gist}".rstrip(": "))
            else:
                lines.append(f"- {item}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Labels:
    """The fixed words of a summary's Markdown in one language: its title (with
    ``{name}``, the input's), a built-in section's heading by its key, and what an
    empty list says."""

    title: str
    none: str
    headings: Mapping[str, str] = field(default_factory=dict)


def _labels(title: str, none: str, *headings: str) -> Labels:
    """Labels with the headings of summary, key_points, decisions, action_items,
    open_questions and chapters, in that order."""
    keys = ("summary", "key_points", "decisions", "action_items", "open_questions", "chapters")
    return Labels(title, none, dict(zip(keys, headings, strict=True)))


ENGLISH_LABELS = Labels("Summary of {name}", "_None._")
MARKDOWN_LABELS: dict[str, Labels] = {
    "de": _labels("Zusammenfassung von {name}", "_Keine._", "Zusammenfassung", "Kernpunkte",
                  "Beschlüsse", "Aufgaben", "Offene Fragen", "Kapitel"),
    "fr": _labels("Résumé de {name}", "_Aucun._", "Résumé", "Points clés", "Décisions",
                  "Actions à mener", "Questions ouvertes", "Chapitres"),
    "es": _labels("Resumen de {name}", "_Ninguno._", "Resumen", "Puntos clave", "Decisiones",
                  "Tareas", "Preguntas abiertas", "Capítulos"),
    "it": _labels("Riassunto di {name}", "_Nessuno._", "Riassunto", "Punti chiave", "Decisioni",
                  "Azioni da fare", "Domande aperte", "Capitoli"),
    "pt": _labels("Resumo de {name}", "_Nenhum._", "Resumo", "Pontos-chave", "Decisões",
                  "Ações", "Questões em aberto", "Capítulos"),
    "nl": _labels("Samenvatting van {name}", "_Geen._", "Samenvatting", "Kernpunten",
                  "Besluiten", "Actiepunten", "Open vragen", "Hoofdstukken"),
    "ru": _labels("Краткое содержание: {name}", "_Нет._", "Краткое содержание",
                  "Ключевые моменты", "Решения", "Задачи", "Открытые вопросы", "Главы"),
    "ja": _labels("「{name}」の要約", "_なし_", "要約", "要点", "決定事項", "アクションアイテム",
                  "未解決の質問", "チャプター"),
    "zh": _labels("《{name}》摘要", "_无_", "摘要", "要点", "决定", "待办事项", "未决问题", "章节"),
}  # fmt: skip
"""The Markdown's fixed words by language (ISO 639-1): the languages a podcast's
phrases are written in too. Any other language's summary has the English ones."""


def labels_for(language: str | None) -> Labels:
    """The labels of a summary in ``language`` (a name or code, as the summary's JSON
    says it; None: not known)."""
    if not language:
        return ENGLISH_LABELS
    try:
        return MARKDOWN_LABELS.get(Language.find(language).base, ENGLISH_LABELS)
    except ValueError:
        return ENGLISH_LABELS


def summary_as_data(sections: Sequence[SummarySection]) -> list[dict[str, Any]]:
    """The sections as JSON values: prose as ``text``, the others as ``items``; chapter
    times in seconds."""
    data = []
    for section in sections:
        entry: dict[str, Any] = {"key": section.key, "name": section.name, "form": section.form}
        if section.form == "prose":
            entry["text"] = section.text
        else:
            entry["items"] = [
                asdict(item) if isinstance(item, ActionItem | Chapter) else item
                for item in section.items
            ]
        data.append(entry)
    return data


def write_summary(
    out_dir: Path, stem: str, sections: Sequence[SummarySection], meta: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write ``summary.md`` (titled after ``stem``, its fixed words in the summary's
    language where :data:`MARKDOWN_LABELS` has them) and ``summary.json`` (``meta``
    and the sections, named as the template names them). The files are not named
    after ``stem``, which may be longer than a file name can be: the job names its
    outputs ``STEM.summary.md`` and ``STEM.summary.json`` when it keeps them, and the
    store fits such a name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "summary.md"
    labels = labels_for(meta.get("language"))
    if meta.get("template") in BUILTIN_TEMPLATES:
        sections = [replace(s, name=labels.headings.get(s.key, s.name)) for s in sections]
    title = labels.title.format(name=stem)
    markdown.write_text(render_markdown(title, sections, none=labels.none), encoding="utf-8")
    body = {**meta, "sections": summary_as_data(sections)}
    data = out_dir / "summary.json"
    data.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return markdown, data
