"""What a summary says beside its text: only the text's numbers and web addresses,
in the language its JSON names, written the way the language is written.

Most tests hand ``summarize_document`` a scripted model — a stand-in for the engine,
not for longplay — that writes what the bundled Gemma 3 270M was seen to write in
other languages: a percentage and years of its own, English where German was asked
for. The last test runs the bundled model itself on a short Spanish text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longplay.engines import get_language_model
from longplay.engines.summaries import EXAMPLE_TEXT, SummaryOptions, summarize_document
from longplay.settings import Settings
from longplay.text.documents import Document
from longplay.text.languages import Language, language_of_text, other_language
from longplay.text.summary import (
    BUILTIN_TEMPLATES,
    Grounds,
    joined,
    read_answer,
    without_ungrounded,
    write_summary,
)

BIBLIOTHEK = (
    "Die Stadtbibliothek bleibt ab Montag wegen Umbauarbeiten geschlossen. Der Umbau "
    "kostet etwa 4,2 Millionen Euro und wird von der Stadt bezahlt.\n\n"
    "Die Bibliothek öffnet im Herbst 2026 wieder, mit einem neuen Lesesaal und längeren "
    "Öffnungszeiten."
)
MERCADO = (
    "Las ventas de pescado y marisco cayeron un 5 % en el primer trimestre, según el "
    "informe del mercado. Los precios de la carne subieron un 3 % por el coste de la "
    "energía.\n\nLos analistas esperan una recuperación en la segunda mitad del año."
)
MARKET = (
    "Fish and seafood sales fell by 5 % in the first quarter, the market report says. "
    "Meat prices rose 12,5 % because energy cost more.\n\n"
    "The report is at https://www.example.org/market-report and runs to 1 200 pages."
)


class ScriptedModel:
    """A language model that gives its answers in turn, the last one again once they
    run out, and keeps the prompts it was given."""

    model, device = "scripted", "cpu"

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def complete_json(self, prompt: str, schema: Any, **_: Any) -> str:
        self.prompts.append(prompt)
        return json.dumps(self.answers[min(len(self.prompts), len(self.answers)) - 1])

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


def summarized(
    text: str, model: ScriptedModel, **options: Any
) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    notes: list[tuple[str, dict[str, Any]]] = []
    summary = summarize_document(
        Document.from_text(text, name="text.txt"),
        SummaryOptions(length="short", **options),
        llm=model,  # type: ignore[arg-type]
        context_tokens=4096,
        note=lambda message, **data: notes.append((message, data)),
    )
    return summary, notes


def coded(notes: list[tuple[str, dict[str, Any]]], code: str) -> list[tuple[str, dict[str, Any]]]:
    return [(message, data) for message, data in notes if data.get("code") == code]


def test_numbers_and_addresses_are_found_in_the_text_in_any_of_their_spellings() -> None:
    grounds = Grounds.of(MARKET + " On 1.3.2026 it was 4.200 tons.")
    for said in (
        "Sales fell 5% in the first quarter.",
        "Meat prices rose 12.5 percent.",  # 12,5 as English writes it
        "It runs to 1,200 pages, and 1200 is a lot.",  # 1 200
        "It was 4,200 tons on 1 March 2026.",  # 4.200
        "It is at www.example.org/market-report/.",
        "Six reports, 3 of them short.",  # a small whole number may be spelled out
    ):
        assert grounds.missing(said) == [], said
    assert grounds.missing("Fish and seafood sales saw a 5% increase in 2019 and 2018.") == [
        "2019",
        "2018",
    ]
    assert grounds.missing("See http://www.bibliothek-friedrichshafen.de for 13.5 %.") == [
        "http://www.bibliothek-friedrichshafen.de",
        "13.5",
    ]
    assert Grounds.of(BIBLIOTHEK).missing("It costs about 4.2 million euros.") == []
    assert Grounds.of(BIBLIOTHEK).missing("It costs 4,200,000 euros.") == []  # 4,2 Millionen


def test_sentences_and_points_with_numbers_the_text_lacks_are_taken_out() -> None:
    answer = {
        "summary": "Sales fell 5 % in the quarter. In 2019 they rose by 7 %. Meat cost more.",
        "decisions": ["Publish the report", "Cut prices by 15 %"],
        "action_items": [
            {"task": "Read the 1 200 pages", "owner": "", "due": "March 15"},
            {"task": "Call www.fish-market.example", "owner": "", "due": ""},
        ],
        "open_questions": [],
    }
    read = read_answer(answer, BUILTIN_TEMPLATES["meeting-notes"])
    (summary, decisions, actions, _), taken = without_ungrounded(read, MARKET)
    assert summary.text == "Sales fell 5 % in the quarter. Meat cost more."
    assert decisions.items == ["Publish the report"]
    assert [(a.task, a.due) for a in actions.items] == [("Read the 1 200 pages", None)]
    assert taken == [
        ("In 2019 they rose by 7 %.", ["2019"]),
        ("Cut prices by 15 %", ["15"]),
        ("March 15", ["15"]),
        ("Call www.fish-market.example", ["www.fish-market.example"]),
    ]


def test_a_summary_keeps_only_what_its_text_has_and_says_what_it_left_out() -> None:
    model = ScriptedModel(
        {
            "key_points": [
                "Fish and seafood sales saw a 5% increase in 2019.",
                "Meat prices rose 12.5 % because energy cost more.",
                "More at http://www.market-news.example.",
            ]
        }
    )
    summary, notes = summarized(MARKET, model, template="key-points")
    assert summary.sections[0].items == ["Meat prices rose 12.5 % because energy cost more."]
    [(message, data)] = coded(notes, "summary_ungrounded")
    assert data["left_out"] == 2 and data["figures"] == ["2019", "http://www.market-news.example"]
    assert message.startswith("left out 2 sentences or points of the model's with numbers")

    # All of the paragraph made up: the text's opening sentences stand in.
    invented = ScriptedModel({"summary": "Sales rose 40 % in 2019. Prices fell in 2018."})
    summary, notes = summarized(MARKET, invented, template="brief")
    assert summary.sections[0].text.startswith("Fish and seafood sales fell by 5 % in the first")
    assert coded(notes, "summary_ungrounded") and coded(notes, "summary_from_text")


def test_the_language_of_a_text_is_told_by_its_script_and_common_words() -> None:
    assert language_of_text("It costs about 4,2 million euros.") == "en"
    assert language_of_text(BIBLIOTHEK) == "de"
    assert language_of_text(MERCADO) == "es"
    assert language_of_text("図書館は工事のため休館します。") == "ja"
    assert language_of_text("图书馆因施工闭馆。") == "zh"
    assert language_of_text("Biblioteka jest zamknięta.") is None  # no common words of its own
    assert other_language("- It costs about 4,2 million euros.", "de") == "en"
    assert other_language(MERCADO, "de") == "es"
    assert other_language("The library is closed for the works.", "ja") == "en"
    assert other_language("The library is closed for the works.", "pl") == "en"
    assert other_language("Biblioteka jest zamknięta do maja.", "ja") == "Latin"
    for text, code in ((BIBLIOTHEK, "de"), (MERCADO, "es-MX"), ("Biblioteka jest.", "pl")):
        assert other_language(text, code) is None, code


ENGLISH_POINTS = {"key_points": ["It costs about 4,2 million euros."]}


def test_a_summary_in_another_language_is_asked_again_then_the_text_stands_in() -> None:
    """German asked for, English written twice: the German text's own sentences stand
    in, and the summary says it is German, as it now is. Shown no English example."""
    model = ScriptedModel(ENGLISH_POINTS)
    summary, notes = summarized(BIBLIOTHEK, model, template="key-points", language="de")
    assert len(model.prompts) == 2 and summary.retries == 1
    assert "(it is in English, not German); asked again" in notes[0][0]
    assert summary.sections[0].items == [
        "Die Stadtbibliothek bleibt ab Montag wegen Umbauarbeiten geschlossen.",
        "Die Bibliothek öffnet im Herbst 2026 wieder, mit einem neuen Lesesaal und längeren "
        "Öffnungszeiten.",
    ]
    assert summary.language == "German"
    [(message, _)] = coded(notes, "summary_language")
    assert message.startswith("the model wrote its summary in English, not German, twice")
    assert EXAMPLE_TEXT not in model.prompts[0] and "summary in German" in model.prompts[0]

    # A Spanish text summarized "in German": its sentences are Spanish, and said to be.
    summary, notes = summarized(
        MERCADO, ScriptedModel(ENGLISH_POINTS), template="key-points", language="de"
    )
    assert summary.language == "Spanish"
    assert summary.sections[0].items[0].startswith("Las ventas de pescado y marisco cayeron")
    assert [data["written"] for _, data in coded(notes, "summary_language")] == [
        "English",
        "Spanish",
    ]


def test_a_summary_without_a_language_is_in_its_texts_own() -> None:
    """No ``language`` given: a German text got English headings, no check of the
    answer's language, and the English example, whose words the model copied into
    its German summary. Its language is now told from the text."""
    model = ScriptedModel(ENGLISH_POINTS)
    summary, notes = summarized(BIBLIOTHEK, model, template="key-points")
    assert summary.language == "German" and summary.retries == 1
    assert "(it is in English, not German); asked again" in notes[0][0]
    assert EXAMPLE_TEXT not in model.prompts[0] and "summary in German" in model.prompts[0]
    # An English text keeps the prompt it had: the example, no language named.
    english = ScriptedModel({"key_points": ["Fish sales fell by 5 %."]})
    summary, notes = summarized(MARKET, english, template="key-points")
    assert summary.language is None and not coded(notes, "summary_language")
    assert EXAMPLE_TEXT in english.prompts[0] and "summary in" not in english.prompts[0]


def test_a_second_answer_in_the_language_asked_for_is_kept() -> None:
    model = ScriptedModel(ENGLISH_POINTS, {"key_points": ["Der Umbau kostet 4,2 Millionen Euro."]})
    summary, notes = summarized(BIBLIOTHEK, model, template="key-points", language="German")
    assert summary.sections[0].items == ["Der Umbau kostet 4,2 Millionen Euro."]
    assert summary.language == "German" and summary.retries == 1
    assert not coded(notes, "summary_language")
    english = ScriptedModel({"key_points": ["The library opens again in 2026."]})
    summarized(BIBLIOTHEK, english, template="key-points", language="en")
    assert EXAMPLE_TEXT in english.prompts[0]  # the worked example, for English only


def test_chinese_and_japanese_sentences_are_joined_without_spaces() -> None:
    assert joined(["休館します。", "工事は秋まで。", "Then English.", "Again."]) == (
        "休館します。工事は秋まで。Then English. Again."
    )
    said = {"summary": "図書館は休館します。 図書館は休館します。 工事は秋まで続きます。"}
    [brief] = read_answer(said, BUILTIN_TEMPLATES["brief"])
    assert brief.text == "図書館は休館します。工事は秋まで続きます。"
    text = "市立図書館は三月から休館します。工事は秋まで続く予定です。\n\n分館で本を借りられます。"
    echoing = ScriptedModel({"summary": "One paragraph: what the text is about."})
    summary, _ = summarized(text, echoing, template="brief", language="ja")
    assert summary.sections[0].text == (
        "市立図書館は三月から休館します。工事は秋まで続く予定です。分館で本を借りられます。"
    )


def test_the_markdowns_fixed_words_are_in_the_summarys_language(tmp_path: Path) -> None:
    notes = BUILTIN_TEMPLATES["meeting-notes"]
    sections = read_answer(
        {"summary": "Eine Sitzung.", "decisions": [], "action_items": [], "open_questions": []},
        notes,
    )
    markdown, _ = write_summary(
        tmp_path / "de", "sitzung", sections, {"template": "meeting-notes", "language": "German"}
    )
    assert markdown.read_text(encoding="utf-8").splitlines()[:7] == [
        "# Zusammenfassung von sitzung",
        "",
        "## Zusammenfassung",
        "",
        "Eine Sitzung.",
        "",
        "## Beschlüsse",
    ]
    assert "## Offene Fragen\n\n_Keine._" in markdown.read_text(encoding="utf-8")
    own = [sections[0]]  # an own template's headings are its owner's words
    markdown, data = write_summary(
        tmp_path / "own", "x", own, {"template": "mine", "language": "ja"}
    )
    assert markdown.read_text(encoding="utf-8").startswith("# 「x」の要約\n\n## Summary\n")
    assert json.loads(data.read_text(encoding="utf-8"))["sections"][0]["name"] == "Summary"
    markdown, _ = write_summary(
        tmp_path / "en", "x", sections, {"template": "brief", "language": None}
    )
    assert markdown.read_text(encoding="utf-8").startswith("# Summary of x\n\n## Summary\n")


def test_the_bundled_models_summary_names_the_language_it_is_in(tmp_path: Path) -> None:
    """A Spanish market report summarized "in English" by Gemma 3 270M, which copies
    the Spanish: whatever it writes, the summary's language is the one it is in, and
    its numbers are the report's."""
    llm = get_language_model(Settings(data_dir=tmp_path, llm={"engine": "local"}))
    notes: list[tuple[str, dict[str, Any]]] = []
    summary = summarize_document(
        Document.from_text(MERCADO, name="mercado.txt"),
        SummaryOptions(template="brief", language="en", length="short"),
        llm=llm,
        context_tokens=2048,
        note=lambda message, **data: notes.append((message, data)),
    )
    [brief] = summary.sections
    assert summary.language is not None, notes
    assert other_language(brief.text, Language.find(summary.language).code) is None, (
        summary.language,
        brief.text,
    )
    assert Grounds.of(MERCADO).missing(brief.text) == [], brief.text
    if summary.language != "English":
        assert coded(notes, "summary_language"), notes
