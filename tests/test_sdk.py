"""The Python SDK (``longplay.Client``, ``longplay.AsyncClient``) against a live stack:
real API, worker, Redis and database. Broken links are made by a real TCP proxy
between the SDK and the API that cuts its connections or refuses event streams."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from conftest import Stack, assert_mypy_strict, free_port
from sqlalchemy import select

import longplay
from longplay import ApiError, AsyncClient, Client
from longplay.client import Event, FlowPublic, JobPublic, JobStatus, WaitTimeout
from longplay.store.db import session_scope
from longplay.store.models import Owner

OWNER = "sdk"
README = Path(__file__).resolve().parents[1] / "README.md"
LONG_FLOW = {"stages": {"long": {"kind": "sleep", "params": {"seconds": 60, "ticks": 600}}}}
"""A flow that runs long enough to be cancelled while it runs."""


class Proxy:
    """A TCP proxy in front of the API: :meth:`cut` closes every connection through
    it (a network that drops links); with :attr:`refuse_streams`, it closes each
    connection that asks for an event stream (a proxy that breaks SSE); while
    :attr:`drop_reads` lasts, it closes each connection that reads a job (an API gone
    just as a follower asks whether the job has ended)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.refuse_streams = False
        self.streams = 0
        """Event stream requests seen."""
        self.refused = 0
        self.drop_reads = 0
        self.dropped = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = socket.create_connection(self.upstream)
            with self._lock:
                self._open += [near, far]
            threading.Thread(target=self._pump, args=(near, far, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, asks: bool) -> None:
        try:
            while data := source.recv(65536):
                request = data.split(b"\r\n", 1)[0] if asks else b""
                if b"/events " in request:
                    self.streams += 1
                    if self.refuse_streams:
                        self.refused += 1
                        break
                elif self.drop_reads and request.startswith(b"GET /v1/jobs/job_"):
                    self.drop_reads -= 1
                    self.dropped += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def cut(self) -> None:
        with self._lock:
            ends, self._open = self._open, []
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(stack: Stack) -> Iterator[Proxy]:
    made = Proxy(stack.api_url)
    yield made
    made.close()


@pytest.fixture
def api(stack: Stack) -> Iterator[Client]:
    with Client(stack.api_url, stack.key(OWNER)) as client:
        yield client


def _order(event_id: str | None) -> tuple[int, int]:
    assert event_id is not None
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def test_importing_the_sdk_loads_no_server() -> None:
    code = (
        "import sys, longplay\n"
        "assert 'longplay.client' not in sys.modules, 'import longplay stays light'\n"
        "from longplay import AsyncClient, Client\n"
        "server = ('fastapi', 'starlette', 'uvicorn', 'celery', 'kombu', 'redis', 'psycopg')\n"
        "print(sorted(m for m in server if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _client_section() -> str:
    """The README's "Python client" section, to its next heading of the same level."""
    text = README.read_text()
    start = text.index("\n## Python client\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readmes_client_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """The first code a user copies type-checks as written (``done.error`` may be
    None; ``wait`` gives a ``JobPublic``, not the ``SubmittedJob`` it was given)."""
    blocks = re.findall(r"```python\n(.*?)```", _client_section(), re.S)
    assert len(blocks) == 2
    examples = [tmp_path / f"client_example_{n}.py" for n in range(len(blocks))]
    for example, block in zip(examples, blocks, strict=True):
        example.write_text(block)
    assert_mypy_strict(*examples, cwd=tmp_path)


def test_every_name_the_readme_uses_imports_from_longplay() -> None:
    """The README's client section says ``wait(timeout=...)`` raises ``WaitTimeout``,
    names the models results are, and imports from ``longplay``: each of those names
    is there, the SDK's own object, and ``import longplay`` still loads no SDK."""
    section = _client_section()
    named = set(re.findall(r"`([A-Z][a-z]\w*)`", section))
    named |= set(re.findall(r"longplay\.([A-Z]\w*)", section))
    for imported in re.findall(r"from longplay import ([\w, ]+)", section):
        named |= {n.strip() for n in imported.split(",")}
    assert {"WaitTimeout", "SubmittedJob", "JobPublic", "FlowPublic", "ApiError"} <= named
    from longplay import client

    missing = sorted(name for name in named if not hasattr(longplay, name))
    assert not missing, f"`from longplay import` cannot give {missing}"
    for name in sorted(named):
        assert getattr(longplay, name) is getattr(client, name), name
        assert name in longplay.__all__ and name in dir(longplay), name
    code = (
        "import sys, longplay\n"
        "assert 'longplay.client' not in sys.modules, 'import longplay stays light'\n"
        f"from longplay import {', '.join(sorted(named))}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_submit_wait_and_download(stack: Stack, api: Client, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("input")
    progress: list[Event] = []
    job = api.submit(
        "sleep", files=[note], params={"seconds": 1, "ticks": 5, "text": "from the sdk"}
    )
    assert isinstance(job, JobPublic) and len(job.inputs) == 1
    done = api.wait(job, on_progress=progress.append, timeout=60)
    assert done.status == JobStatus.COMPLETED
    values = [e.progress for e in progress]
    assert len(values) >= 4, values
    assert values == sorted(values) and (values[-1] or 0) >= 99, values
    assert {e.step for e in progress} >= {"prepare", "work"}

    [saved] = api.download(done, tmp_path / "out")
    assert saved == tmp_path / "out" / "result.txt"
    assert saved.read_text() == "from the sdk"

    content = os.urandom(300_000)
    (tmp_path / "blob.bin").write_bytes(content)
    artifact = api.upload(tmp_path / "blob.bin")
    assert api.download(artifact, tmp_path / "copy.bin").read_bytes() == content
    again = api.download(artifact.id, f"{tmp_path}/folder/")
    assert again == tmp_path / "folder" / "blob.bin"
    assert again.read_bytes() == content
    assert not list(tmp_path.rglob("*.part"))

    # An uploaded artifact as an input, and the job found in the list.
    used = api.submit("sleep", params={"seconds": 0}, inputs=[artifact])
    assert used.inputs == [artifact.id]
    assert api.wait(used, timeout=60).status == JobStatus.COMPLETED
    listed = api.list(status="completed", kind="sleep", limit=200)
    assert {job.id, used.id} <= {j.id for j in listed.items}


def test_async_client_submit_wait_and_download(stack: Stack, tmp_path: Path) -> None:
    async def run() -> tuple[list[float], list[str], JobPublic, bytes]:
        progress: list[float] = []
        types: list[str] = []

        async def on_progress(event: Event) -> None:
            await asyncio.sleep(0)
            progress.append(event.progress or 0)

        async with AsyncClient(stack.api_url, stack.key(OWNER)) as client:
            job = await client.submit("sleep", params={"seconds": 1, "ticks": 5, "text": "async"})
            done = await client.wait(
                job, on_progress=on_progress, on_event=lambda e: types.append(e.type), timeout=60
            )
            [saved] = await client.download(done, tmp_path)
            listed = await client.list(kind="sleep")
            assert done.id in {j.id for j in listed.items}
            return progress, types, done, saved.read_bytes()

    progress, types, done, content = asyncio.run(run())
    assert done.status == JobStatus.COMPLETED
    assert len(progress) >= 4 and progress == sorted(progress), progress
    assert types[-1] == "completed" and "running" in types
    assert content == b"async"


def test_async_client_collections(stack: Stack, tmp_path: Path) -> None:
    """Create, list, fill, read and search a collection with the async client, and a
    wrong collection id is the API's 404 as an ApiError."""
    fact = "The ferry Kestrelwind leaves the north quay at 07:40 every weekday."
    note = tmp_path / "ferry.md"
    note.write_text(f"# Harbour timetable\n\n{fact}\n")
    name = f"SDK notes {uuid.uuid4()}"

    async def run() -> None:
        async with AsyncClient(stack.api_url, stack.key(OWNER)) as client:
            made = await client.create_collection(name)
            assert made["id"].startswith("col_") and made["name"] == name
            assert made["document_count"] == 0
            listed = await client.collections()
            assert made["id"] in {c["id"] for c in listed["items"]}

            added = await client.add_documents(made["id"], [note])
            assert [d["name"] for d in added["documents"]] == ["ferry.md"]
            assert added["job"]["kind"] == "index"
            indexed = await client.wait(added["job"]["id"], timeout=120)
            assert indexed.status == JobStatus.COMPLETED, indexed.error
            detail = await client.collection(made["id"])
            [document] = detail["documents"]
            assert document["status"] == "indexed" and document["passages"] >= 1

            found = await client.search(made["id"], "when does the Kestrelwind leave", limit=3)
            best = found["items"][0]
            assert best["document_name"] == "ferry.md" and fact in best["text"], found

            # A file the service holds already (an upload, a job's output) by its artifact.
            upload = await client.upload(note, name="ferry-again.md")
            again = await client.add_artifacts(made["id"], upload)
            assert [d["name"] for d in again["documents"]] == ["ferry-again.md"]
            assert (await client.wait(again["job"]["id"], timeout=120)).status == "completed"
            assert (await client.search(made["id"], "Plumbagoria"))["items"] == []

            with pytest.raises(ApiError) as read:
                await client.collection("col_nope")
            with pytest.raises(ApiError) as searched:
                await client.search("col_nope", "ferry")
            with pytest.raises(ApiError) as filled:
                await client.add_documents("col_nope", [note])
            for caught in (read, searched, filled):
                assert (caught.value.code, caught.value.status_code) == ("not_found", 404)

    asyncio.run(run())


def test_a_stored_file_is_added_to_a_collection_by_its_artifact(
    stack: Stack, tmp_path: Path
) -> None:
    """The API takes ``{"artifacts": [ids]}``; the SDK took only paths, and an id given
    as one was a FileNotFoundError."""
    note = tmp_path / "tide.txt"
    note.write_text("Spring tides at Skerry Point rise more than five metres.\n")
    with Client(stack.api_url, stack.key(OWNER)) as client:
        made = client.create_collection(f"SDK artifacts {uuid.uuid4()}")
        upload = client.upload(note)
        added = client.add_artifacts(made["id"], [upload.id])
        assert [d["name"] for d in added["documents"]] == ["tide.txt"]
        assert client.wait(added["job"]["id"], timeout=120).status == JobStatus.COMPLETED
        [found] = client.search(made["id"], "spring tides", limit=1)["items"]
        assert found["document_name"] == "tide.txt", found
        with pytest.raises(ApiError) as missing:
            client.add_artifacts(made["id"], "art_nope")
        assert missing.value.status_code == 422, missing.value
        assert "no such artifact: art_nope" in str(missing.value)


def test_events_resume_after_the_link_breaks(stack: Stack, proxy: Proxy) -> None:
    with Client(proxy.url, stack.key(OWNER)) as client:
        job = client.submit("sleep", params={"seconds": 1.5, "ticks": 15})
        seen: list[Event] = []
        for event in client.events(job):
            seen.append(event)
            if len(seen) in (3, 9):
                proxy.cut()  # mid-stream: the SDK resumes after the last event it gave
    assert proxy.streams >= 3, "the stream was followed on three links"
    with Client(stack.api_url, stack.key(OWNER)) as direct:
        every = list(direct.events(job))
    ids = [e.id for e in seen]
    assert ids == [e.id for e in every], "no event lost, none repeated"
    assert [_order(i) for i in ids] == sorted(_order(i) for i in ids)
    assert seen[-1].type == "completed"

    # A stream can also be taken up later from an event's id.
    with Client(stack.api_url, stack.key(OWNER)) as direct:
        rest = list(direct.events(job, last_event_id=ids[4]))
        assert list(direct.events(job, last_event_id=ids[-1])) == [], "after the end: none"
    assert [e.id for e in rest] == ids[5:]

    async def follow_async() -> tuple[list[str | None], list[str | None]]:
        async with AsyncClient(proxy.url, stack.key(OWNER)) as client:
            job = await client.submit("sleep", params={"seconds": 1, "ticks": 10})
            got: list[str | None] = []
            async for event in client.events(job):
                got.append(event.id)
                if len(got) == 4:
                    proxy.cut()
        async with AsyncClient(stack.api_url, stack.key(OWNER)) as direct:
            return got, [e.id async for e in direct.events(job)]

    streams = proxy.streams
    got, every_async = asyncio.run(follow_async())
    assert proxy.streams >= streams + 2
    assert got == every_async and len(set(got)) == len(got)


def test_events_end_though_the_api_goes_away_at_the_last_event(stack: Stack, proxy: Proxy) -> None:
    """After a job's last event the follower asks whether the job has ended (a retried
    job's stream holds its earlier endings too); an API gone at that moment is a break
    to resume from, not the end of following."""
    with Client(proxy.url, stack.key(OWNER)) as client:
        job = client.submit("sleep", params={"seconds": 0.3, "ticks": 3})
        proxy.drop_reads = 2
        seen = [event.type for event in client.events(job)]
    assert proxy.dropped == 2
    assert seen[-1] == "completed" and seen.count("completed") == 1

    async def follow_async() -> list[str]:
        async with AsyncClient(proxy.url, stack.key(OWNER)) as client:
            job = await client.submit("sleep", params={"seconds": 0.3, "ticks": 3})
            proxy.drop_reads = 2
            return [event.type async for event in client.events(job)]

    seen = asyncio.run(follow_async())
    assert proxy.dropped == 4
    assert seen[-1] == "completed" and seen.count("completed") == 1


def test_wait_polls_when_streams_are_refused(stack: Stack, proxy: Proxy) -> None:
    proxy.refuse_streams = True
    progress: list[Event] = []
    with Client(proxy.url, stack.key(OWNER), poll_interval=0.2) as client:
        job = client.submit("sleep", params={"seconds": 1.5, "ticks": 10, "text": "polled"})
        done = client.wait(job, on_progress=progress.append, timeout=60)
    assert proxy.refused >= 1
    assert done.status == JobStatus.COMPLETED
    assert progress and all(e.type == "progress" for e in progress)
    assert [e.progress for e in progress] == sorted(e.progress for e in progress)

    async def wait_async() -> tuple[JobPublic, list[str]]:
        seen: list[str] = []
        async with AsyncClient(proxy.url, stack.key(OWNER), poll_interval=0.2) as client:
            job = await client.submit("sleep", params={"seconds": 0.5, "ticks": 5})
            done = await client.wait(job, on_event=lambda e: seen.append(e.type), timeout=60)
            return done, seen

    refused = proxy.refused
    done, seen = asyncio.run(wait_async())
    assert proxy.refused > refused
    assert done.status == JobStatus.COMPLETED and seen[-1] == "completed"


def test_cancel_and_wait_timeout(api: Client) -> None:
    job = api.submit("sleep", params={"seconds": 30, "ticks": 300})
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        api.wait(job, timeout=1)
    assert time.monotonic() - started < 5
    for event in api.events(job):
        if event.type == "progress":
            break
    api.cancel(job)
    done = api.wait(job, timeout=30)
    assert done.status == JobStatus.CANCELLED


def test_retry_of_a_failed_job(api: Client) -> None:
    job = api.submit("sleep", params={"seconds": 0.1, "ticks": 1, "fail": "permanent"})
    failed = api.wait(job, timeout=60)
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "asked_to_fail"
    again = api.retry(failed)
    assert again.id == job.id and again.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    ended = api.wait(again, timeout=60)
    assert ended.status == JobStatus.FAILED and ended.attempts == 2

    completed = api.submit("sleep", params={"seconds": 0})
    api.wait(completed, timeout=60)
    with pytest.raises(ApiError) as refused:
        api.retry(completed)
    assert (refused.value.code, refused.value.status_code) == ("conflict", 409)


def test_the_same_idempotency_key_gives_the_same_job(api: Client, tmp_path: Path) -> None:
    key = f"sdk-{uuid.uuid4()}"
    first = api.submit("sleep", params={"seconds": 0}, idempotency_key=key)
    second = api.submit("sleep", params={"seconds": 0}, idempotency_key=key)
    assert first.id == second.id
    note = tmp_path / "note.txt"
    note.write_text("input")
    key = f"sdk-{uuid.uuid4()}"
    with_file = api.submit("sleep", files=[note], params={"seconds": 0}, idempotency_key=key)
    assert api.submit("sleep", files=[note], params={"seconds": 0}, idempotency_key=key).id == (
        with_file.id
    )
    # Each submit has a key of its own unless told: two submits are two jobs.
    assert (
        api.submit("sleep", params={"seconds": 0}).id
        != api.submit("sleep", params={"seconds": 0}).id
    )
    # Another file with the key is another request: refused, the API's words in message.
    other = tmp_path / "other.txt"
    other.write_text("other input")
    with pytest.raises(ApiError) as reused:
        api.submit("sleep", files=[other], params={"seconds": 0}, idempotency_key=key)
    error = reused.value
    assert (error.code, error.status_code) == ("idempotency_key_reused", 422)
    assert error.message.startswith("this Idempotency-Key was first used for another request")
    assert "other inputs" in error.message and str(error).startswith("422 ")


def test_an_upload_is_deleted_given_as_itself(api: Client, tmp_path: Path) -> None:
    note = tmp_path / "unused.txt"
    note.write_text("never named")
    upload = api.upload(note)
    api.delete_artifact(upload)
    with pytest.raises(ApiError) as gone:
        api.download(upload, tmp_path / "copy.txt")
    assert gone.value.status_code == 404 and gone.value.message == f"no artifact {upload.id}"


def test_dedupe_says_when_the_job_is_an_earlier_one(api: Client, tmp_path: Path) -> None:
    """With ``dedupe``, a submit that gets back an earlier completed job says so; the
    flag is the SDK's, not the job's JSON, and the job reads as any other."""
    note = tmp_path / "note.txt"
    note.write_text(f"the same bytes {uuid.uuid4()}")
    params = {"seconds": 0, "text": "reused"}
    first = api.submit("sleep", files=[note], params=params, dedupe=True)
    assert first.deduplicated is False
    assert api.wait(first, timeout=60).status == JobStatus.COMPLETED
    again = api.submit("sleep", files=[note], params=params, dedupe=True)
    assert again.deduplicated is True
    assert isinstance(again, JobPublic)
    assert (again.id, again.status) == (first.id, JobStatus.COMPLETED)
    assert "deduplicated" not in again.model_dump(mode="json")
    assert api.submit("sleep", files=[note], params=params).deduplicated is False


def test_async_dedupe_says_when_the_job_is_an_earlier_one(stack: Stack) -> None:
    params = {"seconds": 0, "text": f"reused {uuid.uuid4()}"}

    async def run() -> tuple[JobPublic, JobPublic]:
        async with AsyncClient(stack.api_url, stack.key(OWNER)) as client:
            first = await client.submit("sleep", params=params, dedupe=True)
            assert first.deduplicated is False
            assert (await client.wait(first, timeout=60)).status == JobStatus.COMPLETED
            again = await client.submit("sleep", params=params, dedupe=True)
            assert again.deduplicated is True
            return first, again

    first, again = asyncio.run(run())
    assert (again.id, again.status) == (first.id, JobStatus.COMPLETED)


def test_errors_carry_the_api_code(stack: Stack, api: Client) -> None:
    with Client(stack.api_url, "lp_not_a_key") as wrong, pytest.raises(ApiError) as caught:
        wrong.list()
    assert (caught.value.code, caught.value.status_code) == ("unauthorized", 401)
    with pytest.raises(ApiError) as caught:
        api.submit("nonsense")
    assert (caught.value.code, caught.value.status_code) == ("invalid_request", 422)
    assert "unknown job kind" in str(caught.value)
    with pytest.raises(ApiError) as caught:
        api.submit("sleep", params={"seconds": "soon"})
    assert caught.value.code == "invalid_params" and caught.value.details
    said = str(caught.value)  # where and what, each once
    assert said.count("valid number") == 1 and said.count("body.params.seconds") == 1, said
    with pytest.raises(ApiError) as caught:
        api.get("job_nope")
    assert (caught.value.code, caught.value.status_code) == ("not_found", 404)
    assert caught.value.retryable is False, "the API's word: the request must change"
    with Client(f"http://127.0.0.1:{free_port()}", "k") as nobody, pytest.raises(ApiError) as no:
        nobody.get("job_nope")
    assert no.value.code == "unreachable" and no.value.status_code is None
    assert no.value.retryable, "no answer: it may come later"


def _rate_limit(stack: Stack, owner: str, per_minute: float) -> None:
    stack.key(owner)
    with session_scope(stack.database_url) as session:
        found = session.scalar(select(Owner).where(Owner.name == owner))
        assert found is not None
        found.submit_rate = per_minute


def test_a_429_is_waited_out_by_its_retry_after(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """An owner's submit rate (30 a minute: a burst of 30, then one per 2 s) answers
    429 with a Retry-After; the SDK waits that long and sends the same submission again."""
    owner = "sdk-rate"
    _rate_limit(stack, owner, 30.0)
    later = datetime.now(UTC) + timedelta(hours=1)  # they stay queued, taking no worker
    made: list[JobPublic] = []
    key = stack.key(owner)
    with (
        Client(stack.api_url, key, retry_budget=0) as impatient,
        Client(stack.api_url, key, retry_budget=10) as patient,
    ):
        try:
            for _round in range(3):
                refusal = None
                for _ in range(40):  # to the limit: the first 429
                    try:
                        made.append(impatient.submit("sleep", run_at=later))
                    except ApiError as exc:
                        refusal = exc
                        break
                assert refusal is not None, "a burst of 30 then 429"
                assert (refusal.code, refusal.status_code) == ("rate_limited", 429)
                assert refusal.retry_after is not None and 1 <= refusal.retry_after <= 2
                caplog.clear()
                started = time.monotonic()
                with caplog.at_level(logging.INFO, logger="longplay.client"):
                    made.append(patient.submit("sleep", run_at=later))
                took = time.monotonic() - started
                waits = [
                    float(m.group(1))
                    for r in caplog.records
                    if (m := re.search(r"answered 429; trying again in ([\d.]+) s", r.getMessage()))
                ]
                if waits:  # else a token came back between the two: try once more
                    break
            assert waits, "the patient client met a 429 and waited"
            assert 1 <= waits[0] <= 2 and took >= sum(waits)
            assert made[-1].status == JobStatus.QUEUED
        finally:
            for job in made:
                impatient.cancel(job)


def test_downloads_never_replace_a_file_unless_asked(api: Client, tmp_path: Path) -> None:
    job = api.wait(api.submit("sleep", params={"seconds": 0, "text": "new"}), timeout=60)
    out = tmp_path / "out"
    first = api.download(job, out)
    second = api.download(job, out)
    assert [p.name for p in first + second] == ["result.txt", "result (1).txt"]
    assert [p.read_text() for p in first + second] == ["new", "new"]
    made = out / "made-here"
    made.touch()
    assert {p.stat().st_mode & 0o777 for p in first + second} == {made.stat().st_mode & 0o777}
    made.unlink()
    (out / "result.txt").write_text("mine")
    assert api.download(job, out, overwrite=True) == first
    assert (out / "result.txt").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["result (1).txt", "result.txt"]

    async def twice() -> list[Path]:
        async with AsyncClient(api.url, api.http.headers["Authorization"][7:]) as client:
            return [await client.download(job, out) for _ in range(2)][1]

    assert [p.name for p in asyncio.run(twice())] == ["result (3).txt"]


class _NotTheApi(http.server.BaseHTTPRequestHandler):
    """What a misconfigured proxy answers: a redirect with no body, or an HTML page."""

    def do_GET(self) -> None:
        if self.path.startswith("/sse"):  # an event stream of something else's
            self._answer(200, b"data: [1, 2]\n\n", "text/event-stream")
        elif self.path.startswith("/list"):  # JSON, but not what was asked for
            self._answer(200, b"[]", "application/json")
        elif self.path.startswith("/moved"):
            self._answer(301, b"", Location="https://example.invalid/")
        else:
            self._answer(200, b"<html><body>Sign in to the proxy</body></html>", "text/html")

    def _answer(self, status: int, body: bytes, media_type: str = "", **headers: str) -> None:
        self.send_response(status)
        if media_type:
            self.send_header("Content-Type", media_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("prefix", ["/moved", "/page"])
def test_an_answer_that_is_not_the_apis_is_an_api_error(prefix: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    try:
        with Client(url, "lp_key") as client:
            for call in (lambda: client.get("job_1"), lambda: client.wait("job_1", timeout=10)):
                with pytest.raises(ApiError) as caught:
                    call()
                assert caught.value.code == "bad_answer", caught.value
                assert ("301" if prefix == "/moved" else "text/html") in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()


def test_json_that_is_not_the_answer_asked_for_is_an_api_error() -> None:
    """A list where a job belongs was pydantic's ValidationError, not an ApiError."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/list"

    async def read_async() -> None:
        async with AsyncClient(url, "lp_key") as client:
            await client.get("job_1")

    try:
        with Client(url, "lp_key") as client:
            for call in (
                lambda: client.get("job_1"),
                lambda: client.list(),
                lambda: asyncio.run(read_async()),
            ):
                with pytest.raises(ApiError) as caught:
                    call()
                assert caught.value.code == "bad_answer", caught.value
                assert "not the" in str(caught.value), caught.value
        with Client(url.replace("/list", "/sse"), "lp_key") as client:
            with pytest.raises(ApiError) as caught:
                list(client.events("job_1"))
            assert caught.value.code == "bad_answer", caught.value
            assert "not one of the API's events: '[1, 2]'" in str(caught.value)
            assert not caught.value.retryable, "like every bad_answer: not the API's"
    finally:
        server.shutdown()
        server.server_close()


def test_an_id_with_a_slash_reaches_no_other_route(stack: Stack, api: Client) -> None:
    """The SDK quotes the slash (%2F), which the server decoded before routing: the
    job's attempts answered, a list, and the SDK raised pydantic's ValidationError."""
    job = api.submit("sleep", params={"seconds": 0})
    with pytest.raises(ApiError) as caught:
        api.get(f"{job.id}/attempts")
    assert caught.value.code == "not_found" and caught.value.status_code == 404


def test_wait_on_no_api_fails_at_once() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with Client(nobody, "lp_key") as client, pytest.raises(ApiError) as caught:
        client.wait("job_1")
    assert caught.value.code == "unreachable"

    async def wait_async() -> None:
        async with AsyncClient(nobody, "lp_key") as client:
            await client.wait("job_1")

    with pytest.raises(ApiError):
        asyncio.run(wait_async())
    assert time.monotonic() - started < 3


def test_following_a_flow_whose_stream_is_gone_ends_with_its_status(
    stack: Stack, api: Client
) -> None:
    """A flow's stream expires (its ``flow_ended`` with it); the API then ends the
    stream with no last event, and the SDK ends with the flow's end as it shows it."""
    made = api.submit_flow({"stages": {"only": {"kind": "sleep", "params": {"seconds": 0}}}})
    stream = redis.Redis.from_url(stack.redis_url)
    key = f"longplay:events:{made.id}"

    def ended() -> bool:
        return any(b'"flow_ended"' in f[b"data"] for _, f in stream.xrange(key))

    deadline = time.monotonic() + 60
    while not ended():
        assert time.monotonic() < deadline, "the flow ended"
        time.sleep(0.1)
    stream.delete(key)

    started = time.monotonic()
    [event] = list(api.flow_events(made.id))
    assert (event.type, event.status, event.get("flow_id")) == ("flow_ended", "completed", made.id)

    async def follow_async() -> list[Event]:
        async with AsyncClient(api.url, api.http.headers["Authorization"][7:]) as client:
            return [e async for e in client.flow_events(made.id)]

    assert [e.type for e in asyncio.run(follow_async())] == ["flow_ended"]
    assert time.monotonic() - started < 5


def test_flows_are_named_by_themselves_or_their_id_and_cancelled(api: Client) -> None:
    """As a job can, a flow can be given as the ``FlowPublic`` ``submit_flow`` returned
    or as its id, to ``flow``, ``flow_events`` and ``cancel_flow``; cancelling it
    cancels its stages, and a flow that has ended cannot be cancelled again (409)."""
    made = api.submit_flow(LONG_FLOW)
    assert isinstance(made, FlowPublic)
    assert api.flow(made).id == made.id and api.flow(made.id).id == made.id
    stage = made.stages["long"]
    for event in api.events(stage):
        if event.type == "progress":
            break
    cancelled = api.cancel_flow(made)
    assert cancelled.status == "cancelled" and cancelled.stages["long"].status == "cancelled"
    *_, last = api.flow_events(made)
    assert (last.type, last.status, last.get("flow_id")) == ("flow_ended", "cancelled", made.id)
    with pytest.raises(ApiError) as refused:
        api.cancel_flow(made.id)
    assert (refused.value.code, refused.value.status_code) == ("conflict", 409)
    with pytest.raises(TypeError, match="a flow or an id"):
        api.flow(made.stages)  # type: ignore[arg-type]


def test_async_flows_are_named_by_themselves_or_their_id_and_cancelled(stack: Stack) -> None:
    async def run() -> tuple[FlowPublic, FlowPublic, list[Event], ApiError]:
        async with AsyncClient(stack.api_url, stack.key(OWNER)) as client:
            made = await client.submit_flow(LONG_FLOW)
            seen = await client.flow(made)
            cancelled = await client.cancel_flow(made)
            events = [e async for e in client.flow_events(made)]
            with pytest.raises(ApiError) as refused:
                await client.cancel_flow(made.id)
            return seen, cancelled, events, refused.value

    seen, cancelled, events, refused = asyncio.run(run())
    assert cancelled.id == seen.id and cancelled.status == "cancelled"
    assert (events[-1].type, events[-1].status) == ("flow_ended", "cancelled")
    assert (refused.code, refused.status_code) == ("conflict", 409)
