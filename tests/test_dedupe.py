"""Deduplication by content: ``dedupe`` gets an earlier completed job back when kind,
parameters and input bytes are the same, and stores nothing new."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
from conftest import Stack, wait_for_status
from sqlalchemy import func, select

from longplay.store.db import session_scope
from longplay.store.models import Artifact, Job


def post(
    client: httpx.Client, payload: bytes, *, text: str = "x", dedupe: bool = True
) -> httpx.Response:
    form: dict[str, Any] = {"kind": "sleep", "params": json.dumps({"seconds": 0.1, "text": text})}
    if dedupe:
        form["dedupe"] = "true"
    return client.post("/v1/jobs", data=form, files={"file": ("in.txt", payload, "text/plain")})


def rows(stack: Stack, model: Any, *where: Any) -> int:
    with session_scope(stack.database_url) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def stored_files(stack: Stack) -> set[str]:
    return {p.name for p in (stack.data_dir / "files").iterdir() if p.is_file()}


def test_same_content_returns_the_completed_job(stack: Stack) -> None:
    client = stack.client("dedupe-dora")
    payload = f"the same bytes {uuid.uuid4()}".encode()
    digest = hashlib.sha256(payload).hexdigest()
    first = post(client, payload)
    assert first.status_code == 202, first.text
    assert "longplay-deduplicated" not in first.headers
    done = wait_for_status(client, first.json()["id"], {"completed"})
    key = _content_key(stack, done["id"])
    assert key and len(key) == 64
    files_before = stored_files(stack)

    again = post(client, payload)
    assert again.status_code == 200, again.text
    assert again.headers["longplay-deduplicated"] == "true"
    assert again.json()["id"] == done["id"] and again.json()["status"] == "completed"
    assert [o["id"] for o in again.json()["outputs"]] == [o["id"] for o in done["outputs"]]
    assert rows(stack, Job, Job.content_key == key) == 1, "no new job row"
    assert rows(stack, Artifact, Artifact.sha256 == digest) == 1, "the upload was discarded"
    assert stored_files(stack) == files_before

    # The same bytes uploaded on their own and named by id: the same content.
    upload = client.post("/v1/artifacts", files={"file": ("other.txt", payload, "text/plain")})
    by_id = client.post(
        "/v1/jobs",
        json={
            "kind": "sleep",
            "params": {"seconds": 0.1, "text": "x"},
            "inputs": [upload.json()["id"]],
            "dedupe": True,
        },
    )
    assert by_id.status_code == 200 and by_id.json()["id"] == done["id"]

    # Without dedupe the job runs again, and stores its key for later matches.
    plain = post(client, payload, dedupe=False)
    assert plain.status_code == 202 and plain.json()["id"] != done["id"]
    assert _content_key(stack, plain.json()["id"]) == key


def test_other_params_or_owner_make_a_new_job(stack: Stack) -> None:
    alice, bob = stack.client("dedupe-erin"), stack.client("dedupe-fred")
    payload = f"shared bytes {uuid.uuid4()}".encode()
    first = post(alice, payload)
    wait_for_status(alice, first.json()["id"], {"completed"})

    other_params = post(alice, payload, text="y")
    assert other_params.status_code == 202
    assert other_params.json()["id"] != first.json()["id"]
    assert _content_key(stack, other_params.json()["id"]) != _content_key(stack, first.json()["id"])

    other_owner = post(bob, payload)
    assert other_owner.status_code == 202, "another owner's identical job is never reused"
    assert other_owner.json()["id"] != first.json()["id"]
    assert _content_key(stack, other_owner.json()["id"]) == _content_key(stack, first.json()["id"])


def test_a_running_twin_is_not_reused(stack: Stack) -> None:
    client = stack.client("dedupe-gina")
    payload = f"slow bytes {uuid.uuid4()}".encode()
    form = {"kind": "sleep", "params": json.dumps({"seconds": 2}), "dedupe": "true"}
    first = client.post("/v1/jobs", data=form, files={"file": ("a.txt", payload)})
    second = client.post("/v1/jobs", data=form, files={"file": ("a.txt", payload)})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    for job in (first, second):
        wait_for_status(client, job.json()["id"], {"completed"})


def _content_key(stack: Stack, job_id: str) -> str | None:
    with session_scope(stack.database_url) as session:
        return session.scalar(select(Job.content_key).where(Job.id == job_id))
