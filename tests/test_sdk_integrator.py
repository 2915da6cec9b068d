"""The SDK as an integrator meets it, against a live stack (real API, worker, Redis and
database): lost answers, many waits on one client, single values where lists go,
pickled errors, ids that are no plain path segment, mistaken URLs and a proxy's
pages. A fake server stands in only where the real one cannot misbehave so: a proxy
that drops an answer, a proxy that answers 502 with an HTML page."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import pickle
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import Stack

from longplay import ApiError, AsyncClient, Client, WaitTimeout
from longplay.settings import get_settings

LATER = datetime.now(UTC) + timedelta(hours=1)
"""A ``run_at`` for a job that will not start during a test."""


class DropProxy:
    """An HTTP proxy before the API that forwards every request and drops the answer
    to the first ``drops`` submissions (``POST /v1/jobs``): the job is made, the
    client hears nothing. It records each submission's ``Idempotency-Key`` and the
    ids the API answered."""

    def __init__(
        self,
        upstream: str,
        drops: int,
        bad_gateways: int = 0,
        late_submits: int = 0,
        busy_downloads: int = 0,
        dropped_downloads: int = 0,
    ) -> None:
        self.upstream = upstream
        self.drops = drops
        self.bad_gateways = bad_gateways
        """Reads of one job (``GET /v1/jobs/ID``) answered with a proxy's 502 page first."""
        self.late_submits = late_submits
        """Submissions answered with a proxy's 504 page after the API made their job."""
        self.busy_downloads = busy_downloads
        """Downloads (``GET .../content``) answered with a proxy's 503 page first."""
        self.dropped_downloads = dropped_downloads
        """Downloads whose connection is closed with no answer first."""
        self.keys: list[str | None] = []
        self.made: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, asked: http.server.BaseHTTPRequestHandler) -> None:
        one_job = asked.command == "GET" and re.fullmatch(r"/v1/jobs/[^/?]+", asked.path)
        if one_job and self.bad_gateways > 0:
            self.bad_gateways -= 1
            _gateway_page(asked, 502)
            return
        if asked.command == "GET" and asked.path.endswith("/content"):
            if self.dropped_downloads > 0:
                self.dropped_downloads -= 1
                asked.close_connection = True
                return
            if self.busy_downloads > 0:
                self.busy_downloads -= 1
                _gateway_page(asked, 503)
                return
        length = int(asked.headers.get("Content-Length") or 0)
        body = asked.rfile.read(length) if length else b""
        skip = {"host", "content-length", "connection"}
        headers = {k: v for k, v in asked.headers.items() if k.lower() not in skip}
        answer = httpx.request(
            asked.command, self.upstream + asked.path, headers=headers, content=body, timeout=60
        )
        if asked.command == "POST" and asked.path == "/v1/jobs":
            self.keys.append(asked.headers.get("Idempotency-Key"))
            self.made.append(answer.json()["id"])
            if self.drops > 0:
                self.drops -= 1
                asked.close_connection = True
                return
            if self.late_submits > 0:
                self.late_submits -= 1
                _gateway_page(asked, 504)
                return
        asked.send_response(answer.status_code)
        for name in ("content-type", "location", "retry-after", "longplay-deduplicated"):
            if name in answer.headers:
                asked.send_header(name, answer.headers[name])
        asked.send_header("Content-Length", str(len(answer.content)))
        asked.end_headers()
        asked.wfile.write(answer.content)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _gateway_page(asked: http.server.BaseHTTPRequestHandler, status: int) -> None:
    page = f"<html><body>{status} from the proxy</body></html>".encode()
    asked.send_response(status)
    asked.send_header("Content-Type", "text/html")
    asked.send_header("Content-Length", str(len(page)))
    asked.end_headers()
    asked.wfile.write(page)


@pytest.fixture
def dropping(stack: Stack) -> Iterator[Callable[..., DropProxy]]:
    made: list[DropProxy] = []

    def make(drops: int, **more: int) -> DropProxy:
        made.append(DropProxy(stack.api_url, drops, **more))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def _owner(stack: Stack) -> str:
    """A key of a new owner, who has no jobs yet."""
    return stack.key(f"integrator-{uuid.uuid4().hex[:8]}")


# -- 1. a lost answer to a submission ------------------------------------------------------


def test_a_lost_answer_to_submit_is_sent_again_with_the_same_key(
    stack: Stack, dropping: Callable[[int], DropProxy]
) -> None:
    proxy = dropping(1)
    key = _owner(stack)
    with Client(proxy.url, key) as api:
        job = api.submit("sleep", params={"seconds": 0})
        listed = [j.id for j in api.list().items]
    # Sent twice with one key: the API made one job and gave it back the second time.
    assert len(proxy.keys) == 2 and proxy.keys[0] == proxy.keys[1] is not None
    assert proxy.made == [job.id, job.id]
    assert listed == [job.id]


def test_async_a_lost_answer_to_submit_is_sent_again_with_the_same_key(
    stack: Stack, dropping: Callable[[int], DropProxy], tmp_path: Path
) -> None:
    proxy = dropping(1)
    note = tmp_path / "note.txt"
    note.write_text("sent twice")

    async def main() -> tuple[str, list[str]]:
        async with AsyncClient(proxy.url, _owner(stack)) as api:
            job = await api.submit("sleep", files=[note], params={"seconds": 0})
            return job.id, [j.id for j in (await api.list()).items]

    job_id, listed = asyncio.run(main())
    assert proxy.made == [job_id, job_id] and listed == [job_id]


def test_a_submission_whose_answers_stay_lost_fails_with_its_key(
    stack: Stack, dropping: Callable[[int], DropProxy]
) -> None:
    proxy = dropping(1000)
    key = _owner(stack)
    with Client(proxy.url, key, retry_budget=1) as api, pytest.raises(ApiError) as caught:
        api.submit("sleep", params={"seconds": 0})
    error = caught.value
    assert error.retryable and error.idempotency_key == proxy.keys[0]
    assert len(set(proxy.keys)) == 1 and len(proxy.keys) >= 2  # resent, with backoff
    with Client(stack.api_url, key) as api:  # sent again by hand: the same job
        again = api.submit("sleep", params={"seconds": 0}, idempotency_key=error.idempotency_key)
        assert {again.id} == set(proxy.made)
        assert [j.id for j in api.list().items] == [again.id]


# -- 2. many waits on one async client -------------------------------------------------------


def test_more_waits_than_connections_on_one_async_client(stack: Stack) -> None:
    key = _owner(stack)
    count = 110  # more than the client's 100 connections
    with Client(stack.api_url, key) as api:
        ids = [api.submit("sleep", params={"seconds": 0}, run_at=LATER).id for _ in range(count)]

    def cancel_all() -> None:
        with Client(stack.api_url, key) as api:
            for job_id in ids:
                api.cancel(job_id)

    async def main() -> list[str]:
        # A client timeout shorter than the pause before the cancels: a wait that
        # waited for a connection only as long as a request may would fail here.
        async with AsyncClient(stack.api_url, key, timeout=3) as api:
            waits = [asyncio.ensure_future(api.wait(j, timeout=60)) for j in ids]
            await asyncio.sleep(4)
            await asyncio.to_thread(cancel_all)
            return [job.status.value for job in await asyncio.gather(*waits)]

    assert asyncio.run(main()) == ["cancelled"] * count


def test_a_full_pool_says_so(stack: Stack) -> None:
    key = _owner(stack)
    with Client(stack.api_url, key, timeout=0.5, max_connections=1) as api:
        job = api.submit("sleep", params={"seconds": 0}, run_at=LATER)
        events = api.events(job)
        assert isinstance(events, Generator)
        assert next(events).type == "queued"  # the stream holds the one connection
        with pytest.raises(ApiError) as caught:
            api.get(job)
        assert caught.value.code == "pool_full"
        assert "all 1 connections of this client are busy" in str(caught.value)
        events.close()
        api.cancel(job)


# -- 3. a single value where a list goes ---------------------------------------------------


def test_a_single_file_input_or_job_is_one_item(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "hello.txt"
    note.write_text("one file")
    key = _owner(stack)
    with Client(stack.api_url, key) as api:
        first = api.submit("sleep", files=str(note), params={"seconds": 0}, run_at=LATER)
        assert len(first.inputs) == 1
        artifact = api.upload(note)
        second = api.submit("sleep", inputs=artifact.id, after=first.id)
        assert second.inputs == [artifact.id] and second.waiting_for == [first.id]

    async def main() -> list[str]:
        async with AsyncClient(stack.api_url, key) as api:
            job = await api.submit("sleep", files=note, after=first)
            assert len(job.inputs) == 1
            await api.cancel(first)
            return job.waiting_for

    assert asyncio.run(main()) == [first.id]


# -- 4. pickled errors -----------------------------------------------------------------------


def test_every_sdk_error_pickles_with_its_fields(stack: Stack) -> None:
    with Client(stack.api_url, _owner(stack)) as api:
        with pytest.raises(ApiError) as refused:
            api.submit("sleep", params={"seconds": -1}, idempotency_key="the-key")
        job = api.submit("sleep", params={"seconds": 0}, run_at=LATER)
        with pytest.raises(WaitTimeout) as late:
            api.wait(job, timeout=0.2)
        api.cancel(job)
    errors: list[Exception] = [refused.value, late.value]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error) and vars(copy)
    assert refused.value.details and refused.value.idempotency_key == "the-key"
    assert late.value.job_id == job.id and late.value.timeout == 0.2


# -- 5. a wait on a job that has ended -------------------------------------------------------


def test_a_wait_on_an_ended_job_returns_it_whatever_the_timeout(stack: Stack) -> None:
    with Client(stack.api_url, _owner(stack)) as api:
        job = api.wait(api.submit("sleep", params={"seconds": 0}), timeout=60)
        seen: list[str] = []
        again = api.wait(job, timeout=0, on_event=lambda e: seen.append(e.type))
        assert again.status.value == "completed" and seen == ["completed"]


def test_async_a_wait_on_an_ended_job_returns_it_whatever_the_timeout(stack: Stack) -> None:
    async def main() -> str:
        async with AsyncClient(stack.api_url, _owner(stack)) as api:
            job = await api.wait(await api.submit("sleep", params={"seconds": 0}), timeout=60)
            return (await api.wait(job, timeout=0)).status.value

    assert asyncio.run(main()) == "completed"


# -- 6. ids in paths -------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["../kinds", "..", "job_x?limit=1", "a/b"])
def test_an_id_is_one_path_segment(stack: Stack, job_id: str) -> None:
    with Client(stack.api_url, _owner(stack)) as api:
        for name in ("get", "cancel", "retry", "delete"):
            with pytest.raises(ApiError) as caught:
                getattr(api, name)(job_id)
            assert caught.value.status_code == 404, name

    async def main() -> None:
        async with AsyncClient(stack.api_url, _owner(stack)) as api:
            with pytest.raises(ApiError) as caught:
                await api.flow(job_id)
            assert caught.value.status_code == 404

    asyncio.run(main())


# -- 8. delete -------------------------------------------------------------------------------


def test_delete_a_job_that_has_ended(stack: Stack) -> None:
    with Client(stack.api_url, _owner(stack)) as api:
        job = api.submit("sleep", params={"seconds": 0}, run_at=LATER)
        with pytest.raises(ApiError) as refused:
            api.delete(job)
        assert refused.value.code == "conflict"
        api.cancel(job)
        api.delete(job)
        with pytest.raises(ApiError) as gone:
            api.get(job)
        assert gone.value.code == "not_found"

    async def main() -> None:
        async with AsyncClient(stack.api_url, _owner(stack)) as api:
            done = await api.wait(await api.submit("sleep", params={"seconds": 0}), timeout=60)
            await api.delete(done.id)
            assert (await api.list()).items == []

    asyncio.run(main())


# -- 9. mistaken URLs ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "localhost", "ftp://127.0.0.1:8000", "http://"])
def test_a_url_without_scheme_or_host_is_refused_at_once(url: str) -> None:
    for client in (Client, AsyncClient):
        with pytest.raises(ValueError, match=re.escape(repr(url))):
            client(url, "lp_key")


def test_a_url_ending_in_v1_is_the_apis_root(stack: Stack) -> None:
    for suffix in ("/v1", "/v1/"):
        with Client(stack.api_url + suffix, _owner(stack)) as api:
            assert api.url == stack.api_url
            assert "sleep" in {k.name for k in api.kinds()}


# -- 10. a proxy's page ------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(502, "bad_gateway"), (504, "gateway_timeout")])
def test_a_proxys_html_error_page_is_a_short_retryable_error(status: int, code: str) -> None:
    """A read meets the proxy's page again and again: sent again while the budget
    lasts, then told in a short retryable error, without the page."""
    page = b"<html><head><title>Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with Client(url, "lp_key", retry_budget=2.5) as api, pytest.raises(ApiError) as caught:
            api.get("job_x")
    finally:
        server.shutdown()
        server.server_close()
    error = caught.value
    assert (error.code, error.status_code, error.retryable) == (code, status, True)
    assert "<" not in str(error) and str(error).startswith(f"{status} {code}: {status} ")
    assert asked == ["/v1/jobs/job_x"] * 3  # then, 1 s and 2 s later: the budget's 2.5 s


# -- 11. naive datetimes -----------------------------------------------------------------------


def test_a_naive_run_at_or_deadline_is_refused_before_sending(stack: Stack) -> None:
    with Client(stack.api_url, _owner(stack)) as api:
        naive = datetime.now() + timedelta(hours=1)
        with pytest.raises(ValueError, match=r"run_at=.* has no timezone"):
            api.submit("sleep", params={"seconds": 0}, run_at=naive)
        with pytest.raises(ValueError, match=r"deadline=.* has no timezone"):
            api.submit("sleep", params={"seconds": 0}, deadline=naive)
        assert api.list().items == []


# -- 12. downloading a job that has not ended --------------------------------------------------


def test_downloading_a_job_not_ended_is_an_error(stack: Stack, tmp_path: Path) -> None:
    with Client(stack.api_url, _owner(stack)) as api:
        job = api.submit("sleep", params={"seconds": 0}, run_at=LATER)
        with pytest.raises(ApiError) as caught:
            api.download(job, tmp_path)
        assert caught.value.code == "not_finished" and job.id in str(caught.value)
        api.cancel(job)
        assert api.download(job.id, tmp_path) == []  # ended: its (no) outputs
    assert list(tmp_path.iterdir()) == []


def test_a_failed_job_reads_where_the_servers_settings_would_not(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's error is the server's to clean of its paths: read by the SDK it is
    taken as sent. The SDK read the server's settings to clean it again, so a client
    whose environment had a server variable the server would refuse (or an
    integrator's own ``LONGPLAY_TIERS``) failed on every failed job with pydantic's
    error about that variable."""
    with Client(stack.api_url, _owner(stack)) as api:
        failed = api.wait(api.submit("sleep", params={"fail": "permanent"}), timeout=60)
        monkeypatch.setenv("LONGPLAY_TIERS", "{not json")
        get_settings.cache_clear()
        try:
            again = api.get(failed)
            [listed] = api.list(status="failed").items
        finally:
            monkeypatch.undo()
            get_settings.cache_clear()
    assert again.error is not None and again.error.code == "asked_to_fail", again
    assert listed.error == again.error


def test_a_wait_whose_first_look_meets_a_proxys_502_polls_through_it(
    stack: Stack, dropping: Callable[..., DropProxy]
) -> None:
    """A wait first asks whether the job has ended; a proxy's 502 there (an API being
    restarted behind it) is a lost link like one on the stream, polled through, not
    an error raised at once."""
    proxy = dropping(0, bad_gateways=1)
    key = _owner(stack)
    with Client(stack.api_url, key) as api:
        job = api.wait(api.submit("sleep", params={"seconds": 0}), timeout=60)
    with Client(proxy.url, key, poll_interval=0.1) as api:
        again = api.wait(job.id, timeout=30)
    assert again.status.value == "completed" and proxy.bad_gateways == 0


def test_a_submission_a_proxy_timed_out_is_sent_again_with_its_key(
    stack: Stack, dropping: Callable[..., DropProxy]
) -> None:
    """A proxy's 504 after the API made the job (the API was slow to answer it): the
    submission goes again with its key and gets that job, not a second one."""
    proxy = dropping(0, late_submits=1)
    key = _owner(stack)
    with Client(proxy.url, key) as api:
        job = api.submit("sleep", params={"seconds": 0})
        listed = [j.id for j in api.list().items]
    assert len(proxy.keys) == 2 and proxy.keys[0] == proxy.keys[1] is not None
    assert proxy.made == [job.id, job.id] and listed == [job.id]


# -- 14. a wait's timeout, a closed client, the last event, a download that meets a restart ---


@contextlib.contextmanager
def silent_api() -> Iterator[str]:
    """An address that takes connections and requests and never answers (an API hung,
    or a proxy before one)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def take() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        taker.join()
        for connection in held:
            connection.close()
        server.close()


def test_a_waits_timeout_bounds_its_requests_to_an_api_that_never_answers() -> None:
    """``wait(timeout=1)`` on an API that takes the request and never answers raises
    WaitTimeout once its first look has had its 2 s, not after the client's 30 s
    read timeout twice over (a web handler that gave itself a second was held for
    a minute)."""
    with silent_api() as url:
        began = time.monotonic()
        with Client(url, "lp_key", timeout=30) as api, pytest.raises(WaitTimeout):
            api.wait("job_x", timeout=1)
        sync_took = time.monotonic() - began

        async def main() -> None:
            async with AsyncClient(url, "lp_key", timeout=30) as api:
                await api.wait("job_x", timeout=1)

        began = time.monotonic()
        with pytest.raises(WaitTimeout):
            asyncio.run(main())
        async_took = time.monotonic() - began
    assert sync_took < 15 and async_took < 15  # the client's own timeout is 30 s


def test_the_last_event_comes_once_its_stream_has_let_its_connection_go(stack: Stack) -> None:
    """A caller who handles the last event in the loop (reads the job, downloads its
    outputs) has a connection for it: the stream closes before that event is given,
    even on a client of one connection."""
    key = _owner(stack)
    with Client(stack.api_url, key, max_connections=1, timeout=2) as api:
        job = api.submit("sleep", params={"seconds": 0})
        ended = [api.get(job).status.value for event in api.events(job) if event.final]
    assert ended == ["completed"]

    async def main() -> list[str]:
        async with AsyncClient(stack.api_url, key, max_connections=1, timeout=2) as api:
            job = await api.submit("sleep", params={"seconds": 0})
            seen = []
            async with contextlib.aclosing(api.events(job)) as events:
                async for event in events:
                    if event.final:
                        seen.append((await api.get(job)).status.value)
            return seen

    assert asyncio.run(main()) == ["completed"]


def test_a_call_on_a_closed_client_is_an_api_error_that_says_so(stack: Stack) -> None:
    """Not httpx's RuntimeError: a follow still going when its client is closed (a
    service shutting down) ends with an ApiError a caller's ``except`` catches."""
    key = _owner(stack)
    api = Client(stack.api_url, key)
    job = api.submit("sleep", params={"seconds": 0}, run_at=LATER)
    api.close()
    for call in (lambda: api.get(job), lambda: api.wait(job), lambda: list(api.events(job))):
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.code == "closed" and not caught.value.retryable
        assert "this client of http://" in str(caught.value) and "is closed" in str(caught.value)

    async def main() -> list[str]:
        api = AsyncClient(stack.api_url, key)
        follow = asyncio.ensure_future(api.wait(job))
        await asyncio.sleep(1)  # following the job's stream
        await api.aclose()
        codes = []
        for pending in (follow, api.get(job)):
            with pytest.raises(ApiError) as caught:
                await pending
            codes.append(caught.value.code)
        return codes

    assert asyncio.run(main()) == ["closed", "closed"]
    with Client(stack.api_url, key) as api:
        api.cancel(job)


def test_an_async_client_serves_one_event_loop_after_another(stack: Stack) -> None:
    """A client made once (a module's, a fixture's) and used from ``asyncio.run`` after
    ``asyncio.run``: httpx's connections belong to the loop that opened them, and the
    second loop met the first's ("Event loop is closed"). Two loops at once are told."""
    api = AsyncClient(stack.api_url, _owner(stack))

    async def kinds() -> list[str]:
        return [kind.name for kind in await api.kinds()]

    first = asyncio.run(kinds())
    assert "convert" in first and asyncio.run(kinds()) == first

    holding, release = threading.Event(), threading.Event()

    async def hold() -> None:
        await api.kinds()
        holding.set()
        while not release.is_set():
            await asyncio.sleep(0.05)

    other = threading.Thread(target=asyncio.run, args=(hold(),))
    other.start()
    try:
        assert holding.wait(30)
        with pytest.raises(ApiError) as caught:
            asyncio.run(kinds())
        assert caught.value.code == "other_loop" and not caught.value.retryable
        assert "make one AsyncClient for each event loop" in str(caught.value)
    finally:
        release.set()
        other.join(30)
    assert asyncio.run(kinds()) == first
    asyncio.run(api.aclose())
    with pytest.raises(ApiError) as caught:
        asyncio.run(kinds())
    assert caught.value.code == "closed"


def test_a_download_is_fetched_again_after_a_lost_connection_or_a_503(
    stack: Stack, dropping: Callable[..., DropProxy], tmp_path: Path
) -> None:
    """An API restarting behind its proxy while a result is fetched: the download
    starts again, as any GET is sent again, instead of failing at once."""
    note = tmp_path / "result.txt"
    note.write_bytes(b"the bytes of a result\n" * 1000)
    proxy = dropping(0, busy_downloads=1, dropped_downloads=1)
    with Client(proxy.url, _owner(stack)) as api:
        artifact = api.upload(note)
        saved = api.download(artifact, tmp_path / "sync.txt")
    assert saved.read_bytes() == note.read_bytes()
    assert (proxy.busy_downloads, proxy.dropped_downloads) == (0, 0)

    again = dropping(0, busy_downloads=1, dropped_downloads=1)

    async def main() -> Path:
        async with AsyncClient(again.url, _owner(stack)) as api:
            return await api.download(await api.upload(note), tmp_path / "async.txt")

    assert asyncio.run(main()).read_bytes() == note.read_bytes()
    assert (again.busy_downloads, again.dropped_downloads) == (0, 0)
