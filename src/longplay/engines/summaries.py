"""Summarizing a document with a template: the whole ``summarize`` job without the job.

An input that fits the model's context with room for the answer is read in one pass;
a longer one is cut at segment or paragraph boundaries into chunks, each summarized
with the running summary of the ones before, and the chunks' summaries are combined
(in rounds, if even they do not fit at once). Every answer is held to the template's
JSON Schema (:func:`~longplay.text.summary.answer_schema`) — a grammar on the local
model, ``response_format`` to a server — then checked, and asked for once more when it
does not pass. Nothing of the input is left out unless ``max_characters`` says so, and
:class:`Coverage` says what was read. Progress moves with the tokens the model reads and
writes, within each chunk's share of the bar (:class:`_Share`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from longplay.engines.llm import LanguageModel, TokenCount
from longplay.framework import InvalidParams, Note, PermanentError, Progress, no_note, no_progress
from longplay.text.chunks import chunk_text, estimate_tokens
from longplay.text.documents import Document
from longplay.text.languages import LANGUAGES, Language, language_of_text, other_language
from longplay.text.sentences import count_words, split_sentences
from longplay.text.summary import (
    BUILTIN_TEMPLATES,
    LENGTHS,
    TEMPLATE_NAME,
    Bounds,
    Chapter,
    Length,
    SectionSpec,
    SummarySection,
    Template,
    TemplateSection,
    UnusableAnswer,
    action_text,
    answer_schema,
    answer_tokens,
    builtin_template,
    chapter_times,
    distinct_sections,
    joined,
    names_in,
    own_template,
    parse_json_answer,
    read_answer,
    without_echoes,
    without_ungrounded,
)

RUNNING_SUMMARY_TOKENS = 300
"""The most of the running summary a chunk's prompt carries."""
PROMPT_MARGIN_TOKENS = 64
"""Room kept free in the context besides the prompt and the answer: the token
estimate for a chunk is not exact."""
RETRY_TEMPERATURE = 0.4
TRY_SHARE = 0.8
"""The part of what is left of its share of the bar that one try at an answer moves
through as the model reads the prompt and writes: the rest stays for a second try, or
for the next ask."""


class SummaryOptions(BaseModel):
    """How to summarize: what ``summarize`` takes besides its input."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(
        "brief",
        pattern=TEMPLATE_NAME,
        description="brief, key-points, meeting-notes, chapters, or the name of one of "
        "your own templates (/v1/templates).",
    )
    sections: list[TemplateSection] | None = Field(
        None,
        min_length=1,
        max_length=12,
        description="Filled in at submit from your template that `template` names, so "
        "the job keeps the template it was given. Sent directly: a one-off template.",
    )
    language: str | None = Field(
        None, description="Language of the summary; null: the input's language."
    )
    length: Length = Field("medium", description="short, medium or long.")
    max_characters: int | None = Field(
        None,
        ge=1000,
        description="Read at most this many characters of the input and leave the rest "
        "out (the result says so); null: read everything.",
    )

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        return None if value is None else Language.find(value).name

    @field_validator("sections")
    @classmethod
    def _distinct_names(cls, value: list[TemplateSection] | None) -> list[TemplateSection] | None:
        return None if value is None else distinct_sections(value)

    @model_validator(mode="after")
    def _sections_only_for_own_templates(self) -> SummaryOptions:
        if self.sections is not None and self.template in BUILTIN_TEMPLATES:
            raise ValueError(
                f"{self.template} is a built-in template with fixed sections; give your "
                "own sections another template name"
            )
        return self

    def chosen_template(self) -> Template:
        """The template to use; an own one whose sections were not filled in is an
        :class:`InvalidParams` (the service fills them in at submit)."""
        builtin = builtin_template(self.template)
        if builtin is not None:
            return builtin
        if self.sections is None:
            raise InvalidParams(
                f"unknown template {self.template!r}: use brief, key-points, meeting-notes, "
                "chapters or one of yours (GET /v1/templates)",
                code="unknown_template",
            )
        return own_template(self.template, self.sections)


@dataclass(frozen=True)
class Unit:
    """A piece of the input read whole: a segment of a transcript or a paragraph."""

    text: str
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Coverage:
    """How much of the input was read: all of it unless a setting allowed less."""

    characters_total: int
    characters_read: int
    left_out: bool
    chunks: int
    passes: str
    """``one`` (the whole input at once) or ``map-reduce``."""


@dataclass(frozen=True)
class Summary:
    """What :func:`summarize_document` made."""

    sections: list[SummarySection]
    template: str
    language: str | None
    coverage: Coverage
    retries: int


def units_of(document: Document) -> list[Unit]:
    """The document's segments (with their times) or paragraphs, in order."""
    if document.format == "txt":
        texts = [p.join(p.lines) for p in document.paragraphs]
        return [Unit(text.strip()) for text in texts if text.strip()]
    return [
        Unit(" ".join(cue.text.split()), cue.start, cue.end)
        for cue in document.cues
        if cue.text.strip()
    ]


@dataclass
class _Share:
    """A part of the step's bar, from ``at`` to ``end`` of ``total`` (a chunk's, or the
    combining's), that the model's tries at an answer move through as they go: reported
    with ``details``, the try's ``prompt_tokens_read`` and ``tokens`` (written) so far,
    and ``retry`` (1 for a second try).

    Each try takes :data:`TRY_SHARE` of what is left of the share, the tokens read and
    written counted against the prompt's and the most the answer may take: the model
    reads a long prompt for longer than it writes. A try that ends early leaves the bar
    where it got to, and the caller's report at the chunk's end moves it on; a try that
    writes all it may still leaves room, so a second one moves the bar on, never back."""

    progress: Progress
    at: float
    end: float
    total: float
    details: dict[str, Any]

    def counting(self, prompt_tokens: int, max_tokens: int, *, retry: int) -> TokenCount:
        """What a try at an answer to a prompt of ``prompt_tokens`` tells its tokens to."""
        start = self.at
        span = (self.end - start) * TRY_SHARE
        work = max(1, prompt_tokens + max_tokens)

        def told(read: int, written: int) -> None:
            self.at = start + span * min(1.0, (min(read, prompt_tokens) + written) / work)
            self.progress(
                self.at,
                self.total,
                **self.details,
                prompt_tokens_read=read,
                tokens=written,
                retry=retry,
            )

        return told


@dataclass
class _Run:
    """One summary in the making: the model, the template and what it reports to."""

    llm: LanguageModel
    template: Template
    options: SummaryOptions
    language: str | None
    note: Note
    retries: int = 0

    def ask(
        self, source: str, segments: tuple[int, int], prompt: str, share: _Share
    ) -> list[SummarySection]:
        """The model's answer to ``prompt`` about ``source`` as checked sections; asked
        twice at most, the second time also when the first repeats the prompt. Both
        answers' echoes are taken out, and of two usable answers the one that keeps
        more is given: a second answer is not always a better one. Their tokens move
        the bar through ``share``."""
        schema = answer_schema(self.template, self.options.length, segments, names_in(source))
        max_tokens = answer_tokens(self.template, self.options.length)
        prompt_tokens = self.llm.count_tokens(prompt)
        problem = ""
        echoing: list[SummarySection] | None = None
        for retry, temperature in enumerate((0.0, RETRY_TEMPERATURE)):
            answer = self.llm.complete_json(
                prompt,
                schema,
                max_tokens=max_tokens,
                temperature=temperature,
                on_tokens=share.counting(prompt_tokens, max_tokens, retry=retry),
            )
            try:
                read = read_answer(parse_json_answer(answer), self.template, segments=segments)
                sections, echoes = without_echoes(
                    read, source=source, instructions=_instructions(self), example=_example(self)
                )
                written = self._other_language(sections)
                if written is not None and temperature == 0.0:
                    raise UnusableAnswer(f"it is in {written}, not {self.language}")
                if echoes and temperature == 0.0:
                    echoing = sections
                    raise UnusableAnswer(self._repeated(read, source, echoes[0]))
                if written is not None:
                    return self._in_other_language(sections, echoing, source, written)
                if echoing is not None and len(_plain(echoing)) > len(_plain(sections)):
                    return self._finished(echoing, source)
                return self._finished(sections, source)
            except UnusableAnswer as exc:
                problem = str(exc)
                if temperature == 0.0:
                    self.retries += 1
                    self.note(f"the model's summary was not usable ({problem}); asked again")
        if echoing is not None:
            return self._finished(echoing, source)
        raise PermanentError(
            f"the model gave no usable summary in two tries ({problem}); a stronger model "
            "does better (see the README)",
            code="summary_unusable",
        )

    def _other_language(self, sections: list[SummarySection]) -> str | None:
        """The language (or script) ``sections`` are plainly written in where that is
        not the one asked for; None where it may be, or where none was asked for."""
        if self.language is None:
            return None
        other = other_language(_written(sections), Language.find(self.language).code)
        return _name_of(other)

    def language_written(self, sections: list[SummarySection]) -> str | None:
        """The language the finished summary is in, as its JSON says it: the one asked
        for, unless ``sections`` are plainly in another (the text's own sentences
        standing in, or a model that would not write the one asked for), named then
        with a note; None where it is not one the catalogue or the check knows."""
        written = self._other_language(sections)
        if written is None:
            return self.language
        self.note(
            f"the summary is in {written}, not {self.language} as asked",
            code="summary_language",
            written=written,
            asked=self.language,
        )
        return written if written in LANGUAGES.values() else None

    def _in_other_language(
        self,
        sections: list[SummarySection],
        echoing: list[SummarySection] | None,
        source: str,
        written: str,
    ) -> list[SummarySection]:
        """What to give when the second answer, too, is in another language than the
        one asked for: the first answer if it was in the right one (less its echoes),
        else sentences of the text, as where the model wrote nothing of its own
        (:meth:`_filled`); the summary's language says what they are in."""
        if echoing is not None:
            return self._finished(echoing, source)
        self.note(
            f"the model wrote its summary in {written}, not {self.language}, twice: "
            "sentences of the text stand in (a stronger model does better, see the README)",
            code="summary_language",
            written=written,
            asked=self.language,
        )
        emptied = [s if s.form == "chapters" else replace(s, text="", items=[]) for s in sections]
        filled, _ = _stand_ins(emptied, source, LENGTHS[self.options.length])
        return filled

    def _repeated(self, read: list[SummarySection], source: str, echo: str) -> str:
        """What the answer's first ``echo`` repeated, said as it is: the template's
        instructions, or the worked example shown before them (an echo that is not
        the instructions' alone took words from it), or an owner the text does not
        name."""
        if echo.startswith("owner "):
            if echo.removeprefix("owner ").lower() in _example(self).lower():
                return f"it copied the worked example: {echo!r}"
            return f"it names an owner the text does not: {echo!r}"
        _, of_instructions = without_echoes(read, source=source, instructions=_instructions(self))
        if echo in of_instructions:
            return f"it repeats the instructions: {echo!r}"
        return f"it copied the worked example: {echo!r}"

    def _finished(self, sections: list[SummarySection], source: str) -> list[SummarySection]:
        """A usable answer's sections as given: without what says a number or a web
        address that ``source`` does not (:meth:`_grounded`), and filled where the
        summary cannot go without a section (:meth:`_filled`)."""
        return self._filled(self._grounded(sections, source), source)

    def _grounded(self, sections: list[SummarySection], source: str) -> list[SummarySection]:
        """``sections`` less the sentences and items with a number or web address the
        text does not have, with a note that counts them and says what they were."""
        kept, taken = without_ungrounded(sections, source)
        if taken:
            figures = list(dict.fromkeys(f for _, missing in taken for f in missing))
            count = f"{len(taken)} sentence{'s' if len(taken) > 1 else ''} or point"
            self.note(
                f"left out {count}{'s' if len(taken) > 1 else ''} of the model's with "
                f"numbers or web addresses the text does not have ({', '.join(figures[:8])})",
                code="summary_ungrounded",
                left_out=len(taken),
                figures=figures,
            )
        return kept

    def _filled(self, sections: list[SummarySection], source: str) -> list[SummarySection]:
        """Sections the model left empty, or filled only with its prompt's words, where
        the summary cannot go without them, taken from the text itself, with a note
        (:func:`_stand_ins`). A small model does this with some texts, and what it
        wrote was not about the text at all."""
        filled, names = _stand_ins(sections, source, LENGTHS[self.options.length])
        if names:
            self.note(
                f"the model wrote nothing of the text's own in {', '.join(names)}: sentences "
                "of the text stand in (a stronger model does better, see the README)",
                code="summary_from_text",
            )
        return filled


def _stand_ins(
    sections: list[SummarySection], source: str, bounds: Bounds
) -> tuple[list[SummarySection], list[str]]:
    """``sections`` with the empty ones the summary cannot go without filled from
    ``source``, and their names: a prose section holds the text's opening sentences; a
    list that is the whole summary (key points) holds the first sentence of each
    paragraph."""
    lists_only = all(s.form != "prose" for s in sections)
    filled, names = [], []
    for section in sections:
        if section.form == "prose" and not section.text.strip():
            section = replace(section, text=_opening(source, bounds.prose_chars))
            names.append(section.name)
        elif section.form == "list" and lists_only and not section.items:
            points = _first_sentences(source)[: bounds.items]
            section = replace(section, items=[_cut(p, bounds.item_chars) for p in points])
            names.append(section.name)
        filled.append(section)
    return filled, names


def _name_of(code: str | None) -> str | None:
    """A language's name as prompts say it (``German``) for its code, or a script's
    name (``Latin``) as it is."""
    if code is None:
        return None
    try:
        return Language.find(code).name
    except ValueError:
        return code


def summarize_document(
    document: Document,
    options: SummaryOptions,
    *,
    llm: LanguageModel,
    context_tokens: int,
    progress: Progress = no_progress,
    note: Note = no_note,
) -> Summary:
    """Summarize ``document`` with the template ``options`` choose.

    ``progress(done, total, chunks_done=, chunks_total=, characters_read=)`` hears of
    each chunk read and of the combining, and in between, with ``prompt_tokens_read``,
    ``tokens`` and ``retry`` too, of the model reading its prompt and writing its answer
    (:class:`_Share`); it is where a cancelled job stops.
    """
    template = options.chosen_template()
    units = units_of(document)
    total_chars = sum(len(u.text) for u in units)
    units = _within(units, options.max_characters)
    read_chars = sum(len(u.text) for u in units)
    left_out = read_chars < total_chars
    if left_out:
        note(
            f"read {read_chars} of {total_chars} characters, as max_characters allows; "
            "the rest is left out of the summary",
            code="input_left_out",
        )
    language = options.language or _language_of(document) or _language_read(units)
    run = _Run(llm, template, options, language, note)
    answer = answer_tokens(template, options.length)
    room = context_tokens - answer - PROMPT_MARGIN_TOKENS
    whole = _prompt(run, units, 1, running="")
    if llm.count_tokens(whole) <= room:
        details: dict[str, Any] = {"chunks_done": 0, "chunks_total": 1, "characters_read": 0}
        progress(0, 1, **details)
        sections = run.ask(
            _source(units), (1, len(units)), whole, _Share(progress, 0, 1, 1, details)
        )
        progress(1, 1, chunks_done=1, chunks_total=1, characters_read=read_chars)
        chunks = 1
    else:
        sections, pieces = _map_reduce(run, units, room, progress)
        chunks = len(pieces)
        units = [piece for chunk in pieces for piece in chunk]  # as the chapters number them
    if template.chapters:
        sections = _with_chapter_times(sections, units)
    coverage = Coverage(
        characters_total=total_chars,
        characters_read=read_chars,
        left_out=left_out,
        chunks=chunks,
        passes="one" if chunks == 1 else "map-reduce",
    )
    written = run.language_written(sections)
    return Summary(sections, template.name, written, coverage, run.retries)


def _within(units: list[Unit], max_characters: int | None) -> list[Unit]:
    """The units up to ``max_characters`` in all (whole units; at least the first)."""
    if max_characters is None:
        return units
    kept: list[Unit] = []
    used = 0
    for unit in units:
        if kept and used + len(unit.text) > max_characters:
            break
        kept.append(unit)
        used += len(unit.text)
    return kept


def _language_of(document: Document) -> str | None:
    """The language a transcript says it is in, as prompts name it."""
    code = document.transcript.get("language") if isinstance(document.transcript, dict) else None
    try:
        return Language.find(code).name if isinstance(code, str) and code else None
    except ValueError:
        return None


LANGUAGE_SAMPLE_CHARS = 20_000
"""How much of the text read tells its language (its start)."""


def _language_read(units: Sequence[Unit]) -> str | None:
    """The language the text read is plainly written in, as prompts name it, where it
    is not English: a German text summarized without a ``language`` got English
    headings, went unchecked, and was shown the English example, whose words it
    copied. An English text (or one that cannot be told) keeps the prompts as they were."""
    taken, size = [], 0
    for unit in units:  # the first units only: a long document is not copied whole
        if size >= LANGUAGE_SAMPLE_CHARS:
            break
        taken.append(unit.text)
        size += len(unit.text) + 1
    sample = "\n".join(taken)[:LANGUAGE_SAMPLE_CHARS]
    code = language_of_text(sample)
    return None if code in (None, "en") else Language.find(code).name


def _map_reduce(
    run: _Run, units: list[Unit], room: int, progress: Progress
) -> tuple[list[SummarySection], list[list[Unit]]]:
    """Summaries of consecutive chunks, each with the running summary before it,
    combined; and the chunks (a unit too long for one is cut into pieces)."""
    overhead = run.llm.count_tokens(_prompt(run, [], 1, running="x" * 4 * RUNNING_SUMMARY_TOKENS))
    budget = room - overhead
    if budget < 200:
        raise InvalidParams(
            f"the model's context ({room + overhead} tokens free) is too small for this "
            "template's answer and a chunk of input; raise LONGPLAY_LLM_CONTEXT_TOKENS or "
            "choose a shorter length",
            code="context_too_small",
        )
    chunks = chunk_units(units, budget)
    ends, total = _chunk_ends(run, chunks, overhead)
    parts: list[list[SummarySection]] = []
    running, read, first = "", 0, 1
    progress(0, total, chunks_done=0, chunks_total=len(chunks), characters_read=0)
    for number, chunk in enumerate(chunks, 1):
        last = first + len(chunk) - 1
        prompt = _prompt(run, chunk, first, running=running)
        details = {"chunks_done": number - 1, "chunks_total": len(chunks), "characters_read": read}
        began = ends[number - 2] if number > 1 else 0
        share = _Share(progress, began, ends[number - 1], total, details)
        sections = run.ask(f"{running}\n{_source(chunk)}", (first, last), prompt, share)
        parts.append(sections)
        running = _cut_to_tokens(_plain(sections), RUNNING_SUMMARY_TOKENS)
        read += sum(len(u.text) for u in chunk)
        first = last + 1
        details = {"chunks_done": number, "chunks_total": len(chunks), "characters_read": read}
        progress(ends[number - 1], total, **details)
    combined = _combine(run, parts, room, _Share(progress, ends[-1], total, total, details))
    progress(total, total, chunks_done=len(chunks), chunks_total=len(chunks), characters_read=read)
    return combined, chunks


def _chunk_ends(run: _Run, chunks: list[list[Unit]], overhead: int) -> tuple[list[float], float]:
    """Where each chunk's share of the bar ends, and the bar's whole length, in tokens the
    model reads and writes: a chunk's text, the prompt around it and its answer; then the
    combining's, the chunks' summaries and one answer (none for chapters, joined without
    the model). As equal shares, the short last chunk and the quick combining took a
    quarter of a four-share bar each, and the ETA read twice the time left."""
    answer = answer_tokens(run.template, run.options.length)
    sizes = [sum(estimate_tokens(u.text) for u in chunk) + overhead + answer for chunk in chunks]
    ends = list(itertools.accumulate(float(size) for size in sizes))
    combining = 0 if run.template.chapters else RUNNING_SUMMARY_TOKENS * len(chunks) + answer
    return ends, ends[-1] + combining


def chunk_units(units: list[Unit], budget: int) -> list[list[Unit]]:
    """Consecutive units packed into chunks of about ``budget`` tokens; a unit longer
    than that is cut at sentence boundaries, each piece keeping its unit's times."""
    pieces: list[Unit] = []
    for unit in units:
        if estimate_tokens(unit.text) + 8 <= budget:
            pieces.append(unit)
        else:
            pieces += [replace(unit, text=t) for t in chunk_text(unit.text, max_tokens=budget - 8)]
    chunks: list[list[Unit]] = []
    current: list[Unit] = []
    used = 0
    for piece in pieces:
        cost = estimate_tokens(piece.text) + 8  # its number and time
        if current and used + cost > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(piece)
        used += cost
    if current:
        chunks.append(current)
    return chunks


def _combine(
    run: _Run, parts: list[list[SummarySection]], room: int, share: _Share
) -> list[SummarySection]:
    """One summary from the parts' summaries. Chapters are the parts' chapters in order
    (their starts are segments already); the rest is asked of the model, in rounds of
    parts that fit the context when all of them do not, each ask moving on through
    ``share``."""
    if run.template.chapters:
        return _joined_chapters(parts)
    while len(parts) > 1:
        groups: list[list[list[SummarySection]]] = [[]]
        for part in parts:
            trial = [*groups[-1], part]
            if groups[-1] and run.llm.count_tokens(_combine_prompt(run, trial)) > room:
                groups.append([part])
            else:
                groups[-1] = trial
        if len(groups) == len(parts):  # no two parts fit together: all of them, clipped
            groups = [[[_clipped(s, room // (2 * len(parts))) for s in part] for part in parts]]
        parts = [
            run.ask(_plain_parts(group), (1, 1), _combine_prompt(run, group), share)
            for group in groups
        ]
    return parts[0]


def _joined_chapters(parts: list[list[SummarySection]]) -> list[SummarySection]:
    merged = []
    for index, section in enumerate(parts[0]):
        if section.form == "chapters":
            items = [item for part in parts for item in part[index].items]
            merged.append(replace(section, items=items))
        else:
            merged.append(section)
    return merged


def _with_chapter_times(
    sections: list[SummarySection], units: Sequence[Unit]
) -> list[SummarySection]:
    spans = [(u.start, u.end) if u.start is not None and u.end is not None else None for u in units]
    return [
        replace(s, items=chapter_times(s.items, spans)) if s.form == "chapters" else s
        for s in sections
    ]


# -- prompts ------------------------------------------------------------------------------


def _form_text(form: str, length: str) -> str:
    """How the prompt asks for a section of ``form``."""
    if form == "prose":
        return {"short": "two or three sentences", "medium": "a paragraph"}.get(
            length, "a long paragraph"
        )
    if form == "list":
        return "a list of short items"
    if form == "actions":
        return (
            'a list of objects with "task", "owner" (the person named in the text who will '
            'do it) and "due" (when it is due, as said; "" when not said)'
        )
    return (
        'a list of objects with "start_segment" (the number in brackets of the segment '
        'where the topic starts), "title" (a few words) and "gist" (one sentence)'
    )


def _instructions(run: _Run) -> str:
    return _instructions_for(run.template.sections, run.options.length, run.language)


def _instructions_for(sections: Sequence[SectionSpec], length: str, language: str | None) -> str:
    said_in = f" in {language}" if language else ""
    lines = [f"The text below is followed by its summary{said_in}, as JSON with these keys:"]
    for spec in sorted(sections, key=lambda s: s.form == "prose"):
        form = _form_text(spec.form, length)
        lines.append(f'- "{spec.key}" ({spec.name}): {spec.instruction} As {form}.')
    lines.append("The summary uses only what the text says.")
    return "\n".join(lines)


EXAMPLE_TEXT = (
    "The town council met on Tuesday to talk about a new bus line. People in the north "
    "district have waited years for a direct bus to the hospital. The council approved "
    "the route and set aside money for six electric buses. Nora Lind will order the "
    "buses by the end of March, and the line opens in May."
)
EXAMPLE_SECTIONS: dict[str, tuple[SectionSpec, Any]] = {
    "list": (
        SectionSpec("points", "Points", "The main points, one per item.", "list"),
        [
            "The council approved a bus line from the north district to the hospital.",
            "It set aside money for six electric buses.",
            "The line opens in May.",
        ],
    ),
    "actions": (
        SectionSpec("tasks", "Tasks", "Tasks someone agreed to do.", "actions"),
        [{"task": "Order the six electric buses", "owner": "Nora Lind", "due": "end of March"}],
    ),
    "prose": (
        SectionSpec("summary", "Summary", "What the text is about.", "prose"),
        "The council approved a bus line from the north district to the hospital, with six "
        "electric buses, from May.",
    ),
}
"""A worked example for templates with a list: its sections, one of each form the
template has, and their answers."""


def _example(run: _Run) -> str:
    """A text and its summary as JSON, before the prompt's own, where the template asks
    for a list or for action items. Given the instructions alone, the bundled model
    (a small base model) wrote a list's key as its one item, or nothing: key-points
    summaries of seven short texts came back empty, all seven. With the example, six
    had points from their own text. Prose-only templates go without: there the model
    copied the example's summary instead. What it copies of the example is taken out
    as an echo (:func:`~longplay.text.summary.without_echoes`).

    The example is English, so a summary asked for in another language goes without:
    given it, the model copied the example in six of nine summaries asked for in German,
    Spanish and other languages, and wrote English in others."""
    forms = {spec.form for spec in run.template.sections}
    if not forms & {"list", "actions"} or not _english(run.language):
        return ""
    shown = [EXAMPLE_SECTIONS[form] for form in EXAMPLE_SECTIONS if form in forms]
    specs = [spec for spec, _ in shown]
    answer = json.dumps({spec.key: value for spec, value in shown})
    text = _text_block(EXAMPLE_TEXT)
    return f"{_instructions_for(specs, 'short', None)}\n\n{text}{answer}\n\n"


def _english(language: str | None) -> bool:
    """Whether a summary in ``language`` (a name, as prompts say it; None: the text's
    own, not known) may be shown the English example."""
    return language is None or Language.find(language).base == "en"


def _asked(run: _Run) -> str:
    """What a prompt says before the text: the example, if any, and the instructions."""
    return _example(run) + _instructions(run)


def _opening(source: str, limit: int) -> str:
    """The first sentences of ``source`` up to ``limit`` characters (at least one),
    Markdown headings left out."""
    prose = " ".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    kept: list[str] = []
    for sentence in split_sentences(" ".join(prose.split())):
        if kept and sum(len(k) + 1 for k in kept) + len(sentence) > limit:
            break
        kept.append(sentence)
    return _cut(joined(kept), limit)


def _first_sentences(source: str) -> list[str]:
    """The first sentence of each line of ``source`` (a paragraph, a segment, a point of
    a part's summary) that says something (four words or more: not "Note 3."), once
    each; headings and labels ("Key points:") left out."""
    found: list[str] = []
    for line in source.splitlines():
        text = line.strip().removeprefix("- ").strip()
        if not text or text.startswith("#") or text.endswith(":"):
            continue
        said = [t for t in split_sentences(text) if count_words(t) >= 4]
        if said and said[0] not in found:
            found.append(said[0])
    return found


def _cut(text: str, limit: int) -> str:
    """``text`` cut at a word to at most ``limit`` characters, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _cut_to_tokens(text: str, tokens: int) -> str:
    """``text`` cut as :func:`_cut` to about ``tokens`` tokens: as many characters as
    its own script takes for them (a Chinese text has about one a token)."""
    estimate = estimate_tokens(text)
    if estimate <= tokens:
        return text
    return _cut(text, max(1, len(text) * tokens // estimate))


def _text_block(text: str) -> str:
    return f'Text:\n"""\n{text}\n"""\nJSON: '


def _numbered(units: Sequence[Unit], first: int, timed: bool) -> str:
    if not timed:
        return "\n\n".join(u.text for u in units)
    return "\n".join(f"[{first + i}] {u.text}" for i, u in enumerate(units))


def _prompt(run: _Run, units: Sequence[Unit], first: int, *, running: str) -> str:
    """The prompt for ``units`` (numbered from ``first`` for chapters), after the
    summary of what came before when there is one."""
    text = _numbered(units, first, run.template.chapters)
    earlier = f"(Summary of the part of the text before this one: {running})\n" if running else ""
    return f"{_asked(run)}\n\n{earlier}{_text_block(text)}"


def _source(units: Sequence[Unit]) -> str:
    """The text of ``units``, as a summary of them may draw on it."""
    return "\n".join(u.text for u in units)


def _plain_parts(parts: Sequence[list[SummarySection]]) -> str:
    return "\n\n".join(f"Part {i}:\n{_plain(part)}" for i, part in enumerate(parts, 1))


def _combine_prompt(run: _Run, parts: Sequence[list[SummarySection]]) -> str:
    return (
        f"{_asked(run)}\n\n"
        "(The text is the summaries of the consecutive parts of one long text; its summary "
        "keeps every decision, task and name they give.)\n"
        f"{_text_block(_plain_parts(parts))}"
    )


def _written(sections: Sequence[SummarySection]) -> str:
    """What the model wrote in ``sections``, without their names (a built-in
    template's are English): the text whose language is checked."""
    lines: list[str] = []
    for section in sections:
        lines += [section.text] if section.form == "prose" else map(_item_text, section.items)
    return "\n".join(lines)


def _plain(sections: Sequence[SummarySection]) -> str:
    """Sections as plain text, to hand on to the next prompt."""
    lines = []
    for section in sections:
        if section.form == "prose":
            lines.append(f"{section.name}: {section.text}")
            continue
        lines.append(f"{section.name}:")
        for item in section.items:
            lines.append(f"- {_item_text(item)}")
    return "\n".join(lines)


def _item_text(item: Any) -> str:
    if isinstance(item, tuple):  # a chapter's (first segment, title, gist)
        return f"{item[1]}: {item[2]}"
    if isinstance(item, Chapter):
        return f"{item.title}: {item.gist}"
    if isinstance(item, str):
        return item
    return action_text(item)


def _clipped(section: SummarySection, tokens: int) -> SummarySection:
    if section.form == "prose":
        return replace(section, text=_cut_to_tokens(section.text, tokens))
    return section
