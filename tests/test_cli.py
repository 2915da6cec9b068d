"""The CLI as a user runs it, against a running deployment."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Stack, free_port


def longplay(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **stack.env,
        "LONGPLAY_API_URL": stack.api_url,
        "LONGPLAY_API_KEY": stack.key("dave"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "longplay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_submit_wait_saves_results(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("input")
    out = tmp_path / "out"
    done = longplay(
        stack,
        "submit", "sleep", str(note),
        "-p", "seconds=1", "-p", "text=from the cli",
        "--wait", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "result.txt").read_text() == "from the cli"
    job_id = done.stdout.split()[1]
    status = longplay(stack, "status", job_id)
    assert json.loads(status.stdout)["status"] == "completed"
    listed = longplay(stack, "jobs", "--status", "completed")
    assert job_id in listed.stdout


def test_failed_job_exits_non_zero_with_its_message(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("input")
    done = longplay(stack, "submit", "sleep", str(note), "-p", "fail=permanent", "--wait")
    assert done.returncode == 1
    assert "the test asked this job to fail" in done.stderr


def test_bad_kind_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("input")
    done = longplay(stack, "submit", "nonsense", str(note))
    assert done.returncode == 1
    assert "unknown job kind" in done.stderr


def assert_one_clean_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit status 1 and one line on stderr, no traceback anywhere."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


COMMANDS = [("cancel", "job_nope"), ("watch", "job_nope"), ("status", "job_nope"), ("jobs",)]


@pytest.mark.parametrize("args", COMMANDS[:3], ids=lambda a: a[0])
def test_an_unknown_job_is_one_line(stack: Stack, args: tuple[str, ...]) -> None:
    assert_one_clean_line(longplay(stack, *args), "404 not_found")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_bad_key_is_one_line(stack: Stack, args: tuple[str, ...]) -> None:
    done = longplay(stack, *args, LONGPLAY_API_KEY="lp_not_a_key")
    assert_one_clean_line(done, "401 unauthorized")


def test_an_invalid_request_is_one_line(stack: Stack) -> None:
    done = longplay(stack, "jobs", "--limit", "0")
    assert_one_clean_line(done, "422 invalid_request", "limit")


def test_bad_params_json_is_a_usage_error(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("input")
    done = longplay(stack, "submit", "sleep", str(note), "--params", "{not json")
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert "--params" in done.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_no_api_there_is_one_line(stack: Stack, args: tuple[str, ...]) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    done = longplay(stack, *args, LONGPLAY_API_URL=nobody)
    assert_one_clean_line(done, "cannot reach the API at", nobody)


@pytest.fixture
def silent_api() -> Iterator[str]:
    """A port that takes connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_an_api_that_does_not_answer_is_one_line(
    stack: Stack, silent_api: str, args: tuple[str, ...]
) -> None:
    done = longplay(stack, *args, LONGPLAY_API_URL=silent_api, LONGPLAY_API_TIMEOUT="1")
    assert_one_clean_line(done, "no answer from the API at", "in time")
