"""The CLI as a user runs it, against a running deployment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Stack


def longplay(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "LONGPLAY_API_URL": stack.api_url, "LONGPLAY_API_KEY": stack.key("dave")}
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
