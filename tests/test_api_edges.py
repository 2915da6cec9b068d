"""The API's hard edges through HTTP with a real worker: any file name, no server path
in what a client sees, a cut input noted, and the download per RFC 9110."""

from __future__ import annotations

import http.client
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
from test_dashboard import csrf_of
from test_faults import signed_in_browser

from longplay import Client
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
    assert disposition.startswith('attachment; filename="Grusse, draft _.txt"; ')
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name


def test_a_name_with_a_quote_is_kept_as_a_browser_sent_it(stack: Stack) -> None:
    """A browser sends '"' in a part's file name as %22 (and a line break as %0A), as
    httpx does: the file was stored as 'take%22two.txt'."""
    client = stack.client()
    for name, stored in [
        ('take "two".txt', 'take "two".txt'),
        ("line\nbreak.txt", "linebreak.txt"),
    ]:
        made = client.post("/v1/artifacts", files={"file": (name, b"hello")})
        assert made.status_code == 201, made.text
        assert made.json()["name"] == stored
    disposition = client.get(made.json()["links"]["content"]).headers["content-disposition"]
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == "linebreak.txt"


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


def test_a_deadline_that_has_passed_is_refused_at_submit(stack: Stack) -> None:
    """It was taken, then expired: a job that could never run, and a client told so only
    by following it. Refused, nothing stored, naming the deadline and the service's clock
    (a client's clock running ahead is the likely cause)."""
    client = stack.client("late")
    before = client.get("/v1/jobs").json()["items"]
    response = client.post(
        "/v1/jobs",
        json={"kind": "sleep", "params": {"seconds": 0}, "deadline": "2020-01-01T00:00:00+02:00"},
    )
    error = _refusal(response, 422, "invalid_request")
    assert error["message"].startswith("deadline 2019-12-31 22:00:00 UTC has passed"), error
    assert "on the service's clock" in error["message"], error
    assert error["details"][0]["loc"] == ["body", "deadline"], error
    assert client.get("/v1/jobs").json()["items"] == before
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    taken = client.post(
        "/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}, "deadline": soon}
    )
    assert taken.status_code == 202, taken.text


# -- requests refused cleanly ------------------------------------------------------------

JSON_LIMIT = 4 * 1024 * 1024  # LONGPLAY_MAX_JSON_BYTES' default
UPLOAD_LIMIT = 9 * 1024 * 1024  # the stack's LONGPLAY_MAX_UPLOAD_BYTES, and 1 MiB of form


def _refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error a response carries, in the API's one shape, after checking its status."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = dict(response.json()["error"])
    assert error["code"] == code, error
    return error


def _headers_only(
    stack: Stack, method: str, path: str, length: int, headers: dict[str, str]
) -> httpx.Response:
    """What the API answers a request that declares a body of ``length`` bytes and
    sends none of it: only an answer given before reading the body comes back (in
    15 s). A client that sent the body could see the connection reset under it."""
    url = httpx.URL(stack.api_url)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=15)
    try:
        connection.putrequest(method, path)
        for name, value in {**headers, "Content-Length": str(length)}.items():
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/collections"), ("POST", "/v1/templates"), ("PUT", "/v1/templates/notes")],
)
def test_every_json_body_has_the_json_limit(stack: Stack, method: str, path: str) -> None:
    """Bodies FastAPI parsed were read whole, whatever their size (this request
    waited for its body), then refused for a field too long (422)."""
    headers = {"Authorization": f"Bearer {stack.key('alice')}", "Content-Type": "application/json"}
    response = _headers_only(stack, method, path, JSON_LIMIT + 1, headers)
    assert "LONGPLAY_MAX_JSON_BYTES" in _refusal(response, 413, "too_large")["message"]


def test_an_upload_over_the_limit_is_413_in_the_error_shape(stack: Stack) -> None:
    """Starlette's limiter answered a plain-text 413 of its own. Whether the body or
    the file in it is found too large, the refusal names the limit the operator set:
    a body over it named that and the 1 MiB allowed for the form around the file."""
    headers = {
        "Authorization": f"Bearer {stack.key('alice')}",
        "Content-Type": "multipart/form-data; boundary=b",
    }
    limit = UPLOAD_LIMIT - 1024 * 1024
    told = f"an upload (LONGPLAY_MAX_UPLOAD_BYTES) may have at most {limit / 2**20:g} MiB ({limit}"
    too_big = _headers_only(stack, "POST", "/v1/artifacts", UPLOAD_LIMIT + 1, headers)
    assert told in _refusal(too_big, 413, "too_large")["message"]
    just_over = stack.client().post(
        "/v1/artifacts", files={"file": ("a.bin", b"\0" * (UPLOAD_LIMIT - 1024 * 1024 + 1))}
    )
    assert told in _refusal(just_over, 413, "too_large")["message"]
    # The dashboard's forms say so as a page (it was a 500).
    browser = signed_in_browser(stack, "alice")
    csrf = csrf_of(browser.get("/submit/convert").text)
    page = browser.post(
        "/submit/convert",
        data={"csrf": csrf},
        files={"file": ("a.wav", b"\0" * (UPLOAD_LIMIT - 1024 * 1024 + 1), "audio/wav")},
    )
    assert page.status_code == 413 and "<h1>Too large</h1>" in page.text, page.text[-2000:]
    assert told in page.text
    no_file = stack.client().post("/v1/artifacts", files={"file": (None, "text, no file")})
    assert _refusal(no_file, 422, "invalid_request")["details"][0]["loc"] == ["body", "file"]
    other = stack.client().post("/v1/artifacts", files={"other": ("a.bin", b"x")})
    assert _refusal(other, 422, "invalid_request")["details"][0]["loc"] == ["body", "other"]


def test_a_number_too_long_to_read_is_invalid_json(stack: Stack) -> None:
    """Python reads integers of at most 4300 digits: a longer one was a 500."""
    client = stack.client()
    number = "1" * 5000
    body = f'{{"kind": "sleep", "params": {{"seconds": {number}}}}}'
    sent = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    error = _refusal(sent, 422, "invalid_request")
    assert "more than 4300 digits" in error["message"]
    assert [(d["loc"], d["type"]) for d in error["details"]] == [(["body"], "json_invalid")]
    form = client.post(
        "/v1/jobs",
        data={"kind": "sleep", "params": f'{{"seconds": {number}}}'},
        files={"file": ("a.txt", b"x", "text/plain")},
    )
    assert _refusal(form, 422, "invalid_request")["details"][0]["loc"] == ["body", "params"]


@pytest.mark.parametrize(
    "value", ["bytes=" + "1" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 20]
)
def test_a_range_with_a_position_too_long_is_ignored(
    stack: Stack, artifact: dict[str, Any], value: str
) -> None:
    """More than 4300 digits was a 500."""
    response = _get(stack, artifact, Range=value)
    assert response.status_code == 200
    assert response.content == BODY


def test_last_event_id_must_be_an_event_id(stack: Stack) -> None:
    """Redis refused these mid-stream: an empty 200 whose stream broke, and a stall
    of the process's shared read of every followed stream."""
    client = stack.client()
    job = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}}).json()
    stage = {"kind": "sleep", "params": {"seconds": 0}}
    flow = client.post("/v1/flows", json={"stages": {"only": stage}}).json()
    largest = 2**64 - 1
    for value in ("abc", "1-", "-1", "1-2-3", "9" * 21, f"{largest + 1}-0", f"{largest}-{largest}"):
        for path in (f"/v1/jobs/{job['id']}/events", f"/v1/flows/{flow['id']}/events"):
            response = client.get(path, headers={"Last-Event-ID": value})
            error = _refusal(response, 422, "invalid_request")
            assert "Last-Event-ID" in error["message"], value
            assert error["details"][0]["loc"] == ["header", "last-event-id"]
    wait_for_status(client, job["id"], {"completed"})
    # An entry id, a bare millisecond time, or none: the events after it.
    path = f"/v1/jobs/{job['id']}/events"
    for resume in ("0-0", "0", ""):
        with client.stream("GET", path, headers={"Last-Event-ID": resume}) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data:")]
        assert json.loads(lines[-1][5:])["type"] == "completed", resume
    # One past the ended stream's last event: nothing more will come.
    assert client.get(path, headers={"Last-Event-ID": f"{largest}-0"}).status_code == 204


def test_media_types_are_case_insensitive(stack: Stack) -> None:
    client = stack.client()
    body = json.dumps({"kind": "sleep", "params": {"seconds": 0}})
    for content_type in ("Application/JSON", "APPLICATION/json; Charset=UTF-8"):
        sent = client.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
        assert sent.status_code == 202, (content_type, sent.text)


def test_a_form_takes_params_as_a_file_and_refuses_a_field_it_does_not_have(
    stack: Stack,
) -> None:
    """``curl -F params=@options.json`` sends params as a file part, which was ignored:
    the job ran on its defaults. A misspelt field was ignored too, where JSON refuses it."""
    client = stack.client()
    options = ("options.json", b'{"seconds": 0.1, "text": "from a file"}', "application/json")
    sent = client.post("/v1/jobs", data={"kind": "sleep"}, files={"params": options})
    assert sent.status_code == 202, sent.text
    assert sent.json()["params"]["text"] == "from a file"

    misspelt = client.post(
        "/v1/jobs",
        data={"kind": "sleep", "param": '{"seconds": 0}'},
        files={"params": options},
    )
    error = _refusal(misspelt, 422, "invalid_request")
    assert error["message"].startswith("param: unknown field; a submission's fields are ")
    assert error["details"][0]["loc"] == ["body", "param"]


def test_params_in_a_form_are_held_to_their_types_as_in_a_json_body(stack: Stack) -> None:
    """``params`` is JSON in a form too: ``"5"`` is not a number there either (it was
    taken, converted, where a JSON body refuses it), and an integer is a number."""
    client = stack.client()
    for params, loc in (({"ticks": "5"}, "ticks"), ({"text": 5}, "text")):
        for sent in (
            client.post("/v1/jobs", json={"kind": "sleep", "params": params}),
            client.post(
                "/v1/jobs", files={"kind": (None, "sleep"), "params": (None, json.dumps(params))}
            ),
        ):
            error = _refusal(sent, 422, "invalid_params")
            assert error["details"][0]["loc"] == ["body", "params", loc], error
    taken = client.post(
        "/v1/jobs", files={"kind": (None, "sleep"), "params": (None, '{"seconds": 0}')}
    )
    assert taken.status_code == 202, taken.text


def test_a_nul_character_is_refused_not_a_crash(stack: Stack) -> None:
    """PostgreSQL stores no NUL in a text: psycopg's DataError was a 500 there, while
    SQLite stored it. A JSON body is refused at the door, naming where; a path, a
    query or a form field by the database's refusal (PostgreSQL), or by not naming
    anything that exists (SQLite)."""
    client = stack.client("nul")
    for path, body, loc in (
        ("/v1/collections", {"name": "a\0b"}, ["body", "name"]),
        ("/v1/jobs", {"kind": "sleep", "inputs": ["x", "a\0"]}, ["body", "inputs", 1]),
        ("/v1/jobs", {"kind": "sleep", "params": {"text": "\0"}}, ["body", "params", "text"]),
        ("/v1/templates", {"name": "t", "sections": [{"a\0": 1}]}, ["body", "sections", 0, "a\0"]),
    ):
        error = _refusal(client.post(path, json=body), 422, "invalid_request")
        assert [(d["loc"], d["type"]) for d in error["details"]] == [(loc, "nul_character")]
        assert "NUL" in error["message"]
    form = client.post(
        "/v1/jobs",
        data={"kind": "sleep", "params": '{"text": "a\\u0000"}'},
        files={"file": ("a.txt", b"x", "text/plain")},
    )
    error = _refusal(form, 422, "invalid_request")
    assert error["details"][0]["loc"] == ["body", "params", "text"]
    assert client.get("/v1/collections").json()["items"] == []
    assert client.get("/v1/jobs").json()["items"] == []

    cursor = _refusal(client.get("/v1/jobs", params={"cursor": "a\0b"}), 422, "invalid_request")
    assert cursor["details"][0]["loc"] == ["query", "cursor"]  # not a cursor's form
    on_postgres = stack.database_kind == "postgresql"
    for response in (
        client.get("/v1/jobs/job_%00x"),
        client.get("/v1/artifacts/art_%00x/content"),
        client.post(
            "/v1/jobs",
            data={"kind": "sleep", "params": "{}", "inputs": "art_\0x"},
            files={"file": ("a.txt", b"x", "text/plain")},
        ),
    ):
        if on_postgres or response.status_code == 422:
            error = _refusal(response, 422, "invalid_request")
        else:
            error = _refusal(response, 404, "not_found")
        assert "SELECT" not in error["message"], error
        if on_postgres:
            assert "NUL" in error["message"], error
    browser = signed_in_browser(stack, "nul")  # the dashboard's page of such an id
    page = browser.get("/jobs/job_%00x")
    browser.close()
    assert page.status_code == (422 if on_postgres else 404), page.text
    assert page.headers["content-type"].startswith("text/html")
    assert ("NUL character" in page.text) == on_postgres, page.text


def test_a_wrong_key_is_refused_before_its_files_are_read(stack: Stack) -> None:
    """Files were read, staged and probed first: a wrong key got their answer (422
    undecodable_audio, 413) instead of a 401."""
    wrong = httpx.Client(base_url=stack.api_url, headers={"Authorization": "Bearer lp_wrong"})
    upload = {"Authorization": "Bearer lp_wrong", "Content-Type": "multipart/form-data; boundary=b"}
    for response in (
        wrong.post(
            "/v1/jobs",
            data={"kind": "convert", "params": '{"format": "mp3"}'},
            files={"file": ("a.wav", b"not audio", "audio/wav")},
        ),
        _headers_only(stack, "POST", "/v1/artifacts", UPLOAD_LIMIT + 1, upload),
        wrong.post("/v1/collections/col_x/documents", files={"file": ("a.txt", b"x")}),
    ):
        assert "not valid" in _refusal(response, 401, "unauthorized")["message"]
    assert not list((stack.data_dir / "files" / ".incoming").glob("*"))


# -- bad input gets a clear answer ---------------------------------------------------


def _form_post(
    stack: Stack, path: str, content: bytes, boundary: str | None = "b"
) -> httpx.Response:
    """``content`` posted as it is, as multipart with ``boundary`` (None: without one)."""
    media_type = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
    return stack.client().post(path, content=content, headers={"Content-Type": media_type})


def test_a_key_written_twice_is_refused_not_taken_as_its_last(stack: Stack) -> None:
    """``{"kind": "sleep", "kind": "synthesize"}`` ran whichever came last, where a
    proxy or a log that read the first saw another request."""
    client = stack.client("twice")
    for written, key, loc in (
        ('{"kind": "sleep", "kind": "sleep", "params": {}}', "kind", ["body"]),
        ('{"kind": "sleep", "params": {"seconds": 0, "seconds": 600}}', "seconds", ["body"]),
    ):
        response = client.post(
            "/v1/jobs", content=written, headers={"Content-Type": "application/json"}
        )
        error = _refusal(response, 422, "invalid_request")
        assert f"has the key '{key}' twice in one object" in error["message"], error
        assert error["details"][0]["loc"] == loc, error
    as_form = client.post(
        "/v1/jobs", files={"kind": (None, "sleep"), "params": (None, '{"a": 1, "a": 2}')}
    )
    assert _refusal(as_form, 422, "invalid_request")["details"][0]["loc"] == ["body", "params"]
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize("written", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_are_refused_naming_where(stack: Stack, written: str) -> None:
    """Python's parser takes them: a rate of NaN was 'less than or equal to 2', and a
    NaN where a number may be null was stored as null."""
    client = stack.client("nan")
    as_json = client.post(
        "/v1/jobs",
        content=f'{{"kind": "sleep", "params": {{"text": "hi", "seconds": [{written}]}}}}',
        headers={"Content-Type": "application/json"},
    )
    as_form = client.post(
        "/v1/jobs", files={"kind": (None, "sleep"), "params": (None, f'{{"seconds": {written}}}')}
    )
    for response, loc in (
        (as_json, ["body", "params", "seconds", 0]),
        (as_form, ["body", "params", "seconds"]),
    ):
        error = _refusal(response, 422, "invalid_request")
        assert "JSON has no NaN or Infinity" in error["message"], error
        assert written in error["message"], error
        assert error["details"][0]["loc"] == loc, error
    assert client.get("/v1/jobs").json()["items"] == []


def test_a_submission_without_a_kind_says_it_is_missing(stack: Stack) -> None:
    """All three said 'unknown job kind None'."""
    client = stack.client()
    for response in (
        client.post("/v1/jobs", json={"params": {}}),
        client.post("/v1/jobs", files={"params": (None, "{}")}),
    ):
        error = _refusal(response, 422, "invalid_request")
        assert error["message"].startswith("kind missing"), error
        assert [(d["loc"], d["type"]) for d in error["details"]] == [(["body", "kind"], "missing")]
    cut = _form_post(
        stack, "/v1/jobs", b'--b\r\nContent-Disposition: form-data; name="kind"\r\n\r\nsle'
    )
    error = _refusal(cut, 422, "invalid_request")
    assert "ended before its closing boundary" in error["message"], error
    assert error["details"][0]["loc"] == ["body"]


@pytest.mark.parametrize(
    ("body", "said", "loc"),
    [
        (b'\xef\xbb\xbf{"kind": "sleep"}', "byte order mark", ["body"]),
        ('{"kind": "sleep"}'.encode("utf-16"), "not UTF-8", ["body"]),
        (b'{"kind": "sleep", "params": {"text": "\\ud800"}}', "lone surrogate", None),
    ],
    ids=["bom", "utf-16", "lone-surrogate"],
)
def test_json_that_only_python_reads_is_refused_clearly(
    stack: Stack, body: bytes, said: str, loc: list[str] | None
) -> None:
    """pydantic's second reading refused these with an empty field name:
    ': Invalid JSON: expected value at line 1 column 1'."""
    sent = stack.client().post(
        "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
    )
    error = _refusal(sent, 422, "invalid_request")
    assert said in error["message"] and not error["message"].startswith(":"), error
    if loc is None:  # where it is
        assert error["details"][0]["loc"] == ["body", "params", "text"], error
    else:
        assert error["message"].startswith("body is not valid JSON: "), error


def test_a_broken_multipart_body_is_a_422_that_says_why(stack: Stack) -> None:
    """Each was a 400 bad_request, a code the API does not list, saying what
    Starlette's parser says."""
    no_name = b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"
    for path in ("/v1/jobs", "/v1/artifacts"):
        for response, said in (
            (_form_post(stack, path, b"--b\r\n\r\nx\r\n--b--\r\n", boundary=None), "no boundary"),
            (_form_post(stack, path, b"garbage, not multipart at all"), "not valid multipart"),
            (_form_post(stack, path, no_name), "a part has no name"),
        ):
            error = _refusal(response, 422, "invalid_request")
            assert said in error["message"], (path, error)
            assert error["details"][0]["loc"] == ["body"], error


def test_a_file_part_without_a_file_name_says_so(stack: Stack, tmp_path: Path) -> None:
    """A part named file with no filename= is a text field to Starlette: it was 'at most
    1024 bytes' (413), 'send the file as a part named file', or '0 input files'."""
    client = stack.client("nameless")
    data = _mp3(tmp_path)
    for response in (
        client.post("/v1/artifacts", files={"file": ("", data)}),
        client.post("/v1/artifacts", files={"file": ("", b"short")}),
        client.post("/v1/jobs", data={"kind": "convert"}, files={"file": ("", data)}),
    ):
        error = _refusal(response, 422, "invalid_request")
        assert "has no file name" in error["message"], error
        assert "curl -F file=@PATH" in error["message"], error
        assert error["details"][0]["loc"] == ["body", "file"], error
    assert client.get("/v1/jobs").json()["items"] == []


def test_a_form_text_field_not_in_utf8_is_refused(stack: Stack) -> None:
    """Starlette read it as Latin-1: the job's text was 'ÿ'; in JSON the same is refused."""
    client = stack.client("latin")
    sent = client.post(
        "/v1/jobs", files={"kind": (None, "sleep"), "params": (None, b'{"text": "\xff"}')}
    )
    error = _refusal(sent, 422, "invalid_request")
    assert error["message"].startswith("params is not UTF-8 text"), error
    assert error["details"][0]["loc"] == ["body", "params"], error
    assert client.get("/v1/jobs").json()["items"] == []


def test_a_validators_refusal_has_no_pydantic_prefix(stack: Stack) -> None:
    sent = stack.client().post(
        "/v1/jobs", json={"kind": "convert", "params": {"format": "wav", "bitrate": 128}}
    )
    error = _refusal(sent, 422, "invalid_params")
    assert error["message"] == "body.params: bitrate applies to mp3 and ogg, not wav", error
    assert error["details"][0]["message"] == "bitrate applies to mp3 and ogg, not wav", error


def test_an_encoded_slash_in_an_id_reaches_no_other_route(stack: Stack) -> None:
    """The server decodes %2F before routing: the job 'job_…%2Fattempts' was the
    job's attempts (200, a list)."""
    client = stack.client()
    job = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}}).json()
    assert client.get(f"/v1/jobs/{job['id']}/attempts").status_code == 200
    for slash in ("%2F", "%2f"):
        response = client.get(f"/v1/jobs/{job['id']}{slash}attempts")
        assert "encoded slash" in _refusal(response, 404, "not_found")["message"]


def test_an_id_of_thousands_of_characters_is_not_echoed_whole(stack: Stack) -> None:
    """A 404 for a made-up id of 5,000 characters said it back whole; its start says
    which id, at a size a log line or an error banner can show."""
    client = stack.client()
    job, flow = "job_" + "x" * 5000, "flow_" + "y" * 5000
    for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/events", f"/v1/flows/{flow}"):
        message = _refusal(client.get(path), 404, "not_found")["message"]
        assert len(message) < 200 and message.endswith("…"), message
        assert message.startswith(("no job job_xxxx", "no flow flow_yyyy")), message


def test_an_unused_upload_is_deleted_with_its_file_and_a_used_one_is_kept(
    stack: Stack, tmp_path: Path
) -> None:
    """An upload could only wait out its retention (a day): a 2 GB file nobody would
    use held the disk that long."""
    client = stack.client("deleter")
    spare = client.post("/v1/artifacts", files={"file": ("spare.txt", b"spare")}).json()
    [stored] = [p for p in (stack.data_dir / "files").rglob("*") if spare["id"] in p.name]
    assert stack.client("stranger").delete(f"/v1/artifacts/{spare['id']}").status_code == 404
    assert client.delete(f"/v1/artifacts/{spare['id']}").status_code == 204
    assert client.get(f"/v1/artifacts/{spare['id']}").status_code == 404
    assert not stored.exists()
    assert client.delete(f"/v1/artifacts/{spare['id']}").status_code == 404

    used = client.post("/v1/artifacts", files={"file": ("used.txt", b"used")}).json()
    job = client.post(
        "/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}, "inputs": [used["id"]]}
    ).json()
    done = wait_for_status(client, job["id"], {"completed"})
    kept = client.delete(f"/v1/artifacts/{used['id']}")
    assert kept.status_code == 409, kept.text
    assert f"job {job['id']} names artifact {used['id']}" in kept.json()["error"]["message"]
    [output] = done["outputs"]
    made = client.delete(f"/v1/artifacts/{output['id']}")
    assert made.status_code == 409 and "deleting that job" in made.json()["error"]["message"]
    # Once no job names it, it may go; through the SDK the same.
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.delete(f"/v1/artifacts/{used['id']}").status_code == 204
    note = tmp_path / "note.txt"
    note.write_text("a note")
    with Client(stack.api_url, stack.key("deleter")) as sdk:
        uploaded = sdk.upload(note)
        sdk.delete_artifact(uploaded.id)
        assert client.get(f"/v1/artifacts/{uploaded.id}").status_code == 404
