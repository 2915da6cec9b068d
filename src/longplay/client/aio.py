""":class:`AsyncClient`: :class:`~longplay.client.Client`'s methods for asyncio."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import inspect
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx
from pydantic import BaseModel

from longplay.client import core
from longplay.client.core import (
    Cursor,
    Expired,
    FlowRef,
    InputRef,
    JobRef,
    PathLike,
    StreamBroken,
    checked,
    id_of,
)
from longplay.client.errors import ApiError, WaitTimeout
from longplay.client.models import (
    FINAL_EVENTS,
    ArtifactPublic,
    Event,
    FlowPublic,
    JobList,
    JobPublic,
    KindPublic,
    SubmittedJob,
)

EventCallback = Callable[[Event], object]
"""Called with an event; it may be a coroutine function (it is awaited)."""
FLOW_END = frozenset({"flow_ended"})


T = TypeVar("T")


class AsyncClient:
    """The asyncio twin of :class:`~longplay.client.Client`: the same methods, awaited
    (``events`` is an async generator: ``aclose()`` it, or ``contextlib.aclosing``, to
    stop reading early), the same errors and defaults. Each ``wait`` or ``events``
    holds one connection while it follows its job: beyond ``max_connections`` of them,
    a wait waits for a free one as long as it may wait."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = core.DEFAULT_TIMEOUT,
        retry_budget: float = core.RETRY_BUDGET,
        stream_retries: int = core.STREAM_RETRIES,
        poll_interval: float = core.POLL_INTERVAL,
        max_connections: int | None = core.MAX_CONNECTIONS,
    ) -> None:
        self.url = core.base_url(url or core.find_url())
        self.retry_budget = retry_budget
        self.stream_retries = stream_retries
        self.poll_interval = poll_interval
        self.max_connections = max_connections
        self._settings: dict[str, Any] = {
            "base_url": self.url,
            "headers": core.headers_for(key if key is not None else core.find_key()),
            "timeout": timeout,
            "limits": core.limits(max_connections),
        }
        self.http = httpx.AsyncClient(**self._settings)
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._on_this_loop()
        self._closed = True
        await self.http.aclose()

    def _open(self) -> None:
        if self._closed or self.http.is_closed:
            raise core.closed(self.url)
        self._on_this_loop()

    def _on_this_loop(self) -> None:
        """Give a new event loop new connections.

        Connections belong to the event loop that opened them. A client kept across
        ``asyncio.run`` calls (a script's, or a test's own loop each) gets new ones once
        the loop that opened the last has stopped (those are left to the garbage
        collector: no other loop can close them); while that loop still runs (another
        thread), the call is refused, since its connections may be in use there."""
        loop = asyncio.get_running_loop()
        last = None if self._loop is None else self._loop()
        if last is loop:
            return
        if last is not None and last.is_running():
            raise core.other_loop(self.url)
        if self._loop is not None:
            self.http = httpx.AsyncClient(**self._settings)
        self._loop = weakref.ref(loop)

    # -- requests ---------------------------------------------------------------------------
    async def _send(
        self,
        method: str,
        path: str,
        *,
        files: Callable[[ExitStack], builtins.list[Any]] | None = None,
        budget: float | None = None,
        **options: Any,
    ) -> httpx.Response:
        """See :meth:`Client._send`."""
        self._open()
        patience = core.Patience(self.retry_budget if budget is None else budget)
        headers = options.get("headers")
        resent_after = core.resent_after(method, headers)
        while True:
            started = time.monotonic()
            try:
                with ExitStack() as stack:
                    sent: dict[str, Any] = {"files": files(stack)} if files is not None else {}
                    response = await self.http.request(method, path, **sent, **options)
            except httpx.TransportError as exc:
                wait = patience.lost(exc, started, resent_after)
                if wait is None:
                    key = (headers or {}).get(core.IDEMPOTENCY_HEADER)
                    raise core.no_answer(self.url, exc, key, self.max_connections) from exc
            else:
                wait = patience.delay(response, bool(resent_after))
                if wait is None:
                    return response
            await asyncio.sleep(wait)

    async def _json(self, method: str, path: str, **options: Any) -> Any:
        return checked(await self._send(method, path, **options))

    async def _answer(self, shape: type[T], method: str, path: str, **options: Any) -> T:
        """The answer read as ``shape``; one that does not read is ``bad_answer``."""
        return core.answer_as(shape, await self._send(method, path, **options))

    # -- jobs -------------------------------------------------------------------------------
    async def upload(self, path: PathLike, *, name: str | None = None) -> ArtifactPublic:
        """Upload a file to use as an input."""
        file = Path(path)

        def opened(stack: ExitStack) -> builtins.list[Any]:
            return [("file", (name or file.name, stack.enter_context(file.open("rb"))))]

        return await self._answer(ArtifactPublic, "POST", "/v1/artifacts", files=opened)

    async def submit(
        self,
        kind: str,
        files: PathLike | Iterable[PathLike] = (),
        params: Mapping[str, Any] | BaseModel | None = None,
        inputs: InputRef | Iterable[InputRef] = (),
        *,
        priority: str | None = None,
        after: JobRef | Iterable[JobRef] = (),
        run_at: datetime | None = None,
        deadline: datetime | None = None,
        dedupe: bool = False,
        callback_url: str | None = None,
        callback_events: Iterable[str] = (),
        idempotency_key: str | None = None,
    ) -> SubmittedJob:
        """Submit a job (see :meth:`Client.submit`), with an ``Idempotency-Key`` that
        it is sent again with after a 429, a 503, a proxy's 502 or 504, or a lost
        answer; with ``dedupe``, the job returned says whether it is an earlier one
        (``deduplicated``)."""
        paths = core.paths_of(files)
        sent = core.submission(
            kind,
            params,
            inputs,
            priority=priority,
            after=after,
            run_at=run_at,
            deadline=deadline,
            dedupe=dedupe,
            callback_url=callback_url,
            callback_events=callback_events,
        )
        headers = {core.IDEMPOTENCY_HEADER: idempotency_key or str(uuid.uuid4())}
        if paths and sent.plain_inputs:
            answer = await self._send(
                "POST", "/v1/jobs", data=sent.form(), files=core.file_fields(paths), headers=headers
            )
        else:
            uploaded = [(await self.upload(p)).id for p in paths]
            answer = await self._send("POST", "/v1/jobs", json=sent.json(uploaded), headers=headers)
        return core.submitted(answer)

    async def get(self, job: JobRef) -> JobPublic:
        return await self._answer(JobPublic, "GET", core.api_path("jobs", id_of(job)))

    async def cancel(self, job: JobRef) -> JobPublic:
        return await self._answer(JobPublic, "POST", core.api_path("jobs", id_of(job), "cancel"))

    async def viewer_token(self, job: JobRef, *, expires_in: int = 3600) -> dict[str, Any]:
        """As :meth:`Client.viewer_token`."""
        path = core.api_path("jobs", id_of(job), "viewer-tokens")
        return dict(await self._json("POST", path, json={"expires_in": expires_in}))

    async def retry(self, job: JobRef) -> JobPublic:
        """Run a failed job again (see :meth:`Client.retry`: a job cancelled as
        ``upstream_failed`` waits again, one queued to retry runs at once; any other is a
        ``conflict``)."""
        return await self._answer(JobPublic, "POST", core.api_path("jobs", id_of(job), "retry"))

    async def delete(self, job: JobRef) -> None:
        """Delete a job that has ended (see :meth:`Client.delete`)."""
        checked(await self._send("DELETE", core.api_path("jobs", id_of(job))))

    async def delete_artifact(self, artifact: ArtifactPublic | str) -> None:
        """Delete an unused upload (see :meth:`Client.delete_artifact`)."""
        checked(await self._send("DELETE", core.api_path("artifacts", id_of(artifact))))

    async def kinds(self) -> builtins.list[KindPublic]:
        return await self._answer(list[KindPublic], "GET", "/v1/kinds")

    async def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobList:
        query: dict[str, Any] = {"limit": limit}
        if status is not None:
            query["status"] = [status] if isinstance(status, str) else builtins.list(status)
        if kind is not None:
            query["kind"] = kind
        if cursor is not None:
            query["cursor"] = cursor
        return await self._answer(JobList, "GET", "/v1/jobs", params=query)

    # -- following --------------------------------------------------------------------------
    def events(
        self, job: JobRef, *, last_event_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """A job's events as they happen, resumed with ``Last-Event-ID`` on a break."""
        cursor = Cursor(last_id=last_event_id, retries=self.stream_retries)
        job_id = id_of(job)
        path = core.api_path("jobs", job_id, "events")
        return self._follow(path, cursor, FINAL_EVENTS, None, self._ended(job_id, None))

    async def wait(
        self,
        job: JobRef,
        *,
        on_progress: EventCallback | None = None,
        on_event: EventCallback | None = None,
        timeout: float | None = None,
    ) -> JobPublic:
        """Follow a job to its end and return it (see :meth:`Client.wait`: one ended
        already is returned at once); callbacks may be plain functions or coroutine
        functions."""
        job_id = id_of(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = Cursor(retries=self.stream_retries)
        try:
            # A link lost here is polled through too. This look may take FIRST_LOOK
            # seconds whatever the timeout: an ended job comes back at once.
            soonest = time.monotonic() + core.FIRST_LOOK
            first_by = None if deadline is None else max(deadline, soonest)
            first = await self._look(job_id, first_by)
            if first.status.finished:
                await _tell(core.status_event(first), None, on_event)
                return first
            path = core.api_path("jobs", job_id, "events")
            ended = self._ended(job_id, deadline)
            async for event in self._follow(path, cursor, FINAL_EVENTS, deadline, ended):
                await _tell(event, on_progress, on_event)
        except Expired:
            raise WaitTimeout(job_id, timeout or 0) from None
        except ApiError as exc:
            if not core.lost_link(exc):
                raise
            answered = cursor.followed or exc.status_code is not None
            return await self._poll(job_id, deadline, timeout, on_progress, on_event, answered)
        return await self._look(job_id, None)

    async def _look(self, job_id: str, deadline: float | None) -> JobPublic:
        """See :meth:`Client._look`."""
        timeout = core.pool_timeout(self.http.timeout, deadline)
        budget = core.budget_until(self.retry_budget, deadline)
        path = core.api_path("jobs", job_id)
        try:
            return await self._answer(JobPublic, "GET", path, timeout=timeout, budget=budget)
        except ApiError as exc:
            if core.past(deadline) and (core.lost_link(exc) or exc.code == "pool_full"):
                raise Expired from exc
            raise

    async def _poll(
        self,
        job_id: str,
        deadline: float | None,
        timeout: float | None,
        on_progress: EventCallback | None,
        on_event: EventCallback | None,
        answered: bool,
    ) -> JobPublic:
        """See :meth:`Client._poll`."""
        seen: tuple[Any, ...] = ()
        status = ""
        misses = 0
        while True:
            try:
                job = await self._look(job_id, deadline)
                misses = 0
                answered = True
            except Expired:
                raise WaitTimeout(job_id, timeout or 0) from None
            except ApiError as exc:
                misses += 1
                if not core.lost_link(exc) or not answered or misses > self.stream_retries:
                    raise
            else:
                if job.status.value != status:
                    status = job.status.value
                    await _tell(core.status_event(job), None, on_event)
                if (job.progress, job.current_step) != seen and job.status.value == "running":
                    seen = (job.progress, job.current_step)
                    await _tell(core.progress_of(job), on_progress, on_event)
                if job.status.finished:
                    return job
            pause = self.poll_interval
            if deadline is not None:
                if time.monotonic() >= deadline:
                    raise WaitTimeout(job_id, timeout or 0)
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)

    async def _follow(
        self,
        path: str,
        cursor: Cursor,
        last: frozenset[str],
        deadline: float | None,
        ended: Callable[[], Awaitable[Event | None]] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The stream's events to one of ``last`` (that ``ended`` confirms), resumed
        after each break; see :meth:`Client._follow`."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Expired
            timeout = core.stream_timeout(self.http.timeout, remaining)
            try:
                if cursor.ending and ended is not None and (end := await ended()) is not None:
                    if cursor.lost_end:
                        yield end
                    return
                cursor.ending = cursor.lost_end = False
                self._open()
                async with self.http.stream(
                    "GET", path, headers=cursor.headers(), timeout=timeout
                ) as response:
                    if response.status_code == 204:  # resumed after the last event
                        return
                    if not core.is_stream(response):
                        await response.aread()
                        raise core.stream_error(response, cursor)
                    cursor.followed = True
                    reader = core.SseReader()
                    final = None
                    async for line in response.aiter_lines():
                        event = reader.feed(line)
                        if event is None:
                            continue
                        cursor.saw(event)
                        if event.type in last:
                            final = event
                            break
                        yield event
                        if core.past(deadline):
                            raise Expired
                if final is not None:  # see Client._follow
                    yield final
                    if ended is None:
                        return
                    cursor.ending = True
                if cursor.ending:
                    if ended is not None and await ended() is not None:
                        return
                    cursor.ending = False  # an earlier run's end: read on
                    continue
                # The API's end, with no last event: see Client._follow.
                cursor.ending = cursor.lost_end = ended is not None
                raise StreamBroken("the event stream ended before the job did")
            except (httpx.TransportError, StreamBroken, ApiError) as exc:
                if not core.broke_while_ending(exc, cursor):
                    raise
                if core.past(deadline):
                    raise Expired from None
                pause = cursor.broke(exc)
                if pause is None:
                    raise core.gave_up(self.url, exc, self.max_connections) from exc
                await asyncio.sleep(pause)

    def _ended(self, job_id: str, deadline: float | None) -> Callable[[], Awaitable[Event | None]]:
        async def ended() -> Event | None:
            return core.job_end(await self._look(job_id, deadline))

        return ended

    # -- results ----------------------------------------------------------------------------
    @overload
    async def download(
        self, thing: ArtifactPublic, dest: PathLike = ..., *, overwrite: bool = ...
    ) -> Path: ...
    @overload
    async def download(
        self, thing: JobPublic, dest: PathLike = ..., *, overwrite: bool = ...
    ) -> builtins.list[Path]: ...
    @overload
    async def download(
        self, thing: str, dest: PathLike = ..., *, overwrite: bool = ...
    ) -> Path | builtins.list[Path]: ...

    async def download(
        self,
        thing: ArtifactPublic | JobPublic | str,
        dest: PathLike = ".",
        *,
        overwrite: bool = False,
    ) -> Path | builtins.list[Path]:
        """Save an artifact at ``dest``, or a job's outputs in the folder ``dest``, never
        over an existing file unless ``overwrite`` (see :meth:`Client.download`)."""
        if isinstance(thing, JobPublic) or (
            isinstance(thing, str) and not core.is_artifact_id(thing)
        ):
            job = core.finished(await self.get(thing))
            return [
                await self._save(a, core.target_path(a, Path(dest), folder=True), overwrite)
                for a in job.outputs
            ]
        artifact = (
            thing
            if isinstance(thing, ArtifactPublic)
            else await self._answer(ArtifactPublic, "GET", core.api_path("artifacts", thing))
        )
        return await self._save(
            artifact, core.target_path(artifact, Path(dest), folder=core.is_folder(dest)), overwrite
        )

    async def _save(self, artifact: ArtifactPublic, target: Path, overwrite: bool) -> Path:
        """See :meth:`Client._save`."""
        part = core.part_file(target)
        patience = core.Patience(self.retry_budget)
        try:
            while True:
                self._open()
                started, digest = time.monotonic(), hashlib.sha256()
                try:
                    async with self.http.stream("GET", artifact.links.content) as response:
                        if response.status_code >= 400:
                            await response.aread()
                            if (wait := patience.delay(response, True)) is None:
                                raise ApiError.of(response)
                        else:
                            with part.open("wb") as out:
                                async for chunk in response.aiter_bytes():
                                    digest.update(chunk)
                                    out.write(chunk)
                            break
                except httpx.TransportError as exc:
                    if (wait := patience.lost(exc, started, core.LINK_LOST)) is None:
                        raise core.no_answer(self.url, exc, None, self.max_connections) from exc
                await asyncio.sleep(wait)
            core.check_digest(artifact, digest.hexdigest())
            return core.place(part, target, overwrite=overwrite)
        finally:
            part.unlink(missing_ok=True)

    # -- flows ------------------------------------------------------------------------------
    async def submit_flow(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> FlowPublic:
        """See :meth:`Client.submit_flow`."""
        headers = {core.IDEMPOTENCY_HEADER: idempotency_key or str(uuid.uuid4())}
        return await self._answer(FlowPublic, "POST", "/v1/flows", json=dict(body), headers=headers)

    async def flow(self, flow: FlowRef) -> FlowPublic:
        """See :meth:`Client.flow`."""
        path = core.api_path("flows", id_of(flow))
        return await self._answer(FlowPublic, "GET", path)

    async def cancel_flow(self, flow: FlowRef) -> FlowPublic:
        """See :meth:`Client.cancel_flow`."""
        return await self._answer(FlowPublic, "POST", core.api_path("flows", id_of(flow), "cancel"))

    def flow_events(
        self, flow: FlowRef, *, last_event_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """See :meth:`Client.flow_events`."""
        flow_id = id_of(flow)
        cursor = Cursor(last_id=last_event_id, retries=self.stream_retries)

        async def ended() -> Event | None:
            return core.flow_end(await self.flow(flow_id))

        path = core.api_path("flows", flow_id, "events")
        return self._follow(path, cursor, FLOW_END, None, ended)

    # -- collections (JSON as the API answers it) --------------------------------------------
    async def create_collection(self, name: str) -> dict[str, Any]:
        return dict(await self._json("POST", "/v1/collections", json={"name": name}))

    async def collections(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/v1/collections"))

    async def collection(self, collection_id: str) -> dict[str, Any]:
        return dict(await self._json("GET", core.api_path("collections", collection_id)))

    async def add_documents(
        self, collection_id: str, paths: PathLike | Iterable[PathLike]
    ) -> dict[str, Any]:
        """Upload documents to a collection: the documents and the ``index`` job reading them."""
        opened = core.file_fields(core.paths_of(paths))
        path = core.api_path("collections", collection_id, "documents")
        return dict(await self._json("POST", path, files=opened))

    async def add_artifacts(
        self, collection_id: str, artifacts: str | ArtifactPublic | Iterable[str | ArtifactPublic]
    ) -> dict[str, Any]:
        """Add files the service holds already to a collection, by artifact (see
        :meth:`Client.add_artifacts`)."""
        ids = [core.id_of(a) for a in core.items(artifacts, (str, ArtifactPublic))]
        path = core.api_path("collections", collection_id, "documents")
        return dict(await self._json("POST", path, json={"artifacts": ids}))

    async def search(self, collection_id: str, query: str, limit: int = 10) -> dict[str, Any]:
        return dict(
            await self._json(
                "GET",
                core.api_path("collections", collection_id, "search"),
                params={"q": query, "limit": limit},
            )
        )


async def _tell(
    event: Event, on_progress: EventCallback | None, on_event: EventCallback | None
) -> None:
    for callback in (on_event, on_progress if event.type == "progress" else None):
        if callback is not None:
            result = callback(event)
            if inspect.isawaitable(result):
                await result
