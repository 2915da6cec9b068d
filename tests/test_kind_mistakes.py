"""Mistakes a plugin kind's author can make with progress details, ``ctx.state`` and
outputs: each ends the job at once and clearly (or not at all), never leaves it running,
never shows SQL to the job's owner, and leaves no file behind."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from conftest import Stack, submit, wait_for_status
from test_jobs_e2e import read_events

AT = "2024-05-06 07:08:09"


def stored_files(stack: Stack) -> set[str]:
    return {p.name for p in (stack.data_dir / "files").glob("art_*") if p.is_file()}


def test_details_that_are_not_json_are_kept_as_text(stack: Stack) -> None:
    client = stack.client()
    done = submit(client, "mistakes", params={"mistake": "details"})
    failed = submit(client, "mistakes", params={"mistake": "details", "fail": True})
    done = wait_for_status(client, done["id"], {"completed", "failed"}, timeout=15)
    assert done["status"] == "completed", done["error"]
    failed = wait_for_status(client, failed["id"], {"completed", "failed"}, timeout=15)
    assert failed["error"]["code"] == "asked_to_fail", failed["error"]
    assert failed["current_step"] == "mistake"
    assert failed["step_details"] == {"at": AT, "path": "/tmp", "done": 2, "total": 2}


def test_details_too_large_for_a_progress_event_fail_the_job_at_the_call(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, "mistakes", params={"mistake": "big_details"})
    events = stack.client().get(job["links"]["events"], timeout=15)
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=15)
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    error = failed["error"]
    assert error["code"] == "invalid_progress", error
    assert not error["retryable"]
    assert "'text'" in error["message"] and "16 KiB" in error["message"], error["message"]
    assert failed["step_details"] == {"words": 4, "done": 1, "total": 2}, "the last small details"
    assert "word word" not in events.text, "no event carried the large details"


def seen(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    [out] = [o for o in job["outputs"] if o["name"] == "seen.json"]
    return dict(json.loads(client.get(out["links"]["content"]).text))


def test_state_has_one_shape_with_a_retry_or_without(stack: Stack) -> None:
    client = stack.client()
    once = submit(client, "mistakes", params={"mistake": "keys"})
    retried = submit(client, "mistakes", params={"mistake": "keys", "retry": True})
    once = wait_for_status(client, once["id"], {"completed", "failed"}, timeout=20)
    retried = wait_for_status(client, retried["id"], {"completed", "failed"}, timeout=20)
    assert once["status"] == retried["status"] == "completed", (once["error"], retried["error"])
    assert retried["attempts"] == 2
    expected = {"keys": ["'1'", "'pair'"], "types": {"'1'": "str", "'pair'": "list"}}
    assert seen(client, once) == seen(client, retried) == expected


def test_state_that_is_not_json_fails_the_job_at_once(stack: Stack) -> None:
    client = stack.client()
    before = stored_files(stack)
    job = submit(client, "mistakes", params={"mistake": "state"})
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=15)
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    error = failed["error"]
    assert error["code"] == "invalid_state", error
    assert not error["retryable"]
    assert "ctx.state['when'] is a datetime" in error["message"]
    for leak in ("SQL", "[parameters", "UPDATE", socket.gethostname()):
        assert leak not in error["message"], error["message"]
    assert failed["outputs"] == []
    assert stored_files(stack) == before, "no file of the failed step is left in the store"


@pytest.mark.parametrize("mistake", ["vanished", "twice"])
def test_an_output_that_cannot_be_kept_leaves_no_file(stack: Stack, mistake: str) -> None:
    client = stack.client()
    before = stored_files(stack)
    job = submit(client, "mistakes", params={"mistake": mistake})
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=15)
    assert failed["status"] == "failed"
    assert failed["outputs"] == []
    assert stored_files(stack) == before, "the outputs moved before the failure were removed"


def test_a_statement_error_is_told_without_its_sql() -> None:
    from sqlalchemy.exc import StatementError

    from longplay.jobs.failures import job_error
    from longplay.store.models import Job

    cause = TypeError("Object of type datetime is not JSON serializable")
    exc = StatementError(
        "(builtins.TypeError) ...", "UPDATE jobs SET checkpoint=?", {"holder": "host:1:"}, cause
    )
    error = job_error(Job(id="job_x", kind="mistakes"), None, exc)
    assert error.code == "internal_error"
    assert (
        str(error) == "internal error: TypeError: Object of type datetime is not JSON serializable"
    )


def test_a_large_state_is_kept_but_not_sent_to_every_follower(stack: Stack) -> None:
    """The ``completed`` event carries the state to every follower: its largest values
    stay out of it, named, until the rest is within 64 KiB."""
    client = stack.client()
    job = submit(client, "mistakes", params={"mistake": "big_state"})
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=15)
    assert done["status"] == "completed", done["error"]
    assert seen(client, done)["keys"] == ["'count'", "'words'"], "the next step saw it all"
    [completed] = [e for e in read_events(client, job["id"]) if e["event"] == "completed"]
    result = completed["data"]["result"]
    assert result["state"] == {"count": 40_000} and result["state_left_out"] == ["words"]
    assert len(json.dumps(completed)) < 64 * 1024


def test_a_password_in_a_kinds_own_error_is_not_shown(stack: Stack) -> None:
    """A kind's code that could not reach its database says where, password and all:
    the job's error, its attempts and its events tell where, without the password."""
    client = stack.client()
    job = submit(client, "mistakes", params={"mistake": "secret"})
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=15)
    assert failed["error"]["code"] == "internal_error", failed["error"]
    said = failed["error"]["message"]
    assert "postgresql://admin:***@db.internal:5432/prod" in said, said
    assert "password=*** dbname=prod" in said and "ops@example.org" in said, said
    [attempt] = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    events = client.get(job["links"]["events"], timeout=15).text
    for told in (said, attempt["error"]["message"], events):
        assert "hunter2" not in told, told


def test_a_permission_refused_outside_the_data_folder_is_the_kinds_own_error() -> None:
    """A kind reading a token file of its own that it may not read has a bug (or a
    deployment) to fix: not a storage fault, waited out for minutes and retried. Refused
    on a path in the data folder, it is one: the operator's to mend."""
    from longplay.jobs.failures import job_error
    from longplay.settings import get_settings
    from longplay.store.models import Job

    job = Job(id="job_x", kind="mistakes")
    own = job_error(job, None, PermissionError(13, "Permission denied", "/etc/team/token"))
    assert (own.code, own.retryable) == ("internal_error", False), own
    assert str(own).startswith("internal error: PermissionError: [Errno 13] Permission denied")
    denied = PermissionError(13, "Permission denied", str(get_settings().work_dir / "job_x"))
    stored = job_error(job, None, denied)
    assert (stored.code, stored.retryable) == ("storage_unavailable", True), stored
    full = job_error(job, None, OSError(28, "No space left on device"))
    assert full.code == "storage_unavailable", full


def test_a_failure_whose_progress_cannot_be_kept_is_kept_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from longplay.framework import PermanentError
    from longplay.jobs import runner
    from longplay.store.models import Job

    calls: list[Any] = []

    def settle_error(job: Job, error: Any, *, worker: str, stopped: Any = None) -> None:
        calls.append(stopped)
        if stopped is not None:
            raise TypeError("Object of type datetime is not JSON serializable")

    monkeypatch.setattr(runner, "settle_error", settle_error)
    error = PermanentError("the step failed", code="asked_to_fail")
    runner._settle_failure(Job(id="job_x", kind="mistakes"), error, worker="w", stopped={"a": 1})
    assert calls == [{"a": 1}, None]


def test_the_outputs_of_a_step_the_kind_has_not_are_refused(stack: Stack) -> None:
    """A misspelt step name read as a step that kept nothing (an empty list)."""
    client = stack.client()
    job = submit(client, "mistakes", params={"mistake": "outputs"})
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=15)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["code"] == "invalid_step"
    assert failed["error"]["message"] == (
        "ctx.outputs: mistakes has no step 'mistak'; its steps: mistake, after"
    )


def test_a_step_that_returns_a_value_is_told_it_is_not_kept(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, "mistakes", params={"mistake": "returns"})
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=20)
    assert done["status"] == "completed", done["error"]
    assert [o["name"] for o in done["outputs"]] == ["seen.json"]
    [warning] = [w for w in done["warnings"] if w["code"] == "step_returned_value"]
    assert "'mistake' returned a PosixPath" in warning["message"], warning
    assert "ctx.add_output" in warning["message"], warning
