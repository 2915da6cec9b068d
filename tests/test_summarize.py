"""The ``summarize`` kind and own templates: through the API to the worker of the shared
stack with the bundled Gemma 3 270M, the same step through the OpenAI-compatible HTTP
engine against a real server, and the parts that need no model.

The meeting for ``meeting-notes`` is said by two Piper voices, then goes through a flow:
``transcribe``, then ``summarize`` of its JSON beside ``translate`` of its subtitles.
The ``chapters`` test and the test of owners read a transcript JSON the test writes,
with times known exactly and the speakers named. The model jobs are submitted together,
once, so the two worker processes run them side by side; each test then checks its own.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import Stack, wait_for_status
from openai_stub_server import StubServer, create_app
from sqlalchemy import select
from steady_speech import steady_synthesizer
from step_context import input_file, run_kind
from test_flows import post_flow, wait_for_flow
from test_jobs_e2e import read_events

from longplay.engines import get_language_model, get_synthesizer, get_transcriber
from longplay.engines.llm import TOKENS_EVERY_S, EveryFewTokens
from longplay.engines.models import DEFAULT_VOICE_NAME
from longplay.engines.summaries import (
    SummaryOptions,
    Unit,
    chunk_units,
    summarize_document,
    units_of,
)
from longplay.engines.tts import SECOND_VOICE_NAME
from longplay.framework import UPLOAD_READ_BYTES, InvalidInput, PermanentError
from longplay.framework.library import CollectionNotFound, Library
from longplay.jobs.library import StoreLibrary
from longplay.kinds.summarize import SummarizeParams, check_file, collection_document
from longplay.media import AudioEncoder
from longplay.settings import Settings, get_settings
from longplay.store.db import session_scope
from longplay.store.files import NAME_MAX_BYTES
from longplay.store.models import Owner
from longplay.text.documents import Document
from longplay.text.subtitles import Cue, format_srt
from longplay.text.summary import (
    BUILTIN_TEMPLATES,
    UnusableAnswer,
    answer_schema,
    chapter_times,
    names_in,
    parse_json_answer,
    read_answer,
    without_echoes,
)

MODEL_JOBS = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
API_KEY = "summarize-test-key"
PEOPLE = ("Alice", "Bob", "Carol")
HARBOUR = """# Harbour history

## Timetable

The ferry leaves the harbour at seven in the morning and returns at six in the evening. \
On Sundays the ferry leaves at nine.

## Boats

The harbour has two boats, the Marigold and the Petrel. The Marigold was built in 1952 \
by the Skerry yard.
"""
"""A short document the bundled model, asked for a brief, loops on (see its test)."""

MEETING = [
    (0.0, 4.2, "Good morning everyone, this is the weekly planning meeting for the website."),
    (4.2, 9.0, "Alice: The design is finished and the pages are ready for review."),
    (9.0, 13.8, "Bob: We decided to launch the new website on March the first."),
    (13.8, 18.5, "Alice: Action item: Bob will write the press release by Friday."),
    (18.5, 23.1, "Bob: Action item: Carol will test the checkout page next week."),
    (23.1, 29.4, "Alice: We still do not know who pays for the new servers."),
    (29.4, 34.0, "Bob: Now let us talk about the budget for the next quarter."),
    (34.0, 40.6, "Alice: The marketing budget stays at ten thousand dollars."),
    (40.6, 45.5, "Carol: I will hire two new support people in April."),
    (45.5, 50.0, "Bob: Thank you all, see you next week."),
]
SPOKEN = [
    "Good morning everyone, this is the weekly planning meeting for the website.",
    "The design is finished and the pages are ready for review.",
    "We decided to launch the new website on March the first.",
    "Action item: Bob will write the press release by Friday.",
    "Action item: Carol will test the checkout page next week.",
    "We still do not know who pays for the new servers.",
    "The marketing budget stays at ten thousand dollars.",
    "Thank you all, see you next week.",
]
"""The meeting as it is said, the two voices taking turns: names only where said."""
TOPICS = [
    "The harbour town rebuilt its old stone bridge after the spring floods. Engineers "
    "checked every arch, the council paid for new railings, and the fishermen asked for "
    "wider steps down to the water.",
    "The school library opened a reading room for children. Volunteers read stories every "
    "Saturday, parents donated shelves, and the librarian ordered books in three languages.",
    "Farmers in the valley planted apple trees on the southern slopes. They tested the soil, "
    "dug new wells, and agreed to share one tractor between four farms.",
    "The football club moved its training to the new field by the river. The coach planned "
    "longer sessions, the players repaired the fence, and the club sold tickets online.",
]


def transcript(lines: list[tuple[float, float, str]]) -> bytes:
    segments = [{"id": i, "start": a, "end": b, "text": t} for i, (a, b, t) in enumerate(lines)]
    body = {"language": "en", "duration": lines[-1][1], "segments": segments}
    return json.dumps(body).encode()


def long_text(characters: int) -> str:
    """Paragraphs about several topics, numbered so that none repeats, to ``characters``."""
    paragraphs, number = [], 0
    while sum(len(p) + 2 for p in paragraphs) < characters:
        paragraphs.append(f"Report {number + 1}. {TOPICS[number % len(TOPICS)]}")
        number += 1
    return "\n\n".join(paragraphs)


def said_meeting() -> bytes:
    """:data:`SPOKEN`, the two voices taking turns with a pause between, as WAV bytes.

    Read without Piper's noise, so the same audio every run: with it, the transcript
    came out in one of several wordings ("Action item, Carol, we'll test …", "Action
    item Carol will test …"), and the bundled model named no owner for one of them in a
    full run, failing it."""
    synthesizer = steady_synthesizer()
    voices = (DEFAULT_VOICE_NAME, SECOND_VOICE_NAME)
    speeches = [synthesizer.synthesize(t, voice=voices[n % 2]) for n, t in enumerate(SPOKEN)]
    rate = speeches[0].sample_rate
    pause = np.zeros(rate // 2, np.float32)
    samples = np.concatenate([part for s in speeches for part in (s.samples, pause)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "standup.wav"
        with AudioEncoder(path, format="wav", sample_rate=rate, channels=1) as encoder:
            encoder.write(samples.astype(np.float32)[:, None])
        return path.read_bytes()


def upload(client: httpx.Client, name: str, content: bytes, **params: Any) -> str:
    response = client.post(
        "/v1/jobs",
        data={"kind": "summarize", "params": json.dumps(params)},
        files={"file": (name, content, "application/octet-stream")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def submit(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"kind": "summarize", "params": params})
    assert response.status_code == 202, response.text
    return dict(response.json())


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    done = wait_for_status(client, job_id, {"completed", "failed"}, timeout=300)
    assert done["status"] == "completed", done["error"]
    return done


def summary_json(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    [output] = [o for o in job["outputs"] if o["name"].endswith(".summary.json")]
    return dict(client.get(output["links"]["content"]).json())


def summary_md(client: httpx.Client, job: dict[str, Any]) -> str:
    [output] = [o for o in job["outputs"] if o["name"].endswith(".summary.md")]
    return client.get(output["links"]["content"]).text


def sections(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["key"]: s for s in summary["sections"]}


RISKS = {
    "description": "What could go wrong, and what happens next.",
    "sections": [
        {"name": "Risks", "instruction": "Each risk the text names.", "form": "list"},
        {"name": "Next steps", "instruction": "What happens next, in one sentence."},
    ],
}


GUIDE_SECTIONS = {
    "The harbour": TOPICS,
    "The valley": [f"Note {n}. {topic}" for n, topic in enumerate(reversed(TOPICS))],
}
GUIDE = "\n\n".join(
    f"## {heading}\n\n" + "\n\n".join(body * 2 for body in paragraphs)
    for heading, paragraphs in GUIDE_SECTIONS.items()
)
"""Two sections of some 300 words each: the index cuts each into overlapping passages."""


@contextmanager
def libraries(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Library]]:
    """Owners' libraries as a job of theirs reads them, from the stack's store."""
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", stack.database_url)
    get_settings.cache_clear()

    def library_of(name: str) -> Library:
        with session_scope() as session:
            owner = session.scalars(select(Owner.id).where(Owner.name == name)).one()
        return StoreLibrary(owner)

    try:
        yield library_of
    finally:
        get_settings.cache_clear()


@dataclass(frozen=True)
class Shelf:
    """Sam's collection with the guide and a short note, indexed, and their ids."""

    collection: str
    guide: str
    note: str


@pytest.fixture(scope="module")
def shelf(stack: Stack) -> Shelf:
    client = stack.client("sam")
    made = client.post("/v1/collections", json={"name": "Guides"})
    assert made.status_code == 201, made.text
    collection = made.json()["id"]
    files = [
        ("file", ("guide.md", GUIDE.encode(), "text/markdown")),
        ("file", ("note.txt", TOPICS[1].encode(), "text/plain")),
    ]
    added = client.post(f"/v1/collections/{collection}/documents", files=files)
    assert added.status_code == 202, added.text
    guide, note = (d["id"] for d in added.json()["documents"])
    job = wait_for_status(client, added.json()["job"]["id"], {"completed", "failed"}, timeout=120)
    assert job["status"] == "completed", job["error"]
    return Shelf(collection, guide, note)


@pytest.fixture(scope="module")
def model_jobs(stack: Stack, shelf: Shelf) -> dict[str, str]:
    """The jobs that need the model, submitted at once: their ids by name."""
    client = stack.client("sam")
    assert client.post("/v1/templates", json={"name": "risks", **RISKS}).status_code == 201
    recording = client.post("/v1/artifacts", files={"file": ("standup.wav", said_meeting())})
    assert recording.status_code == 201, recording.text
    meeting = post_flow(
        client,
        {
            "heard": {"kind": "transcribe", "inputs": [recording.json()["id"]]},
            "notes": {
                "kind": "summarize",
                "inputs": [{"stage": "heard", "suffix": ".json"}],
                "params": {"template": "meeting-notes", "length": "short"},
            },
            "french": {
                "kind": "translate",
                "inputs": [{"stage": "heard", "suffix": ".srt"}],
                "params": {"target_language": "fr"},
            },
        },
    )
    return {
        "meeting": meeting["id"],
        "written": upload(
            client, "notes.json", transcript(MEETING), template="meeting-notes", length="short"
        ),
        "chapters": upload(
            client, "standup.json", transcript(MEETING), template="chapters", length="short"
        ),
        "long": submit(client, text=long_text(20_000), template="brief", length="short")["id"],
        "looping": upload(client, "harbour.md", HARBOUR.encode(), template="brief"),
        "own": submit(
            client, text=TOPICS[0] + "\n\n" + TOPICS[2], template="risks", length="short"
        )["id"],
        "document": submit(
            client,
            collection=shelf.collection,
            document=shelf.guide,
            template="key-points",
            length="short",
        )["id"],
    }


# -- through the API, to the worker, with the bundled model -------------------------------


@MODEL_JOBS
def test_meeting_notes_of_a_said_meeting_name_owners_who_were_said(
    stack: Stack, model_jobs: dict[str, str]
) -> None:
    """Said by two voices, transcribed, then summarized and translated side by side, in
    one flow: each of the two read the file its stage named. Without speaker names,
    the owners come from the names the transcript says (the model chooses among them),
    so even the bundled model ties a task to someone who was said."""
    client = stack.client("sam")
    flow = wait_for_flow(client, model_jobs["meeting"], timeout=300)
    assert flow["status"] == "completed", flow
    heard, job, french = (flow["stages"][name] for name in ("heard", "notes", "french"))
    assert job["inputs"] == [{"job": heard["id"], "suffix": ".json", "output": None}]
    assert {o["name"] for o in job["outputs"]} == {"standup.summary.md", "standup.summary.json"}
    assert {o["name"] for o in french["outputs"]} == {"standup.fr.srt", "standup.fr.txt"}
    [json_transcript] = [o for o in heard["outputs"] if o["name"] == "standup.json"]
    said = client.get(json_transcript["links"]["content"]).json()
    assert any(person in said["text"] for person in PEOPLE), said["text"]
    summary = summary_json(client, job)
    assert summary["input"] == "standup.json"
    assert summary["template"] == "meeting-notes" and summary["language"] == "English"
    parts = sections(summary)
    assert list(parts) == ["summary", "decisions", "action_items", "open_questions"]
    assert parts["summary"]["text"]
    owners = [item["owner"] for item in parts["action_items"]["items"] if item["owner"]]
    assert all(owner in said["text"] for owner in owners), parts["action_items"]
    assert set(owners) & set(PEOPLE), parts["action_items"]
    markdown = summary_md(client, job)
    for heading in ("## Summary", "## Decisions", "## Action items", "## Open questions"):
        assert heading in markdown
    [coverage] = [w["message"] for w in job["warnings"] if w["code"] == "coverage"]
    assert "(all) in 1 chunk (one)" in coverage


@MODEL_JOBS
def test_meeting_notes_name_an_owner_who_was_said(stack: Stack, model_jobs: dict[str, str]) -> None:
    """A transcript with the speakers' names, as a diarizing engine would give it."""
    client = stack.client("sam")
    job = finished(client, model_jobs["written"])
    parts = sections(summary_json(client, job))
    assert list(parts) == ["summary", "decisions", "action_items", "open_questions"]
    owners = [item["owner"] or "" for item in parts["action_items"]["items"]]
    assert any(person in owner for owner in owners for person in PEOPLE), parts["action_items"]


@MODEL_JOBS
def test_chapters_fall_inside_the_transcript_in_order(
    stack: Stack, model_jobs: dict[str, str]
) -> None:
    client = stack.client("sam")
    job = finished(client, model_jobs["chapters"])
    chapters = sections(summary_json(client, job))["chapters"]["items"]
    assert chapters and all(c["title"] for c in chapters)
    starts, ends = [c["start"] for c in chapters], [c["end"] for c in chapters]
    assert starts[0] == MEETING[0][0] and ends[-1] == MEETING[-1][1]
    assert all(MEETING[0][0] <= s < e <= MEETING[-1][1] for s, e in zip(starts, ends, strict=True))
    assert starts == sorted(starts) and all(e <= s for e, s in zip(ends, starts[1:], strict=False))
    segment_times = {a for a, _, _ in MEETING}
    assert set(starts) <= segment_times  # taken from the segments, not made up


@MODEL_JOBS
def test_a_model_that_loops_past_its_tokens_still_gives_its_whole_sentences(
    stack: Stack, model_jobs: dict[str, str]
) -> None:
    """On this short document the bundled model runs one sentence on and on ("10-metre-
    wide, 10-metre-wide, …") until its tokens run out, before the grammar's length bound
    would end the string: the answer, cut short, is closed and keeps its whole sentences,
    where the job used to fail with summary_unusable."""
    client = stack.client("sam")
    job = finished(client, model_jobs["looping"])
    assert job["status"] == "completed", job["error"]
    [summary] = summary_json(client, job)["sections"]
    text = summary["text"]
    assert "Marigold" in text and text.endswith("."), text
    assert "10-metre-wide, 10-metre-wide" not in text, text


@MODEL_JOBS
def test_a_long_input_is_read_whole_in_chunks(stack: Stack, model_jobs: dict[str, str]) -> None:
    client = stack.client("sam")
    job = finished(client, model_jobs["long"])
    coverage = summary_json(client, job)["coverage"]
    assert coverage["passes"] == "map-reduce" and coverage["chunks"] >= 2
    assert coverage["characters_read"] == coverage["characters_total"] >= 19_000
    assert coverage["left_out"] is False
    codes = [w["code"] for w in job["warnings"]]
    assert "coverage" in codes and "input_left_out" not in codes
    [said] = [w["message"] for w in job["warnings"] if w["code"] == "coverage"]
    assert said.startswith(f"read {coverage['characters_total']} of {coverage['characters_total']}")

    progress = [e["data"] for e in read_events(client, job["id"]) if e["event"] == "progress"]
    details = [p["step_details"] for p in progress if "chunks_done" in p["step_details"]]
    total = coverage["chunks"]
    assert {d["chunks_total"] for d in details} == {total}
    done = [d["chunks_done"] for d in details]
    assert done == sorted(done) and set(range(total + 1)) <= set(done)
    assert details[-1]["characters_read"] == coverage["characters_total"]


@MODEL_JOBS
def test_the_bar_moves_while_the_model_reads_and_writes(
    stack: Stack, model_jobs: dict[str, str]
) -> None:
    """A one-chunk summary is one model call (two with a retry): its progress moves as
    the model reads the prompt and writes the answer, not only at the chunk's end, and
    never back. Read from the finished job's events, as a follower replays them."""
    client = stack.client("sam")
    job = finished(client, model_jobs["looping"])
    assert summary_json(client, job)["coverage"]["chunks"] == 1
    progress = [e["data"] for e in read_events(client, job["id"]) if e["event"] == "progress"]
    percents = [p["progress"] for p in progress]
    assert percents == sorted(percents)
    moving = [p for p in progress if "tokens" in p["step_details"]]
    assert all(p["step"] == "summarize" for p in moving)
    within = [p for p in moving if 0 < p["progress"] < 100]
    assert len(within) >= 3, progress
    counts = [
        (d["retry"], d["prompt_tokens_read"], d["tokens"])
        for d in (p["step_details"] for p in within)
    ]
    assert counts == sorted(counts) and counts[-1][2] > 0, counts
    assert all(p["step_details"]["chunks_done"] == 0 for p in within)


@MODEL_JOBS
def test_a_long_summarys_bar_is_shared_by_the_tokens_of_its_parts(
    stack: Stack, model_jobs: dict[str, str]
) -> None:
    """The chunks and the combining had equal shares: the combining, one short ask, took
    as much of the bar as a chunk, and the ETA read twice the time left."""
    client = stack.client("sam")
    job = finished(client, model_jobs["long"])
    chunks = summary_json(client, job)["coverage"]["chunks"]
    assert chunks > 1
    progress = [e["data"] for e in read_events(client, job["id"]) if e["event"] == "progress"]
    mapped = [p["progress"] for p in progress if p["step_details"].get("chunks_done") == chunks]
    assert mapped and min(mapped) > 100 * chunks / (chunks + 1) + 2, (chunks, mapped)


@MODEL_JOBS
def test_an_own_template_is_honoured(stack: Stack, model_jobs: dict[str, str]) -> None:
    client = stack.client("sam")
    job = finished(client, model_jobs["own"])
    assert [s["name"] for s in job["params"]["sections"]] == ["Risks", "Next steps"]
    summary = summary_json(client, job)
    assert summary["template"] == "risks"
    assert [(s["name"], s["form"]) for s in summary["sections"]] == [
        ("Risks", "list"),
        ("Next steps", "prose"),
    ]
    assert "## Risks" in summary_md(client, job) and "## Next steps" in summary_md(client, job)


# -- templates: owned, checked, used by name ----------------------------------------------


@MODEL_JOBS
def test_a_document_of_a_collection_is_summarized_whole_once(
    stack: Stack, model_jobs: dict[str, str], shelf: Shelf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide is read back from its indexed passages in order, each overlap taken
    out: the text the job summarizes is the guide's own, every paragraph once."""
    client = stack.client("sam")
    job = finished(client, model_jobs["document"])
    assert {o["name"] for o in job["outputs"]} == {"guide.summary.md", "guide.summary.json"}
    summary = summary_json(client, job)
    assert summary["input"] == "guide.md"
    # Without the worked example the bundled model wrote the key's name as its only
    # point, or nothing; with it, points from the guide.
    points = sections(summary)["key_points"]["items"]
    assert points and "key_points" not in points
    assert all(set(point.lower().split()) & set(GUIDE.lower().split()) for point in points)
    original = units_of(Document.from_text(GUIDE, name="guide.md"))
    assert summary["coverage"]["characters_total"] == sum(len(u.text) for u in original)

    stack.key("stranger")
    with libraries(stack, monkeypatch) as library_of:
        library = library_of("sam")
        passages = [p for p in library.passages(shelf.collection) if p.document_id == shelf.guide]
        assert len(passages) >= 4, "the guide should be cut into overlapping passages"
        read = collection_document(library, shelf.collection, shelf.guide)
        assert units_of(read) == original
        with pytest.raises(PermanentError, match=f"no indexed document {shelf.note}x"):
            collection_document(library, shelf.collection, shelf.note + "x")
        with pytest.raises(CollectionNotFound):
            collection_document(library_of("stranger"), shelf.collection, shelf.guide)


@MODEL_JOBS
def test_a_timed_document_of_a_collection_keeps_each_cue_at_its_time(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read back from overlapping passages, each cue starts where its own words start,
    not where its passage did (a few cues earlier, in the overlap taken out)."""
    said = [
        Cue(4.0 * n, 4.0 * n + 3.5, f"Sentence number {n} is about the harbour ferry.")
        for n in range(60)
    ]
    client = stack.client("timekeeper")
    collection = client.post("/v1/collections", json={"name": "Talks"}).json()["id"]
    added = client.post(
        f"/v1/collections/{collection}/documents",
        files={"file": ("talk.srt", format_srt(said).encode(), "application/x-subrip")},
    )
    assert added.status_code == 202, added.text
    [document] = added.json()["documents"]
    job = wait_for_status(client, added.json()["job"]["id"], {"completed", "failed"}, timeout=120)
    assert job["status"] == "completed", job["error"]

    with libraries(stack, monkeypatch) as library_of:
        library = library_of("timekeeper")
        assert len(library.passages(collection)) >= 3, "overlapping passages are the point"
        read = collection_document(library, collection, document["id"])
    assert read.cues
    for before, cue in itertools.pairwise(read.cues):
        assert cue.start >= before.end, "cues follow one another"
    for cue in read.cues:
        first = re.search(r"Sentence number (\d+)", cue.text)
        assert first is not None, cue
        assert said[int(first[1])].start - 4.0 < cue.start <= said[int(first[1])].start, cue


@MODEL_JOBS
def test_a_collection_document_is_its_owners_and_named_whole(stack: Stack, shelf: Shelf) -> None:
    """Another owner's collection is a 404; a document not in the collection fails the
    job naming it; collection and document go together, and with no other text."""
    mine, theirs = stack.client("sam"), stack.client("mallory")
    params = {"collection": shelf.collection, "document": shelf.guide}
    answer = theirs.post("/v1/jobs", json={"kind": "summarize", "params": params})
    assert answer.status_code == 404, answer.text
    for wrong, field in (
        ({"collection": shelf.collection}, "document"),
        ({"document": shelf.guide}, "collection"),
        ({**params, "text": "Hi."}, "collection"),
    ):
        answer = mine.post("/v1/jobs", json={"kind": "summarize", "params": wrong})
        assert answer.status_code == 422, wrong
        assert answer.json()["error"]["details"][0]["loc"][-1] == field, answer.text
    other = mine.post("/v1/collections", json={"name": "Other"}).json()["id"]
    stray = submit(mine, collection=shelf.collection, document=other)
    failed = wait_for_status(mine, stray["id"], {"completed", "failed"}, timeout=120)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "document_not_found"
    assert other in failed["error"]["message"]


LONG_NAME = ("Minutes of the harbour town council on the stone bridge " * 5)[:246] + ".txt"
"""A document name of 250 characters: with ``.summary.json`` more than a file name holds."""


@MODEL_JOBS
def test_a_document_with_a_name_too_long_for_a_file_is_summarized(stack: Stack) -> None:
    """The outputs are named after the document, cut before ``.summary.md`` to fit a
    file name; the summary still names the document whole."""
    client = stack.client("long-namer")
    collection = client.post("/v1/collections", json={"name": "Council"}).json()["id"]
    added = client.post(
        f"/v1/collections/{collection}/documents",
        files={"file": (LONG_NAME, TOPICS[0].encode(), "text/plain")},
    )
    assert added.status_code == 202, added.text
    [document] = added.json()["documents"]
    indexed = wait_for_status(client, added.json()["job"]["id"], {"completed", "failed"})
    assert indexed["status"] == "completed", indexed["error"]

    job = finished(
        client,
        submit(client, collection=collection, document=document["id"], length="short")["id"],
    )

    names = sorted(o["name"] for o in job["outputs"])
    stem = LONG_NAME.removesuffix(".txt")
    assert [n.rsplit(".", 2)[1:] for n in names] == [["summary", "json"], ["summary", "md"]]
    for name in names:
        assert len(name.encode()) <= NAME_MAX_BYTES and stem.startswith(name.split(".")[0])
    assert summary_json(client, job)["input"] == LONG_NAME
    assert summary_md(client, job).startswith(f"# Summary of {stem}\n")


def test_a_text_with_no_words_is_refused_before_any_model_runs(
    stack: Stack, tmp_path: Path
) -> None:
    """Inline or a small file: a 422 at submit; a file too large to read at submit
    fails its job with ``no_words``, reading it, before the model loads."""
    client = stack.client("wordless")
    inline = client.post("/v1/jobs", json={"kind": "summarize", "params": {"text": "..."}})
    small = client.post(
        "/v1/jobs",
        data={"kind": "summarize", "params": "{}"},
        files={"file": ("dots.txt", b"... !!! ---\n\n***", "text/plain")},
    )
    large = upload(client, "dots.txt", b"... !!! ---\n\n" * (UPLOAD_READ_BYTES // 13 + 1))

    assert inline.status_code == 422, inline.text
    assert "text has no words to summarize" in inline.json()["error"]["message"]
    assert small.status_code == 422, small.text
    assert "dots.txt has no words to summarize" in small.json()["error"]["message"]
    failed = wait_for_status(client, large, {"completed", "failed"}, timeout=120)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "no_words"
    assert failed["error"]["message"].startswith("dots.txt has no words to summarize")
    events = [e.get("event") for e in read_events(client, large)]
    assert "note" not in events, "no model was loaded, nor its coverage told"


def test_templates_belong_to_their_owner(stack: Stack) -> None:
    mine, theirs = stack.client("tess"), stack.client("mallory")
    created = mine.post("/v1/templates", json={"name": "standup", **RISKS})
    assert created.status_code == 201, created.text
    assert created.json()["sections"][1]["form"] == "prose"
    assert mine.post("/v1/templates", json={"name": "standup", **RISKS}).status_code == 409
    assert [t["name"] for t in mine.get("/v1/templates").json()["items"]] == ["standup"]

    for method, body in (("GET", None), ("PUT", RISKS), ("DELETE", None)):
        answer = theirs.request(method, "/v1/templates/standup", json=body)
        assert answer.status_code == 404, (method, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    assert theirs.get("/v1/templates").json()["items"] == []
    refused = theirs.post(
        "/v1/jobs",
        json={"kind": "summarize", "params": {"text": "Hi there.", "template": "standup"}},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "unknown_template"
    assert refused.json()["error"]["details"][0]["loc"] == ["body", "params", "template"]

    changed = {
        "sections": [{"name": "Blockers", "instruction": "What blocks work.", "form": "list"}]
    }
    assert (
        mine.put("/v1/templates/standup", json=changed).json()["sections"][0]["name"] == "Blockers"
    )
    assert mine.delete("/v1/templates/standup").status_code == 204
    assert mine.get("/v1/templates/standup").status_code == 404


def test_bad_templates_and_submissions_are_refused_with_the_error_shape(stack: Stack) -> None:
    client = stack.client("tess")
    for body, where in (
        ({"name": "brief", **RISKS}, ["body", "name"]),
        ({"name": "Bad Name", **RISKS}, ["body", "name"]),
        ({"name": "empty", "sections": []}, ["body", "sections"]),
        (
            {"name": "twice", "sections": [RISKS["sections"][0], RISKS["sections"][0]]},
            ["body", "sections"],
        ),
        (
            {"name": "odd", "sections": [{"name": "A", "instruction": "b", "form": "table"}]},
            ["body", "sections", 0, "form"],
        ),
        (
            {"name": "lines", "sections": [{"name": "Risks\nand more", "instruction": "b"}]},
            ["body", "sections", 0, "name"],
        ),
    ):
        answer = client.post("/v1/templates", json=body)
        assert answer.status_code == 422, body
        error = answer.json()["error"]
        assert error["message"] and error["details"][0]["loc"] == where, error
    # A name is its heading's text: the summary writes the heading's marks itself.
    marked = {"name": "marked", "sections": [{"name": "## Risks | pipes", "instruction": "b"}]}
    made = client.post("/v1/templates", json=marked)
    assert made.status_code == 201, made.text
    assert made.json()["sections"][0]["name"] == "Risks | pipes"
    # Sections named in any script: each a key of its own, not one refused as no letter.
    scripts = [{"name": n, "instruction": "x"} for n in ("要点", "Обзор", "Шаг 1", "ملخص 1")]
    made = client.post("/v1/templates", json={"name": "scripts", "sections": scripts})
    assert made.status_code == 201, made.text
    assert [s["name"] for s in made.json()["sections"]] == ["要点", "Обзор", "Шаг 1", "ملخص 1"]
    for params, text in (
        ({"text": "Hi.", "template": "nope"}, "unknown template 'nope'"),
        ({"text": "Hi.", "length": "huge"}, "length"),
        ({"text": "Hi.", "language": "Klingon"}, "unknown language"),
        ({"text": "Hi.", "template": "brief", "sections": RISKS["sections"]}, "built-in"),
        ({}, "nothing to summarize"),
        # One-off sections are held to a saved template's rules: a key each, all different.
        (
            {
                "text": "Hi.",
                "template": "once",
                "sections": [
                    {"name": "Risks", "instruction": "Risks named."},
                    {"name": "risks!", "instruction": "Risks again."},
                ],
            },
            "two sections have the same name",
        ),
        (
            {"text": "Hi.", "template": "once", "sections": [{"name": "???", "instruction": "x"}]},
            "a section name needs a letter or a digit",
        ),
    ):
        answer = client.post("/v1/jobs", json={"kind": "summarize", "params": params})
        assert answer.status_code == 422, params
        assert text in answer.text


# -- the HTTP engine, in this process -----------------------------------------------------


@pytest.fixture
def http_llm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The HTTP engine pointed at an OpenAI-compatible server that answers from the
    local Gemma, as the model ``thinks-aloud``. Yields the server's app."""
    for name in [n for n in os.environ if n.startswith("LONGPLAY_LLM_")]:
        monkeypatch.delenv(name)
    settings = Settings(data_dir=tmp_path, llm={"engine": "local"}, stt={"engine": "local"})
    app = create_app(
        api_key=API_KEY,
        transcriber=get_transcriber(settings),
        synthesizer=get_synthesizer(settings),
        language_model=get_language_model(settings),
    )
    with StubServer(app) as server:
        for name, value in (
            ("DATA_DIR", str(tmp_path)),
            ("LLM_ENGINE", "http"),
            ("LLM_URL", server.url),
            ("LLM_API_KEY", API_KEY),
            ("LLM_HTTP_MODEL", "thinks-aloud"),
        ):
            monkeypatch.setenv(f"LONGPLAY_{name}", value)
        get_settings.cache_clear()
        yield app
    get_settings.cache_clear()


def test_an_http_model_gets_the_schema_and_its_thinking_is_left_out(
    http_llm: Any, tmp_path: Path
) -> None:
    source = tmp_path / "notes.txt"
    source.write_text(TOPICS[1], encoding="utf-8")
    params = SummarizeParams(template="key-points", length="short")
    ctx = run_kind("summarize", params, [input_file(source, "text/plain")], tmp_path / "work")

    requests = http_llm.state.chat_requests
    assert len(requests) == 2  # reasoning alone, then the JSON after reasoning
    schema = requests[0]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["key_points"]
    assert any("asked again" in n for n in ctx.notes)
    written = {f.name: f.path for _, f in ctx.kept}
    markdown = written["notes.summary.md"].read_text()
    data = json.loads(written["notes.summary.json"].read_text())
    for written_text in (markdown, json.dumps(data)):
        assert "<think>" not in written_text and "Let me think" not in written_text
    assert data["sections"][0]["key"] == "key_points" and ctx.state["summary"]["retries"] == 1
    fractions = ctx.fractions("summarize")
    assert fractions == sorted(fractions)
    told = [d for d in ctx.details("summarize") if "tokens" in d]  # once a try, from a server
    assert [d["retry"] for d in told] == [0, 1] and all(d["tokens"] > 0 for d in told)
    assert 0 < fractions[1] < fractions[2] < 1 == fractions[-1]


def test_a_local_model_tells_its_tokens_as_it_reads_and_writes(tmp_path: Path) -> None:
    """The bundled model's JSON answer, counted: the prompt read in llama.cpp's batches,
    then the tokens written, a few times a second at most, and the last count whole."""
    llm = get_language_model(Settings(data_dir=tmp_path, llm={"engine": "local"}))
    prompt = f"{long_text(3000)}\n\nThe points of the text above, as JSON: "
    schema = answer_schema(BUILTIN_TEMPLATES["key-points"], "short")
    counts: list[tuple[int, int]] = []
    answer = llm.complete_json(prompt, schema, max_tokens=24, on_tokens=lambda *c: counts.append(c))
    read = llm.count_tokens(prompt)
    assert answer and read > 512  # more than one of llama.cpp's batches
    assert counts[0][1] == 0 and 0 < counts[0][0] < read  # the prompt's first batch
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert counts[-1][0] == read and 0 < counts[-1][1] <= 24
    assert len(counts) < 24  # not every token of the answer


def test_token_counts_are_told_a_few_times_a_second_and_the_last_one_whole() -> None:
    now = [0.0]
    told: list[tuple[int, int]] = []
    counted = EveryFewTokens(lambda *c: told.append(c), clock=lambda: now[0])
    for written in range(1, 11):
        counted(100, written)
        now[0] += TOKENS_EVERY_S / 4  # exact in binary
    counted.finish()
    assert told == [(100, 1), (100, 5), (100, 9), (100, 10)]
    counted.finish()
    assert len(told) == 4  # nothing new to tell


# -- without a model ----------------------------------------------------------------------


def test_an_answer_cut_short_is_closed_where_it_can_be() -> None:
    """What a model's tokens ran out in: a value's string ends where it was cut, a
    list's cut item and a key without a value go, the rest is closed; what cannot be an
    object stays unusable."""
    cut = {
        '{"summary": "A. B b b': {"summary": "A. B b b"},
        '{"a": ["x", "y", "partial ite': {"a": ["x", "y"]},
        '{"a": ["x"], "b': {"a": ["x"]},
        '{"a": ["x"], "b": ': {"a": ["x"]},
        '{"a": [{"task": "do it", "due': {"a": [{"task": "do it"}]},
        '{"a": "ends in an escape \\': {"a": "ends in an escape "},
        '{"a": "x"} and words after': {"a": "x"},
    }
    for answer, read in cut.items():
        assert parse_json_answer(answer) == read, answer
    for bad in ("no object here", '{"a": "x"]', '{"a": tru'):
        with pytest.raises(UnusableAnswer):
            parse_json_answer(bad)
    # Read back, prose keeps its whole sentences, a clause it looped on said once.
    looping = '{"summary": "Built in 1952. It was ' + "10-metre-wide, " * 30 + "10-me"
    [brief] = read_answer(parse_json_answer(looping), BUILTIN_TEMPLATES["brief"])
    assert brief.text == "Built in 1952. It was 10-metre-wide."
    # A loop on a clause, in the one sentence there is, is said once, and closed.
    clause = "with the team deciding on the line, "
    looping = '{"summary": "The mood was good, ' + clause * 8 + "with the team decid... -"
    [brief] = read_answer(parse_json_answer(looping), BUILTIN_TEMPLATES["brief"])
    assert brief.text == "The mood was good, with the team deciding on the line."


def test_answers_are_checked_and_thinking_is_stripped() -> None:
    notes = BUILTIN_TEMPLATES["meeting-notes"]
    answer = parse_json_answer(
        '<think>hmm</think>```json\n{"summary": "A plan.", "decisions": ["Go", "go"], '
        '"action_items": [{"task": "Write", "owner": "Bob", "due": ""}], "open_questions": []}\n```'
    )
    summary, decisions, actions, _ = read_answer(answer, notes)
    assert summary.text == "A plan." and decisions.items == ["Go"]
    assert actions.items[0].owner == "Bob" and actions.items[0].due is None
    for bad in ('{"summary": ""}', "no json here", '{"summary": "x", "decisions": "y"}'):
        with pytest.raises(UnusableAnswer):
            read_answer(parse_json_answer(bad), notes)


def test_what_only_repeats_the_instructions_is_taken_out() -> None:
    """What a small model copies from the prompt instead of the text: the echoing
    sentences and items go, an owner not named in the text is unsaid."""
    source = "Action item, Bob will write the press release by Friday. We decided on March."
    instructions = (
        'Decisions: what was decided. Action items: "task", "owner" (the person who will do '
        'it as named in the text) and "due" (when it is due). Open questions: questions left '
        "open."
    )
    answer = {
        "summary": "What was decided. Bob writes the press release.",
        "decisions": ["Decisions: what was decided", "Launch in March", "Decisions: March"],
        "action_items": [
            {"task": "owner", "owner": "Bob", "due": ""},
            {"task": "write the press release", "owner": "who will do it", "due": "when due"},
            {"task": "press release copy", "owner": "Bob", "due": "Friday"},
        ],
        "open_questions": ["Questions left open"],
    }
    read = read_answer(answer, BUILTIN_TEMPLATES["meeting-notes"])
    cleaned, taken = without_echoes(read, source=source, instructions=instructions)
    summary, decisions, actions, questions = cleaned
    assert summary.text == "Bob writes the press release."
    assert decisions.items == ["Launch in March", "Decisions: March"] and questions.items == []
    assert [(a.task, a.owner, a.due) for a in actions.items] == [
        ("write the press release", None, None),
        ("press release copy", "Bob", "Friday"),
    ]
    assert "owner who will do it" in taken and "Questions left open" in taken
    notes = BUILTIN_TEMPLATES["meeting-notes"]
    echoing = read_answer({**answer, "summary": "What was decided."}, notes)
    [prose, *_] = without_echoes(echoing, source=source, instructions=instructions)[0]
    assert prose.text == "", "all of it echoes: left for the summarizer to fill"


def test_a_task_that_runs_on_into_the_transcript_ends_with_its_first_sentence() -> None:
    """What the bundled model wrote for one reading of the said meeting: Bob's task ran
    on through Carol's and the next sentence. A task's own second sentence stays."""
    source = (
        "Action item Bob will write the press release by Friday. Action item Carol will "
        "test the checkout page next week. We still do not know who pays for the new "
        "servers."
    )
    answer = {
        "summary": "The team planned the launch.",
        "decisions": [],
        "action_items": [
            {
                "task": "Write the press release by Friday. Action item Carol will test the "
                "checkout page next week. We still do not know who pays for the new server",
                "owner": "Bob",
                "due": "Friday",
            },
            {
                "task": "Test the checkout page. Ask Bob which browsers the launch needs.",
                "owner": "Carol",
                "due": "",
            },
        ],
        "open_questions": [],
    }
    read = read_answer(answer, BUILTIN_TEMPLATES["meeting-notes"])
    cleaned, taken = without_echoes(read, source=source, instructions="")
    tasks = [(a.task, a.owner) for a in cleaned[2].items]
    assert tasks == [
        ("Write the press release by Friday.", "Bob"),
        ("Test the checkout page. Ask Bob which browsers the launch needs.", "Carol"),
    ]
    assert taken == [], "a cut task is no echo: the answer is not asked for again"


def test_what_is_copied_from_the_worked_example_is_taken_out() -> None:
    """Three words in a row from the example that the text does not say: the model
    wrote about the example, not about the text."""
    source = TOPICS[3]  # the football club
    example = "The council approved six electric buses for the north district."
    answer = {
        "key_points": [
            "The club moved its training to the new field.",
            "The coach ordered six electric buses.",  # the example's, not the text's
            "The council approved longer sessions.",
        ]
    }
    read = read_answer(answer, BUILTIN_TEMPLATES["key-points"])
    [points], taken = without_echoes(read, source=source, instructions="", example=example)
    assert points.items == ["The club moved its training to the new field."]
    assert taken == answer["key_points"][1:]


class CopyingModel:
    """A language model whose first answer copies the worked example's point and whose
    second takes one of the text's own, telling its tokens as it goes: a stand-in for
    the engine, not for longplay."""

    model, device = "copy", "cpu"
    ANSWERS = (
        "The council approved a bus line from the north district to the hospital.",
        "Ana opened with the release plan.",
    )

    def __init__(self) -> None:
        self.asked = 0

    def complete_json(self, prompt: str, schema: Any, **options: Any) -> str:
        point = self.ANSWERS[min(self.asked, 1)]
        self.asked += 1
        for written in (0, 5, 10):
            options["on_tokens"](self.count_tokens(prompt), written)
        return json.dumps({"key_points": [point]})

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


def test_a_copied_example_is_named_as_such_and_its_retry_moves_the_bar_on() -> None:
    notes: list[str] = []
    progress: list[tuple[float, dict[str, Any]]] = []
    summary = summarize_document(
        Document.from_text("Ana opened with the release plan. The beta ships soon.", name="a.md"),
        SummaryOptions(template="key-points", length="short"),
        llm=CopyingModel(),  # type: ignore[arg-type]
        context_tokens=4096,
        progress=lambda done, total, **d: progress.append((done / total, d)),
        note=lambda message, **_: notes.append(message),
    )
    assert summary.sections[0].items == ["Ana opened with the release plan."]
    [said] = notes
    assert "it copied the worked example: 'The council approved a bus line" in said, said
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1
    tries = [(d["retry"], f) for f, d in progress if "tokens" in d]
    first, second = ([f for r, f in tries if r == n] for n in (0, 1))
    assert first and second and max(first) < min(second) < max(second) < 1


class EchoingModel:
    """A language model that answers every prompt with its instructions (a paragraph)
    and its keys (a list), as the bundled model did for a short meeting note and for
    key points: a stand-in for the engine, not for longplay."""

    model, device = "echo", "cpu"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete_json(self, prompt: str, schema: Any, **_: Any) -> str:
        self.prompts.append(prompt)
        forms = {key: spec["type"] for key, spec in schema["properties"].items()}
        return json.dumps(
            {
                key: "One paragraph: what the text is about." if form == "string" else [key]
                for key, form in forms.items()
            }
        )

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


def test_a_summary_that_only_repeats_its_prompt_gets_sentences_of_the_text() -> None:
    text = (
        "# Team sync\n\nAna opened with the release plan. The beta ships on December 10. "
        "Ben reported that the queue backed up twice.\n\nChloe asked about the holidays."
    )
    notes: list[tuple[str, dict[str, Any]]] = []
    model = EchoingModel()
    summary = summarize_document(
        Document.from_text(text, name="sync.md"),
        SummaryOptions(template="brief", length="short"),
        llm=model,  # type: ignore[arg-type]
        context_tokens=4096,
        note=lambda message, **data: notes.append((message, data)),
    )
    [prose] = summary.sections
    assert len(model.prompts) == 2  # asked again, once
    assert "(it repeats the instructions: 'One paragraph" in notes[0][0]
    assert prose.text.startswith("Ana opened with the release plan. The beta ships on")
    assert "#" not in prose.text and len(prose.text) <= 400  # the short length's bound
    assert any(data.get("code") == "summary_from_text" for _, data in notes)

    points = summarize_document(
        Document.from_text(text, name="sync.md"),
        SummaryOptions(template="key-points", length="short"),
        llm=model,  # type: ignore[arg-type]
        context_tokens=4096,
    )
    assert points.sections[0].items == [  # the first sentence of each paragraph
        "Ana opened with the release plan.",
        "Chloe asked about the holidays.",
    ]


def test_an_action_items_owner_is_one_of_the_names_the_text_says() -> None:
    said = "\n".join(SPOKEN[:5])  # as Whisper heard it: "Action item, Bob will ..."
    labelled = "\n".join(text for _, _, text in MEETING)
    written = "Then Dave from Skerry Point said: the lamp is lit. I think so, OK.\nEve: Fine."

    assert names_in(said) == ("Bob", "Carol")  # not "Good", "Action", "March", "Friday"
    assert names_in(labelled) == ("Alice", "Bob", "Carol")  # not "The", "We", "Action"
    assert names_in(written) == ("Dave", "Skerry Point", "Eve")
    notes = "Decisions: we ship in May.\nNext steps: Carol tests it.\nDave: I will write it."
    assert names_in(notes) == ("Carol", "Dave")  # not "Decisions" or "Next", labels
    schema = answer_schema(BUILTIN_TEMPLATES["meeting-notes"], "short", names=("Bob", "Carol"))
    item = schema["properties"]["action_items"]["items"]
    assert item["properties"]["owner"] == {"enum": ["", "Bob", "Carol"]}
    assert list(item["properties"]) == ["owner", "task", "due"]  # who, then what they do


def test_chapters_take_their_times_from_the_segments() -> None:
    chapters = BUILTIN_TEMPLATES["chapters"]
    answer = {
        "chapters": [
            {"start_segment": 4, "title": "Later", "gist": "b"},
            {"start_segment": 2, "title": "First", "gist": "a"},
            {"start_segment": 99, "title": "Outside", "gist": "c"},
        ]
    }
    [section] = read_answer(answer, chapters, segments=(1, 5))
    spans = [(0.0, 1.0), (1.0, 2.5), (2.5, 4.0), (4.0, 6.0), (6.0, 9.0)]
    made = chapter_times(section.items, spans)
    assert [(c.title, c.start, c.end) for c in made] == [("First", 0.0, 4.0), ("Later", 4.0, 9.0)]


def test_chunks_keep_every_unit_in_order() -> None:
    units = units_of(Document.from_text(long_text(12_000)))
    chunks = chunk_units(units, 600)
    assert len(chunks) > 3
    assert [u.text for chunk in chunks for u in chunk] == [u.text for u in units]
    cut = chunk_units([Unit("word " * 2000, 1.0, 2.0)], 300)
    assert len(cut) > 3 and all(u.start == 1.0 for chunk in cut for u in chunk)
    assert " ".join(u.text for chunk in cut for u in chunk).split() == ["word"] * 2000


def test_a_file_without_text_is_refused_in_the_words_of_summarize(tmp_path: Path) -> None:
    pdf = tmp_path / "upload"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    blank = tmp_path / "blank"
    blank.write_bytes(b" \n\n")

    with pytest.raises(
        InvalidInput, match=r"^report\.txt is a PDF file, not text; summarize takes"
    ):
        check_file(input_file(pdf, "text/plain", name="report.txt"))
    with pytest.raises(InvalidInput, match=r"^notes\.md is empty: there is no text to summarize$"):
        check_file(input_file(blank, "text/markdown", name="notes.md"))
