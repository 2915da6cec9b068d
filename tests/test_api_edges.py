"""The API's hard edges through HTTP with a real worker: any file name, no server path
in what a client sees, a cut input noted, and the download per RFC 9110."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import av
import httpx
import numpy as np
import pytest
from conftest import Stack, wait_for_status, wait_until

from longplay.store.files import NAME_MAX_BYTES

EXAMPLE = Path(__file__).parents[1] / "examples" / "hello.ogg"


def _mp3(folder: Path, seconds: float = 2.0, rate: int = 44_100) -> bytes:
    """A short tone as MP3 bytes."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
    path = folder / "tone.mp3"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono")
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return path.read_bytes()


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of a finished job, from its stream's start."""
    found = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                found.append(json.loads(line[5:]))
    return found


def _convert(client: httpx.Client, name: str, data: bytes, **params: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/jobs",
        data={"kind": "convert", "params": json.dumps(params)},
        files={"file": (name, data, "application/octet-stream")},
    )
    assert response.status_code == 202, response.text
    return wait_for_status(client, response.json()["id"], {"completed", "failed"}, timeout=120)


# -- file names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a" * 250 + ".mp3",  # 254 ASCII characters: failed the job with ENAMETOOLONG
        "é" * 251 + ".mp3",  # 255 characters, 506 bytes
        "録音" * 120 + ".mp3",
    ],
    ids=["ascii-254", "latin-255", "cjk"],
)
def test_any_name_is_stored_processed_and_downloaded(
    stack: Stack, name: str, tmp_path: Path
) -> None:
    client = stack.client()
    done = _convert(client, name, _mp3(tmp_path), format="mp3")
    assert done["status"] == "completed", done["error"]
    [input_id] = done["inputs"]
    stored = client.get(f"/v1/artifacts/{input_id}").json()["name"]
    assert stored == name  # kept as given; the kind saw it shortened
    kept = client.get(f"/v1/artifacts/{input_id}/content").headers["content-disposition"]
    assert unquote(kept.split("filename*=UTF-8''", 1)[1]) == name
    [output] = done["outputs"]
    assert output["name"].endswith(".mp3")
    assert len(output["name"].encode()) <= NAME_MAX_BYTES
    response = client.get(output["links"]["content"])
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == output["name"]
    assert disposition.isascii()


def test_a_name_keeps_its_script_in_the_download(stack: Stack) -> None:
    client = stack.client()
    name = "Grüße, draft 録音.txt"
    made = client.post("/v1/artifacts", files={"file": (name, b"hello")})
    assert made.status_code == 201
    assert made.json()["name"] == name
    response = client.get(made.json()["links"]["content"])
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Gr__e, draft __.txt"; ')
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name


# -- no server paths -------------------------------------------------------------------


def test_a_failed_jobs_error_shows_no_server_path(stack: Stack) -> None:
    """A job whose work folder cannot be made fails with the OSError's message, which
    names the folder: the client sees the error without the server's path."""
    client = stack.client()
    run_at = datetime.now(UTC) + timedelta(seconds=3)
    job = client.post(
        "/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}, "run_at": run_at.isoformat()}
    ).json()
    blocker = stack.data_dir / "work" / job["id"]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")  # the runner's mkdir finds a file there
    try:
        failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=90)
    finally:
        blocker.unlink(missing_ok=True)
    assert failed["status"] == "failed"
    error = failed["error"]
    assert error["code"] == "internal_error"
    assert job["id"] in error["message"]  # the folder's own name still says which
    assert str(stack.data_dir) not in error["message"]
    assert "/work/" not in error["message"]
    attempts = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert all(str(stack.data_dir) not in (a["error"] or {}).get("message", "") for a in attempts)


# -- a cut input -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cut_ogg_job(stack: Stack) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    data = EXAMPLE.read_bytes()
    client = stack.client()
    yield client, _convert(client, "cut.ogg", data[: len(data) * 6 // 10], format="wav")


def test_a_cut_input_completes_with_a_note(
    cut_ogg_job: tuple[httpx.Client, dict[str, Any]],
) -> None:
    client, done = cut_ogg_job
    assert done["status"] == "completed", done["error"]
    notes = [e for e in _events(client, done["id"]) if e["type"] == "note"]
    assert [n["code"] for n in notes] == ["truncated_input"]
    assert notes[0]["message"].startswith("cut.ogg looks cut short")


def test_a_whole_input_has_no_such_note(stack: Stack) -> None:
    client = stack.client()
    done = _convert(client, "whole.ogg", EXAMPLE.read_bytes(), format="wav")
    assert done["status"] == "completed", done["error"]
    assert not [e for e in _events(client, done["id"]) if e.get("code") == "truncated_input"]
    assert done["warnings"] == []


def test_a_cut_input_is_a_warning_on_the_result(
    cut_ogg_job: tuple[httpx.Client, dict[str, Any]],
) -> None:
    _, done = cut_ogg_job
    assert [w["code"] for w in done["warnings"]] == ["truncated_input"]


# -- the download per RFC 9110 ------------------------------------------------------------

BODY = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture(scope="module")
def artifact(stack: Stack) -> dict[str, Any]:
    made = stack.client().post("/v1/artifacts", files={"file": ("bytes.bin", BODY)})
    assert made.status_code == 201
    return dict(made.json())


def _get(stack: Stack, artifact: dict[str, Any], method: str = "GET", **headers: str) -> Any:
    return stack.client().request(method, artifact["links"]["content"], headers=headers)


def test_whole_file_with_validators(stack: Stack, artifact: dict[str, Any]) -> None:
    response = _get(stack, artifact)
    assert response.status_code == 200
    assert response.content == BODY
    assert response.headers["etag"] == f'"{artifact["sha256"]}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(BODY))


def test_a_range_is_partial_content(stack: Stack, artifact: dict[str, Any]) -> None:
    response = _get(stack, artifact, Range="bytes=5-9")
    assert response.status_code == 206
    assert response.content == BODY[5:10]
    assert response.headers["content-range"] == f"bytes 5-9/{len(BODY)}"
    suffix = _get(stack, artifact, Range="bytes=-4")
    assert suffix.status_code == 206 and suffix.content == BODY[-4:]
    past_end = _get(stack, artifact, Range="bytes=1000-5000")
    assert past_end.status_code == 206 and past_end.content == BODY[1000:]


@pytest.mark.parametrize("value", ["bytes=5-2", "abc", "items=0-5", "bytes=x-y", "bytes="])
def test_an_invalid_range_is_ignored(stack: Stack, artifact: dict[str, Any], value: str) -> None:
    response = _get(stack, artifact, Range=value)
    assert response.status_code == 200
    assert response.content == BODY


@pytest.mark.parametrize("value", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_an_unsatisfiable_range_is_416(stack: Stack, artifact: dict[str, Any], value: str) -> None:
    response = _get(stack, artifact, Range=value)
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(BODY)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


def test_head_answers_the_headers(stack: Stack, artifact: dict[str, Any]) -> None:
    response = _get(stack, artifact, "HEAD")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(BODY))
    assert response.headers["etag"] == f'"{artifact["sha256"]}"'
    assert _get(stack, artifact, "HEAD", Range="bytes=0-1").status_code == 200  # GET only


def test_if_none_match_is_304(stack: Stack, artifact: dict[str, Any]) -> None:
    etag = f'"{artifact["sha256"]}"'
    for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = _get(stack, artifact, **{"If-None-Match": value})
        assert response.status_code == 304, value
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert _get(stack, artifact, **{"If-None-Match": '"other"'}).status_code == 200


def test_if_range_sends_the_range_only_for_the_same_file(
    stack: Stack, artifact: dict[str, Any]
) -> None:
    etag = f'"{artifact["sha256"]}"'
    same = _get(stack, artifact, Range="bytes=0-1", **{"If-Range": etag})
    assert same.status_code == 206 and same.content == BODY[:2]
    for other in ('"changed"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        changed = _get(stack, artifact, Range="bytes=0-1", **{"If-Range": other})
        assert changed.status_code == 200 and changed.content == BODY, other


def test_content_of_an_unknown_artifact_or_without_a_key(
    stack: Stack, artifact: dict[str, Any]
) -> None:
    missing = stack.client().get("/v1/artifacts/art_nope/content")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    anonymous = httpx.get(stack.api_url + artifact["links"]["content"])
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert httpx.head(stack.api_url + artifact["links"]["content"]).status_code == 401


def test_another_owners_artifact_is_404(stack: Stack, artifact: dict[str, Any]) -> None:
    response = stack.client("mallory").get(artifact["links"]["content"])
    assert response.status_code == 404


# -- the README's run_at example ---------------------------------------------------------


def test_run_at_answers_a_null_queue_position(stack: Stack) -> None:
    client = stack.client()
    run_at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    response = client.post(
        "/v1/jobs",
        json={"kind": "sleep", "params": {"seconds": 0}, "run_at": run_at.isoformat()},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["queue_position"] is None
    assert datetime.fromisoformat(job["run_at"]) == run_at
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled")
