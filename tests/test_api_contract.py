"""The API's contract through HTTP, against a real API and worker: the OpenAPI document
(checked by a real validator), the one error shape on every status, submissions
refused at the door with the field named and nothing stored, and the JSON edges (a
depth limit, a body limit of its own). Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Stack, short_wav, submit, wait_for_status
from openapi_spec_validator import validate

ERROR_REF = "#/components/schemas/ErrorBody"
HEALTH_PATHS = ("/healthz", "/readyz")
DEEP = 1000


def error_of(
    response: httpx.Response, status: int, code: str, *, retryable: bool = False
) -> dict[str, Any]:
    """The error a response carries, after checking its status, shape, code and
    whether it says the same request may pass later (``retryable``, always there)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = dict(body["error"])
    assert {"code", "message", "retryable"} <= set(error), error
    assert set(error) <= {"code", "message", "retryable", "details"}, error
    assert error["code"] == code, error
    assert error["retryable"] is retryable, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def locs(error: dict[str, Any]) -> list[list[Any]]:
    return [d["loc"] for d in error.get("details", [])]


def nested(levels: int) -> str:
    """JSON text of arrays ``levels`` deep (too deep for ``json.dumps`` to write)."""
    return "[" * levels + "1" + "]" * levels


@pytest.fixture
def owner(stack: Stack, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A client of an owner of its own, who has submitted nothing yet."""
    with stack.client(f"contract-{request.node.name}"[:60]) as client:
        yield client


def stored_files(stack: Stack) -> set[str]:
    return {str(p) for p in (stack.data_dir / "files").rglob("*") if p.is_file()}


# -- the document ---------------------------------------------------------------------


def test_openapi_document_is_valid_and_complete(stack: Stack) -> None:
    spec = httpx.get(f"{stack.api_url}/openapi.json").json()
    validate(spec)  # openapi-spec-validator: every $ref resolves, every shape is OpenAPI's
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    error_info = schemas["ErrorInfo"]
    assert {"code", "message", "retryable"} <= set(error_info["required"]), error_info
    assert error_info["properties"]["retryable"]["type"] == "boolean", error_info
    union = schemas["JobCreate"]
    mapping = union["discriminator"]["mapping"]
    assert {"convert", "transcribe", "synthesize", "translate", "dub", "sleep"} <= set(mapping)
    dub = schemas[mapping["dub"].rsplit("/", 1)[1]]
    assert dub["properties"]["params"]["$ref"].endswith("/DubParams")
    assert "params" in dub["required"], "dub needs target_language"
    assert "target_language" in schemas["DubParams"]["required"]
    sleep = schemas[mapping["sleep"].rsplit("/", 1)[1]]  # a plugin's kind is there too
    assert sleep["properties"]["params"]["$ref"].endswith("/SleepParams")
    # A plugin's params nest a model named as one of the API's: both are documented.
    assert {"code", "message"} <= set(schemas["ErrorPublic"]["properties"])
    mistakes = schemas[mapping["mistakes"].rsplit("/", 1)[1]]
    params = schemas[mistakes["properties"]["params"]["$ref"].rsplit("/", 1)[1]]
    assert params["properties"]["error"]["$ref"].endswith("/ErrorPublicInParams"), params
    assert set(schemas["ErrorPublicInParams"]["properties"]) == {"severity"}
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"].endswith("/JobCreate")
    assert body["multipart/form-data"]["schema"]["$ref"].endswith("/JobCreateForm")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            if operation.get("security"):
                assert "401" in responses, where
            if "{" in path:
                assert "404" in responses, where
            # Deleting a job (or a thing work runs on) can conflict; a template cannot:
            # the jobs that used it keep their own copy.
            deletes = method == "delete" and not path.startswith("/v1/templates")
            if (path.endswith(("/cancel", "/retry")) and "{" in path) or deletes:
                assert "409" in responses, where
            for status, response in responses.items():
                # A health check's 503 is its report, not an error.
                if status.startswith(("4", "5")) and path not in HEALTH_PATHS:
                    schema = response.get("content", {}).get("application/json", {}).get("schema")
                    assert schema == {"$ref": ERROR_REF}, (where, status)
    for path in HEALTH_PATHS:
        assert "503" in spec["paths"][path]["get"]["responses"], path


def test_docs_page_needs_no_internet(stack: Stack) -> None:
    page = httpx.get(f"{stack.api_url}/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text, "every asset is served here"
    scripts = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    assert scripts, page.text
    for script in scripts:
        asset = httpx.get(f"{stack.api_url}{script}")
        assert asset.status_code == 200 and len(asset.content) > 100_000, script


# -- one error shape ------------------------------------------------------------------


def test_every_error_has_the_one_shape(stack: Stack, owner: httpx.Client) -> None:
    api = stack.api_url
    missing = error_of(httpx.get(f"{api}/v1/jobs"), 401, "unauthorized")
    assert "Bearer" in missing["message"]
    bad_key = httpx.get(f"{api}/v1/jobs", headers={"Authorization": "Bearer lp_nope"})
    assert "not valid" in error_of(bad_key, 401, "unauthorized")["message"]
    assert bad_key.headers["WWW-Authenticate"] == "Bearer"
    error_of(owner.get("/v1/jobs/job_nope"), 404, "not_found")
    error_of(owner.get("/v1/nothing-here"), 404, "not_found")
    error_of(owner.put("/v1/jobs"), 405, "method_not_allowed")
    error_of(owner.get("/v1/jobs", params={"all_owners": "true"}), 403, "forbidden")
    limit = error_of(owner.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")
    assert locs(limit) == [["query", "limit"]]
    assert set(limit["details"][0]) == {"loc", "message", "type"}
    error_of(owner.get("/v1/jobs", params={"cursor": "null"}), 422, "invalid_request")
    done = submit(owner, params={"seconds": 0})
    wait_for_status(owner, done["id"], {"completed"})
    error_of(owner.post(f"/v1/jobs/{done['id']}/cancel"), 409, "conflict")
    error_of(owner.post(f"/v1/jobs/{done['id']}/retry"), 409, "conflict")
    too_many = owner.post("/v1/jobs/retry", json={"ids": []})
    assert locs(error_of(too_many, 422, "invalid_request")) == [["body", "ids"]]
    key = owner.post("/v1/jobs", json={"kind": "sleep"}, headers={"Idempotency-Key": "k" * 201})
    assert locs(error_of(key, 422, "invalid_request")) == [["header", "idempotency-key"]]


def test_retryable_is_true_only_for_what_may_pass_later() -> None:
    """An error says ``retryable`` whether or not its raiser did: true for a limit
    (429), a part that does not answer (503) or a full disk (507), false otherwise,
    unless told."""
    from longplay.api.errors import CODES, error_body

    said = {code: error_body(code, "x")["error"]["retryable"] for code in CODES.values()}
    assert {code for code, retryable in said.items() if retryable} == {
        "rate_limited",
        "unavailable",
        "storage_full",
    }
    assert error_body("engine_busy", "x", retryable=True)["error"]["retryable"] is True
    assert error_body("unavailable", "x", retryable=False)["error"]["retryable"] is False


# -- refused at the door ---------------------------------------------------------------


def test_bad_submissions_are_refused_naming_the_field(stack: Stack, owner: httpx.Client) -> None:
    before = stored_files(stack)
    unknown = error_of(owner.post("/v1/jobs", json={"kind": "nope"}), 422, "invalid_request")
    assert locs(unknown) == [["body", "kind"]] and "unknown job kind" in unknown["message"]
    empty_kind = owner.post("/v1/jobs", data={"kind": ""}, files={"file": ("a.txt", b"x")})
    assert locs(error_of(empty_kind, 422, "invalid_request")) == [["body", "kind"]]
    extra = owner.post("/v1/jobs", json={"kind": "sleep", "colour": "red"})
    assert locs(error_of(extra, 422, "invalid_request")) == [["body", "colour"]]
    seconds = owner.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": -1}})
    assert locs(error_of(seconds, 422, "invalid_params")) == [["body", "params", "seconds"]]
    # `sleep` takes its params as a plain BaseModel would (extra names dropped): a
    # misspelt one is refused all the same, as a kind's author means it.
    typo = owner.post("/v1/jobs", json={"kind": "sleep", "params": {"secnds": 0}})
    assert locs(error_of(typo, 422, "invalid_params")) == [["body", "params", "secnds"]]
    # Beside a misspelt name, a value of the wrong type is named in the same answer.
    both = owner.post("/v1/jobs", json={"kind": "sleep", "params": {"secnds": 0, "ticks": "x"}})
    said = error_of(both, 422, "invalid_params")
    assert locs(said) == [["body", "params", "secnds"], ["body", "params", "ticks"]]
    assert said["message"].startswith("sleep has no parameter 'secnds'")
    # A built-in kind (its model forbids extras itself) says it in the same words; the
    # parameter it needs and was not given is named too.
    built_in = owner.post("/v1/jobs", json={"kind": "translate", "params": {"languge": "de"}})
    said = error_of(built_in, 422, "invalid_params")
    assert locs(said) == [["body", "params", "languge"], ["body", "params", "target_language"]]
    assert said["message"].startswith("translate has no parameter 'languge'; its parameters: ")
    assert "target_language" in said["message"]
    # A misspelt name inside a nested model too (it ran on the default before).
    nested = owner.post(
        "/v1/jobs",
        json={"kind": "mistakes", "params": {"mistake": "keys", "label": {"txt": "x"}}},
    )
    said = error_of(nested, 422, "invalid_params")
    assert locs(said) == [["body", "params", "label", "txt"]]
    assert said["message"] == "mistakes has no parameter 'label.txt'; label takes: text"
    no_target = owner.post("/v1/jobs", json={"kind": "translate", "params": {"text": "Hi"}})
    assert locs(error_of(no_target, 422, "invalid_params")) == [
        ["body", "params", "target_language"]
    ]
    missing = owner.post("/v1/jobs", json={"kind": "convert", "inputs": ["art_nope"]})
    assert locs(error_of(missing, 422, "invalid_request")) == [["body", "inputs"]]
    no_input = owner.post("/v1/jobs", json={"kind": "convert"})
    assert locs(error_of(no_input, 422, "invalid_request")) == [["body", "inputs"]]
    rate = owner.post("/v1/jobs", json={"kind": "convert", "params": {"format": "flac"}})
    assert ["body", "params", "format"] in locs(error_of(rate, 422, "invalid_params"))
    not_audio = owner.post(
        "/v1/jobs",
        data={"kind": "transcribe"},
        files={"file": ("notes.txt", b"not speech", "text/plain")},
    )
    refused = error_of(not_audio, 422, "invalid_input")
    assert locs(refused) == [["body", "inputs", 0]] and "notes.txt" in refused["message"]
    both = owner.post(
        "/v1/jobs",
        data={"kind": "translate", "params": json.dumps({"target_language": "de", "text": "Hi"})},
        files={"file": ("a.txt", b"Hello", "text/plain")},
    )
    assert locs(error_of(both, 422, "invalid_params")) == [["body", "params", "text"]]
    neither = owner.post(
        "/v1/jobs", json={"kind": "translate", "params": {"target_language": "de"}}
    )
    assert locs(error_of(neither, 422, "invalid_params")) == [["body", "params", "text"]]
    voice = owner.post(
        "/v1/jobs",
        data={"kind": "dub", "params": json.dumps({"target_language": "de", "voice": "nobody"})},
        files={"file": ("talk.wav", short_wav(), "audio/wav")},
    )
    refused = error_of(voice, 422, "invalid_params")
    assert locs(refused) == [["body", "params", "voice"]] and "joe" in refused["message"]
    for kind in ("convert", "transcribe", "dub", "transcribe-music"):
        claims_audio = owner.post(
            "/v1/jobs",
            data={
                "kind": kind,
                "params": json.dumps({"target_language": "de"} if kind == "dub" else {}),
            },
            files={"file": ("minutes.wav", b"Minutes of the meeting\n" * 9)},
        )
        refused = error_of(claims_audio, 422, "undecodable_audio")
        assert locs(refused) == [["body", "file", 0]], kind
        assert refused["message"].startswith("minutes.wav "), refused
        assert str(stack.data_dir) not in refused["message"]
    for kind, code, said in (
        ("summarize", "empty", "blank.txt is empty: there is no text to summarize"),
        ("synthesize", "invalid_input", "blank.txt has no words to speak"),
    ):
        blank = owner.post(
            "/v1/jobs", data={"kind": kind}, files={"file": ("blank.txt", b" \n\n", "text/plain")}
        )
        refused = error_of(blank, 422, code)
        assert locs(refused) == [["body", "file", 0]] and refused["message"] == said
    assert owner.get("/v1/jobs").json()["items"] == [], "nothing was stored"
    assert stored_files(stack) == before, "no upload of a refused submission is kept"


def test_synthesize_is_refused_at_the_door(stack: Stack, owner: httpx.Client) -> None:
    nothing = owner.post("/v1/jobs", json={"kind": "synthesize"})
    assert locs(error_of(nothing, 422, "invalid_params")) == [["body", "params", "text"]]
    voice = owner.post(
        "/v1/jobs", json={"kind": "synthesize", "params": {"text": "Hi", "voice": "x"}}
    )
    assert locs(error_of(voice, 422, "invalid_params")) == [["body", "params", "voice"]]
    both = owner.post(
        "/v1/jobs",
        data={"kind": "synthesize", "params": json.dumps({"text": "Hello there."})},
        files={"file": ("a.txt", b"Hello", "text/plain")},
    )
    assert locs(error_of(both, 422, "invalid_params")) == [["body", "params", "text"]]
    audio = owner.post(
        "/v1/jobs", data={"kind": "synthesize"}, files={"file": ("a.wav", b"RIFF", "audio/wav")}
    )
    assert locs(error_of(audio, 422, "invalid_input")) == [["body", "inputs", 0]]
    assert owner.get("/v1/jobs").json()["items"] == []


def test_what_only_running_finds_fails_typed(stack: Stack, owner: httpx.Client) -> None:
    """An input of no known type passes the door; decoding it fails the job, typed."""
    upload = owner.post("/v1/artifacts", files={"file": ("blob", b"\0" * 2048)})
    assert upload.status_code == 201 and upload.json()["media_type"] == "application/octet-stream"
    job = submit(owner, "convert", inputs=[upload.json()["id"]])
    failed = wait_for_status(owner, job["id"], {"failed", "completed"})
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "undecodable_audio", failed["error"]


# -- JSON edges -----------------------------------------------------------------------


def test_a_poller_holding_the_current_job_is_answered_304(
    stack: Stack, owner: httpx.Client
) -> None:
    """``GET /v1/jobs/{id}`` carries an ``ETag``; sent back in ``If-None-Match`` it
    gets an empty 304 until the job shows something new, then the job again."""
    job = submit(owner, params={"seconds": 0.1}, run_at="2099-01-01T00:00:00Z")
    first = owner.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.headers["cache-control"] == "private, no-cache"
    assert first.json()["status"] == "queued"
    assert owner.get(f"/v1/jobs/{job['id']}").headers["etag"] == etag, "nothing changed"

    same = owner.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert (same.status_code, same.content) == (304, b"")
    assert same.headers["etag"] == etag
    weak = owner.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304

    assert owner.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    changed = owner.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled"
    assert changed.headers["etag"] != etag
    # The tag is no key: another owner still gets a 404 however it is sent.
    with stack.client("contract-etag-stranger") as stranger:
        other = stranger.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": "*"})
        error_of(other, 404, "not_found")


def test_json_nested_too_deep_is_refused(stack: Stack, owner: httpx.Client) -> None:
    deep = f'{{"kind": "sleep", "params": {{"text": {nested(DEEP)}}}}}'
    body = owner.post("/v1/jobs", content=deep, headers={"Content-Type": "application/json"})
    too_deep = error_of(body, 422, "invalid_request")
    assert too_deep["details"][0]["type"] == "json_too_deep" and locs(too_deep) == [["body"]]
    just_over = f'{{"kind": "sleep", "params": {{"text": {nested(40)}}}}}'
    over = owner.post("/v1/jobs", content=just_over, headers={"Content-Type": "application/json"})
    error_of(over, 422, "invalid_request")
    form = owner.post(
        "/v1/jobs",
        data={"kind": "sleep", "params": f'{{"text": {nested(DEEP)}}}'},
        files={"file": ("a.txt", b"x", "text/plain")},
    )
    assert locs(error_of(form, 422, "invalid_request")) == [["body", "params"]]
    broken = owner.post(
        "/v1/jobs", data={"kind": "sleep", "params": "{"}, files={"file": ("a.txt", b"x")}
    )
    assert locs(error_of(broken, 422, "invalid_request")) == [["body", "params"]]
    assert owner.get("/v1/jobs").json()["items"] == []


def test_json_body_has_a_limit_of_its_own(stack: Stack, owner: httpx.Client) -> None:
    limit = 4 * 1024 * 1024  # LONGPLAY_MAX_JSON_BYTES' default; uploads may be larger
    big = json.dumps({"kind": "sleep", "params": {"text": "x" * limit}}).encode()
    sized = owner.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"})
    assert "LONGPLAY_MAX_JSON_BYTES" in error_of(sized, 413, "too_large")["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused once it runs past
        yield big[: len(big) // 2]
        yield big[len(big) // 2 :]

    streamed = owner.post(
        "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    error_of(streamed, 413, "too_large")
    ids = json.dumps({"ids": ["job_x" * 1_000_000]}).encode()
    many = owner.post("/v1/jobs/retry", content=ids, headers={"Content-Type": "application/json"})
    error_of(many, 413, "too_large")
    assert owner.get("/v1/jobs").json()["items"] == []


# -- the fuzzer -----------------------------------------------------------------------

FUZZ_EXAMPLES = 12
"""Examples per operation and phase: enough to cross every documented status, few
enough for about a minute per database on two cores."""


def test_schemathesis_finds_nothing(make_stack: Callable[[], Stack]) -> None:
    """Schemathesis against the live API, every check on, 0 failures.

    The API of a deployment of its own, with no worker: the contract is the API's, and
    the fuzzer's jobs would otherwise run real models for minutes on the shared stack's
    worker, holding up every test after this one."""
    stack = make_stack()
    stack.start_api()
    owner = "fuzzer"
    key = stack.key(owner)
    command = [
        str(Path(sys.executable).with_name("st")),
        f"--config-file={Path(__file__).with_name('schemathesis.toml')}",
        "run",
        f"{stack.api_url}/openapi.json",
        "--checks=all",
        f"--max-examples={FUZZ_EXAMPLES}",
        "--seed=1",
        "--workers=1",
        "--generation-deterministic",
        "--request-timeout=30",
        "--no-color",
        f"--header=Authorization: Bearer {key}",
        "--exclude-path=/v1/jobs/{job_id}/events",  # a stream until the job ends
        "--exclude-path=/v1/flows/{flow_id}/events",  # a stream until the flow ends
        "--exclude-path=/healthz",  # 503 by design with no worker: test_health_* cover it
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-12_000:] + run.stderr[-4_000:]
