"""Full-text search in the languages a team most likely writes besides English: a
question leaves out its language's common words, so it finds its passage by the words
that mean something, and a question about nothing in the collection finds nothing (as
one in English does); German ``ß`` matches ``ss`` and Russian ``ё`` matches the same
letter without its dots, in passages stored before migration 0019 too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from conftest import Stack, create_database, drop_database, wait_for_status
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.orm import Session
from test_migrations import add_row

from longplay.store import library as queries
from longplay.store.db import alembic_config, normalise_url

RUSSIAN = (
    "Паром на остров отходит от причала каждое утро. Зимой пассажиры ждут в утеплённой комнате."
)


@dataclass(frozen=True)
class Language:
    document: str
    text: str
    question: str
    """Asks what the document says."""
    elsewhere: str
    """Asks about nothing in any document, in the document's language."""


LANGUAGES = [
    Language(
        "english.txt",
        "The harbour library lends books to sailors and their children.",
        "Which books does the harbour library lend?",
        "What is the price of bread in London?",
    ),
    Language(
        "german.txt",
        "Die Bibliothek in der Charlottenstraße öffnet jeden Morgen um neun Uhr. "
        "Wegen der Schließung im August bringen die Leser ihre Bücher früher zurück.",
        "Wann öffnet die Bibliothek in der Charlottenstraße?",
        "Wie ist das Wetter in der Stadt?",
    ),
    Language(
        "french.txt",
        "Le traversier quitte le port chaque matin à sept heures. "
        "Les billets se vendent au guichet près de la gare.",
        "Quand le traversier quitte-t-il le port ?",
        "Quel est le prix de la baguette à Paris ?",
    ),
    Language(
        "spanish.txt",
        "El mercado del puerto abre los sábados por la mañana. "
        "Los pescadores venden sardinas frescas junto al muelle.",
        "¿Cuándo abre el mercado del puerto?",
        "¿Cuál es el precio del pan en Madrid?",
    ),
    Language(
        "italian.txt",
        "Il museo della città conserva le antiche mappe dei navigatori. "
        "L'ingresso è gratuito la domenica.",
        "Quando è gratuito l'ingresso al museo?",
        "Qual è il prezzo del pane a Roma?",
    ),
    Language(
        "portuguese.txt",
        "O farol da ilha foi construído em 1890. "
        "Os visitantes sobem a escada de pedra até ao topo.",
        "Quando foi construído o farol da ilha?",
        "Qual é o preço do pão em Lisboa?",
    ),
    Language(
        "dutch.txt",
        "Een veerboot naar het eiland vertrekt elk uur vanaf de kade. "
        "Fietsen mogen gratis mee aan boord.",
        "Hoe laat vertrekt de veerboot naar het eiland?",
        "Wat kost een brood in het dorp?",
    ),
    Language(
        "russian.txt",
        RUSSIAN,
        "Когда отходит паром на остров?",
        "Сколько стоит хлеб в Москве?",
    ),
]


@dataclass(frozen=True)
class Indexed:
    client: httpx.Client
    collection: str


@pytest.fixture(scope="module")
def indexed(stack: Stack) -> Indexed:
    """A collection of one document in each language, indexed through the API."""
    client = stack.client("languages")
    made = client.post("/v1/collections", json={"name": "Languages"})
    assert made.status_code == 201, made.text
    collection = made.json()["id"]
    files = [
        ("file", (language.document, language.text.encode(), "text/plain"))
        for language in LANGUAGES
    ]
    added = client.post(f"/v1/collections/{collection}/documents", files=files)
    assert added.status_code == 202, added.text
    job = wait_for_status(client, added.json()["job"]["id"], {"completed", "failed"}, timeout=120)
    assert job["status"] == "completed", job
    return Indexed(client, collection)


def by_words(indexed: Indexed, q: str) -> list[dict[str, Any]]:
    """The hits that have a word of ``q`` (``score`` is the words matched plus under 1;
    those the test stack's hybrid search finds by meaning alone score under 1)."""
    response = indexed.client.get(
        f"/v1/collections/{indexed.collection}/search", params={"q": q, "limit": 10}
    )
    assert response.status_code == 200, response.text
    return [hit for hit in response.json()["items"] if hit["score"] >= 1]


@pytest.mark.parametrize("language", LANGUAGES, ids=lambda language: language.document)
def test_a_question_finds_its_passage_and_one_about_nothing_there_finds_nothing(
    indexed: Indexed, language: Language
) -> None:
    hits = by_words(indexed, language.question)
    assert hits, f"{language.question!r} found nothing"
    assert hits[0]["document_name"] == language.document, hits
    # Its common words (le, de, la; der; el, del ...) are in the passages, not its others.
    assert by_words(indexed, language.elsewhere) == []


def test_one_languages_common_word_is_another_ones_word_of_content() -> None:
    """The common words left out are the query's language's: ``war`` is German for
    "was", and a word of its own in English."""
    assert queries.query_words("What caused the war?") == ["caused", "war"]
    assert queries.query_words("Wie war das Wetter?") == ["wetter"]
    assert queries.query_words("Is the door open?") == ["door", "open"]  # Dutch: "through"


def test_sharp_s_matches_ss_and_yo_matches_ye(indexed: Indexed) -> None:
    for query in ("Charlottenstrasse", "Charlottenstraße", "Schliessung", "SCHLIESSUNG"):
        assert {hit["document_name"] for hit in by_words(indexed, query)} == {"german.txt"}
    for query in ("утепленной", "утеплённой", "УТЕПЛЕННОЙ"):
        assert {hit["document_name"] for hit in by_words(indexed, query)} == {"russian.txt"}


@pytest.fixture
def at_0018(database_kind: str, tmp_path: Path) -> Iterator[str]:
    """A database at the revision before ``ß`` and ``ё`` were folded."""
    url = create_database(database_kind, tmp_path)
    command.downgrade(alembic_config(url), "0018")
    yield url
    drop_database(url)


def test_passages_stored_before_0019_match_ss_and_ye(at_0018: str) -> None:
    bodies = ("Die Schließung der Charlottenstraße.", RUSSIAN, "The harbour café.")
    # As 0018 folded them: ß and ё as they are, é without its accent.
    stored = ("Die Schließung der Charlottenstraße.", RUSSIAN, "The harbour cafe.")
    engine = create_engine(normalise_url(at_0018))
    try:
        with engine.begin() as connection:
            schema = MetaData()
            schema.reflect(connection)
            owner = add_row(connection, schema.tables["owners"], 1)
            collection = add_row(connection, schema.tables["collections"], 1, owner_id=owner["id"])
            document = add_row(
                connection, schema.tables["documents"], 1, collection_id=collection["id"]
            )
            for n, (body, searchable) in enumerate(zip(bodies, stored, strict=True), 1):
                add_row(
                    connection,
                    schema.tables["passages"],
                    n,
                    collection_id=collection["id"],
                    document_id=document["id"],
                    text=body,
                    heading=None,
                    search_text=searchable,
                )
            passages = schema.tables["passages"]
        command.upgrade(alembic_config(at_0018), "head")
        with Session(engine) as session:
            for query, seq in (("Schliessung", 1), ("утепленной", 2), ("cafe", 3)):
                hits = queries.full_text(session, collection["id"], query, 5)
                assert [hit.seq for hit in hits] == [seq], query
        command.downgrade(alembic_config(at_0018), "0018")  # as the older longplay reads it
        with engine.connect() as connection:
            kept = connection.execute(select(passages.c.search_text).order_by(passages.c.seq))
            assert tuple(kept.scalars()) == stored
    finally:
        engine.dispose()
