"""``longplay up`` on embedded defaults: one process tree that stops cleanly and keeps
its queue across a restart."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

import httpx
import pytest
from conftest import TESTS, free_port, submit, wait_for_status, wait_until

from longplay import supervisor
from longplay.client.core import find_url, local_url
from longplay.embedded import redis_command, wait_until_ready
from longplay.settings import Settings
from longplay.supervisor import CannotStart, lock_data_folder

UP = [sys.executable, "-m", "longplay", "up"]


def up_env(data_dir: Path, port: int | None, **settings: str) -> dict[str, str]:
    """The environment of a ``longplay up`` on embedded defaults, its port given by
    ``LONGPLAY_API_PORT`` unless ``port`` is None; ``settings`` are more ``LONGPLAY_*``
    variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LONGPLAY_REDIS_URL", "LONGPLAY_DATABASE_URL", "LONGPLAY_API_PORT")
    }
    env.update(
        LONGPLAY_DATA_DIR=str(data_dir),
        LONGPLAY_WORKER_CONCURRENCY="1",
        LONGPLAY_SHUTDOWN_GRACE="2",
        LONGPLAY_PLUGINS='["plugin_kinds"]',
        PYTHONPATH=str(TESTS),
        **({"LONGPLAY_API_PORT": str(port)} if port is not None else {}),
    )
    env.update(settings)
    return env


def start_up(
    data_dir: Path, port: int, out: Path | None = None, **settings: str
) -> subprocess.Popen[bytes]:
    """``longplay up`` on embedded defaults, what it prints (on stdout and stderr)
    written to ``out`` when given; ``settings`` are more ``LONGPLAY_*`` variables."""
    stdout = out.open("wb") if out is not None else None
    try:
        return subprocess.Popen(
            UP,
            env=up_env(data_dir, port, **settings),
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
        )
    finally:
        if stdout is not None:
            stdout.close()  # the child holds its own copy


def api_client(data_dir: Path, port: int) -> httpx.Client:
    key = wait_until(
        lambda: (data_dir / "api-key").is_file() and (data_dir / "api-key").read_text()
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {key.strip()}"},
        timeout=30,
    )

    def healthy() -> bool:
        try:
            return client.get("/healthz").json().get("status") == "ok"
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=90, every=0.5)
    return client


def stop(process: subprocess.Popen[bytes], sig: int) -> int:
    process.send_signal(sig)
    return process.wait(60)


def nothing_listens(data_dir: Path, port: int) -> bool:
    with socket.socket() as s:
        api_down = s.connect_ex(("127.0.0.1", port)) != 0
    with socket.socket(socket.AF_UNIX) as s:
        redis_down = s.connect_ex(str(data_dir / "redis.sock")) != 0
    return api_down and redis_down


@pytest.mark.timeout(300)
def test_up_keeps_queued_jobs_across_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    process = start_up(data_dir, port, LONGPLAY_SHUTDOWN_GRACE="2")
    try:
        client = api_client(data_dir, port)
        # Longer than the worker's shutdown grace: stopped, and run again after the restart.
        blocker = submit(client, params={"seconds": 8, "ticks": 16})
        wait_for_status(client, blocker["id"], {"running"})
        queued = [submit(client, params={"seconds": 0.2})["id"] for _ in range(3)]
        process.send_signal(signal.SIGINT)  # Ctrl-C
        # The API stops last: while the worker gives the blocker its grace, the API
        # answers, and shows it go back to the queue.
        back = f"/v1/jobs/{blocker['id']}"
        wait_until(lambda: client.get(back).json()["status"] == "queued", timeout=30, every=0.2)
        assert process.wait(60) == 0
        assert nothing_listens(data_dir, port)

        # Listening on every interface, it prints where this machine reaches it; a
        # doubtful setting is told once, not once more by each part it starts. Its two
        # API processes stop with it, cleanly.
        printed = tmp_path / "up.txt"
        process = start_up(
            data_dir,
            port,
            printed,
            LONGPLAY_API_HOST="0.0.0.0",
            LONGPLAY_TURN_CACHE_RETENTION="30",
            LONGPLAY_API_WORKERS="2",
        )
        client = api_client(data_dir, port)
        # One line each, whatever their length, though no terminal reads them.
        url = f"http://127.0.0.1:{port}"
        assert f"longplay on {url}  (docs: {url}/docs, data: {data_dir})\n" in printed.read_text()
        # Told when the address can be opened, once, after the address.
        ready = re.compile(rf"ready after \d+ s: the API answers, the dashboard is at {url}/\n")
        wait_until(lambda: ready.search(printed.read_text()), timeout=10)
        assert printed.read_text().index("longplay on") < ready.search(printed.read_text()).start()
        said = " ".join(printed.read_text().split())
        assert said.count("LONGPLAY_TURN_CACHE_RETENTION=30 is 30 seconds") == 1, said
        for job_id in [blocker["id"], *queued]:
            job = wait_for_status(client, job_id, {"completed", "failed"}, timeout=60)
            assert job["status"] == "completed"
            assert job["attempts"] == 1, "ran exactly once"
        assert stop(process, signal.SIGTERM) == 0
        assert nothing_listens(data_dir, port)
        assert "killed what was left" not in printed.read_text(), printed.read_text()[-3000:]
        assert printed.read_text().count("ready after") == 1
    finally:
        if process.poll() is None:
            process.kill()


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def descendants(pid: int) -> set[int]:
    """The processes below ``pid``: its children, theirs, and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # it has just ended
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found.update(below)
        todo.extend(below)
    return found


def refusal(data_dir: Path, port: int, **settings: str) -> str:
    """What a ``longplay up`` that must not start says on stderr; it must end at once
    with status 1. ``settings`` are more ``LONGPLAY_*`` variables."""
    process = subprocess.Popen(
        UP,
        env=up_env(data_dir, port, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, said = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.terminate()  # it stops what it started
        process.communicate(timeout=60)
        pytest.fail(f"longplay up on {data_dir}, port {port}, was not refused")
    assert process.returncode == 1, said
    return said.strip()


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A ``longplay`` client command told the data folder and no API address."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LONGPLAY_")}
    env["LONGPLAY_DATA_DIR"] = str(data_dir)
    command = [sys.executable, "-m", "longplay", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(300)
def test_up_holds_its_folder_and_port_and_its_parts_end_with_it(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    # The port given as a flag alone: only the data folder tells the CLI where the API is.
    process = subprocess.Popen([*UP, "--port", str(port)], env=up_env(data_dir, None))
    parts: set[int] = set()
    try:
        client = api_client(data_dir, port)
        sent = cli(data_dir, "submit", "sleep", "-p", "seconds=60", "-p", "ticks=60")
        assert sent.returncode == 0, sent.stderr
        job_id = sent.stdout.split()[1]

        # A second up on the folder (on another port), or on the port (in another folder),
        # is refused before it starts anything; the first goes on serving.
        said = refusal(data_dir, free_port())
        assert said == f"another longplay up (pid {process.pid}) is running on {data_dir}"
        said = refusal(tmp_path / "other", port)
        assert said == f"port {port} is in use: stop what uses it or pass --port"
        assert not (tmp_path / "other").exists()
        assert client.get("/healthz").json()["status"] == "ok"

        # kill -9 of up while a job runs: every part ends with it, the worker's pool too.
        wait_for_status(client, job_id, {"running"})
        parts = descendants(process.pid)
        assert len(parts) >= 5, parts  # Redis, the worker and its pool process, beat, API
        process.kill()
        process.wait()
        wait_until(lambda: not any(alive(pid) for pid in parts), timeout=30)

        # A new up on the folder starts and serves; stopped, it takes its address away.
        process = start_up(data_dir, port)
        api_client(data_dir, port)
        listed = cli(data_dir, "jobs")
        assert listed.returncode == 0, listed.stderr
        assert stop(process, signal.SIGTERM) == 0
        assert not (data_dir / "api-url").exists()
        assert nothing_listens(data_dir, port)
    finally:
        if process.poll() is None:
            parts |= descendants(process.pid)
            process.kill()
        for pid in parts:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def hold(data_dir: Path, pid: int) -> TextIO:
    """Hold the data folder's lock as the ``up`` with this pid (or its Redis) does."""
    held = (data_dir / "up.lock").open("a+")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.truncate(0)
    held.write(f"{pid}\n")
    held.flush()
    return held


def test_a_folder_whose_up_has_ended_is_taken_once_its_redis_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    # The killed up's Redis, still stopping, holds the lock for a moment.
    threading.Timer(0.5, hold(tmp_path, ended.pid).close).start()
    mine = lock_data_folder(tmp_path)
    assert (tmp_path / "up.lock").read_text() == f"{os.getpid()}\n"
    mine.close()
    # One that never lets go is named once the wait is over.
    monkeypatch.setattr(supervisor, "LOCK_WAIT", 0.2)
    with hold(tmp_path, ended.pid), pytest.raises(CannotStart) as refused:
        lock_data_folder(tmp_path)
    said = f"longplay up (pid {ended.pid}) has ended but its Redis still runs on {tmp_path}"
    assert str(refused.value) == said


def test_the_url_an_up_saved_is_found_unless_another_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LONGPLAY_API_URL", "LONGPLAY_API_HOST", "LONGPLAY_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert find_url(Settings(data_dir=tmp_path)) == "http://127.0.0.1:8000"
    (tmp_path / "api-url").write_text("http://127.0.0.1:18231\n")
    assert find_url(Settings(data_dir=tmp_path)) == "http://127.0.0.1:18231"
    monkeypatch.setenv("LONGPLAY_API_PORT", "8000")  # set, even to the default, it wins
    assert find_url(Settings(data_dir=tmp_path)) == "http://127.0.0.1:8000"
    monkeypatch.setenv("LONGPLAY_API_URL", "https://media.example.org/")
    assert find_url(Settings(data_dir=tmp_path)) == "https://media.example.org"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),  # printed as is, a browser could not open it
        ("::", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("media.example.org", "http://media.example.org:8000"),
    ],
)
def test_up_prints_an_address_a_browser_on_this_machine_can_open(host: str, url: str) -> None:
    assert local_url(host, 8000) == url


def test_up_with_a_plugin_that_cannot_be_loaded_says_so_and_starts_nothing(
    tmp_path: Path,
) -> None:
    """Every part imports the plugins: one that fails took each part down at every
    start, for ever, under a banner saying the service ran."""
    data_dir, port = tmp_path / "data", free_port()
    plugins = '["plugin_kinds", "no_such_plugin"]'
    said = refusal(data_dir, port, LONGPLAY_PLUGINS=plugins)
    assert (
        "LONGPLAY_PLUGINS cannot be loaded: ModuleNotFoundError: No module named 'no_such_plugin'"
    ) in said.splitlines()
    assert "Traceback" not in said
    assert nothing_listens(data_dir, port)


def test_up_refuses_a_folder_whose_redis_an_earlier_up_left_running(tmp_path: Path) -> None:
    """An ``up`` older than the folder's lock, or the parts of one killed with them
    left running, hold no lock: a second Redis started on the same socket and
    append-only file, and a second worker and beat beside the first."""
    data_dir, port = tmp_path / "data", free_port()
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir)
    left = subprocess.Popen(redis_command(settings), stdout=subprocess.DEVNULL)
    try:
        wait_until_ready(settings.redis_socket)
        said = refusal(data_dir, port)
    finally:
        left.terminate()
        left.wait(30)
    assert said == (
        f"a Redis already answers on {settings.redis_socket}: the parts of an earlier "
        f"longplay up (one older than its lock, or killed with its parts left running) "
        f"still use {data_dir}; stop them first"
    )
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "it started an API"


@pytest.mark.parametrize("part", ["api", "worker", "beat"])
def test_each_part_started_alone_refuses_a_plugin_that_cannot_be_loaded(
    part: str, tmp_path: Path
) -> None:
    """In a split deployment each part imports the plugins itself: it says so as ``up``
    does, in a line with no traceback, and exits 1. An API with two worker processes
    started them again and again, each with a traceback, and never exited."""
    env = up_env(
        tmp_path / "data",
        free_port(),
        LONGPLAY_PLUGINS='["plugin_kinds", "no_such_plugin"]',
        LONGPLAY_API_WORKERS="2",
    )
    started = subprocess.run(
        [sys.executable, "-m", "longplay", part],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = started.stderr.strip()
    assert started.returncode == 1, said
    assert (
        "LONGPLAY_PLUGINS cannot be loaded: ModuleNotFoundError: No module named 'no_such_plugin'"
    ) in said.splitlines()
    assert "Traceback" not in said, said


BROKEN_PLUGIN = """\
from pydantic import BaseModel

from longplay.framework import JobKind, Step, register


class Loudness(BaseModel):
    window_s: float = 0.4


def measure(ctx):
    pass


register(
    JobKind(name="loudness-report", params={params}, steps=[Step("measure", measure{weight})])
)
"""


@pytest.mark.parametrize(
    ("params", "weight", "why"),
    [
        (
            "Loudness()",
            "",
            "TypeError: job kind 'loudness-report': params must be a pydantic model class "
            "(params=MyParams), not Loudness(window_s=0.4)",
        ),
        ("Loudness", ', weight="1"', "TypeError: step 'measure': weight must be a number, not '1'"),
    ],
)
def test_a_plugin_kind_written_wrong_is_refused_naming_the_line(
    tmp_path: Path, params: str, weight: str, why: str
) -> None:
    """A mistake in a plugin's kind is refused at ``up`` with what is wrong and the
    plugin's line that did it, before any part starts: an instance as ``params`` was
    taken and then failed every submission of the kind and the API's whole OpenAPI
    document; a weight written as text failed with an error naming no step or file."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    source = plugins / "loudness_report.py"
    source.write_text(BROKEN_PLUGIN.format(params=params, weight=weight))
    data_dir, port = tmp_path / "data", free_port()
    said = refusal(
        data_dir,
        port,
        LONGPLAY_PLUGINS='["loudness_report"]',
        PYTHONPATH=f"{plugins}{os.pathsep}{TESTS}",
    ).splitlines()
    first = said.index(f"LONGPLAY_PLUGINS cannot be loaded: {why}")
    at = f'  at {source}, line 15: JobKind(name="loudness-report", params={params}, '
    assert said[first + 1].startswith(at), said
    assert nothing_listens(data_dir, port)


def test_a_plugin_named_like_longplay_is_still_named_as_the_plugin() -> None:
    """A plugin package ``longplay_whisper`` sits beside ``longplay`` in site-packages:
    its frame is the plugin's, not longplay's own."""
    from longplay.cli import serve

    ours = Path(serve.__file__).resolve().parents[1]
    plugin = f"{ours}_whisper/kinds.py"
    traceback = [
        "Traceback (most recent call last):",
        f'  File "{ours}/kinds/__init__.py", line 33, in load',
        "    importlib.import_module(module)",
        f'  File "{plugin}", line 7, in <module>',
        "    register(JobKind(name='w', params=P(), steps=[]))",
        f'  File "{ours}/framework/kinds.py", line 330, in __post_init__',
        "    _check_params_model(self.name, self.params)",
        "TypeError: job kind 'w': params must be a pydantic model class",
    ]
    assert serve._plugin_frame(traceback) == (
        f"{plugin}, line 7: register(JobKind(name='w', params=P(), steps=[]))"
    )


@pytest.mark.timeout(180)
def test_up_with_json_logs_writes_json_lines_and_no_key(tmp_path: Path) -> None:
    """With ``LONGPLAY_LOG_FORMAT=json`` what ``up`` itself tells (its address, where
    the new key is, when it is ready) is a JSON line like the parts' own, and the key
    is not in it: a log collector reading the output must not get a credential."""
    data_dir, port = tmp_path / "data", free_port()
    printed = tmp_path / "up.txt"
    process = start_up(data_dir, port, printed, LONGPLAY_LOG_FORMAT="json")
    try:
        api_client(data_dir, port)
        wait_until(lambda: "ready after" in printed.read_text(), timeout=30)
        key = (data_dir / "api-key").read_text().strip()
        text = printed.read_text()
        assert key not in text
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        told = [line["message"] for line in lines if line.get("logger") == "longplay.up"]
        assert f"API key for owner 'local' saved in {data_dir / 'api-key'}" in told
        assert any(said.startswith(f"longplay on http://127.0.0.1:{port}") for said in told)
        assert any(said.startswith("ready after") for said in told)
    finally:
        assert stop(process, signal.SIGINT) == 0
