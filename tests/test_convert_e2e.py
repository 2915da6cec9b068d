"""The ``convert`` kind through the API with a real worker, on real audio."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from conftest import Stack, wait_for_status

from longplay.media import LoudnessMeter, decode, probe

EXAMPLE = Path(__file__).parents[1] / "examples" / "hello.ogg"


def convert_example(client: httpx.Client, **params: Any) -> httpx.Response:
    """Submit ``examples/hello.ogg``, uploaded first, to ``convert`` with ``params``."""
    upload = client.post("/v1/artifacts", files={"file": ("hello.ogg", EXAMPLE.read_bytes())})
    assert upload.json()["media_type"] == "audio/ogg"
    return client.post(
        "/v1/jobs", json={"kind": "convert", "inputs": [upload.json()["id"]], "params": params}
    )


def test_convert_multipart_to_normalised_mp3(stack: Stack, tmp_path: Path) -> None:
    client = stack.client()
    with EXAMPLE.open("rb") as audio:
        response = client.post(
            "/v1/jobs",
            data={"kind": "convert", "params": json.dumps({"format": "mp3", "loudness": -16})},
            files={"file": ("hello.ogg", audio, "audio/ogg")},
        )
    assert response.status_code == 202, response.text
    job = response.json()
    assert len(job["inputs"]) == 1
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed", done["error"]
    [output] = done["outputs"]
    assert output["name"] == "hello.mp3" and output["media_type"] == "audio/mpeg"
    target = tmp_path / output["name"]
    target.write_bytes(client.get(output["links"]["content"]).content)
    info = probe(target)
    assert info.codec.startswith("mp3")
    assert abs(info.duration - probe(EXAMPLE).duration) < 0.2
    meter = LoudnessMeter(info.sample_rate, info.channels)
    for block in decode(target):
        meter.add(block.samples)
    assert abs(meter.result().integrated - -16.0) < 1.0


def test_not_audio_is_refused_at_submit_naming_the_file(stack: Stack) -> None:
    client = stack.client()
    response = client.post(
        "/v1/jobs",
        data={"kind": "convert"},
        files={"file": ("notes.txt", b"these are meeting notes, not audio", "text/plain")},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "notes.txt" in error["message"]


def test_bad_convert_params_are_refused_at_submit(stack: Stack) -> None:
    client = stack.client()
    response = convert_example(client, format="ogg", sample_rate=44100)
    assert response.status_code == 422
    assert "ogg takes sample rates" in json.dumps(response.json())
    missing = client.post("/v1/jobs", json={"kind": "convert"})
    assert missing.status_code == 422 and "takes 1 input" in missing.json()["error"]["message"]


def test_an_opus_bitrate_over_what_mono_takes_is_refused_at_submit(stack: Stack) -> None:
    """libopus takes at most 256 kbit/s a channel: a mono output asks too much at 320."""
    client = stack.client()
    response = convert_example(client, format="ogg", channels=1, bitrate=320)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_params"
    assert error["details"][0]["loc"] == ["body", "params", "bitrate"]
    assert "256" in error["message"] and "320" in error["message"]


def test_an_opus_bitrate_over_what_a_mono_input_takes_fails_before_measuring(
    stack: Stack,
) -> None:
    """With ``channels`` null the output is mono like the input (hello.ogg): the job fails
    at once, naming the limit, instead of in the encoder after the measuring pass."""
    client = stack.client()
    response = convert_example(client, format="ogg", bitrate=320)
    assert response.status_code == 202, response.text
    done = wait_for_status(client, response.json()["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_params" and not done["error"]["retryable"]
    assert "256 kbit/s per channel" in done["error"]["message"]
    assert done["step_details"].get("pass") is None, "no measuring pass was made"


def test_the_measure_steps_first_pass_fills_most_of_its_share(stack: Stack, tmp_path: Path) -> None:
    """Each of the four passes the step may make was an equal share of it: the one pass
    most inputs need crawled through a quarter of the step's bar, which then jumped, and
    the ETA read four times the time left; its details said four times the duration."""
    from test_jobs_e2e import read_events

    rate, seconds = 16000, 120
    tone = 0.03 * np.sin(2 * np.pi * 440 * np.arange(rate * seconds) / rate)  # no peaks
    source = tmp_path / "tone.wav"
    with wave.open(str(source), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((tone * 32767).astype("<i2").tobytes())
    client = stack.client()
    upload = client.post("/v1/artifacts", files={"file": ("tone.wav", source.read_bytes())})
    job = client.post(
        "/v1/jobs",
        json={"kind": "convert", "inputs": [upload.json()["id"]], "params": {"format": "mp3"}},
    ).json()
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed", done["error"]
    measuring = [
        e["data"]
        for e in read_events(client, job["id"])
        if e["event"] == "progress" and e["data"]["step"] == "measure"
    ]
    passing = [m for m in measuring if m["step_details"].get("pass") == 1]
    assert passing, measuring
    assert all(m["step_details"]["total"] == seconds for m in passing), passing[-1]
    # The measure step is a third of the bar, and its first pass four fifths of that.
    assert max(m["progress"] for m in passing) > 100 / 3 * 0.5, [m["progress"] for m in passing]
