"""Collections of documents: reading each kind of document, cutting passages, the
``index`` kind, and the collections API end to end (real worker, SQLite and PostgreSQL).

Every document is made here, with the libraries that read them (pypdf, python-docx),
and each carries a fact planted for search to find.
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import docx
import httpx
import numpy as np
import pytest
from conftest import Stack, short_wav, wait_for_status
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject
from sqlalchemy import func, select
from step_context import input_file, run_kind

from longplay.engines.embeddings import DIMENSIONS, MODEL_ID
from longplay.framework import InvalidInput, JobError
from longplay.framework.library import CollectionNotFound, NewPassage
from longplay.jobs import retrieval
from longplay.jobs.library import StoreLibrary
from longplay.kinds.index import IndexParams
from longplay.settings import get_settings
from longplay.store import library as queries
from longplay.store.db import session_scope
from longplay.store.models import Owner
from longplay.store.models import Passage as PassageRow
from longplay.text.passages import cut_passages
from longplay.text.reading import WHAT_WE_READ, Block, StructuredDocument, read_document

MARKDOWN = b"""# Quellport

Quellport is a small harbour town.

## The lighthouse

The lighthouse of Quellport was built by Ottilie Varga in 1851.
It still stands on the northern cliff.
"""
HTML = b"""<!doctype html>
<html><head><title>Bees</title><style>.x { color: red }</style></head>
<body class="has-sidebar">
<header><nav><a href="/">Home</a> <a href="/x">Xylophonics navigation</a></nav></header>
<div class="ad-banner">Buy Gumblewidgets today</div>
<article>
<h1>Zorbian bees</h1>
<p>Zorbian bees make <b>violet</b> honey from heather that blooms in October.</p>
<script>var hidden = "Plumbagoria";</script>
<div class="share-buttons">Share on Snorkbook</div>
</article>
<footer>Copyright Footerbury</footer>
</body></html>
"""
TEXT = b"The smallest library in Brindlemoor holds exactly forty books.\n\nIt opens on Sundays.\n"
TRANSCRIPT = {
    "language": "en",
    "segments": [
        {"start": 0.0, "end": 2.5, "text": "Welcome to the tour."},
        {"start": 2.5, "end": 6.0, "text": "The Glimmerfen marsh floods every April."},
    ],
}
DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


def pdf_bytes(lines: list[str], *, password: str | None = None) -> bytes:
    """A one-page PDF with ``lines`` in Helvetica (an empty line leaves a gap: a new
    paragraph); no lines: a blank page, as a scan without a text layer reads."""
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    if lines:
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        shown = " T* ".join(f"({line}) Tj" for line in lines)
        content = DecodedStreamObject()
        content.set_data(f"BT /F1 12 Tf 72 720 Td 16 TL {shown} ET".encode())
        page[NameObject("/Contents")] = writer._add_object(content)
    if password is not None:
        writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes() -> bytes:
    document = docx.Document()
    document.add_heading("Harbour history", level=1)
    document.add_paragraph("The ferry Kestrelwind has crossed the bay twice a day since 1920.")
    document.add_heading("Timetable", level=2)
    document.add_paragraph("Ferries leave at nine and at five.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


PDF = pdf_bytes(["The Marrowick treaty was signed", "on a rainy Tuesday.", "", "It ended the war."])
DOCX = docx_bytes()
GOOD = {
    "town.md": (MARKDOWN, "text/markdown"),
    "bees.html": (HTML, "text/html"),
    "treaty.pdf": (PDF, "application/pdf"),
    "ferry.docx": (
        DOCX,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    "library.txt": (TEXT, "text/plain"),
}
BAD = {
    "notes.pdf": (b"just some words, not a PDF at all", "application/pdf", "unsupported_input"),
    "scan.pdf": (pdf_bytes([]), "application/pdf", "no_text"),
    "locked.pdf": (pdf_bytes(["secret"], password="hunter2"), "application/pdf", "encrypted"),
}
FACTS = {
    "who built the lighthouse of Quellport": ("town.md", "Ottilie Varga"),
    "what colour is the honey of Zorbian bees": ("bees.html", "violet honey"),
    "when was the Marrowick treaty signed": ("treaty.pdf", "rainy Tuesday"),
    "the ferry Kestrelwind": ("ferry.docx", "twice a day"),
    "how many books in the Brindlemoor library": ("library.txt", "forty books"),
}


def read(tmp_path: Path, name: str, data: bytes, media_type: str = "") -> StructuredDocument:
    path = tmp_path / name
    path.write_bytes(data)
    return read_document(input_file(path, media_type, name=name))


def shape(document: StructuredDocument) -> list[tuple[str, str]]:
    return [(b.kind, b.text) for b in document.blocks]


# -- reading and cutting, in this process --------------------------------------------


def test_what_a_reader_of_the_page_never_sees_is_not_read(tmp_path: Path) -> None:
    """A draft's front matter and "<!-- TODO -->" were passages, and read out in a
    podcast; a table was its pipes; a line break joined two sentences; a soft hyphen
    stayed in a word."""
    markdown = (
        b"---\ntitle: Walrus notes\nauthor: kb-team\n---\n# Walruses\n\n"
        b"<!-- TODO: check these numbers\n\nwith Dr. Smith -->\nWalruses live in the Arctic.\n\n"
        b"| Fact | Value |\n|------|:-----:|\n| Weight | 1200 kg |\n"
    )
    assert shape(read(tmp_path, "walrus.md", markdown)) == [
        ("heading", "Walruses"),
        ("paragraph", "Walruses live in the Arctic."),
        ("paragraph", "Fact, Value. Weight, 1200 kg."),
    ]
    page = (
        b"<body><article><p>Blue&shy;whales are the largest.<br>Orcas hunt in pods.</p></article>"
    )
    assert shape(read(tmp_path, "whales.html", page)) == [
        ("paragraph", "Bluewhales are the largest. Orcas hunt in pods.")
    ]


def test_each_kind_of_document_reads_as_headings_and_paragraphs(tmp_path: Path) -> None:
    assert shape(read(tmp_path, "town.md", MARKDOWN)) == [
        ("heading", "Quellport"),
        ("paragraph", "Quellport is a small harbour town."),
        ("heading", "The lighthouse"),
        (
            "paragraph",
            "The lighthouse of Quellport was built by Ottilie Varga in 1851. "
            "It still stands on the northern cliff.",
        ),
    ]
    assert [b.level for b in read(tmp_path, "town.md", MARKDOWN).blocks if b.kind == "heading"] == [
        1,
        2,
    ]
    # The article only: navigation, ads, scripts, styles, share buttons and footer dropped.
    assert shape(read(tmp_path, "bees.html", HTML)) == [
        ("heading", "Zorbian bees"),
        ("paragraph", "Zorbian bees make violet honey from heather that blooms in October."),
    ]
    assert shape(read(tmp_path, "treaty.pdf", PDF)) == [
        ("paragraph", "The Marrowick treaty was signed on a rainy Tuesday."),
        ("paragraph", "It ended the war."),
    ]
    assert shape(read(tmp_path, "ferry.docx", DOCX)) == [
        ("heading", "Harbour history"),
        ("paragraph", "The ferry Kestrelwind has crossed the bay twice a day since 1920."),
        ("heading", "Timetable"),
        ("paragraph", "Ferries leave at nine and at five."),
    ]
    assert shape(read(tmp_path, "library.txt", TEXT)) == [
        ("paragraph", "The smallest library in Brindlemoor holds exactly forty books."),
        ("paragraph", "It opens on Sundays."),
    ]
    # Timed text keeps its timings; the format is told by the content where the name
    # says nothing.
    transcript = read(tmp_path, "tour", json.dumps(TRANSCRIPT).encode())
    assert transcript.format == "transcript" and transcript.timed
    assert [(b.start, b.end) for b in transcript.blocks] == [(0.0, 2.5), (2.5, 6.0)]
    vtt = b"WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nHello there.\n"
    assert [(b.text, b.start) for b in read(tmp_path, "a.vtt", vtt).blocks] == [
        ("Hello there.", 1.0)
    ]
    srt = b"1\n00:00:01,000 --> 00:00:02,500\nFirst cue\nsecond line\n"
    assert shape(read(tmp_path, "a.srt", srt)) == [("paragraph", "First cue second line")]


def test_a_document_without_text_says_why(tmp_path: Path) -> None:
    cases = {
        **{name: (data, media_type, code) for name, (data, media_type, code) in BAD.items()},
        "empty.txt": (b"  \n\n ", "text/plain", "empty"),
        "tool.txt": (b"\x7fELF\x02\x01\x01\x00\x00\x00", "text/plain", "unsupported_input"),
        "report.docx": (b"<html>saved from a browser</html>", "", "unsupported_input"),
        "renamed.md": (PDF, "text/markdown", "unsupported_input"),
        "only-nav.html": (b"<body><nav>Home About</nav><script>x()</script></body>", "", "empty"),
    }
    for name, (data, media_type, code) in cases.items():
        with pytest.raises(InvalidInput) as caught:
            read(tmp_path, name, data, media_type)
        assert caught.value.code == code, (name, caught.value)
        assert name in caught.value.message and str(tmp_path) not in caught.value.message


def test_passages_stay_under_their_heading_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about topic{i} at some length." for i in range(40)]
    paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, 40, 4)]
    blocks = [
        Block("Part one", "heading", 1),
        *(Block(p) for p in paragraphs[:5]),
        Block("Part two", "heading", 1),
        Block("Details", "heading", 2),
        *(Block(p) for p in paragraphs[5:]),
    ]
    passages = cut_passages(
        StructuredDocument("long.md", "md", blocks), max_words=60, overlap_words=20
    )
    assert all(len(p.text.split()) <= 60 for p in passages)
    assert {p.heading for p in passages} == {"Part one", "Part two > Details"}
    for sentence in sentences:  # every sentence is in a passage of its own section
        section = "Part one" if int(sentence.split()[2]) < 20 else "Part two > Details"
        assert any(sentence in p.text and p.heading == section for p in passages), sentence
    within = [(a, b) for a, b in pairwise(passages) if a.heading == b.heading]
    assert within, "sections long enough to take several passages"
    for before, after in within:  # the next passage opens with the last sentence before it
        assert after.text.split(". ")[0] in before.text
    first_of_two = next(p for p in passages if p.heading == "Part two > Details")
    assert first_of_two.text.startswith(sentences[20]), "no overlap across a heading"


def test_index_keeps_what_it_reads_and_fails_the_rest_alone(tmp_path: Path) -> None:
    (tmp_path / "town.md").write_bytes(MARKDOWN)
    (tmp_path / "scan.pdf").write_bytes(pdf_bytes([]))
    inputs = [
        input_file(tmp_path / "town.md", "text/markdown"),
        input_file(tmp_path / "scan.pdf", "application/pdf"),
    ]
    params = IndexParams(collection="col_1", documents=["doc_a", "doc_b"])
    ctx = run_kind("index", params, inputs, tmp_path / "work")
    kept, failed = ctx.shelf.documents["doc_a"], ctx.shelf.documents["doc_b"]
    assert isinstance(kept, list) and [p.heading for p in kept] == [
        "Quellport",
        "Quellport > The lighthouse",
    ]
    assert all(isinstance(p, NewPassage) for p in kept)
    assert isinstance(failed, JobError) and failed.code == "no_text"
    assert [(d["document"], d["indexed"], d["failed"]) for d in ctx.details("index")] == [
        ("town.md", 1, 0),
        ("scan.pdf", 1, 1),
    ]
    with pytest.raises(InvalidInput, match="no document could be read"):
        run_kind("index", IndexParams(collection="c", documents=["d"]), inputs[1:], tmp_path)


# -- end to end through the API and the worker ---------------------------------------


@dataclass(frozen=True)
class Indexed:
    client: httpx.Client
    collection: str
    job: dict[str, Any]


@pytest.fixture(scope="module")
def indexed(stack: Stack) -> Indexed:
    """A collection of the five good documents and three bad ones, indexed."""
    client = stack.client("reader")
    made = client.post("/v1/collections", json={"name": "Facts"})
    assert made.status_code == 201, made.text
    collection = made.json()["id"]
    files = [("file", (n, data, t)) for n, (data, t) in GOOD.items()]
    files += [("file", (n, data, t)) for n, (data, t, _) in BAD.items()]
    added = client.post(f"/v1/collections/{collection}/documents", files=files)
    assert added.status_code == 202, added.text
    body = added.json()
    assert [d["status"] for d in body["documents"]] == ["queued"] * 8
    assert body["job"]["kind"] == "index" and body["job"]["priority"] == "low"
    job = wait_for_status(client, body["job"]["id"], {"completed", "failed"}, timeout=120)
    return Indexed(client, collection, job)


def search(client: httpx.Client, collection: str, q: str, limit: int = 10) -> list[dict[str, Any]]:
    response = client.get(f"/v1/collections/{collection}/search", params={"q": q, "limit": limit})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_documents_are_indexed_and_bad_ones_fail_alone(indexed: Indexed) -> None:
    assert indexed.job["status"] == "completed", indexed.job
    detail = indexed.client.get(f"/v1/collections/{indexed.collection}").json()
    status = {d["name"]: (d["status"], d["passages"], d["error"]) for d in detail["documents"]}
    for name in GOOD:
        assert status[name][0] == "indexed" and status[name][1] >= 1, (name, status[name])
    for name, (_, _, code) in BAD.items():
        state, passages, error = status[name]
        assert (state, passages, error["code"]) == ("failed", 0, code), (name, status[name])
        assert name in error["message"]
    assert detail["passage_count"] == sum(status[n][1] for n in GOOD)
    listed = indexed.client.get("/v1/collections").json()["items"]
    assert [(c["id"], c["document_count"]) for c in listed] == [(indexed.collection, 8)]


def test_search_finds_each_planted_fact(indexed: Indexed) -> None:
    for question, (name, fact) in FACTS.items():
        best = search(indexed.client, indexed.collection, question)[0]
        assert best["document_name"] == name and fact in best["text"], (question, best)
        assert best["score"] > 0
    [lighthouse] = search(indexed.client, indexed.collection, "Ottilie Varga", limit=1)
    assert lighthouse["heading"] == "Quellport > The lighthouse"
    ferry = search(indexed.client, indexed.collection, "Kestrelwind")[0]
    assert ferry["heading"] == "Harbour history"
    # Stemming: "floods" and "signing" find "flood"/"signed"; nothing of the page's
    # navigation, script, ads or footer was indexed.
    assert search(indexed.client, indexed.collection, "signing")[0]["document_name"] == (
        "treaty.pdf"
    )
    for word in ("Xylophonics", "Plumbagoria", "Gumblewidgets", "Snorkbook", "Footerbury"):
        assert search(indexed.client, indexed.collection, word) == [], word
    assert search(indexed.client, indexed.collection, "'\" OR * NEAR( -- ;") == []


def test_rankings_fuse_by_reciprocal_rank() -> None:
    # 7 is second in both rankings: it beats 1 and 9, each first in one only.
    fused = retrieval.fuse([[1, 7, 3], [9, 7]])
    assert [seq for seq, _ in fused] == [7, 1, 9, 3]
    assert fused[0][1] == pytest.approx(2 / (retrieval.RRF_K + 2))
    near, far = np.eye(DIMENSIONS, dtype=np.float32)[:2]
    stored = [(5, far.tobytes()), (6, (0.6 * near + 0.8 * far).tobytes()), (8, near.tobytes())]
    assert retrieval.nearest(stored, near) == [8, 6], "cosine 0 is no candidate"


PARAPHRASES = {
    # Questions that share no word (but the common ones) with the passage that answers.
    "which insects produce purple syrup": "bees.html",
    "who constructed the coastal beacon tower": "town.md",
    "tiny reading room with few volumes": "library.txt",
}


def test_search_finds_what_is_said_in_other_words(
    stack: Stack, indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hybrid search: full text alone finds nothing for these questions (asked of the
    stack's database in this process); fused with the embeddings, the passage that
    answers comes first."""
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", stack.database_url)
    get_settings.cache_clear()
    try:
        with session_scope() as session:
            embedded = session.execute(
                select(PassageRow.embedded_with, func.length(PassageRow.embedding)).where(
                    PassageRow.collection_id == indexed.collection
                )
            ).all()
            assert embedded and set(embedded) == {(MODEL_ID, 4 * DIMENSIONS)}, embedded
            for question in PARAPHRASES:
                assert queries.full_text(session, indexed.collection, question, 10) == []
    finally:
        get_settings.cache_clear()
    for question, name in PARAPHRASES.items():
        answer = indexed.client.get(
            f"/v1/collections/{indexed.collection}/search", params={"q": question}
        ).json()
        found = answer["items"]
        assert answer["ranking"] == "hybrid"
        assert found and found[0]["document_name"] == name, (question, found[:2])


def test_a_transcript_made_by_a_job_is_added_by_id_with_its_timings(indexed: Indexed) -> None:
    upload = indexed.client.post(
        "/v1/artifacts",
        files={"file": ("tour.json", json.dumps(TRANSCRIPT).encode(), "application/json")},
    )
    assert upload.status_code == 201, upload.text
    added = indexed.client.post(
        f"/v1/collections/{indexed.collection}/documents",
        json={"artifacts": [upload.json()["id"]]},
    )
    assert added.status_code == 202, added.text
    job = wait_for_status(indexed.client, added.json()["job"]["id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    [hit] = search(indexed.client, indexed.collection, "Glimmerfen marsh", limit=1)
    assert hit["document_name"] == "tour.json" and (hit["start"], hit["end"]) == (0.0, 6.0)
    missing = indexed.client.post(
        f"/v1/collections/{indexed.collection}/documents", json={"artifacts": ["art_nope"]}
    )
    assert missing.status_code == 422 and "art_nope" in missing.json()["error"]["message"]
    assert missing.json()["error"]["details"][0]["loc"] == ["body", "artifacts", 0]


def test_another_owners_collection_is_not_found(stack: Stack, indexed: Indexed) -> None:
    other = stack.client("stranger")
    theirs = indexed.collection
    assert other.get(f"/v1/collections/{theirs}").status_code == 404
    assert other.get(f"/v1/collections/{theirs}/search", params={"q": "bees"}).status_code == 404
    assert other.delete(f"/v1/collections/{theirs}").status_code == 404
    add = other.post(f"/v1/collections/{theirs}/documents", files={"file": ("a.txt", b"x")})
    assert add.status_code == 404 and add.json()["error"]["code"] == "not_found"
    assert other.get("/v1/collections").json()["items"] == []
    # Naming it in a job: a 404 at submit, whichever kind.
    podcast = other.post(
        "/v1/jobs", json={"kind": "podcast", "params": {"collection": theirs, "minutes": 1}}
    )
    assert podcast.status_code == 404, podcast.text
    assert theirs in podcast.json()["error"]["message"]
    upload = other.post("/v1/artifacts", files={"file": ("a.txt", b"some text")}).json()
    index = other.post(
        "/v1/jobs",
        json={
            "kind": "index",
            "params": {"collection": theirs, "documents": ["doc_x"]},
            "inputs": [upload["id"]],
        },
    )
    assert index.status_code == 404, index.text
    assert other.get("/v1/jobs").json()["items"] == [], "nothing was submitted"
    # Its owner still has it whole.
    assert search(indexed.client, theirs, "Zorbian bees")[0]["document_name"] == "bees.html"


def test_a_job_naming_an_empty_or_unknown_collection_is_refused(stack: Stack) -> None:
    client = stack.client("empty-handed")
    empty = client.post("/v1/collections", json={"name": "Nothing yet"}).json()["id"]
    refused = client.post(
        "/v1/jobs", json={"kind": "podcast", "params": {"collection": empty, "minutes": 1}}
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["details"][0]["loc"] == ["body", "params", "collection"]
    assert "no indexed passages" in error["message"]
    unknown = client.post(
        "/v1/jobs", json={"kind": "podcast", "params": {"collection": "col_nope", "minutes": 1}}
    )
    assert unknown.status_code == 404 and "col_nope" in unknown.json()["error"]["message"]


@DATABASE
def test_search_answers_by_words_when_the_embedding_engine_fails(make_stack: Any) -> None:
    """Indexed with embeddings, then searched by an API whose embedding server is not
    there: the search still answers (by words) and says so; so does one with embeddings
    off, and the vectors stay for when they are back."""
    stack: Stack = make_stack()
    stack.start_api()
    stack.start_worker(concurrency=1)
    client = stack.client("hybrid")
    collection = client.post("/v1/collections", json={"name": "Bees"}).json()["id"]
    added = client.post(
        f"/v1/collections/{collection}/documents", files=[("file", ("bees.html", HTML))]
    ).json()
    assert wait_for_status(client, added["job"]["id"], {"completed", "failed"})["status"] == (
        "completed"
    )
    question, words = next(iter(PARAPHRASES)), "Zorbian honey"

    def ask(q: str) -> tuple[str, list[str]]:
        answer = client.get(f"/v1/collections/{collection}/search", params={"q": q}).json()
        return answer["ranking"], [item["document_name"] for item in answer["items"]]

    assert ask(question) == ("hybrid", ["bees.html"])
    server_gone = {"LONGPLAY_EMBED_ENGINE": "http", "LONGPLAY_EMBED_URL": "http://127.0.0.1:9"}
    for engine in (server_gone, {"LONGPLAY_EMBED_ENGINE": "off"}):
        stack.stop("api")
        stack.env.update(engine)
        stack.start_api()
        assert ask(question) == ("full_text", [])
        assert ask(words) == ("full_text", ["bees.html"])
    stack.stop("api")
    stack.env["LONGPLAY_EMBED_ENGINE"] = "local"
    stack.start_api()
    assert ask(question) == ("hybrid", ["bees.html"])


@DATABASE
def test_deleting_a_document_or_the_collection_removes_its_passages(stack: Stack) -> None:
    client = stack.client("tidy")
    collection = client.post("/v1/collections", json={"name": "Tidy"}).json()["id"]
    added = client.post(
        f"/v1/collections/{collection}/documents",
        files=[("file", ("library.txt", TEXT)), ("file", ("town.md", MARKDOWN))],
    ).json()
    assert wait_for_status(client, added["job"]["id"], {"completed", "failed"})["status"] == (
        "completed"
    )
    library = next(d["id"] for d in added["documents"] if d["name"] == "library.txt")
    assert search(client, collection, "Brindlemoor")
    gone = client.delete(f"/v1/collections/{collection}/documents/{library}")
    assert gone.status_code == 204, gone.text
    assert search(client, collection, "Brindlemoor") == []
    assert search(client, collection, "lighthouse"), "the other document stays"
    again = client.delete(f"/v1/collections/{collection}/documents/{library}")
    assert again.status_code == 404
    assert client.delete(f"/v1/collections/{collection}").status_code == 204
    assert client.get(f"/v1/collections/{collection}/search", params={"q": "x"}).status_code == 404


def test_bad_requests_get_the_one_error_shape(stack: Stack) -> None:
    client = stack.client("careless")
    assert client.post("/v1/collections", json={"name": ""}).status_code == 422
    collection = client.post("/v1/collections", json={"name": "C"}).json()["id"]
    for body in ({"artifacts": []}, {"files": ["x"]}):
        refused = client.post(f"/v1/collections/{collection}/documents", json=body)
        assert refused.status_code == 422 and refused.json()["error"]["details"], body
    no_files = client.post(
        f"/v1/collections/{collection}/documents", files={"other": ("a.txt", b"x")}
    )
    assert no_files.status_code == 422, no_files.text
    limit = client.get(f"/v1/collections/{collection}/search", params={"q": "x", "limit": 0})
    assert limit.status_code == 422 and limit.json()["error"]["details"][0]["loc"] == [
        "query",
        "limit",
    ]


@DATABASE
def test_the_cli_creates_fills_lists_and_searches(stack: Stack, tmp_path: Path) -> None:
    env = {**stack.env, "LONGPLAY_API_URL": stack.api_url, "LONGPLAY_API_KEY": stack.key("cli")}

    def longplay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "longplay", "collections", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    made = longplay("create", "From the shell")
    assert made.returncode == 0, made.stderr
    collection = re.search(r"col_\w+", made.stdout)
    assert collection is not None, made.stdout
    (tmp_path / "town.md").write_bytes(MARKDOWN)
    (tmp_path / "scan.pdf").write_bytes(pdf_bytes([]))
    added = longplay(
        "add", collection[0], str(tmp_path / "town.md"), str(tmp_path / "scan.pdf"), "--wait"
    )
    assert added.returncode == 1, "a document failed: the command says so"
    # Said in the table (its note column wraps), and in a note line when the wait began
    # before the job ended.
    words = " ".join(re.sub("[│┃]", " ", added.stdout).split())
    assert "indexed" in words and "scan.pdf has no text layer" in words, added.stdout
    listed = longplay("list")
    assert collection[0] in listed.stdout and "From the shell" in listed.stdout
    found = longplay("search", collection[0], "Ottilie Varga")
    assert found.returncode == 0 and "town.md > Quellport > The lighthouse" in found.stdout
    assert longplay("search", collection[0], "zeppelins").returncode == 1
    blank = longplay("search", collection[0], "   ")
    assert blank.returncode == 1 and "at least 1 character" in blank.stderr, blank.stderr
    assert "Traceback" not in blank.stderr
    other = longplay("search", "col_nope", "x")
    assert other.returncode == 1 and "no collection col_nope" in other.stderr
    assert "Traceback" not in other.stderr


def test_a_job_reads_its_owners_collections_through_ctx_library(
    stack: Stack, indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ctx.library`` of a running job (the store's :class:`StoreLibrary`), in this
    process on the stack's database: its owner's passages, in order, searched; another
    owner's collection is not found."""
    stack.key("stranger")  # an owner with no collections
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", stack.database_url)
    get_settings.cache_clear()
    try:
        with session_scope() as session:
            owners = {o.name: o.id for o in session.scalars(select(Owner))}
        library = StoreLibrary(owners["reader"])
        passages = library.passages(indexed.collection)
        in_order = list(dict.fromkeys(p.document_name for p in passages))
        assert in_order[: len(GOOD)] == list(GOOD), "documents in the order they were added"
        assert [p.position for p in passages if p.document_name == "town.md"] == [0, 1]
        [best] = library.search(indexed.collection, "Marrowick treaty", limit=1)
        assert best.document_name == "treaty.pdf" and best.score > 0
        assert best in [replace(p, score=best.score) for p in passages]
        with pytest.raises(CollectionNotFound):
            StoreLibrary(owners["stranger"]).search(indexed.collection, "treaty")
    finally:
        get_settings.cache_clear()


def test_a_score_tells_nothing_of_other_owners_documents(stack: Stack) -> None:
    """Two passages that differ in one word score the same for their owner, whichever
    of the two words another owner's documents hold (FTS5's bm25 counted words over
    every owner's passages: a guess of another owner's secret scored differently)."""

    def collection_of(owner: str, files: list[tuple[str, str]]) -> tuple[httpx.Client, str]:
        client = stack.client(owner)
        made = client.post("/v1/collections", json={"name": owner}).json()["id"]
        added = client.post(
            f"/v1/collections/{made}/documents",
            files=[("file", (name, body.encode())) for name, body in files],
        ).json()
        done = wait_for_status(client, added["job"]["id"], {"completed", "failed"})
        assert done["status"] == "completed", done["error"]
        return client, made

    collection_of("secret-keeper", [("vault.txt", "The vault pin is 83125, kept here.")])
    guesser, guesses = collection_of(
        "guesser", [("a.txt", "My guess is 83125 here."), ("b.txt", "My guess is 83126 here.")]
    )
    assert search(guesser, guesses, "83125")  # the API finds it (its ranking is hybrid here)
    # Ranked by words alone, as with LONGPLAY_EMBED_ENGINE=off, the default.
    from longplay.store import library
    from longplay.store.db import session_scope

    with session_scope(stack.database_url) as session:
        scores = {q: library.search(session, guesses, q, 5)[0].score for q in ("83125", "83126")}
    assert scores["83125"] == scores["83126"], scores


def test_a_query_of_only_spaces_is_refused_as_an_empty_one(stack: Stack) -> None:
    client = stack.client("blank-searcher")
    collection = client.post("/v1/collections", json={"name": "Blank"}).json()["id"]
    empty = client.get(f"/v1/collections/{collection}/search", params={"q": ""})
    assert empty.status_code == 422, empty.text
    for q in ("   ", "\t\n "):
        blank = client.get(f"/v1/collections/{collection}/search", params={"q": q})
        assert blank.status_code == 422, (q, blank.text)
        assert blank.json()["error"]["code"] == empty.json()["error"]["code"]
        assert blank.json()["error"]["details"][0]["loc"] == ["query", "q"]
    answer = client.get(f"/v1/collections/{collection}/search", params={"q": "  harbour "})
    assert answer.status_code == 200 and answer.json()["query"] == "harbour"


def stored_files(stack: Stack) -> set[str]:
    return {str(p) for p in (stack.data_dir / "files").rglob("*") if p.is_file()}


def png_bytes() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "The harbour opens at dawn.")
    return out.getvalue()


def tar_gz_bytes() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"words"))
    return out.getvalue()


NOT_DOCUMENTS = {
    "photo.png": (png_bytes(), "image/png", "a PNG image"),
    "voice.wav": (short_wav(), "audio/x-wav", "WAV audio"),
    "notes.zip": (zip_bytes(), "application/zip", "a zip archive"),
    "notes.tar.gz": (tar_gz_bytes(), "application/gzip", "a gzip archive"),
    "photo.txt": (png_bytes(), "text/plain", "a PNG image"),  # what the bytes say
    "blob": (bytes(range(256)) * 8, "application/octet-stream", "binary data"),
}


def test_a_file_that_cannot_be_a_document_is_refused_when_added(stack: Stack) -> None:
    """Images, audio, archives and other binary files are refused at once, naming the
    file and what a collection reads; nothing is stored and no index job is made.
    What may be a document is still taken and left to the index job."""
    client = stack.client("picture-adder")
    collection = client.post("/v1/collections", json={"name": "Mixed"}).json()["id"]
    url = f"/v1/collections/{collection}/documents"
    before = stored_files(stack)
    for name, (data, media_type, what) in NOT_DOCUMENTS.items():
        files = [("file", ("library.txt", TEXT, "text/plain")), ("file", (name, data, media_type))]
        refused = client.post(url, files=files)
        assert refused.status_code == 422, (name, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "unsupported_input", error
        assert error["message"].startswith(f"{name} is {what}"), error
        assert error["message"].endswith(f"not a document; a collection reads {WHAT_WE_READ}")
        assert error["details"][0]["loc"] == ["body", "file", 1]
    assert stored_files(stack) == before, "no upload of a refused addition is kept"
    upload = client.post("/v1/artifacts", files={"file": ("photo.png", png_bytes(), "image/png")})
    assert upload.status_code == 201, upload.text
    by_id = client.post(url, json={"artifacts": [upload.json()["id"]]})
    assert by_id.status_code == 422 and by_id.json()["error"]["message"].startswith(
        "photo.png is a PNG image, not a document"
    )
    assert by_id.json()["error"]["details"][0]["loc"] == ["body", "artifacts", 0]
    assert client.get(f"/v1/collections/{collection}").json()["documents"] == []
    assert client.get("/v1/jobs").json()["items"] == [], "no index job was submitted"

    readable = {
        "utf16.txt": ("The Glimmerfen ferry leaves at noon.".encode("utf-16"), "text/plain"),
        "latin.txt": ("Caf\u00e9 of the harbour, open late.".encode("cp1252"), "text/plain"),
        "ferry.docx": (DOCX, "application/octet-stream"),
        "treaty.pdf": (PDF, "application/pdf"),
        "notes.pdf": BAD["notes.pdf"][:2],  # text under a PDF's name: the job says why
    }
    added = client.post(url, files=[("file", (n, d, t)) for n, (d, t) in readable.items()])
    assert added.status_code == 202, added.text
    job = wait_for_status(client, added.json()["job"]["id"], {"completed", "failed"})
    assert job["status"] == "completed", job
    detail = client.get(f"/v1/collections/{collection}").json()["documents"]
    assert {d["name"]: d["status"] for d in detail} == {
        "utf16.txt": "indexed",
        "latin.txt": "indexed",
        "ferry.docx": "indexed",
        "treaty.pdf": "indexed",
        "notes.pdf": "failed",
    }
