"""The ``translate`` kind on real models: Gemma 3 270M in this process, the same job
through the OpenAI-compatible HTTP engine against a real server, and through the API to
the worker of the shared SQLite stack.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from conftest import Stack, wait_for_status
from fastapi import FastAPI
from openai_stub_server import StubServer, create_app
from step_context import RecordingContext, input_file, run_kind
from test_jobs_e2e import read_events

from longplay.engines import get_language_model, get_synthesizer, get_transcriber
from longplay.framework import InvalidInput, InvalidParams, RetryableError
from longplay.kinds.translate import TranslateParams
from longplay.settings import Settings, get_settings
from longplay.text import Cue, parse_srt, parse_transcript_json
from longplay.text.answers import parse_numbered, without_loop
from longplay.text.documents import Document

API_KEY = "translate-test-key"
SRT = """1
00:00:00,500 --> 00:00:02,800
Good evening, and welcome to the show.

2
00:00:03,000 --> 00:00:05,900
Tonight we talk about
the weather in the mountains.

3
00:00:06,250 --> 00:00:08,000
The farmers were happy.

4
00:00:08,400 --> 00:00:10,000
My brother bought a new car.

5
00:00:10,500 --> 00:00:12,125
Thank you for listening.
"""
PROSE = (
    "The library opens at nine in the morning.\n\n"
    "Please close the door when you leave.\n\n"
    "My brother bought a new car last week."
)
SYNC_NOTE = (
    "# Team sync, December 3\n\n"
    "Ana opened with the release plan. The beta ships on December 10 to forty customers; "
    "the public release follows in January if the crash rate stays under one percent.\n\n"
    "Ben reported that the transcription queue backed up twice last week. Both times a "
    "single customer uploaded several hours of audio at once. He proposed per-customer "
    "limits on running jobs.\n"
)
DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


def timings(cues: list[Cue]) -> list[tuple[float, float]]:
    return [(cue.start, cue.end) for cue in cues]


def srt_numbers(text: str) -> list[str]:
    return [block.split("\n", 1)[0] for block in text.strip().split("\n\n")]


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# -- fixtures: settings from the environment, as the worker reads them ------------------


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("translate-data")


def use_settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set ``LONGPLAY_*`` variables for the step about to run in this process."""
    for name, value in values.items():
        monkeypatch.setenv(f"LONGPLAY_{name.upper()}", value)
    get_settings.cache_clear()


@pytest.fixture
def local_llm(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Iterator[None]:
    """The bundled Gemma through llama.cpp, whatever the environment says."""
    for name in [n for n in os.environ if n.startswith("LONGPLAY_LLM_")]:
        monkeypatch.delenv(name)
    use_settings(monkeypatch, data_dir=str(data_dir))
    yield
    get_settings.cache_clear()


@pytest.fixture
def http_llm(monkeypatch: pytest.MonkeyPatch, local_llm: None, data_dir: Path) -> Iterator[FastAPI]:
    """The HTTP engine pointed at a fresh OpenAI-compatible server (so its
    ``miscount-once`` is still to come) that answers from the same local engines. Yields
    the server's app."""
    settings = Settings(data_dir=data_dir, llm={"engine": "local"}, stt={"engine": "local"})
    app = create_app(
        api_key=API_KEY,
        transcriber=get_transcriber(settings),
        synthesizer=get_synthesizer(settings),
        language_model=get_language_model(settings),
    )
    with StubServer(app) as server:
        use_settings(
            monkeypatch,
            llm_engine="http",
            llm_url=server.url,
            llm_api_key=API_KEY,
            llm_http_model="miscount-once",
        )
        yield app
    get_settings.cache_clear()


def translate_upload(tmp_path: Path, name: str, content: str, **params: Any) -> RecordingContext:
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    inputs = [input_file(source, "text/plain")]
    return run_kind("translate", TranslateParams(**params), inputs, tmp_path / "work")


# -- parameters and the answer check: no model needed ----------------------------------


def test_languages_are_normalised_and_unknown_ones_refused() -> None:
    params = TranslateParams(target_language="de", source_language="EN", text="Hi")
    assert (params.target_language, params.source_language) == ("German", "English")
    assert (params.target.code, params.target.name) == ("de", "German")
    assert TranslateParams(target_language="pt_br", text="x").target.code == "pt-BR"
    assert TranslateParams(target_language="french", text="x").target.code == "fr"
    # Withdrawn codes older systems still send (Hebrew, Indonesian), and Filipino.
    for given, code in (("iw", "he"), ("in", "id"), ("fil", "tl"), ("zh-HK", "zh-Hant")):
        assert TranslateParams(target_language=given, text="x").target.code == code
    # Their own names, as their speakers type them, with or without accents.
    for given, code in (("Deutsch", "de"), ("Français", "fr"), ("espanol", "es"), ("日本語", "ja")):
        assert TranslateParams(target_language=given, text="x").target.code == code
    with pytest.raises(pydantic.ValidationError, match="unknown language 'Germna'"):
        TranslateParams(target_language="Germna", text="x")
    with pytest.raises(pydantic.ValidationError, match="text is empty"):
        TranslateParams(target_language="de", text=" \n ")
    with pytest.raises(pydantic.ValidationError, match="extra"):
        TranslateParams.model_validate({"target_language": "de", "txt": "typo"})


def test_the_answer_check_refuses_what_would_shift_or_drop_lines() -> None:
    sources = ["Good morning to all of you.", "The rain stopped.", "We went home."]
    good = "Here you are:\n1. Guten Morgen euch allen.\n2. Der Regen hörte auf.\n3) Wir gingen."
    assert parse_numbered(good, sources) == (
        ["Guten Morgen euch allen.", "Der Regen hörte auf.", "Wir gingen."],
        "",
    )
    merged = "1. Guten Morgen euch allen.\n2. Der Regen hörte auf, wir gingen nach Hause."
    assert parse_numbered(merged, sources) == (None, "had 2 numbered lines instead of 3")
    shuffled = "1. Guten Morgen.\n3. Wir gingen.\n2. Der Regen hörte auf."
    assert parse_numbered(shuffled, sources)[1] == "numbered its lines out of order"
    copied = "1. Good morning to all of you.\n2. Der Regen hörte auf.\n3. Wir gingen."
    assert parse_numbered(copied, sources)[1] == "left line 1 untranslated"
    looped = "1. Guten Morgen.\n2. Guten Morgen.\n3. Wir gingen."
    assert parse_numbered(looped, sources)[1] == "gave the same translation for different lines"
    blank = "1. Guten Morgen.\n2.\n3. Wir gingen."
    assert parse_numbered(blank, sources)[1] == "left line 2 empty"


def test_text_and_file_together_or_neither_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("Hello there.")
    both = TranslateParams(target_language="de", text="Hello.")
    with pytest.raises(InvalidParams, match="not both"):
        run_kind("translate", both, [input_file(source, "text/plain")], tmp_path / "w1")
    with pytest.raises(InvalidParams, match="nothing to translate"):
        run_kind("translate", TranslateParams(target_language="de"), [], tmp_path / "w2")


def test_subtitles_without_cues_and_binary_files_fail_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"captions\.vtt has no subtitle cues") as caught:
        translate_upload(
            tmp_path, "captions.vtt", "WEBVTT\n\nNOTE nothing said\n", target_language="de"
        )
    assert caught.value.code == "empty" and not caught.value.retryable
    with pytest.raises(InvalidInput, match=r"notes\.md is empty"):
        translate_upload(tmp_path, "notes.md", "\n \n\n", target_language="fr")
    source = tmp_path / "x.bin"
    source.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InvalidInput, match=r"x\.bin is not text"):
        run_kind(
            "translate",
            TranslateParams(target_language="de"),
            [input_file(source, "application/octet-stream")],
            tmp_path / "w",
        )
    pdf = tmp_path / "report.txt"  # bytes that also read as Windows-1252 text
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length 9 >>\nstream\n\xe4\xf6\n")
    with pytest.raises(
        InvalidInput, match=r"^report\.txt is a PDF file, not text; translate"
    ) as read:
        Document.read(pdf)
    assert read.value.code == "unsupported_input"


def test_documents_become_lines_and_come_back_whole(tmp_path: Path) -> None:
    markdown = (
        "# A short guide\n\n- Open the door.\n- Turn on the light.\n\n"
        + "The hall is large. " * 30
        + "\n\n---\n"
    )
    document = Document.from_text(markdown, name="guide.md")
    lines = document.lines()
    assert lines[:3] == ["A short guide", "Open the door.", "Turn on the light."]
    assert len(lines) > 5 and all(len(line) < 400 for line in lines[3:-1])
    assert lines[-1] == "---"
    assert [p.join(p.lines) for p in document.paragraphs] == [
        "# A short guide",
        "- Open the door.\n- Turn on the light.",
        ("The hall is large. " * 30).strip(),
        "---",
    ]
    assert document.suffix == "md"

    windows = tmp_path / "subs"  # no extension: told apart by its content
    windows.write_bytes(
        "1\r\n00:00:01,000 --> 00:00:02,000\r\nCaf\u00e9 au lait\r\n".encode("cp1252")
    )
    read = Document.read(windows, name="subs")
    assert (read.format, read.lines()) == ("srt", ["Caf\u00e9 au lait"])
    vtt = tmp_path / "captions.txt"
    vtt.write_text("WEBVTT\n\n00:01.000 --> 00:02.500 align:start\nBonjour &amp; merci\n")
    assert Document.read(vtt).cues == [Cue(1.0, 2.5, "Bonjour & merci", settings="align:start")]


# -- step level, on Gemma 3 270M --------------------------------------------------------


@pytest.mark.usefixtures("local_llm")
def test_srt_to_german_keeps_every_cue_and_timing(tmp_path: Path) -> None:
    ctx = translate_upload(tmp_path, "talk.en.srt", SRT, target_language="de")

    assert [(o.name, o.media_type) for o in ctx.outputs()] == [
        ("talk.de.srt", "application/x-subrip"),
        ("talk.de.txt", "text/plain"),
    ]
    srt, txt = (o.path.read_text(encoding="utf-8") for o in ctx.outputs())
    source, translated = parse_srt(SRT), parse_srt(srt)
    assert srt_numbers(srt) == srt_numbers(SRT) == ["1", "2", "3", "4", "5"]
    assert timings(translated) == timings(source)
    for before, after in zip(source, translated, strict=True):
        assert after.text.strip() and words(after.text) != words(before.text)
    assert len(translated[1].text.splitlines()) == 2, "a two-line cue stays on two lines"
    assert txt.splitlines() == [" ".join(cue.text.split()) for cue in translated]

    details = ctx.details("translate")
    assert details[-1]["chunks_done"] == details[-1]["chunks_total"] == 2
    assert details[-1]["characters_done"] == details[-1]["characters_total"] > 100
    assert {d["chunks_done"] for d in details} == {0, 1, 2}
    assert ctx.fractions("translate") == sorted(ctx.fractions("translate"))
    assert ctx.state["translation"]["language"] == "de"
    assert ctx.state["translation"]["lines"] == 5


@pytest.mark.usefixtures("local_llm")
def test_prose_keeps_its_paragraphs(tmp_path: Path) -> None:
    ctx = run_kind(
        "translate",
        TranslateParams(target_language="es", source_language="en", text=PROSE),
        [],
        tmp_path,
    )

    [output] = ctx.outputs()
    assert output.name == "text.es.txt"
    paragraphs = output.path.read_text(encoding="utf-8").strip().split("\n\n")
    assert len(paragraphs) == 3
    for before, after in zip(PROSE.split("\n\n"), paragraphs, strict=True):
        assert after.strip() and "\n" not in after and words(after) != words(before)


@pytest.mark.usefixtures("local_llm")
def test_transcript_json_keeps_segments_and_timings(tmp_path: Path) -> None:
    transcript = {
        "language": "en",
        "duration": 7.5,
        "text": "Good morning. The farmers were happy. See you soon.",
        "segments": [
            {"id": 0, "start": 0.0, "end": 2.0, "text": "Good morning.", "words": [{"w": 1}]},
            {"id": 1, "start": 2.5, "end": 5.0, "text": "The farmers were happy.", "words": []},
            {"id": 2, "start": 5.5, "end": 7.5, "text": "See you soon.", "words": []},
        ],
    }
    ctx = translate_upload(tmp_path, "talk.json", json.dumps(transcript), target_language="fr")

    assert [o.name for o in ctx.outputs()] == ["talk.fr.json", "talk.fr.txt"]
    written = json.loads(ctx.outputs()[0].path.read_text(encoding="utf-8"))
    assert (written["language"], written["source_language"], written["duration"]) == (
        "fr",
        "en",
        7.5,
    )
    source_cues, cues = parse_transcript_json(transcript), parse_transcript_json(written)
    assert timings(cues) == timings(source_cues)
    assert [s["id"] for s in written["segments"]] == [0, 1, 2]
    assert all(s["words"] == [] for s in written["segments"])
    assert all(words(a.text) != words(b.text) for a, b in zip(cues, source_cues, strict=True))
    assert written["text"] == " ".join(cue.text for cue in cues)


# -- the HTTP engine against a real OpenAI-compatible server ----------------------------


def test_the_count_guard_keeps_cues_when_the_server_drops_a_line(
    tmp_path: Path, http_llm: FastAPI
) -> None:
    three_cues = SRT.split("\n\n4\n")[0] + "\n"
    glossary = {"mountains": "Berge", "ski": "Schi"}
    ctx = translate_upload(
        tmp_path, "talk.srt", three_cues, target_language="German", glossary=glossary
    )

    srt = ctx.outputs()[0].path.read_text(encoding="utf-8")
    source, translated = parse_srt(three_cues), parse_srt(srt)
    assert srt_numbers(srt) == ["1", "2", "3"]
    assert timings(translated) == timings(source)
    assert all(cue.text.strip() for cue in translated)

    requests: list[dict[str, Any]] = http_llm.state.chat_requests
    assert http_llm.state.miscounted
    first, retry = requests[0]["messages"], requests[1]["messages"]
    assert "into German" in first[0]["content"]
    assert "mountains → Berge" in first[0]["content"] and "Schi" not in first[0]["content"]
    assert first[1]["content"].splitlines() == [
        f"{i}. {' '.join(cue.text.split())}" for i, cue in enumerate(source, 1)
    ]
    assert retry[:2] == first, "the same chunk, asked again"
    assert retry[-1]["content"].startswith("Your answer had ")
    assert "numbered lines instead of 3" in retry[-1]["content"]
    assert any("chunk 1: the answer had" in note for note in ctx.notes)
    assert ctx.state["translation"]["chunks"] == 1
    assert ctx.state["translation"]["retried_chunks"] == 1


@pytest.mark.usefixtures("http_llm")
def test_an_engine_timeout_is_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_settings(monkeypatch, llm_http_model="slow", llm_timeout="0.5")
    with pytest.raises(RetryableError) as caught:
        translate_upload(tmp_path, "talk.srt", SRT, target_language="de")
    assert caught.value.code == "engine_timeout"
    assert "0.5 s" in caught.value.message


def test_the_context_setting_reaches_the_local_engine(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, llm={"engine": "local", "model": None})
    llm = get_language_model(
        settings.model_copy(
            update={"llm": settings.llm.model_copy(update={"context_tokens": 1024})}
        )
    )
    with pytest.raises(InvalidParams, match="more than the 1024 the model's context holds"):
        llm.complete("word " * 1100, max_tokens=8)


# -- through the API, on the worker ------------------------------------------------------


def upload(client: httpx.Client, name: str, content: bytes, **params: Any) -> str:
    response = client.post(
        "/v1/jobs",
        data={"kind": "translate", "params": json.dumps(params)},
        files={"file": (name, content, "application/octet-stream")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_a_translation_that_goes_round_in_a_loop_is_cut_where_it_began() -> None:
    assert without_loop("mit dem Plan mit dem Plan mit dem Plan mit dem") == "mit dem Plan"
    assert without_loop("nein nein nein nein nein nein") == "nein"
    assert without_loop("der Prozess-Prozess-Prozess-Prozess-Prozess-Pro") == "der Prozess"
    for kept in ("ha ha ha, very very good", "Guten Morgen, wie geht es dir?"):
        assert without_loop(kept) == kept


@pytest.mark.usefixtures("local_llm")
def test_the_bundled_model_never_hands_back_a_loop(tmp_path: Path) -> None:
    """A meeting note the bundled model translated into German as "Ana hat die
    Releaseplan ... mit dem Launchplan mit dem Launchplan ..." for 600 characters."""
    ctx = translate_upload(tmp_path, "sync.md", SYNC_NOTE, target_language="de")
    [output] = [o for o in ctx.outputs() if o.name.endswith(".de.md")]
    lines = [line for line in output.path.read_text(encoding="utf-8").splitlines() if line]
    assert lines and all(without_loop(line) == line for line in lines), lines


@DATABASE
def test_srt_upload_is_translated_by_the_worker(stack: Stack, tmp_path: Path) -> None:
    client = stack.client()
    job_id = upload(client, "talk.srt", SRT.encode(), target_language="de")
    done = wait_for_status(client, job_id, {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed", done["error"]

    outputs = {o["name"]: o for o in done["outputs"]}
    assert set(outputs) == {"talk.de.srt", "talk.de.txt"}
    srt = client.get(outputs["talk.de.srt"]["links"]["content"]).text
    assert timings(parse_srt(srt)) == timings(parse_srt(SRT))
    assert srt_numbers(srt) == srt_numbers(SRT)

    progress = [e["data"] for e in read_events(client, job_id) if e["event"] == "progress"]
    details = [p["step_details"] for p in progress if "chunks_done" in p["step_details"]]
    assert {p["step"] for p in progress} == {"translate"}
    assert [d["chunks_done"] for d in details] == sorted(d["chunks_done"] for d in details)
    assert {d["chunks_done"] for d in details} == {0, 1, 2}
    assert {d["chunks_total"] for d in details} == {2}
    assert details[-1]["characters_done"] == details[-1]["characters_total"]
    assert details[-1]["input"] == "talk.srt" and details[-1]["language"] == "de"


@DATABASE
def test_bad_documents_are_refused_at_submit_or_fail_at_once(stack: Stack) -> None:
    """Sent with the submission, a file with no text is refused there; uploaded before
    and named by id, the job fails at once, with the same code and message."""
    client = stack.client("translate-bad-documents")
    for name, content, code, message in (
        ("empty.txt", b"  \n\n ", "empty", "empty.txt is empty: there is no text to translate"),
        ("x.bin", random.Random(0).randbytes(2048), "unsupported_input", "x.bin is not text"),
        (
            "deep.json",
            b"[" * 5000 + b"]" * 5000,
            "invalid_input",
            "deep.json: the transcript is JSON nested too deeply to read",
        ),
        (
            "huge.json",
            b'{"segments": [{"start": ' + b"1" * 5000 + b', "end": 2, "text": "Hi"}]}',
            "invalid_input",
            "huge.json: the transcript has a number of over 4,300 digits",
        ),
    ):
        response = client.post(
            "/v1/jobs",
            data={"kind": "translate", "params": json.dumps({"target_language": "de"})},
            files={"file": (name, content, "application/octet-stream")},
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == code and message in error["message"]
        assert error["details"][0]["loc"] == ["body", "file", 0]

        stored = client.post("/v1/artifacts", files={"file": (name, content)}).json()
        job = client.post(
            "/v1/jobs",
            json={
                "kind": "translate",
                "params": {"target_language": "de"},
                "inputs": [stored["id"]],
            },
        ).json()
        failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
        assert failed["status"] == "failed"
        assert failed["attempts"] == 1
        assert failed["error"]["retryable"] is False
        assert failed["error"]["code"] == code
        assert message in failed["error"]["message"]

    refused = client.post(
        "/v1/jobs", json={"kind": "translate", "params": {"target_language": "xx", "text": "Hi"}}
    )
    assert refused.status_code == 422 and "unknown language" in refused.text
