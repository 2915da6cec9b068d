"""A podcast script: who says what, from which passages, and how it reads.

The script is data, not prose a model wrote in some format: :class:`Script` holds the
turns (speaker, text, the ids of the passages each draws on), the chapters and the
passages cited. A person edits the JSON and hands it back (``script``); the Markdown
and WebVTT forms are views of the same data.

:func:`ungrounded_words` is the grounding check: the content words of a turn that are
in none of its sources (nor in the words the episode may always use: the topic, the
speakers' names, the documents' names and a list of ordinary words).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from longplay.text.sentences import split_sentences
from longplay.text.subtitles import format_timestamp
from longplay.unspaced import DENSE_SCRIPT

MAX_TURN_CHARS = 2_000
MAX_TURNS = 2_000
MAX_TITLE_CHARS = 200
"""The longest title a script or a chapter has (:func:`short_title` makes one fit)."""
_TITLE_CUT_PUNCTUATION = " ,;:-\u2013\u2014"
"""What a shortened title does not end with, before its ellipsis."""

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*", re.UNICODE)
_HOSTS_WORDS = """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers him his how i if in into is
    it its itself just let me more most my no nor not now of off on once only or other our
    ours out over own same she should so some such than that the their theirs them then
    there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours yes okay well right so
    really interesting great good thanks thank welcome today episode show talk talking
    tell us say says said sources source document documents passage text part next first
    last then let's that's it's what's there's here's we're you're i'm don't doesn't isn't
    back start end go going get give know mean means think see look new one two three
    question questions answer ask listen listening listeners joining join with me all
    that's wrap up wraps covered cover covers taken take takes point points more detail
    details another also explain explains something anything everyone dive deep brief
    debate interview side argue argues case true really agree disagree though however
    fair make makes made way ways kind lot bit much many little thing things time else
    follows follow following sure
"""
COMMON_WORDS = frozenset(_HOSTS_WORDS.split())
"""Words any turn may use without a source: function words and the host's own."""


class Turn(BaseModel):
    """One speaker's turn: what is said and the passages it draws on.

    Its text may be of any length (a model may write a long one); a :class:`Script`
    says one longer than :data:`MAX_TURN_CHARS` as several turns (:func:`split_turn`)."""

    model_config = ConfigDict(extra="ignore")

    speaker: str = Field(min_length=1, max_length=60)
    text: str = Field(min_length=1)
    sources: list[str] = Field(default_factory=list)
    """Ids of the passages the turn draws on."""
    start: float | None = None
    """Seconds into the episode; set once it is voiced."""
    end: float | None = None


class Chapter(BaseModel):
    """A section of the episode: its title and its first turn."""

    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    first_turn: int = Field(ge=0)
    start: float | None = None
    end: float | None = None


class CitedPassage(BaseModel):
    """A passage a turn cites, with its document, as the script's reader needs it."""

    id: str
    document_id: str
    document: str
    text: str
    heading: str | None = None


class Script(BaseModel):
    """A podcast script as ``NAME.script.json`` holds it and ``script`` takes it back."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(default="Podcast", max_length=MAX_TITLE_CHARS)
    turns: list[Turn] = Field(min_length=1, max_length=MAX_TURNS)
    chapters: list[Chapter] = Field(default_factory=list)
    passages: list[CitedPassage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _chapters_in_order(self) -> Script:
        """Each chapter starts at a turn the script has, after the chapter before it: an
        edited script that lost turns would otherwise fail only once it is all voiced."""
        previous = -1
        for number, chapter in enumerate(self.chapters, start=1):
            if chapter.first_turn >= len(self.turns):
                raise ValueError(
                    f"chapter {number} ({chapter.title!r}) starts at turn "
                    f"{chapter.first_turn}, but the script has {len(self.turns)} turns, "
                    "counted from 0; remove the chapter or change its first_turn"
                )
            if chapter.first_turn <= previous:
                raise ValueError(
                    f"chapter {number} ({chapter.title!r}) starts at turn "
                    f"{chapter.first_turn}, not after the chapter before it (turn "
                    f"{previous}); list the chapters in the order they are heard"
                )
            previous = chapter.first_turn
        return self

    @model_validator(mode="after")
    def _long_turns_split(self) -> Script:
        """Each turn longer than :data:`MAX_TURN_CHARS` said as several turns of its
        speaker, cut at sentence ends; the chapters still start at the same words."""
        if all(len(turn.text) <= MAX_TURN_CHARS for turn in self.turns):
            return self
        turns: list[Turn] = []
        first_of: list[int] = []  # where each turn given starts among the turns kept
        for turn in self.turns:
            first_of.append(len(turns))
            turns.extend(split_turn(turn))
        if len(turns) > MAX_TURNS:
            raise ValueError(
                f"the script's turns, its long ones cut at {MAX_TURN_CHARS} characters, "
                f"are {len(turns)}, more than {MAX_TURNS}; shorten it"
            )
        self.turns = turns
        self.chapters = [
            c.model_copy(update={"first_turn": first_of[c.first_turn]}) for c in self.chapters
        ]
        return self

    @property
    def speakers(self) -> list[str]:
        """The speakers in the order they first speak."""
        return list(dict.fromkeys(turn.speaker for turn in self.turns))

    @property
    def text(self) -> str:
        """Every turn's text, in order: what the episode says."""
        return "\n".join(turn.text for turn in self.turns)


def split_turn(turn: Turn) -> list[Turn]:
    """``turn``, or where its text is longer than :data:`MAX_TURN_CHARS`, turns of the
    same speaker and sources that say it in order, each of whole sentences where they
    fit (a sentence too long alone is cut at a clause break or a space)."""
    if len(turn.text) <= MAX_TURN_CHARS:
        return [turn]
    texts = [""]
    for sentence in split_sentences(turn.text, max_chars=MAX_TURN_CHARS):
        joined = _joined(texts[-1], sentence)
        if len(joined) > MAX_TURN_CHARS:
            texts.append(sentence)
        else:
            texts[-1] = joined
    return [turn.model_copy(update={"text": text}) for text in texts if text]


def _joined(text: str, sentence: str) -> str:
    """``sentence`` after ``text``: a space between them, unless ``text`` ends with a
    Chinese or Japanese character or full stop (written without spaces)."""
    if not text:
        return sentence
    dense = DENSE_SCRIPT.match(text[-1]) or text[-1] in "\u3002\uff01\uff1f"
    return f"{text}{'' if dense else ' '}{sentence}"


def short_title(title: str) -> str:
    """``title``, or where it has more than :data:`MAX_TITLE_CHARS` characters, its
    start up to the last word that fits (mid-word only when there is none), then an
    ellipsis: a title made from a long document name or topic."""
    if len(title) <= MAX_TITLE_CHARS:
        return title
    words_fit = re.match(r"(.*\S)\s", title[:MAX_TITLE_CHARS], re.DOTALL)
    head = words_fit[1] if words_fit else title[: MAX_TITLE_CHARS - 1]
    return (head.rstrip(_TITLE_CUT_PUNCTUATION) or head) + "\u2026"


def words(text: str) -> list[str]:
    """The words of ``text``, lower case; each Chinese character or Japanese kana a
    word of its own (those scripts put no spaces between words)."""
    spaced = DENSE_SCRIPT.sub(r" \g<0> ", text)
    return [w.lower().replace("\u2019", "'") for w in _WORD.findall(spaced)]


def ungrounded_words(text: str, sources: Iterable[str], allowed: Iterable[str] = ()) -> set[str]:
    """The content words of ``text`` that none of ``sources`` (texts) has and that are
    neither ``allowed`` nor :data:`COMMON_WORDS`; numbers count as content words.

    A word counts as found when a source has it or it differs from one the source has
    only by a plural or possessive ending, which is the light rewording a host does.
    """
    known = set(COMMON_WORDS)
    for source in [*sources, *allowed]:
        for word in words(source):
            known.update(_forms(word))
    return {word for word in words(text) if not (_forms(word) & known)}


def _forms(word: str) -> set[str]:
    base = word.removesuffix("'s")
    forms = {word, base}
    for ending in ("es", "s"):
        if base.endswith(ending) and len(base) > len(ending) + 2:
            forms.add(base[: -len(ending)])
    return forms


def to_markdown(script: Script, *, sources: str = "Sources") -> str:
    """The script as a readable Markdown page: chapters, turns, and the sources cited,
    under the heading ``sources`` (in the episode's language)."""
    numbers = {p.id: n for n, p in enumerate(script.passages, start=1)}
    chapter_at = {c.first_turn: c for c in script.chapters}
    lines = [f"# {script.title}", ""]
    for index, turn in enumerate(script.turns):
        if index in chapter_at:
            chapter = chapter_at[index]
            when = f" ({_clock(chapter.start)})" if chapter.start is not None else ""
            lines += [f"## {chapter.title}{when}", ""]
        cited = "".join(f"[{numbers[s]}]" for s in turn.sources if s in numbers)
        lines += [f"**{turn.speaker}:** {turn.text} {cited}".rstrip(), ""]
    if script.passages:
        lines += [f"## {sources}", ""]
        for number, passage in enumerate(script.passages, start=1):
            where = f", {passage.heading}" if passage.heading else ""
            lines.append(f"{number}. *{passage.document}{where}* ({passage.id}): {passage.text}")
        lines.append("")
    return "\n".join(lines)


def to_vtt(turns: Sequence[Turn]) -> str:
    """WebVTT with one ``<v Speaker>`` cue per voiced turn, timed as voiced."""
    blocks = ["WEBVTT\n"]
    for turn in turns:
        if turn.start is None or turn.end is None:
            continue
        timing = (
            f"{format_timestamp(turn.start, decimal_marker='.')} --> "
            f"{format_timestamp(turn.end, decimal_marker='.')}"
        )
        speaker = html.escape(turn.speaker.replace(">", ""), quote=False)
        text = html.escape(" ".join(turn.text.split()), quote=False)
        blocks.append(f"{timing}\n<v {speaker}>{text}\n")
    return "\n".join(blocks)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
