"""Sentence splitting, LLM chunking and subtitle formats."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from longplay.framework import InvalidInput
from longplay.text import (
    Cue,
    chunk_text,
    estimate_tokens,
    format_srt,
    format_timestamp,
    format_vtt,
    parse_srt,
    parse_subtitles,
    parse_timestamp,
    parse_transcript_json,
    parse_vtt,
    split_sentences,
)

# -- sentences ----------------------------------------------------------------------


def test_sentences_keep_abbreviations_numbers_and_initials_together() -> None:
    text = (
        "Dr. Smith paid $3.5 million for it. The answer is no. Was it worth it? "
        "See Fig. 3 and approx. 5 km of road, e.g. the old one. J. R. R. Tolkien agreed! "
        "He said “Wait…” Then the U.S. team arrived."
    )
    assert split_sentences(text) == [
        "Dr. Smith paid $3.5 million for it.",
        "The answer is no.",
        "Was it worth it?",
        "See Fig. 3 and approx. 5 km of road, e.g. the old one.",
        "J. R. R. Tolkien agreed!",
        "He said “Wait…”",
        "Then the U.S. team arrived.",
    ]


def test_sentences_end_at_paragraph_breaks_and_collapse_whitespace() -> None:
    text = "A heading\n\nFirst   line\ncontinues here. Second.\n\n\n  Last one"
    assert split_sentences(text) == [
        "A heading",
        "First line continues here.",
        "Second.",
        "Last one",
    ]


def test_long_sentences_are_cut_at_clause_breaks_then_spaces() -> None:
    clauses = "one two three, four five six, seven eight nine, ten eleven twelve."
    pieces = split_sentences(clauses, max_chars=30)
    assert pieces == ["one two three, four five six,", "seven eight nine,", "ten eleven twelve."]

    words = " ".join(["word"] * 40) + "."
    pieces = split_sentences(words, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces) == words

    assert split_sentences("x" * 25, max_chars=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_abbreviations_deep_in_a_long_paragraph_and_long_words_before_a_period() -> None:
    opening = "It rained. " * 500
    long_word = "x" * 100
    text = f"{opening}Dr. Smith came by at 5 p.m. Today. A {long_word}. Then e.g. this."

    assert split_sentences(text)[500:] == [
        "Dr. Smith came by at 5 p.m. Today.",
        f"A {long_word}.",
        "Then e.g. this.",
    ]


def test_splitting_time_grows_with_the_paragraph_not_its_square() -> None:
    """Ten times the text in one paragraph takes about ten times as long, not a hundred
    (each period's last word was once searched for from the paragraph's start)."""

    def seconds(sentences: int) -> float:
        text = "A sentence of the guide that goes on. " * sentences
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            split_sentences(text)
            runs.append(time.perf_counter() - started)
        return min(runs)

    assert seconds(5000) / seconds(500) < 30


def test_split_sentences_of_nothing() -> None:
    assert split_sentences("  \n\n ") == []
    with pytest.raises(ValueError):
        split_sentences("Hi.", max_chars=0)


# -- chunks -------------------------------------------------------------------------


def test_chunks_respect_the_budget_and_prefer_paragraph_breaks() -> None:
    paragraphs = [f"Paragraph {i} says something short. It has two sentences." for i in range(6)]
    text = "\n\n".join(paragraphs)
    budget = estimate_tokens(paragraphs[0]) * 2 + 2

    chunks = chunk_text(text, max_tokens=budget)

    assert len(chunks) == 3
    assert all(estimate_tokens(c) <= budget for c in chunks)
    assert chunks[0] == "\n\n".join(paragraphs[:2])
    assert "\n\n".join(chunks) == text


def test_a_long_paragraph_is_chunked_at_sentences() -> None:
    sentences = [f"Sentence number {i} carries a few words of content." for i in range(20)]
    paragraph = " ".join(sentences)

    chunks = chunk_text(paragraph, max_tokens=40)

    assert len(chunks) > 1
    assert all(estimate_tokens(c) <= 40 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks) == paragraph


def test_chunking_a_wall_of_words_still_fits() -> None:
    text = "a " * 500
    chunks = chunk_text(text, max_tokens=50)
    assert all(estimate_tokens(c) <= 50 for c in chunks)
    assert sum(len(c.split()) for c in chunks) == 500


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("a b c d e") == 5  # never fewer than the words


# -- timestamps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (1.5, "00:00:01,500", "00:00:01.500"),
        (61.0004, "00:01:01,000", "00:01:01.000"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (3723.456, "01:02:03,456", "01:02:03.456"),
        (-0.2, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_format_timestamp(seconds: float, srt: str, vtt: str) -> None:
    assert format_timestamp(seconds, decimal_marker=",") == srt
    assert format_timestamp(seconds, decimal_marker=".") == vtt


def test_parse_timestamp() -> None:
    assert parse_timestamp("01:02:03,456") == pytest.approx(3723.456)
    assert parse_timestamp("01:02:03.456") == pytest.approx(3723.456)
    assert parse_timestamp("02:03.4") == pytest.approx(123.4)
    # Exactly the float the time is written as (what a transcript's JSON holds).
    assert [parse_timestamp(f"00:00:{t}") for t in ("02,780", "04.010", "09,540")] == [
        2.78,
        4.01,
        9.54,
    ]
    with pytest.raises(InvalidInput):
        parse_timestamp("1:2")


# -- subtitles ----------------------------------------------------------------------

CUES = [
    Cue(0.0, 2.5, "Hello there."),
    Cue(2.5, 5.0, "Tom & Jerry <3\nsecond line"),
    Cue(5.0, 5.5, "   "),
    Cue(3661.001, 3662.0, "An hour in."),
]


def test_format_srt() -> None:
    assert format_srt(CUES) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:02,500 --> 00:00:05,000\nTom & Jerry <3\nsecond line\n\n"
        "3\n01:01:01,001 --> 01:01:02,000\nAn hour in.\n"
    )


def test_format_vtt_escapes_markup() -> None:
    assert format_vtt(CUES) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "00:00:02.500 --> 00:00:05.000\nTom &amp; Jerry &lt;3\nsecond line\n\n"
        "01:01:01.001 --> 01:01:02.000\nAn hour in.\n"
    )


@pytest.mark.parametrize(("write", "parse"), [(format_srt, parse_srt), (format_vtt, parse_vtt)])
def test_subtitles_round_trip(write: object, parse: object) -> None:
    written = write(CUES)  # type: ignore[operator]
    cues = parse(written)  # type: ignore[operator]
    assert cues == [c for c in CUES if c.text.strip()]
    assert parse_subtitles(written) == cues


def test_blank_lines_inside_cue_text_do_not_break_the_file() -> None:
    cues = [Cue(0, 1, "first\n\nsecond"), Cue(1, 2, "next")]
    assert parse_srt(format_srt(cues)) == [Cue(0, 1, "first\nsecond"), Cue(1, 2, "next")]


def test_parse_srt_as_found_in_the_wild() -> None:
    text = (
        "\ufeff1\r\n00:00:01,000 --> 00:00:02.500 X1:100 X2:200\r\n<i>Hi</i>\r\n\r\n\r\n"
        "7\r\n00:00:03,000 --> 00:00:04,000\r\nNo numbering\r\nrules here\r\n"
    )
    assert parse_srt(text) == [
        Cue(1.0, 2.5, "<i>Hi</i>"),
        Cue(3.0, 4.0, "No numbering\nrules here"),
    ]


def test_parse_vtt_skips_header_notes_styles_and_settings() -> None:
    text = (
        "WEBVTT - made by hand\nKind: captions\n\n"
        "NOTE a comment\nacross lines\n\n"
        "STYLE\n::cue { color: lime }\n\n"
        "intro\n00:01.000 --> 00:02.000 align:start position:10%\n<v Ann>Hi &amp; bye\n\n"
        "01:00:00.000 --> 01:00:01.500\nLate\n"
    )
    intro = Cue(1.0, 2.0, "Hi & bye", "Ann", "intro", "align:start position:10%")
    assert parse_vtt(text) == [intro, Cue(3600.0, 3601.5, "Late")]


def test_a_vtt_cue_keeps_its_voice_identifier_and_settings_and_loses_its_markup() -> None:
    """Read without its markup, which a translation cannot keep in place, and written
    back with who speaks it, its identifier and its settings (a player showed a
    translated cue as "<v Ann>Thank you." when its markup was escaped as text)."""
    text = (
        "WEBVTT\n\n"
        "intro\n00:01.000 --> 00:02.000 align:start position:10%\n<v Ann>Thank <i>you</i>.\n\n"
        "00:02.000 --> 00:03.000\n<v.loud Bob>Good <00:02.500>morning, &lt;all&gt;</v>\n"
    )
    cues = parse_vtt(text)
    assert cues == [
        Cue(1.0, 2.0, "Thank you.", "Ann", "intro", "align:start position:10%"),
        Cue(2.0, 3.0, "Good morning, <all>", "Bob"),
    ]
    translated = [replace(cues[0], text="Danke."), replace(cues[1], text="Guten Morgen, <alle>")]
    assert format_vtt(translated) == (
        "WEBVTT\n\n"
        "intro\n00:00:01.000 --> 00:00:02.000 align:start position:10%\n<v Ann>Danke.\n\n"
        "00:00:02.000 --> 00:00:03.000\n<v Bob>Guten Morgen, &lt;alle&gt;\n"
    )
    assert parse_vtt(format_vtt(translated)) == translated


def test_unreadable_subtitles_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="timing"):
        parse_srt("1\nHello\n")
    with pytest.raises(InvalidInput, match="WEBVTT"):
        parse_vtt("00:01.000 --> 00:02.000\nHi\n")
    with pytest.raises(InvalidInput):
        parse_srt("1\n00:00:01 --> 00:00:02\nNo milliseconds\n")


def test_parse_transcript_json() -> None:
    transcript = {
        "language": "en",
        "duration": 4.0,
        "segments": [
            {"start": 0.0, "end": 1.5, "text": " Hello.", "words": []},
            {"start": 1.5, "end": 4.0, "text": " World."},
        ],
    }
    expected = [Cue(0.0, 1.5, "Hello."), Cue(1.5, 4.0, "World.")]
    assert parse_transcript_json(transcript) == expected
    assert parse_transcript_json(json.dumps(transcript)) == expected
    assert parse_transcript_json(transcript["segments"]) == expected  # type: ignore[arg-type]
    assert parse_subtitles(json.dumps(transcript)) == expected
    assert parse_subtitles(json.dumps(transcript), format="json") == expected
    for segments, says in (
        ([{"start": 0}], "segment 1 is not an object with start, end and text"),
        ([{"start": 0, "end": 1, "text": "a"}, 3], "segment 2 is not an object"),
        ([{"start": "abc", "end": 1, "text": "a"}], "segment 1: start and end must be numbers"),
        ([{"start": 0, "end": 1, "text": None}], "segment 1: its text must be a string"),
    ):
        with pytest.raises(InvalidInput, match=says):
            parse_transcript_json(json.dumps({"segments": segments}))
    with pytest.raises(InvalidInput):
        parse_transcript_json("not json")
