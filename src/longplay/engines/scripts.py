"""Writing a podcast script that is grounded by construction.

The facts of an episode come from the passages retrieved for it, never from the model:

- the outline is the passages themselves, in the order of their documents, one
  section each, a chapter per document heading;
- what the expert (or, in a debate, both sides) says is the passage's own sentences,
  a few at a time, with a short lead-in ("Right.");
- the model writes only the host's opening question of each section the episode will
  use (:meth:`ScriptWriter.ask`), and each is checked:
  the first line of what it wrote, cut at its question mark, 3 to 25 words, and every
  content word found in the section's passage, the topic or the speakers' and
  documents' names (:func:`~longplay.text.script.ungrounded_words`). A question that
  fails is replaced by one made from the passage's heading and document, so nothing the
  model writes can break the format or add a fact.

Intro and outro name the topic, the speakers and the documents, and cite the passage of
every section. Every turn carries the ids of the passages it draws on.

In another language than English the phrases the writer adds itself (the intro, the
outro, lead-ins, follow-ups, "From <document>:", the questions made from headings, the
words that list the documents) are taken from those written by hand
(:mod:`longplay.text.host_phrases`: German, French, Spanish, Italian, Portuguese, Dutch,
Russian, Japanese, Chinese), the names put in. Only a phrase not written there is
translated by the same model, once per job, before the outline, with the names in it
kept as they are (:meth:`ScriptWriter.translate`): a small model translating "Right."
alone gives German "Rechts.", so the model is the fallback, not the rule. A model's
translation is used only where it passes a check (:func:`_usable`): words in it, every
name and placeholder of the English phrase in it, no number the English lacks, not
absurdly longer. Any other phrase stays English. The content is the documents' own
sentences, in their own language; in Chinese and Japanese a phrase and what follows it
are joined without a space, as those languages are written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from longplay.engines.llm import LanguageModel
from longplay.engines.translation import TranslationOptions, translate_lines
from longplay.framework import Progress
from longplay.framework.library import Passage
from longplay.text.answers import normal
from longplay.text.host_phrases import host_phrases
from longplay.text.languages import Language, other_language
from longplay.text.passages import HEADING_SEPARATOR
from longplay.text.script import (
    Chapter,
    CitedPassage,
    Script,
    Turn,
    short_title,
    ungrounded_words,
    words,
)
from longplay.text.sentences import count_words, split_sentences
from longplay.unspaced import DENSE_SCRIPT

Style = Literal["deep-dive", "brief", "debate", "interview"]
WORDS_PER_SECOND = 2.6
"""About how fast the bundled voices speak, pauses between turns included: what a script
is fitted by before it is voiced (the fit by voiced lengths corrects it afterwards)."""
CHUNK_WORDS: dict[str, int] = {"deep-dive": 40, "brief": 28, "debate": 32, "interview": 32}
"""About how many of a passage's words one content turn speaks, by style."""
MIN_QUESTION_WORDS, MAX_QUESTION_WORDS = 3, 25
QUESTION_TOKENS = 32
LEAD_INS = ("", "Right.", "Sure.", "Well,", "Good question.", "Here's what the source says.")
FOLLOW_UPS = ("Go on.", "And what else?", "Tell us more.", "What follows from that?")
BUT_ALSO = "But the source also says:"
DOCUMENTS = "{documents}"
"""Where the intro names the documents; a script fills in those of its sections."""
FIRST, LAST = "{first}", "{last}"
TWO_OR_MORE = f"{FIRST} and {LAST}"
MORE_THAN_FOUR = f"{FIRST} and more"
NO_DOCUMENTS = "our sources"
LIST_COMMA = ", "
"""How the intro lists the documents and the guests (:func:`_listing`): phrases
translated like the rest, but for the comma, which has no words for a model to
translate: it comes from the hand-written phrases or stays as it is."""
WELCOME = "Welcome to the show."
ABOUT, ABOUT_SOURCES = (
    "Today we're talking about {topic}, from {documents}.",
    "Today we're talking about what our sources say, from {documents}.",
)
WITH_GUEST, WITH_GUESTS = "With me is {guests}.", "With me are {guests}."
THANKS = "Thanks."
INTO, INTO_SOURCES = "Let's get into {topic}.", "Let's get into what our sources say."
THANKS_GUEST = "Thanks, {guest}."
ALL_FOR_TODAY, THANKS_FOR_LISTENING = "That's all for today.", "Thanks for listening."
ASK_HEADING = "What does {document} tell us about {heading}?"
ASK_DOCUMENT = "What else does {document} tell us?"
FROM_DOCUMENT = "From {document}:"
"""The sentences of the intro, the outro, the questions made from a passage and a single
host's lead; their placeholders are filled with names (:class:`Phrase`)."""
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_UNSPACED_STOPS = "\u3001\u3002\uff01\uff0c\uff1a\uff1f"
"""Chinese and Japanese commas, full stops, exclamation and question marks and colons:
no space follows them."""
PHRASE_NOTES = (
    "These are a podcast host's own short phrases, one per line. Keep {documents}, {first} "
    "and {last} exactly as they are: names are put in their place later."
)
"""What the translator is told about the phrases, besides the names to keep."""
MAX_PHRASE_GROWTH, PHRASE_SLACK = 3, 20
"""A translated phrase longer than this many times the English one's characters, plus
the slack, is not a translation of it (a small model apologising or rambling on)."""
GLOSSARY_LIMIT = 500
"""Most names the translator's glossary takes; the check looks at every name."""
_NUMBER = re.compile(r"\d+")
_EXAMPLE = (
    "Passage: The Eiffel Tower was finished in 1889 for the World's Fair in Paris. It was "
    "the tallest structure in the world for 41 years.\n"
    "Question: When was the Eiffel Tower finished, and how long was it the tallest?\n\n"
)


@dataclass(frozen=True)
class Phrase:
    """Words the writer adds itself: English sentences whose placeholders are filled with
    ``names``, where a sequence of names is listed ("a, b and c"); a placeholder not
    named stays for the script to fill (``{documents}``)."""

    sentences: tuple[str, ...]
    names: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    @property
    def english(self) -> str:
        """The phrase in English: what the model translates, and the key its
        translation is kept by."""
        return self.said({})

    def written(self, phrases: Mapping[str, str]) -> str | None:
        """The phrase in the language of ``phrases`` (written by hand, by their English),
        the names listed in it too; None where one of its sentences is not there."""
        if not all(sentence in phrases for sentence in self.sentences):
            return None
        return self.said(phrases)

    def said(self, phrases: Mapping[str, str]) -> str:
        """The phrase with each sentence as ``phrases`` have it (else in English)."""
        names = {
            name: value if isinstance(value, str) else _listing(value, phrases)
            for name, value in self.names.items()
        }
        return _join(*(_filled(phrases.get(s, s), names) for s in self.sentences))


def _filled(template: str, names: Mapping[str, str]) -> str:
    """``template`` with each of its placeholders that ``names`` has put in."""
    return _PLACEHOLDER.sub(lambda m: names.get(m[1], m[0]), template)


@dataclass(frozen=True)
class Voice:
    """A speaker as the writer needs them: a name and a role (``host`` leads)."""

    name: str
    role: str


class Section(BaseModel):
    """The turns made from one passage, in beats: a beat is a question or a lead and
    the content that answers it, the unit an episode is lengthened or shortened by."""

    passage: Passage
    title: str
    beats: list[list[Turn]]
    rank: int
    """Where its passage came in the retrieval, 0 the best."""
    asked: bool = False
    """Whether the model was asked for its opening question (:meth:`ScriptWriter.ask`)."""


class Draft(BaseModel):
    """What the writer made: a section for every passage retrieved, in episode order;
    a script is a choice of their beats (:meth:`script`)."""

    title: str
    intro: list[Turn]
    sections: list[Section]
    outro: list[Turn]
    questions_written: int = 0
    """Host questions the model wrote that passed the check."""
    questions_replaced: int = 0
    """Those that failed it and were made from the passage instead."""
    phrases: dict[str, str] = {}
    """The writer's own phrases in the episode's language, by their English: those
    written by hand, and the model's translations that passed the check (none in
    English). The grounding check allows their words as it allows the host's English
    ones."""

    def script(self, plan: Mapping[int, int]) -> Script:
        """The script of the first ``plan[i]`` beats of each section ``i`` planned."""
        sections = [(self.sections[i], plan[i]) for i in sorted(plan) if plan[i] > 0]
        firsts = [section.passage.id for section, _ in sections]
        documents = list(dict.fromkeys(s.passage.document_name for s, _ in sections))
        listed = _listing(documents, self.phrases)
        turns = [
            t.model_copy(update={"sources": firsts, "text": t.text.replace(DOCUMENTS, listed)})
            for t in self.intro
        ]
        chapters: list[Chapter] = []
        for section, beats in sections:
            title = short_title(section.title)  # a heading or a document's name, any length
            if not chapters or chapters[-1].title != title:
                chapters.append(Chapter(title=title, first_turn=len(turns)))
            turns.extend(turn for beat in section.beats[:beats] for turn in beat)
        turns += [t.model_copy(update={"sources": firsts}) for t in self.outro]
        return Script(
            title=short_title(self.title),
            turns=turns,
            chapters=chapters,
            passages=[
                CitedPassage(
                    id=p.id,
                    document_id=p.document_id,
                    document=p.document_name,
                    text=p.text,
                    heading=p.heading,
                )
                for p in (section.passage for section, _ in sections)
            ],
        )


def _listing(names: Sequence[str], phrases: Mapping[str, str]) -> str:
    """``a, b and c``; the first four names and "more" for a longer list; each phrase
    as ``phrases`` translate it."""
    if not names:
        return phrases.get(NO_DOCUMENTS, NO_DOCUMENTS)
    if len(names) == 1:
        return names[0]
    comma = phrases.get(LIST_COMMA, LIST_COMMA)
    if len(names) > 4:
        first, last, template = comma.join(names[:4]), "", MORE_THAN_FOUR
    else:
        first, last, template = comma.join(names[:-1]), names[-1], TWO_OR_MORE
    filled = {FIRST: first, LAST: last}
    return re.sub(r"\{first\}|\{last\}", lambda m: filled[m[0]], phrases.get(template, template))


def estimated_seconds(turn: Turn) -> float:
    """How long ``turn`` takes to speak, by :data:`WORDS_PER_SECOND`."""
    return len(words(turn.text)) / WORDS_PER_SECOND


def fit(
    draft: Draft, seconds: float, duration: Callable[[Turn], float] = estimated_seconds
) -> dict[int, int]:
    """The beats to voice for an episode of about ``seconds``: the best-ranked sections
    first, each beat in order, as long as adding one brings the episode closer to
    ``seconds``; ``duration`` tells a turn's length (estimated, or as voiced)."""
    spent = sum(duration(t) for t in [*draft.intro, *draft.outro])
    plan: dict[int, int] = {}
    for index in sorted(range(len(draft.sections)), key=lambda i: draft.sections[i].rank):
        for beat in draft.sections[index].beats:
            longer = spent + sum(duration(t) for t in beat)
            if abs(longer - seconds) >= abs(spent - seconds):
                return plan
            spent = longer
            plan[index] = plan.get(index, 0) + 1
    return plan


@dataclass(frozen=True)
class Translated:
    """How the translation of the writer's own phrases went (:meth:`ScriptWriter.translate`)."""

    phrases: int
    """Distinct phrases (the list comma not counted, no word in it), each once."""
    english: int
    """Those that stay English: not written by hand in the language, and their
    translation failed the check or came back the same. The rest are in the episode's
    language, written by hand or translated."""


class ScriptWriter:
    """Writes a :class:`Draft` from retrieved passages with ``model`` asking the questions."""

    def __init__(
        self,
        model: LanguageModel,
        *,
        voices: Sequence[Voice],
        style: Style,
        topic: str | None,
        instructions: str | None,
        language: str,
        chat: bool,
    ) -> None:
        self.model = model
        self.host = voices[0]
        self.others = list(voices[1:])
        self.style = style
        self.topic = topic
        self.instructions = instructions
        self.language = language
        self.chat = chat
        """Ask as a chat (an instruction-following server) instead of a completion."""
        self.phrases: dict[str, str] = {}
        """The writer's own phrases in the episode's language, by their English
        (:meth:`translate`); a phrase not in it is said in English."""

    def translate(
        self, passages: Sequence[Passage], *, context_tokens: int, progress: Progress
    ) -> Translated | None:
        """The phrases the writer will add itself to an outline of ``passages`` in the
        episode's language, each once, for :meth:`outline`: those written by hand
        (:func:`~longplay.text.host_phrases.host_phrases`) as they are, the rest
        translated by the model, keeping those that pass the check (:func:`_usable`).
        None for an English episode. ``progress`` hears of the translation's characters
        done (at once where the model has nothing to translate); the translator's own
        notes (retries) are not passed on, the caller tells how many phrases stay
        English."""
        spoken = Language.find(self.language)
        if spoken.base == "en":
            return None
        phrases = self._phrases(passages)
        by_hand = host_phrases(spoken)
        self.phrases = {
            phrase.english: text
            for phrase in phrases
            if (text := phrase.written(by_hand)) is not None
        }
        # The list comma has no words: the model is not asked, the count leaves it out.
        worded = [p.english for p in phrases if normal(p.english)]
        asked = [phrase for phrase in worded if phrase not in self.phrases]
        if asked:
            self.phrases |= self._translated(asked, passages, context_tokens, progress)
        else:
            progress(1, 1)
        return Translated(phrases=len(worded), english=sum(p not in self.phrases for p in worded))

    def _translated(
        self,
        english: list[str],
        passages: Sequence[Passage],
        context_tokens: int,
        progress: Progress,
    ) -> dict[str, str]:
        """The model's translations of ``english`` that pass the check, by their English."""
        names = self._names(passages)
        options = TranslationOptions(
            target_language=self.language,
            source_language="en",
            formality="default",
            glossary={name: name for name in names[:GLOSSARY_LIMIT]},
            instructions=PHRASE_NOTES,
        )
        translated, _ = translate_lines(
            english, options, llm=self.model, context_tokens=context_tokens, progress=progress
        )
        return {
            phrase: text
            for phrase, text in zip(english, translated, strict=True)
            if normal(text) != normal(phrase) and _usable(phrase, text, names)
        }

    def _phrases(self, passages: Sequence[Passage]) -> list[Phrase]:
        """Every phrase the writer may add itself to an outline of ``passages``, with
        the names put in, once each."""
        documents = list(dict.fromkeys(p.document_name for p in passages))
        phrases = [phrase for _, phrase in [*self._intro(), *self._outro()]]
        if self.others:
            phrases += [_made_question(p) for p in passages]
            texts = [lead for lead in LEAD_INS if lead]
            texts += [BUT_ALSO] if self.style == "debate" else list(FOLLOW_UPS)
        else:
            phrases += [_from(document) for document in documents]
            texts = []
        texts.append(NO_DOCUMENTS)
        if len(documents) > 1:
            texts.append(TWO_OR_MORE)
        if len(documents) > 2:
            texts.append(LIST_COMMA)
        if len(documents) > 4:
            texts.append(MORE_THAN_FOUR)
        phrases += [Phrase((text,)) for text in texts]
        return list({phrase.english: phrase for phrase in phrases}.values())

    def _names(self, passages: Sequence[Passage]) -> list[str]:
        """What a translated phrase must keep as it is: the placeholders, the speakers'
        names, the topic, the documents' names and the passages' headings."""
        names = [
            DOCUMENTS,
            FIRST,
            LAST,
            self.host.name,
            *(v.name for v in self.others),
            self.topic or "",
            *(p.document_name for p in passages),
            *(p.heading or "" for p in passages),
        ]
        return [name for name in dict.fromkeys(names) if name.strip()]

    def _say(self, phrase: Phrase | str) -> str:
        """``phrase`` (or a sentence without names) in the episode's language where
        :meth:`translate` has it, else in English."""
        english = phrase if isinstance(phrase, str) else phrase.english
        return self.phrases.get(english, english)

    def outline(self, passages: Sequence[Passage]) -> Draft:
        """One section per passage, each host question made from its passage's heading
        and document; ``passages`` come best first, the sections are put in document
        order, each remembering its rank. The writer's own phrases are in the episode's
        language where :meth:`translate` made them so. No model runs: :meth:`ask` does
        that for the sections an episode will use."""
        documents = list(dict.fromkeys(p.document_name for p in passages))
        ordered = sorted(
            range(len(passages)),
            key=lambda i: (documents.index(passages[i].document_name), passages[i].position),
        )
        return Draft(
            title=self._title(documents),
            intro=[Turn(speaker=s, text=self._say(phrase)) for s, phrase in self._intro()],
            sections=[
                self._section(passages[index], rank=index, speaker_turn=n)
                for n, index in enumerate(ordered, start=1)
            ],
            outro=[Turn(speaker=s, text=self._say(phrase)) for s, phrase in self._outro()],
            phrases=self.phrases,
        )

    def ask(
        self, draft: Draft, sections: Sequence[int], *, progress: Callable[[int, int], None]
    ) -> None:
        """Have the model write the host's opening question of each of ``sections``
        (indexes into ``draft.sections``); one that fails the check keeps the question
        made from the passage. So does one plainly in another language than the
        episode's: asked to use the passage's words, a small model wrote English
        questions of English passages in a German episode, and in a French one too."""
        documents = [s.passage.document_name for s in draft.sections]
        allowed = self._allowed(documents)
        spoken = Language.find(self.language).code
        for done, index in enumerate(sections, start=1):
            section = draft.sections[index]
            opening = section.beats[0][0]
            if self.others and not section.asked:
                question = self._question(section.passage)
                written = (
                    question is not None
                    and not ungrounded_words(question, [section.passage.text], allowed)
                    and other_language(question, spoken) is None
                )
                if written:
                    section.beats[0][0] = opening.model_copy(update={"text": question})
                draft.questions_written += written
                draft.questions_replaced += not written
                section.asked = True
            progress(done, len(sections))

    def _allowed(self, documents: Sequence[str]) -> list[str]:
        names = [self.host.name, *(v.name for v in self.others)]
        return [*(self.topic or "",), *(self.instructions or "",), *documents, *names]

    def _title(self, documents: Sequence[str]) -> str:
        return self.topic or (documents[0] if len(documents) == 1 else "Podcast")

    def _intro(self) -> list[tuple[str, Phrase]]:
        """The intro's turns: each speaker and phrase."""
        topic = {"topic": self.topic} if self.topic else {}
        about = ABOUT if self.topic else ABOUT_SOURCES
        if not self.others:
            return [(self.host.name, Phrase((WELCOME, about), topic))]
        guests = [v.name for v in self.others]
        with_me = WITH_GUEST if len(guests) == 1 else WITH_GUESTS
        return [
            (self.host.name, Phrase((WELCOME, about, with_me), {**topic, "guests": guests})),
            (guests[0], Phrase((THANKS, INTO if self.topic else INTO_SOURCES), topic)),
        ]

    def _outro(self) -> list[tuple[str, Phrase]]:
        """The outro's turn: its speaker and phrase."""
        goodbye = (ALL_FOR_TODAY, THANKS_FOR_LISTENING)
        if not self.others:
            return [(self.host.name, Phrase(goodbye))]
        thanks = Phrase((THANKS_GUEST, *goodbye), {"guest": self.others[0].name})
        return [(self.host.name, thanks)]

    def _section(self, passage: Passage, *, rank: int, speaker_turn: int) -> Section:
        title = passage.heading or passage.document_name
        chunks = _chunks(passage.text, CHUNK_WORDS[self.style])
        ids = [passage.id]
        host = self.host.name
        beats: list[list[Turn]] = []
        if not self.others:  # a single host reads the brief
            for n, chunk in enumerate(chunks):
                lead = self._say(_from(passage.document_name)) if n == 0 else ""
                beats.append([Turn(speaker=host, text=_join(lead, chunk), sources=ids)])
            return Section(passage=passage, title=title, beats=beats, rank=rank)
        expert = self.others[(speaker_turn - 1) % len(self.others)].name
        question = self._say(_made_question(passage))
        for n, chunk in enumerate(chunks):
            if n == 0:
                lead = self._say(LEAD_INS[speaker_turn % len(LEAD_INS)])
                beats.append(
                    [
                        Turn(speaker=host, text=question, sources=ids),
                        Turn(speaker=expert, text=_join(lead, chunk), sources=ids),
                    ]
                )
            elif self.style == "debate":  # the two sides take the passage's points in turn
                speaker, lead = (host, self._say(BUT_ALSO)) if n % 2 else (expert, "")
                beats.append([Turn(speaker=speaker, text=_join(lead, chunk), sources=ids)])
            else:
                follow = self._say(FOLLOW_UPS[(speaker_turn + n) % len(FOLLOW_UPS)])
                beats.append(
                    [
                        Turn(speaker=host, text=follow, sources=ids),
                        Turn(speaker=expert, text=chunk, sources=ids),
                    ]
                )
        return Section(passage=passage, title=title, beats=beats, rank=rank)

    def _question(self, passage: Passage) -> str | None:
        """The model's question about the start of ``passage``, parsed; None when what
        it wrote is not one."""
        return _parse_question(self._ask(_chunks(passage.text, CHUNK_WORDS[self.style])[0]))

    def _ask(self, chunk: str) -> str:
        focus = f" The episode is about {self.topic}." if self.topic else ""
        if self.instructions:
            focus += f" {self.instructions}"
        if self.chat:
            spoken = Language.find(self.language)
            language = "" if spoken.base == "en" else f" Write it in {spoken.name}."
            return (
                self.model.chat(
                    [
                        {
                            "role": "system",
                            "content": (
                                "You are a podcast host. Write one short question, on one line, "
                                "that the passage answers. Use only words from the passage."
                                f"{focus}{language}"
                            ),
                        },
                        {"role": "user", "content": chunk},
                    ],
                    max_tokens=QUESTION_TOKENS,
                    stop=["\n", "?"],
                )
                + "?"
            )
        prompt = f"{_EXAMPLE}Passage: {chunk}\nQuestion:"
        return self.model.complete(prompt, max_tokens=QUESTION_TOKENS, stop=["\n", "?"]) + "?"


def _from(document: str) -> Phrase:
    """What a single host says before reading from ``document``."""
    return Phrase((FROM_DOCUMENT,), {"document": document})


def _usable(english: str, text: str, names: Sequence[str]) -> bool:
    """Whether ``text`` will do as the phrase ``english`` in another language: it has
    words, it has every one of ``names`` (speakers, documents, topic, placeholders) that
    ``english`` has, it has no number outside them that ``english`` lacks, and it is at
    most :data:`MAX_PHRASE_GROWTH` times as long, plus :data:`PHRASE_SLACK` characters."""
    if not normal(text) or len(text) > MAX_PHRASE_GROWTH * len(english) + PHRASE_SLACK:
        return False
    if any(name in english and name not in text for name in names):
        return False

    def numbers(phrase: str) -> set[str]:
        for name in names:
            phrase = phrase.replace(name, " ")
        return set(_NUMBER.findall(phrase))

    return numbers(text) <= numbers(english)


def _made_question(passage: Passage) -> Phrase:
    """The host's question when the model's is not there or not good enough, about the
    passage's own heading: its whole path ("about Harbour history > Timetable?") was
    read out, the sign and all."""
    document = {"document": passage.document_name}
    if passage.heading:
        heading = passage.heading.rsplit(HEADING_SEPARATOR, 1)[-1]
        return Phrase((ASK_HEADING,), {**document, "heading": heading})
    return Phrase((ASK_DOCUMENT,), document)


def _parse_question(written: str) -> str | None:
    """The first line of what the model wrote, up to its first question mark, without
    a speaker label or quotes; None unless it is a question of a sensible length."""
    line = next((ln.strip() for ln in written.splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:\*\*)?[\w .'-]{1,30}:(?:\*\*)?\s*", "", line).strip(" \"'“”*")
    if "?" not in line:
        return None
    question = line[: line.index("?") + 1].strip(" \"'“”*")
    count = len(words(question))
    if not MIN_QUESTION_WORDS <= count <= MAX_QUESTION_WORDS:
        return None
    return question[0].upper() + question[1:]


def _chunks(text: str, size: int) -> list[str]:
    """The passage's sentences in groups of about ``size`` words."""
    groups: list[list[str]] = [[]]
    for sentence in split_sentences(" ".join(text.split())):
        if groups[-1] and sum(count_words(s) for s in groups[-1]) >= size:
            groups.append([])
        groups[-1].append(sentence)
    return [_join(*group) for group in groups if group]


def _join(*texts: str) -> str:
    """``texts`` one after another, the empty ones left out: a space between two, but
    after a Chinese or Japanese character or stop (those languages are written without
    spaces)."""
    joined = ""
    for text in filter(None, texts):
        last = joined[-1:]
        gap = "" if not last or last in _UNSPACED_STOPS or DENSE_SCRIPT.match(last) else " "
        joined += gap + text
    return joined
