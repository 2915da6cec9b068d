# ruff: noqa: RUF001  (the look-alike letters and marks of other scripts are the point)
"""Texts in scripts other than the Latin one: Chinese and Japanese (no spaces, a token a
character), Cyrillic, Greek, Hindi and Arabic. Chunks fit a model's context, sentences
end where the script ends them, passages are cut by a word count that means something
there, a model's long turn becomes several, and emoji are passed over in speech."""

from __future__ import annotations

import unicodedata

from longplay.engines.summaries import Unit, chunk_units
from longplay.text.chunks import chunk_text, estimate_tokens
from longplay.text.passages import cut_passages
from longplay.text.reading import Block, StructuredDocument
from longplay.text.script import MAX_TURN_CHARS, Chapter, Script, Turn, words
from longplay.text.sentences import (
    EMOJI,
    count_words,
    speakable_sentences,
    split_sentences,
)

CHINESE_SENTENCE = "我们今天讨论城市交通的发展，公共汽车和地铁是最重要的交通工具。"
"""31 characters, a comma in the middle: a sentence of a Chinese text."""


def chinese_text(characters: int) -> str:
    """About ``characters`` characters of Chinese, in paragraphs of four sentences."""
    sentences = [CHINESE_SENTENCE] * (characters // len(CHINESE_SENTENCE))
    return "\n\n".join("".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4))


# -- 1. chunks fit the model's context in every script ---------------------------------


def test_chinese_text_is_chunked_within_its_token_budget() -> None:
    """10,000 characters of Chinese were chunked as if four characters made a token:
    a chunk planned at 3,000 tokens took about 8,000 and the model refused it."""
    text = chinese_text(10_000)
    assert estimate_tokens(text) >= len(text.replace("\n", ""))  # a token a character
    chunks = chunk_text(text, max_tokens=3_000)
    assert len(chunks) >= 4
    assert all(len(chunk.replace("\n", "")) <= 3_000 for chunk in chunks)
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")
    units = [Unit(paragraph) for paragraph in text.split("\n\n")]
    for chunk in chunk_units(units, 1_000):  # as the summarize kind packs them
        assert sum(len(unit.text) + 8 for unit in chunk) <= 1_000


def test_a_chinese_wall_without_punctuation_and_a_given_count_still_fit() -> None:
    wall = "交通" * 2_000
    chunks = chunk_text(wall, max_tokens=500)
    assert all(len(chunk) <= 500 for chunk in chunks) and "".join(chunks) == wall
    exact = chunk_text(chinese_text(2_000), max_tokens=90, count_tokens=lambda t: 2 * len(t))
    assert all(2 * len(chunk) <= 90 for chunk in exact)


def test_other_alphabets_count_denser_than_english() -> None:
    russian = "Мы начинаем обсуждение городского транспорта и новых линий метро. " * 20
    hindi = "आज हम शहर के परिवहन के बारे में बात करेंगे। " * 20
    for text in (russian, hindi):
        assert estimate_tokens(text) > len(text) / 4
    assert estimate_tokens("abcdefgh") == 2  # English as before


# -- 2. sentences end as each script ends them -----------------------------------------


def test_sentences_end_in_cyrillic_greek_cjk_hindi_and_arabic() -> None:
    assert split_sentences("Привет всем. Как дела? Мы начинаем.") == [
        "Привет всем.",
        "Как дела?",
        "Мы начинаем.",
    ]
    assert split_sentences("Γεια σας. Τι κάνετε;") == ["Γεια σας.", "Τι κάνετε;"]
    assert split_sentences("今日は晴れです。明日は雨でしょう！本当ですか？はい。") == [
        "今日は晴れです。",
        "明日は雨でしょう！",
        "本当ですか？",
        "はい。",
    ]
    assert split_sentences("आज हम मिलेंगे। कल नहीं। ठीक है?") == [
        "आज हम मिलेंगे।",
        "कल नहीं।",
        "ठीक है?",
    ]
    assert split_sentences("كيف حالك؟ أنا بخير. شكرا") == ["كيف حالك؟", "أنا بخير.", "شكرا"]
    # Latin text as before: abbreviations and lower case do not end one.
    assert split_sentences("Dr. Smith met Mr. Jones. He said e.g. fine.") == [
        "Dr. Smith met Mr. Jones.",
        "He said e.g. fine.",
    ]


def test_long_sentences_are_cut_at_a_clause_or_between_whole_letters() -> None:
    clauses = "，".join(["城市交通的发展很重要"] * 40) + "。"
    pieces = split_sentences(clauses, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and all(p.endswith(("，", "。")) for p in pieces)
    devanagari = "नमस्ते" * 60  # no space; a vowel sign after every third letter
    for limit in range(95, 101):
        for piece in split_sentences(devanagari, max_chars=limit):
            assert unicodedata.category(piece[0])[0] != "M", (limit, piece[:3])
        assert "".join(split_sentences(devanagari, max_chars=limit)) == devanagari


def test_words_are_counted_in_scripts_without_spaces() -> None:
    assert count_words("我们今天讨论城市交通。") == 10
    assert count_words("我们「讨论」 hello world") == 6
    assert count_words("plain English words") == 3
    assert len(words("我们 hello 世界")) == 5


# -- 3. Chinese documents are cut into passages ----------------------------------------


def test_a_chinese_document_is_cut_into_passages_as_an_english_one_is() -> None:
    """A 3,457-character Chinese .txt of 30 paragraphs was one passage: its paragraphs
    counted a word each."""
    paragraphs = [CHINESE_SENTENCE * 3 + CHINESE_SENTENCE[:22] for _ in range(30)]
    document = StructuredDocument("长文.txt", "txt", [Block(p) for p in paragraphs])
    assert len(document.text.replace("\n", "")) == 3_450
    passages = cut_passages(document)
    assert len(passages) >= 10
    assert all(count_words(p.text) <= 160 for p in passages)
    for paragraph in paragraphs:
        assert any(paragraph in p.text for p in passages)


# -- 4. a model's long turn is said as several turns -----------------------------------


def test_a_turn_longer_than_a_script_holds_becomes_several_of_its_speaker() -> None:
    """A podcast from a Chinese collection failed with "String should have at most
    2000 characters" when the writer made a turn of a long passage."""
    long_text = CHINESE_SENTENCE * 160  # 4,960 characters
    script = Script(
        turns=[
            Turn(speaker="Host", text="Welcome."),
            Turn(speaker="Guest", text=long_text, sources=["p1"]),
            Turn(speaker="Host", text="Thanks."),
        ],
        chapters=[Chapter(title="Start", first_turn=0), Chapter(title="End", first_turn=2)],
    )
    guest = [t for t in script.turns if t.speaker == "Guest"]
    assert len(guest) == 3 and all(len(t.text) <= MAX_TURN_CHARS for t in guest)
    assert all(t.sources == ["p1"] and t.text.endswith("。") for t in guest)
    assert "".join(t.text for t in guest) == long_text
    assert script.turns[script.chapters[1].first_turn].text == "Thanks."
    again = Script.model_validate(script.model_dump(mode="json"))
    assert again.turns == script.turns


# -- 5. emoji are passed over ----------------------------------------------------------


def test_emoji_and_symbols_are_passed_over_in_speech() -> None:
    said = speakable_sentences("We meet at ten ⏰. Bring the ⌚ please… and ©️. Ask™ ® ℹ️ ➡️")
    text = " ".join(s.text for s in said)
    for symbol in "⏰⌚©™®ℹ➡\ufe0f":
        assert symbol not in text
    kept = ["We", "meet", "at", "ten", ".", "Bring", "the", "please…", "and", ".", "Ask"]
    assert text.split() == kept


def test_no_letter_or_digit_of_any_script_is_an_emoji() -> None:
    spoken = [chr(c) for c in range(0x110000) if chr(c).isalnum()]
    assert not [c for c in spoken if EMOJI.fullmatch(c)]


def test_a_summary_stands_in_sentences_and_cuts_its_running_summary_in_any_script() -> None:
    """Key points from a Japanese text's own sentences where the model wrote none (none
    had four space-separated words: "_None._"), and a running summary in Chinese cut to
    its tokens, not to English's characters (three times as many tokens)."""
    from longplay.engines import summaries
    from longplay.text.chunks import estimate_tokens

    japanese = "新しいウェブサイトを来月公開します。\n\n田中さんがデザインを担当します。"
    assert summaries._first_sentences(japanese) == [
        "新しいウェブサイトを来月公開します。",
        "田中さんがデザインを担当します。",
    ]
    running = summaries._cut_to_tokens("渡轮每天早上七点从北码头出发。" * 100, 300)
    assert 250 <= estimate_tokens(running) <= 300, estimate_tokens(running)
