"""Translating lines with a language model, a chunk at a time, one for one.

What goes to the LLM is a list of lines: a subtitle cue's text is one line (its own line
breaks joined), a paragraph of prose one line or, when long, a few sentences at a time
(see :class:`~longplay.text.documents.Document`). Lines are translated in order, a chunk
at a time, and come back one for one, so cues keep their timings and count and prose keeps
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

:mod:`longplay.engines.translation` drives them over a whole document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from longplay.engines.llm import LanguageModel, LlamaCppModel, Message
from longplay.framework import Note, Progress
from longplay.text.answers import is_copy, loop_cut, normal, parse_numbered
from longplay.text.chunks import estimate_tokens
from longplay.text.languages import Language

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
    looping_lines: int = 0
    """Lines whose translation went round in a loop and was cut where the loop began."""


class Tally:
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


class Translator(Protocol):
    chunk_lines: int

    def overhead_tokens(self) -> int:
        """Tokens a prompt takes besides the lines and the answer."""
        ...

    def translate_chunk(self, lines: Sequence[str], run: Run) -> list[str]:
        """One translation per line, in order."""
        ...


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

    def translate_chunk(self, lines: Sequence[str], run: Run) -> list[str]:
        texts = self._numbered(lines, run) if len(lines) > 1 else [self._one(lines[0], run)]
        if texts is None:
            run.stats.fallback_lines += len(lines)
            texts = [self._one(line, run) for line in lines]
        return [run.settle(source, text) for source, text in zip(lines, texts, strict=True)]

    def _numbered(self, lines: Sequence[str], run: Run) -> list[str] | None:
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

    def _ask(self, messages: Sequence[Message], lines: Sequence[str], run: Run) -> str:
        prompt_tokens = sum(self.llm.count_tokens(m["content"]) for m in messages)
        return self.llm.chat(messages, max_tokens=run.answer_tokens(lines, prompt_tokens))

    def _one(self, line: str, run: Run) -> str:
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

    def translate_chunk(self, lines: Sequence[str], run: Run) -> list[str]:
        return [self._line(line, run) for line in lines]

    def _line(self, line: str, run: Run) -> str:
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
        """Not empty, not the line itself, not one of the examples' translations, not
        going round in a loop."""
        copied = any(normal(text) == normal(example) for _, example in self.examples)
        looping = loop_cut(line, text) is not None
        return bool(normal(text)) and not is_copy(line, text) and not copied and not looping

    def _ask(self, line: str, run: Run, *, with_history: bool) -> str:
        prompt = self._prompt(line, with_history=with_history)
        max_tokens = run.answer_tokens([line], self.llm.count_tokens(prompt))
        return self.llm.complete(prompt, max_tokens=max_tokens, stop=["\n"])


def translator_for(llm: LanguageModel, options: TranslationOptions) -> Translator:
    """A llama.cpp model is prompted as a base model (which an instruction-tuned GGUF
    follows too); any other engine is taken to be a chat model."""
    if isinstance(llm, LlamaCppModel):
        return CompletionTranslator(llm, options)
    return ChatTranslator(llm, options)


@dataclass
class Run:
    """What a translation in progress shares with its translator."""

    context_tokens: int
    tally: Tally
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
        if (cut := loop_cut(source, text)) is not None:
            self.stats.looping_lines += 1
            text = cut
        if not normal(text) or is_copy(source, text):
            self.stats.untranslated_lines += 1
        return text if normal(text) else source
