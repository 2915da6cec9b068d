"""Full-text search in scripts other than English's: Chinese and Japanese, written
without spaces, find a word inside a sentence; Hindi words keep their vowel signs (a
word of the same consonants is not a match); Arabic and Hebrew find a word with or
without its vowel points; a Latin accent still folds (``cafe`` finds ``café``)."""

# ruff: noqa: RUF001 (Chinese text has full-width commas)
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from conftest import Stack, create_database, drop_database, wait_for_status
from sqlalchemy import MetaData, create_engine
from sqlalchemy.orm import Session
from test_migrations import add_row

from longplay.store import library as queries
from longplay.store.db import alembic_config, normalise_url

CHINESE = (
    "海港的历史\n\n"
    "很久以前，这个小镇只有几条渔船。渔民们每天清晨出海，傍晚回来，"
    "他们靠星星和海岸的形状认路。冬天风浪很大，很多船在礁石上出了事。\n\n"
    "后来镇上的人在北边的岬角建了一座灯塔。每天晚上，守塔人点亮灯火，"
    "船只远远就能看见灯塔的光，再也不会撞上礁石。现在灯塔已经有一百年了。\n\n"
    "今天的小镇有一个市场和一所学校。游客们喜欢在码头散步，吃新鲜的鱼，"
    "看夕阳落进大海。"
)
JAPANESE = "港の話\n\n毎朝、小さな船が港を出ます。夕方にはタワーの明かりが見えます。"
HINDI = "मकान का किराया बहुत सस्ता है। मेज़ पर किताब रखी है और खिड़की से समुद्र दिखता है।"
ARABIC_PLAIN = "العبارة تغادر الميناء كل صباح في الساعة السابعة."
ARABIC_POINTED = "المَكْتَبَةُ مَفْتُوحَةٌ يَوْمَ الجُمُعَةِ."
HEBREW_POINTED = "שָׁלוֹם לְכָל הַדַּיָּגִים בַּנָּמָל."
LATIN = "The harbour café opens at dawn and serves naïve fishermen strong coffee."
DOCUMENTS = {
    "chinese.txt": CHINESE,
    "japanese.txt": JAPANESE,
    "hindi.txt": HINDI,
    "arabic.txt": ARABIC_PLAIN,
    "arabic-pointed.txt": ARABIC_POINTED,
    "hebrew.txt": HEBREW_POINTED,
    "latin.txt": LATIN,
}


@dataclass(frozen=True)
class Indexed:
    client: httpx.Client
    collection: str


@pytest.fixture(scope="module")
def indexed(stack: Stack) -> Indexed:
    """A collection of one document in each script, indexed through the API."""
    client = stack.client("scripts")
    made = client.post("/v1/collections", json={"name": "Scripts"})
    assert made.status_code == 201, made.text
    collection = made.json()["id"]
    files = [("file", (name, body.encode(), "text/plain")) for name, body in DOCUMENTS.items()]
    added = client.post(f"/v1/collections/{collection}/documents", files=files)
    assert added.status_code == 202, added.text
    job = wait_for_status(client, added.json()["job"]["id"], {"completed", "failed"}, timeout=120)
    assert job["status"] == "completed", job
    return Indexed(client, collection)


def found(indexed: Indexed, q: str) -> list[dict[str, Any]]:
    response = indexed.client.get(
        f"/v1/collections/{indexed.collection}/search", params={"q": q, "limit": 10}
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def by_words(indexed: Indexed, q: str) -> list[dict[str, Any]]:
    """The hits that have a word of ``q``: ``score`` is the words matched plus under 1,
    and the passages the test stack's hybrid search finds by meaning alone (which, for
    these scripts, the English model finds at random) score under 1."""
    return [hit for hit in found(indexed, q) if hit["score"] >= 1]


def names(indexed: Indexed, q: str) -> set[str]:
    return {hit["document_name"] for hit in by_words(indexed, q)}


def test_a_chinese_word_is_found_inside_a_sentence(indexed: Indexed) -> None:
    hits = by_words(indexed, "灯塔")
    assert hits, "灯塔 found nothing"
    assert {hit["document_name"] for hit in hits} == {"chinese.txt"}
    assert all("灯塔" in hit["text"] for hit in hits), hits
    # Its characters apart are not the word: 塔灯 is in no passage.
    assert by_words(indexed, "塔灯") == []
    # A question finds the passage sharing most of its pairs of characters first.
    assert "灯塔" in by_words(indexed, "灯塔有多少年了")[0]["text"]
    assert names(indexed, "タワー") == {"japanese.txt"}


def test_a_hindi_word_keeps_its_vowel_signs(indexed: Indexed) -> None:
    assert names(indexed, "किराया") == {"hindi.txt"}
    assert by_words(indexed, "कुर्सी") == []  # "chair": its consonants are there, not it


def test_arabic_and_hebrew_match_with_or_without_their_points(indexed: Indexed) -> None:
    assert names(indexed, "العَبّارَة") == {"arabic.txt"}
    assert names(indexed, "العبارة") == {"arabic.txt"}
    assert names(indexed, "المكتبة") == {"arabic-pointed.txt"}
    assert names(indexed, "المَكْتَبَةُ") == {"arabic-pointed.txt"}
    assert names(indexed, "שלום") == {"hebrew.txt"}


def test_a_latin_accent_still_folds(indexed: Indexed) -> None:
    assert names(indexed, "cafe") == {"latin.txt"}
    assert names(indexed, "café") == {"latin.txt"}
    assert names(indexed, "naive") == {"latin.txt"}


@pytest.fixture
def at_0017(database_kind: str, tmp_path: Path) -> Iterator[str]:
    """A database at the revision before searchable text."""
    url = create_database(database_kind, tmp_path)
    command.downgrade(alembic_config(url), "0017")
    yield url
    drop_database(url)


def test_passages_stored_before_0018_are_found_by_a_chinese_word(at_0017: str) -> None:
    engine = create_engine(normalise_url(at_0017))
    try:
        with engine.begin() as connection:
            schema = MetaData()
            schema.reflect(connection)
            owner = add_row(connection, schema.tables["owners"], 1)
            collection = add_row(connection, schema.tables["collections"], 1, owner_id=owner["id"])
            document = add_row(
                connection, schema.tables["documents"], 1, collection_id=collection["id"]
            )
            for n, body in enumerate(("船只远远就能看见灯塔的光。", "The harbour café."), 1):
                add_row(
                    connection,
                    schema.tables["passages"],
                    n,
                    collection_id=collection["id"],
                    document_id=document["id"],
                    text=body,
                    heading=None,
                )
        command.upgrade(alembic_config(at_0017), "head")
        with Session(engine) as session:
            for query, seq in (("灯塔", 1), ("cafe", 2)):
                hits = queries.full_text(session, collection["id"], query, 5)
                assert [hit.seq for hit in hits] == [seq], query
        command.downgrade(alembic_config(at_0017), "0017")  # the old index, rebuilt
        with Session(engine) as session:
            hits = queries.full_text(session, collection["id"], "harbour", 5)
            assert [hit.seq for hit in hits] == [2]
    finally:
        engine.dispose()
