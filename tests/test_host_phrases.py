"""The script writer's stock phrases, written by hand in nine languages.

A small model translating "Right." alone gives German "Rechts.", so the writer takes its
phrases from ``text/host_phrases.py`` in the languages written there and asks no model.
The first tests need no model at all: a writer whose every phrase is written by hand
is given none, so a phrase that is not (one added to the writer later, say) fails them.
The last runs the podcast's steps on the bundled Gemma, as ``test_podcast.py`` does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest
from test_podcast import GERMAN_PASSAGES, data_dir, local, output, run_podcast

from longplay.engines.llm import LanguageModel
from longplay.engines.scripts import FOLLOW_UPS, LEAD_INS, ScriptWriter, Style, Voice
from longplay.framework.library import Passage
from longplay.text.host_phrases import SOURCES_HEADING, TRANSLATIONS, WRITTEN, host_phrases
from longplay.text.languages import Language
from longplay.text.script import Script

__all__ = ["data_dir", "local"]  # the fixtures ``run_podcast`` needs

NO_MODEL = cast(LanguageModel, None)
"""The model of a writer that must not need one: asked anything, it fails the test."""
PLACEHOLDER = re.compile(r"\{\w+\}")
SENTENCE = "The keeper of the {} light wrote down every storm and every ship she saw."


def passage(n: int, document: str, heading: str | None, text: str = "") -> Passage:
    """A passage long enough for several turns (follow-ups, "But the source also says")."""
    text = text or " ".join(SENTENCE.format(f"{document} {k}") for k in range(8))
    return Passage(
        id=f"pas-{n}",
        collection_id="col-1",
        document_id=f"doc-{document}",
        document_name=document,
        position=n,
        text=text,
        heading=heading,
    )


PASSAGES = [
    passage(n, document, heading)
    for n, (document, heading) in enumerate(
        [("Harbour", "History"), ("Tides", None), ("Charts", "Depths"), ("Logs", None),
         ("Letters", "Storms")]
    )
]  # fmt: skip
SPEAKERS = [Voice("Joe", "host"), Voice("Alex", "expert"), Voice("Sam", "expert")]
WRITERS: list[tuple[int, Style, str | None, int]] = [
    (2, "deep-dive", "the harbour", 3),
    (3, "debate", None, 5),
    (3, "interview", "tides", 1),
    (1, "brief", None, 3),
    (1, "brief", "charts", 5),
]
"""Speakers, style, topic and documents: every phrase the writer has, each at least once
(one or more guests, with and without a topic, one to five documents listed)."""


def script_of(
    language: str, speakers: int, style: Style, topic: str | None, passages: Sequence[Passage]
) -> Script:
    """The whole script (every beat of every section) a writer with no model makes."""
    writer = ScriptWriter(
        NO_MODEL,
        voices=SPEAKERS[:speakers],
        style=style,
        topic=topic,
        instructions=None,
        language=language,
        chat=False,
    )
    translated = writer.translate(passages, context_tokens=2048, progress=lambda *_, **__: None)
    assert translated is None or translated.english == 0, (language, translated)
    draft = writer.outline(passages)
    return draft.script({i: len(section.beats) for i, section in enumerate(draft.sections)})


class Asking:
    """A model that writes the same question, in English, whatever it is asked."""

    model, device = "asking", "cpu"

    def complete(self, prompt: str, **options: object) -> str:
        return "Who wrote down every storm and every ship she saw"  # the writer adds "?"


def test_a_question_in_another_language_than_the_episodes_is_not_taken() -> None:
    """A small model told to use the passage's words wrote English questions of
    English passages inside German and French episodes; the question made from the
    passage, in the episode's language, stands instead. In English, it is taken."""
    for language, taken in [("en", True), ("de", False), ("fr", False)]:
        writer = ScriptWriter(
            cast(LanguageModel, Asking()),
            voices=SPEAKERS[:2],
            style="deep-dive",
            topic=None,
            instructions=None,
            language=language,
            chat=False,
        )
        writer.translate(PASSAGES[:3], context_tokens=2048, progress=lambda *_, **__: None)
        draft = writer.outline(PASSAGES[:3])
        writer.ask(draft, range(len(draft.sections)), progress=lambda *_: None)
        openings = [section.beats[0][0].text for section in draft.sections]
        asked = "Who wrote down every storm and every ship she saw?"
        assert (draft.questions_written, draft.questions_replaced) == (
            (3, 0) if taken else (0, 3)
        ), language
        assert (asked in openings) == taken, (language, openings)


def test_a_question_made_from_a_heading_names_the_passages_own() -> None:
    """A passage's heading is its path ("Harbour history > Timetable"); the question
    made from it read the path out, its sign and all."""
    nested = passage(0, "Harbour", "Harbour history > Timetable")
    for language, said in [("en", "about Timetable?"), ("de", "zum Thema Timetable?")]:
        script = script_of(language, 2, "deep-dive", None, [nested])
        asked = [turn.text for turn in script.turns if turn.text.endswith(said)]
        assert asked, (language, [turn.text for turn in script.turns])
        assert not [turn.text for turn in script.turns if ">" in turn.text]


def test_every_phrase_is_written_in_nine_languages_with_its_placeholders() -> None:
    assert sorted(SOURCES_HEADING) == sorted(WRITTEN)
    for english, texts in TRANSLATIONS.items():
        assert sorted(texts) == sorted(WRITTEN), english
        for language, text in texts.items():
            assert text.strip() and (text != english or english == ", "), (language, english)
            placeholders = sorted(PLACEHOLDER.findall(english))
            assert sorted(PLACEHOLDER.findall(text)) == placeholders, (language, text)
            assert "{" not in PLACEHOLDER.sub("", text) and "}" not in PLACEHOLDER.sub("", text)


@pytest.mark.parametrize("language", WRITTEN)
def test_a_script_in_a_written_language_has_no_english_phrase_and_asks_no_model(
    language: str,
) -> None:
    """Each turn of the English script that is more than the documents' own sentences
    is said differently in ``language``: every phrase the writer adds is covered."""
    for speakers, style, topic, documents in WRITERS:
        passages = PASSAGES[:documents]
        english = script_of("en", speakers, style, topic, passages)
        spoken = script_of(language, speakers, style, topic, passages)
        content = " ".join(p.text for p in passages)
        assert len(spoken.turns) == len(english.turns) > 2
        for ours, theirs in zip(english.turns, spoken.turns, strict=True):
            assert ours.text in content or ours.text != theirs.text, (language, ours.text)
        said = "\n".join(turn.text for turn in spoken.turns)
        leads = [p for p in [*LEAD_INS, *FOLLOW_UPS, "Thanks", "Welcome", "From "] if p]
        assert not [lead for lead in leads if lead in said], (language, style)


@pytest.mark.parametrize("language", ["ja", "zh", "zh-Hans"])
def test_chinese_and_japanese_phrases_are_joined_without_spaces(language: str) -> None:
    facts = [("灯台の記録", "歴史"), ("潮の満ち引き", None), ("海図", "水深")]
    passages = [
        passage(n, name, heading, f"{name}によると、嵐の夜には船が港に戻った。" * 12)
        for n, (name, heading) in enumerate(facts)
    ]
    for speakers, style, topic, _ in WRITERS:
        script = script_of(language, speakers, style, topic and "港", passages)
        spaced = [t.text for t in script.turns if " " in t.text]
        assert not spaced, spaced
        assert "灯台の記録、潮の満ち引き" in script.turns[0].text  # the list comma, too


def test_traditional_chinese_is_not_given_the_simplified_phrases() -> None:
    assert host_phrases(Language.find("zh-TW")) == {}  # the model translates those
    assert host_phrases(Language.find("zh-CN"))["Right."] == TRANSLATIONS["Right."]["zh"]
    assert host_phrases(Language.find("pt-BR"))["Right."] == TRANSLATIONS["Right."]["pt"]


def test_a_german_script_by_the_real_writer_says_the_written_phrases(
    local: None, tmp_path: Path
) -> None:
    ctx = run_podcast(
        tmp_path,
        passages=GERMAN_PASSAGES,
        collection="col-1",
        topic="die Küste",
        minutes=1,
        language="de",
        script_only=True,
    )

    script = Script.model_validate_json(output(ctx, ".script.json").read_text())
    assert "\n## Quellen\n" in output(ctx, ".md").read_text()  # the page's own heading too
    german = {english: texts["de"] for english, texts in TRANSLATIONS.items()}
    first, *rest = dict.fromkeys(p.document for p in script.passages)  # in episode order
    listed = german["{first} and {last}"].format(first=first, last=rest[0]) if rest else first
    about = german["Today we're talking about {topic}, from {documents}."]
    assert [(t.speaker, t.text) for t in script.turns[:2]] == [
        ("Joe", " ".join([
            german["Welcome to the show."],
            about.format(topic="die Küste", documents=listed),
            german["With me is {guests}."].format(guests="Alex"),
        ])),
        ("Alex", " ".join([german["Thanks."], german["Let's get into {topic}."]
                          .format(topic="die Küste")])),
    ]  # fmt: skip
    goodbye = [german["Thanks, {guest}."].format(guest="Alex"), german["That's all for today."]]
    assert script.turns[-1].text == " ".join([*goodbye, german["Thanks for listening."]])
    # The expert's lead-ins and the host's follow-ups and made questions are the table's.
    leads = tuple(f"{german[lead]} " for lead in LEAD_INS if lead)
    questions = {
        german["What does {document} tell us about {heading}?"].format(
            document=p.document_name, heading=p.heading
        )
        if p.heading
        else german["What else does {document} tell us?"].format(document=p.document_name)
        for p in GERMAN_PASSAGES
    }
    body = script.turns[2:-1]
    assert any(turn.text.startswith(leads) for turn in body)
    for turn in body:
        if turn.speaker == "Joe":
            assert turn.text in {german[f] for f in FOLLOW_UPS} | questions or (
                turn.text.endswith("?") and "tell us" not in turn.text
            ), turn.text
    english = [e for e in TRANSLATIONS if re.search(r"[a-z]{3}", PLACEHOLDER.sub("", e))]
    patterns = [re.escape(PLACEHOLDER.sub("\0", e)).replace("\0", ".+") for e in english]
    assert not [t.text for t in script.turns if any(re.search(p, t.text) for p in patterns)]
    # Every phrase in German, the model asked for none of them: none stays English.
    details = ctx.details("generating_script")[-1]
    assert details["phrases_in_english"] == 0 and details["phrases_translated"] > 10
    assert not [note for note in ctx.notes if "stay in English" in note]
    assert ctx.state["grounding"]["turns_dropped"] == 0
