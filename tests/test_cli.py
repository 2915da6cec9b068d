"""The CLI as a user runs it, against a running deployment."""

from __future__ import annotations

import enum
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import Stack, free_port, run_longplay, submit, wait_for_status, wait_until
from harness import stop_process
from pydantic import BaseModel

from longplay.cli.jobs import QUEUE_LOOK_EVERY_S, _wants_text


def longplay(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **stack.env,
        "LONGPLAY_API_URL": stack.api_url,
        "LONGPLAY_API_KEY": stack.key("dave"),
        **env,
    }
    return run_longplay(*args, env=env)


def test_every_command_says_what_it_does_in_one_line() -> None:
    """``longplay --help`` lists each command with the first paragraph of its help; a
    paragraph of two lines came out cut where the source wrapped it."""
    import click
    import typer.main

    from longplay.cli.app import app

    def commands(group: click.Command, path: str) -> Iterator[tuple[str, str]]:
        for name, command in getattr(group, "commands", {}).items():
            yield f"{path} {name}", command.help or ""
            yield from commands(command, f"{path} {name}")

    listed = dict(commands(typer.main.get_command(app), "longplay"))
    assert "longplay collections add" in listed and "longplay beat" in listed
    for name, text in listed.items():
        summary = text.split("\n\n")[0].strip()
        assert summary and "\n" not in summary, f"{name}: {summary!r}"


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
    listed = longplay(stack, "jobs", "--status", "completed", COLUMNS="80")
    # One line a job in an 80-column terminal, with nothing but the step cut short.
    [row] = [line for line in listed.stdout.splitlines() if job_id in line]
    assert row.split()[1:4] == ["sleep", "completed", "100"], row
    assert len(row) <= 80


def test_submit_dedupe_says_on_stderr_that_the_job_was_reused(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text(f"the same bytes {uuid.uuid4()}")
    args = ("submit", "sleep", str(note), "--seconds", "0", "--dedupe")
    first = longplay(stack, *args, "--wait", "--out", str(tmp_path / "out"))
    assert first.returncode == 0, first.stderr
    job_id = first.stdout.split()[1]
    assert "reused" not in first.stderr, first.stderr
    again = longplay(stack, *args)
    assert again.returncode == 0, again.stderr
    # stdout is as for a new job (scripts read the id from it); the notice is on stderr.
    assert again.stdout.split()[:3] == ["submitted", job_id, "(completed)"], again.stdout
    assert "reused" not in again.stdout
    [notice] = again.stderr.strip().splitlines()
    assert job_id in notice and "reused" in notice, again.stderr


def test_failed_job_exits_non_zero_with_its_message(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("input")
    done = longplay(
        stack, "submit", "sleep", str(note), "-p", "fail=permanent", "-p", "seconds=1", "--wait"
    )
    assert done.returncode == 1
    assert "the test asked this job to fail" in done.stderr
    # The bar's last state: failed, with no time left told (its last progress had one).
    last = done.stdout.strip().splitlines()[-1]
    assert "failed" in last and "ETA" not in last, done.stdout


def test_bad_kind_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("input")
    done = longplay(stack, "submit", "nonsense", str(note))
    assert done.returncode == 1
    assert "unknown job kind" in done.stderr


def test_kinds_lists_every_kind_and_what_one_takes(stack: Stack) -> None:
    listed = longplay(stack, "kinds", COLUMNS="120")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"convert", "podcast", "sleep", "mistakes"} <= rows, listed.stdout

    sleep = longplay(stack, "kinds", "sleep", COLUMNS="120")
    assert sleep.returncode == 0, sleep.stderr
    lines = sleep.stdout.splitlines()
    assert "steps: prepare → work" in lines, sleep.stdout
    by_name = {line.split()[0]: line for line in lines if line.strip()}
    assert by_name["seconds"].split() == ["seconds", "number", "0", "to", "600", "1"]
    assert by_name["fail"].split() == [
        *(
            "fail",
            "permanent",
            "|",
            "retryable",
            "|",
            "settings",
            "|",
            "disk",
            "|",
            "database",
            "|",
            "bug,",
            "or",
            "null",
            "null",
        )
    ]
    mistakes = longplay(stack, "kinds", "mistakes", COLUMNS="160").stdout.splitlines()
    by_name = {line.split()[0]: line.split() for line in mistakes if line.strip()}
    assert by_name["label"] == ["label", "Label", "(text)", '{"text":', '"plain"}'], mistakes
    assert by_name["mistake"][-1] == "required", mistakes
    # A default a factory makes is shown as it is, not as null.
    export = longplay(stack, "kinds", "export", COLUMNS="160").stdout.splitlines()
    by_name = {line.split()[0]: line.split() for line in export if line.strip()}
    assert "[]" in by_name["kinds"] and "null" not in by_name["kinds"], export

    as_json = longplay(stack, "kinds", "sleep", "--json")
    assert json.loads(as_json.stdout)["params_schema"]["properties"]["ticks"]["maximum"] == 10_000
    assert_one_clean_line(longplay(stack, "kinds", "slep"), "no job kind 'slep'", "sleep")
    assert "longplay kinds KIND" in longplay(stack, "submit", "--help", COLUMNS="200").stdout


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
    assert_one_clean_line(done, "401 unauthorized", "the CLI sends LONGPLAY_API_KEY")


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


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("api", "--workers", "0"), {}, "--workers"),
        (("api",), {"LONGPLAY_API_WORKERS": "0"}, "invalid setting LONGPLAY_API_WORKERS='0'"),
    ],
)
def test_an_api_of_no_processes_is_refused(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "longplay", *args],
        env={"PATH": "/usr/bin:/bin", "LONGPLAY_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_submit_with_inputs_and_no_files_shows_a_live_bar(stack: Stack, tmp_path: Path) -> None:
    from longplay.client import Client

    (tmp_path / "in.txt").write_text("an input")
    with Client(stack.api_url, stack.key("dave")) as api:
        artifact = api.upload(tmp_path / "in.txt")
    out = tmp_path / "out"
    done = longplay(
        stack,
        "submit", "sleep", "--input", artifact.id, "--seconds", "0.5", "--text", "bar",
        "--wait", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stdout, done.stdout  # the bar's last state
    assert (out / "result.txt").read_text() == "bar"
    job = json.loads(longplay(stack, "status", done.stdout.split()[1]).stdout)
    assert job["inputs"] == [artifact.id]
    bad = longplay(stack, "submit", "sleep", "--input", "job_1:")
    assert bad.returncode == 2 and "--input" in bad.stderr


def _children(pid: int) -> list[str]:
    """The command lines of a process's children."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _own_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment with no LONGPLAY_* setting but a data folder of its
    own (SQLite and the embedded Redis' socket in it) and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGPLAY_")}
    return {**env, "LONGPLAY_DATA_DIR": str(data_dir), **settings}


def test_api_flags_set_host_port_and_processes(tmp_path: Path) -> None:
    port = free_port()  # not LONGPLAY_API_PORT's: the flag wins
    process = subprocess.Popen(
        [sys.executable, "-m", "longplay", "api", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        env=_own_env(tmp_path, LONGPLAY_API_PORT=str(free_port())),
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}"), timeout=60, every=0.25)
        spawned = [c for c in _children(process.pid) if "multiprocessing.spawn" in c]
        assert len(spawned) == 2, spawned
        # A second API on the port says so in a line, as up does.
        taken = subprocess.run(
            [sys.executable, "-m", "longplay", "api", "--port", str(port)],
            env=_own_env(tmp_path / "other"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode == 1, taken.stderr
        assert taken.stderr.strip() == f"port {port} is in use: stop what uses it or pass --port"
        # Killed outright, it takes its API processes with it: they held the port.
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        wait_until(lambda: not _answers(f"http://127.0.0.1:{port}"), timeout=20, every=0.25)
    finally:
        stop_process(process)


def test_worker_flags_set_queues_and_concurrency(stack: Stack) -> None:
    from longplay.client import Client

    process = subprocess.Popen(
        [sys.executable, "-m", "longplay", "worker", "--queues", "gpu", "--concurrency", "1"],
        env=stack.env,
        start_new_session=True,
    )
    try:
        with Client(stack.api_url, stack.key("dave")) as api:
            # Only this worker takes GPU work: the stack's own takes cpu.
            job = api.submit("gpu_sleep", params={"seconds": 0.1})
            assert api.wait(job, timeout=90).status.value == "completed"
            response = httpx.get(
                f"{stack.api_url}/v1/workers",
                headers={"Authorization": f"Bearer {stack.key('dave')}"},
            )
            mine = [w for w in response.json() if w["name"].split(":")[1] == str(process.pid)]
            assert len(mine) == 1, response.json()
    finally:
        stop_process(process, timeout=60)


def test_up_flags_set_host_port_and_processes(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "longplay", "up", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=_own_env(tmp_path, LONGPLAY_WORKER_CONCURRENCY="1"),
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}"), timeout=90, every=0.5)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("worker", "--queues", "tpu"), "--queues"),
        (("worker", "--concurrency", "0"), "--concurrency"),
        (("api", "--port", "70000"), "--port"),
        (("up", "--workers", "0"), "--workers"),
    ],
)
def test_bad_flags_are_usage_errors(tmp_path: Path, args: tuple[str, ...], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "longplay", *args],
        env={"PATH": "/usr/bin:/bin", "LONGPLAY_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_saving_keeps_a_file_of_the_same_name(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.txt").write_text("mine")
    args = ("submit", "sleep", "--seconds", "0", "--text", "new", "--wait", "--out", str(out))
    done = longplay(stack, *args)
    assert done.returncode == 0, done.stderr
    assert (out / "result.txt").read_text() == "mine"
    assert (out / "result (1).txt").read_text() == "new"
    assert "result (1).txt (result.txt was there already)" in done.stdout, done.stdout
    done = longplay(stack, *args, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "result.txt").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["result (1).txt", "result.txt"]


def test_an_out_that_is_a_file_is_one_line(stack: Stack, tmp_path: Path) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    done = longplay(stack, "submit", "sleep", "--seconds", "0", "--wait", "--out", str(taken))
    assert_one_clean_line(done, str(taken), "not a folder")
    assert taken.read_text() == "mine"


def test_a_bare_flag_is_true() -> None:
    from longplay.cli.jobs import _files_and_options

    words = ["--script-only", "--text", "hi", "--dry-run", "--note=--raw", "--last"]
    assert _files_and_options(words) == (
        [],
        ["script_only=true", "text=hi", "dry_run=true", "note=--raw", "last=true"],
    )


def test_keys_are_listed_by_their_start_and_revoked_whole_or_by_it(stack: Stack) -> None:
    """An operator has the whole key (shown once) or what ``keys list`` shows: either
    revokes it; fewer than ten characters could name another key and are refused."""
    made = [longplay(stack, "keys", "create", "kai", "--label", label) for label in "ab"]
    assert all(done.returncode == 0 for done in made)
    first, second = (done.stdout.strip() for done in made)
    listed = longplay(stack, "keys", "list", "kai")
    assert listed.returncode == 0
    assert first[:10] in listed.stdout and second[:10] in listed.stdout
    assert first not in listed.stdout, "only the start of a key is kept in the clear"

    short = longplay(stack, "keys", "revoke", "kai", first[:9])
    assert short.returncode == 2 and "first 10 characters" in short.stderr
    whole = longplay(stack, "keys", "revoke", "kai", first)
    assert whole.returncode == 0 and first not in whole.stdout + whole.stderr
    again = longplay(stack, "keys", "revoke", "kai", first)
    assert again.returncode == 1 and "keys list kai" in again.stderr
    assert longplay(stack, "keys", "revoke", "kai", second[:12]).returncode == 0
    for key in (first, second):
        answer = httpx.get(
            f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert answer.status_code == 401
    assert first[:10] not in longplay(stack, "keys", "list", "kai").stdout


def test_admin_is_given_to_an_existing_owner_and_taken_back(stack: Stack) -> None:
    """``keys create NAME --admin`` on an owner that exists makes it one, saying so (its
    key was refused all owners' jobs, the flag dropped without a word); ``owners set
    --no-admin`` takes it back."""

    def sees_all(key: str) -> int:
        answer = httpx.get(
            f"{stack.api_url}/v1/jobs",
            params={"all_owners": "true"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        return answer.status_code

    assert longplay(stack, "keys", "create", "ada").returncode == 0
    made = longplay(stack, "keys", "create", "ada", "--admin")
    assert made.returncode == 0 and "ada is an admin now" in made.stderr, made.stderr
    key = made.stdout.strip()
    assert sees_all(key) == 200
    assert "ada (admin)" in longplay(stack, "owners", "list").stdout
    taken = longplay(stack, "owners", "set", "ada", "--no-admin")
    assert taken.returncode == 0 and "ada (admin)" not in taken.stdout
    assert sees_all(key) == 403
    again = longplay(stack, "keys", "create", "ada", "--admin")
    assert again.returncode == 0 and sees_all(again.stdout.strip()) == 200


def test_a_mistyped_whole_key_revokes_no_key_that_begins_as_it_does(stack: Stack) -> None:
    """A text as long as a key (or longer than a key's start can be) is a whole key: it
    revokes the key that is exactly it, or nothing, saying so; never the live key whose
    first ten characters it shares. A short text is still a key's start."""
    from longplay.store.owners import KEY_LENGTH, LONGEST_PREFIX

    made = longplay(stack, "keys", "create", "mia")
    assert made.returncode == 0
    key = made.stdout.strip()
    assert len(key) == KEY_LENGTH
    flipped = "A" if key[-1] != "A" else "B"
    for typo in (key[:-1] + flipped, key[:-1], key + "x", key[: LONGEST_PREFIX + 1]):
        refused = longplay(stack, "keys", "revoke", "mia", typo)
        assert refused.returncode == 1, (typo, refused.stdout, refused.stderr)
        said = " ".join(refused.stderr.split())
        assert "exactly" in said and "nothing was revoked" in said, said
        assert "keys list mia" in said, said
    answer = httpx.get(
        f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert answer.status_code == 200, "the live key that begins as the typos do still works"
    helped = longplay(stack, "keys", "revoke", "--help")
    assert f"{LONGEST_PREFIX} characters" in " ".join(helped.stdout.split())
    assert longplay(stack, "keys", "revoke", "mia", key[:LONGEST_PREFIX]).returncode == 0


def test_cancel_takes_a_flow_too(stack: Stack) -> None:
    client = stack.client("dave")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = client.post(
        "/v1/flows",
        json={
            "stages": {
                "a": {"kind": "sleep", "run_at": later},
                "b": {"kind": "sleep", "after": ["a"]},
            }
        },
    )
    assert made.status_code == 202, made.text
    flow_id = made.json()["id"]
    done = longplay(stack, "cancel", flow_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [flow_id, "cancelled"]
    stages = client.get(f"/v1/flows/{flow_id}").json()["stages"]
    assert {s["status"] for s in stages.values()} == {"cancelled"}


def test_status_and_watch_take_a_flow_too(stack: Stack, tmp_path: Path) -> None:
    """A flow submitted without --wait can be read and followed by its id."""
    client = stack.client("dave")
    made = client.post(
        "/v1/flows",
        json={
            "stages": {
                "a": {"kind": "sleep", "params": {"seconds": 0.5, "text": "first"}},
                "b": {
                    "kind": "sleep",
                    "params": {"seconds": 0.5, "text": "second"},
                    "after": ["a"],
                },
            }
        },
    )
    assert made.status_code == 202, made.text
    flow_id = made.json()["id"]
    shown = longplay(stack, "status", flow_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == flow_id
    assert set(json.loads(shown.stdout)["stages"]) == {"a", "b"}
    out = tmp_path / "out"
    watched = longplay(stack, "watch", flow_id, "--out", str(out))
    assert watched.returncode == 0, watched.stderr
    assert (out / "a" / "result.txt").read_text() == "first"
    assert (out / "b" / "result.txt").read_text() == "second"
    assert longplay(stack, "status", "flow_nothere").returncode == 1


def test_a_text_parameter_keeps_text_that_looks_like_json(stack: Stack, tmp_path: Path) -> None:
    for args, text in (
        (("--text", "1984"), "1984"),
        (("-p", "text=true"), "true"),
        (("--text", "[1, 2]"), "[1, 2]"),
        (("--text", "[laughs"), "[laughs"),
    ):
        out = tmp_path / text
        done = longplay(
            stack, "submit", "sleep", *args, "--seconds", "0", "--wait", "--out", str(out)
        )
        assert done.returncode == 0, done.stderr
        assert (out / "result.txt").read_text() == text
    # A number where the kind takes one is still a number.
    bad = longplay(stack, "submit", "sleep", "--seconds", "[1]")
    assert bad.returncode == 1 and "params.seconds" in bad.stderr, bad.stderr
    # An object with a JSON mistake, for a field that takes no text: the mistake is said.
    broken = longplay(stack, "submit", "mistakes", "-p", "mistake=keys", "-p", 'label={"text": 1')
    assert broken.returncode == 2, broken.stderr
    assert "label: not JSON" in " ".join(broken.stderr.split()), broken.stderr


def test_ctrl_c_while_following_says_the_job_goes_on(stack: Stack) -> None:
    env = {**stack.env, "LONGPLAY_API_URL": stack.api_url, "LONGPLAY_API_KEY": stack.key("dave")}
    process = subprocess.Popen(
        [sys.executable, "-m", "longplay", "submit", "sleep", "--seconds", "60", "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`cmd &` in a script)
        # hands its children SIGINT ignored, and Python then never raises Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        job_id = first.split()[1]
        wait_until(lambda: stack.client("dave").get(f"/v1/jobs/{job_id}").json()["progress"] > 0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert f"longplay watch {job_id}" in stderr and f"longplay cancel {job_id}" in stderr
        assert stack.client("dave").get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert longplay(stack, "cancel", job_id).returncode == 0


def test_watch_says_where_a_waiting_job_stands_as_it_moves(stack: Stack) -> None:
    """A job that waits in the queue gets no events: ``watch`` asks where it stands every
    few seconds and says so on its bar ("queued, next", then "queued, 1 ahead" once a
    high-priority job comes in before it)."""
    busy = stack.client("blocker")
    blockers = [submit(busy, params={"seconds": 60}) for _ in range(2)]  # the worker's slots
    for job in blockers:
        wait_for_status(busy, job["id"], {"running"})
    client = stack.client("quinn")
    waiting = submit(client, params={"seconds": 0})
    env = {
        **stack.env,
        "LONGPLAY_API_URL": stack.api_url,
        "LONGPLAY_API_KEY": stack.key("quinn"),
        "TTY_INTERACTIVE": "1",  # a live bar, as on a terminal
        "TTY_COMPATIBLE": "1",
        "COLUMNS": "120",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "longplay", "watch", waiting["id"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ahead = None
    try:
        time.sleep(3)  # its bar is up
        ahead = submit(stack.client("rush"), params={"seconds": 0}, priority="high")
        time.sleep(2 * QUEUE_LOOK_EVERY_S)
        assert client.post(f"/v1/jobs/{waiting['id']}/cancel").status_code == 200
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if ahead is not None:
            stack.client("rush").post(f"/v1/jobs/{ahead['id']}/cancel")
        for job in blockers:
            busy.post(f"/v1/jobs/{job['id']}/cancel")
    seen = [
        0 if said == "next" else int(said.split()[0])
        for said in dict.fromkeys(re.findall(r"queued, (next|\d+ ahead)", out))
    ]
    assert seen == [0, 1], (seen, out[-2000:], err)
    assert process.returncode == 1 and "cancelled" in err


def test_retry_and_delete_a_job(stack: Stack) -> None:
    failed = longplay(stack, "submit", "sleep", "--seconds", "0", "--fail", "permanent", "--wait")
    assert failed.returncode == 1
    job_id = failed.stdout.split()[1]
    retried = longplay(stack, "retry", job_id)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.split() == [job_id, "queued"]
    wait_until(lambda: longplay(stack, "delete", job_id).returncode == 0, every=0.5)
    gone = longplay(stack, "status", job_id)
    assert gone.returncode == 1 and "not_found" in gone.stderr
    for command in ("retry", "delete"):  # a job that is not there: one line, status 1
        refused = longplay(stack, command, job_id)
        assert refused.returncode == 1 and "not_found" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    later = longplay(stack, "submit", "sleep", "--seconds", "30")
    waiting = later.stdout.split()[1]
    kept = longplay(stack, "delete", waiting)  # not ended yet: refused, kept
    assert kept.returncode == 1 and "conflict" in kept.stderr, kept.stderr
    assert longplay(stack, "cancel", waiting).returncode == 0


def test_jobs_pages_with_a_cursor_and_prints_json(stack: Stack) -> None:
    key = stack.key(f"pager-{uuid.uuid4().hex[:8]}")
    made = [longplay(stack, "submit", "sleep", "--seconds", "0", LONGPLAY_API_KEY=key)]
    made.append(longplay(stack, "submit", "sleep", "--seconds", "0", LONGPLAY_API_KEY=key))
    ids = [m.stdout.split()[1] for m in made]
    first = longplay(stack, "jobs", "--limit", "1", "--json", LONGPLAY_API_KEY=key)
    assert first.returncode == 0, first.stderr
    [line] = first.stdout.splitlines()
    assert json.loads(line)["id"] == ids[1]
    [hint] = first.stderr.splitlines()
    cursor = hint.split("--cursor ")[1]
    second = longplay(stack, "jobs", "--limit", "1", "--cursor", cursor, LONGPLAY_API_KEY=key)
    assert second.returncode == 0, second.stderr
    assert ids[0] in second.stdout and ids[1] not in second.stdout


def test_an_api_url_without_a_scheme_is_a_usage_error(stack: Stack) -> None:
    done = longplay(stack, "jobs", LONGPLAY_API_URL="127.0.0.1:8000")
    assert done.returncode == 2, done.stderr
    assert "127.0.0.1:8000" in done.stderr and "Traceback" not in done.stderr


class Resolution(enum.StrEnum):
    LOW = "720"
    HIGH = "1080"


class VideoParams(BaseModel):
    resolution: Resolution
    fallback: Resolution | None = None
    scale: float = 1.0


def test_a_text_enum_the_schema_defines_apart_keeps_its_digits() -> None:
    """pydantic puts an enum a field takes under ``$defs``: ``--resolution 1080`` was
    sent as the number 1080, which the kind refused."""
    schema = VideoParams.model_json_schema()
    assert _wants_text(schema, "resolution", 1080)
    assert _wants_text(schema, "fallback", 1080)
    assert not _wants_text(schema, "scale", 2)
