""":class:`Client`: the API's routes as blocking methods with typed results."""

from __future__ import annotations

import builtins
import hashlib
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
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
FLOW_END = frozenset({"flow_ended"})


T = TypeVar("T")


class Client:
    """A blocking client of the longplay API.

    ``url`` and ``key`` default to ``LONGPLAY_API_URL`` and ``LONGPLAY_API_KEY``, else
    this machine's API and the key ``longplay up`` saved in the data folder. Every
    failure, the API's or the network's, is an :class:`ApiError` with the API's
    ``code``; a 429 or 503 is first waited out by its ``Retry-After``, and a lost
    answer to a request that may be sent again (a ``GET``, a submission with its
    ``Idempotency-Key``) is sent again, up to ``retry_budget`` seconds a call.
    ``url`` must have its scheme (``http://``); a trailing ``/v1`` is dropped. At most
    ``max_connections`` requests and event streams are open at once (None: no limit).
    Use it as a context manager, or :meth:`close` it.
    """

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
        self.http = httpx.Client(
            base_url=self.url,
            headers=core.headers_for(key if key is not None else core.find_key()),
            timeout=timeout,
            limits=core.limits(max_connections),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _open(self) -> None:
        if self.http.is_closed:
            raise core.closed(self.url)

    # -- requests ---------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        files: Callable[[ExitStack], list[Any]] | None = None,
        budget: float | None = None,
        **options: Any,
    ) -> httpx.Response:
        """Send a request, again after each 429 or 503 and, where
        :func:`~core.resent_after` allows, after a lost answer or a proxy's 502 or 504,
        while the budget lasts; ``files`` opens the files to upload afresh for each try."""
        self._open()
        patience = core.Patience(self.retry_budget if budget is None else budget)
        headers = options.get("headers")
        resent_after = core.resent_after(method, headers)
        while True:
            started = time.monotonic()
            try:
                with ExitStack() as stack:
                    sent: dict[str, Any] = {"files": files(stack)} if files is not None else {}
                    response = self.http.request(method, path, **sent, **options)
            except httpx.TransportError as exc:
                wait = patience.lost(exc, started, resent_after)
                if wait is None:
                    key = (headers or {}).get(core.IDEMPOTENCY_HEADER)
                    raise core.no_answer(self.url, exc, key, self.max_connections) from exc
            else:
                wait = patience.delay(response, bool(resent_after))
                if wait is None:
                    return response
            time.sleep(wait)

    def _json(self, method: str, path: str, **options: Any) -> Any:
        return checked(self._send(method, path, **options))

    def _answer(self, shape: type[T], method: str, path: str, **options: Any) -> T:
        """The answer read as ``shape``; one that does not read is ``bad_answer``."""
        return core.answer_as(shape, self._send(method, path, **options))

    # -- jobs -------------------------------------------------------------------------------
    def upload(self, path: PathLike, *, name: str | None = None) -> ArtifactPublic:
        """Upload a file to use as an input (``submit(..., inputs=[artifact])``)."""
        file = Path(path)

        def opened(stack: ExitStack) -> list[Any]:
            return [("file", (name or file.name, stack.enter_context(file.open("rb"))))]

        return self._answer(ArtifactPublic, "POST", "/v1/artifacts", files=opened)

    def submit(
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
        """Submit a job of ``kind`` reading ``inputs`` (artifacts, or other jobs'
        outputs) and then ``files`` (uploaded with it); a single file, input or job in
        ``after`` may be given alone. ``run_at`` and ``deadline`` must be aware
        datetimes (a naive one is a ValueError).

        Every submission carries an ``Idempotency-Key`` (a new UUID unless given), and
        is sent again with it after a 429, a 503, a proxy's 502 or 504, or a lost
        answer, so the API gives back the same job instead of a second one. If it still
        fails, the :class:`ApiError` has the key (``idempotency_key``) to send it again
        yourself.

        With ``dedupe``, an earlier completed job of yours with the same kind, parameters
        and input bytes may come back instead of a new one; the job returned then has
        ``deduplicated`` true (it is false for a new job).
        """
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
            fields = core.file_fields(paths)
            answer = self._send("POST", "/v1/jobs", data=sent.form(), files=fields, headers=headers)
        else:  # a form cannot name another job's output: upload the files first
            uploaded = [self.upload(p).id for p in paths]
            answer = self._send("POST", "/v1/jobs", json=sent.json(uploaded), headers=headers)
        return core.submitted(answer)

    def get(self, job: JobRef) -> JobPublic:
        """A job as it is now."""
        return self._answer(JobPublic, "GET", core.api_path("jobs", id_of(job)))

    def cancel(self, job: JobRef) -> JobPublic:
        """Cancel a job: a queued one at once, a running one at its next checkpoint."""
        path = core.api_path("jobs", id_of(job), "cancel")
        return self._answer(JobPublic, "POST", path)

    def viewer_token(self, job: JobRef, *, expires_in: int = 3600) -> dict[str, Any]:
        """A token that lets a browser read this one job (``?token=``) for
        ``expires_in`` seconds, so the page never holds your key: ``token``,
        ``expires_at`` and ``links`` to hand it."""
        path = core.api_path("jobs", id_of(job), "viewer-tokens")
        return dict(self._json("POST", path, json={"expires_in": expires_in}))

    def retry(self, job: JobRef) -> JobPublic:
        """Run a failed job again, from after the last step it finished; a job cancelled
        because a job it waited for failed (error code ``upstream_failed``) waits again,
        once that job was retried; a job queued to retry runs at once, without waiting
        out its backoff. Any other job is a ``conflict`` (409)."""
        path = core.api_path("jobs", id_of(job), "retry")
        return self._answer(JobPublic, "POST", path)

    def delete(self, job: JobRef) -> None:
        """Delete a job that has ended, with its outputs and the files uploaded with it;
        a job not yet ended is a ``conflict`` (409): cancel it first."""
        checked(self._send("DELETE", core.api_path("jobs", id_of(job))))

    def delete_artifact(self, artifact: ArtifactPublic | str) -> None:
        """Delete an upload no job and no collection document reads, with its file; a
        job's output, or an upload a job names, is a ``conflict`` (409)."""
        checked(self._send("DELETE", core.api_path("artifacts", id_of(artifact))))

    def kinds(self) -> builtins.list[KindPublic]:
        """The job kinds the service runs, with their parameters' JSON Schemas."""
        return self._answer(list[KindPublic], "GET", "/v1/kinds")

    def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobList:
        """Your jobs, newest first; the next page with ``cursor=page.next_cursor``."""
        query: dict[str, Any] = {"limit": limit}
        if status is not None:
            query["status"] = [status] if isinstance(status, str) else builtins.list(status)
        if kind is not None:
            query["kind"] = kind
        if cursor is not None:
            query["cursor"] = cursor
        return self._answer(JobList, "GET", "/v1/jobs", params=query)

    # -- following --------------------------------------------------------------------------
    def events(
        self, job: JobRef, *, last_event_id: str | None = None
    ) -> Generator[Event, None, None]:
        """A job's events as they happen, from its first (or after ``last_event_id``)
        to its last. A broken link is resumed after the last event seen
        (``Last-Event-ID``), so none is lost or repeated. The stream holds one of the
        client's connections until the last event, which comes once it is closed;
        a generator left unread holds it until it is closed (``close()``,
        ``contextlib.closing``)."""
        cursor = Cursor(last_id=last_event_id, retries=self.stream_retries)
        job_id = id_of(job)
        path = core.api_path("jobs", job_id, "events")
        return self._follow(path, cursor, FINAL_EVENTS, None, self._ended(job_id, None))

    def wait(
        self,
        job: JobRef,
        *,
        on_progress: EventCallback | None = None,
        on_event: EventCallback | None = None,
        timeout: float | None = None,
    ) -> JobPublic:
        """Follow a job to its end and return it (completed, failed, cancelled...).

        ``on_progress`` is called with each progress event (``progress``, ``step``,
        ``eta_seconds``), ``on_event`` with every event. The job's event stream is
        followed and resumed; if it cannot be (a proxy that breaks streams), the job is
        polled instead. A job that has ended already is returned at once (``on_event``
        gets its end), whatever the ``timeout``; after ``timeout`` seconds,
        :class:`WaitTimeout`. An API that does not answer at all is an
        :class:`ApiError` at once. Many waits may share a client: each waits for a free
        connection (see ``max_connections``) as long as it may wait.
        """
        job_id = id_of(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = Cursor(retries=self.stream_retries)
        try:
            # A link lost here is polled through too. This look may take FIRST_LOOK
            # seconds whatever the timeout: an ended job comes back at once.
            soonest = time.monotonic() + core.FIRST_LOOK
            first_by = None if deadline is None else max(deadline, soonest)
            first = self._look(job_id, first_by)
            if first.status.finished:
                _tell(core.status_event(first), None, on_event)
                return first
            path = core.api_path("jobs", job_id, "events")
            ended = self._ended(job_id, deadline)
            for event in self._follow(path, cursor, FINAL_EVENTS, deadline, ended):
                _tell(event, on_progress, on_event)
        except Expired:
            raise WaitTimeout(job_id, timeout or 0) from None
        except ApiError as exc:
            if not core.lost_link(exc):
                raise
            answered = cursor.followed or exc.status_code is not None
            return self._poll(job_id, deadline, timeout, on_progress, on_event, answered)
        return self._look(job_id, None)

    def _look(self, job_id: str, deadline: float | None) -> JobPublic:
        """A job as :meth:`get` gives it, asked for by a follower: waiting for a free
        connection as long as the follower may wait, and neither waiting for an answer
        nor trying again past its ``deadline`` (then :class:`Expired`)."""
        timeout = core.pool_timeout(self.http.timeout, deadline)
        budget = core.budget_until(self.retry_budget, deadline)
        path = core.api_path("jobs", job_id)
        try:
            return self._answer(JobPublic, "GET", path, timeout=timeout, budget=budget)
        except ApiError as exc:
            if core.past(deadline) and (core.lost_link(exc) or exc.code == "pool_full"):
                raise Expired from exc
            raise

    def _poll(
        self,
        job_id: str,
        deadline: float | None,
        timeout: float | None,
        on_progress: EventCallback | None,
        on_event: EventCallback | None,
        answered: bool,
    ) -> JobPublic:
        """Look at the job every ``poll_interval`` seconds until it ends. Lost links are
        polled through only once the API has ``answered``: one that never did is not
        there (a wrong URL, a stopped API), and waiting on it would only hide that."""
        seen: tuple[Any, ...] = ()
        status = ""
        misses = 0
        while True:
            try:
                job = self._look(job_id, deadline)
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
                    _tell(core.status_event(job), None, on_event)
                if (job.progress, job.current_step) != seen and job.status.value == "running":
                    seen = (job.progress, job.current_step)
                    _tell(core.progress_of(job), on_progress, on_event)
                if job.status.finished:
                    return job
            pause = self.poll_interval
            if deadline is not None:
                if time.monotonic() >= deadline:
                    raise WaitTimeout(job_id, timeout or 0)
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def _follow(
        self,
        path: str,
        cursor: Cursor,
        last: frozenset[str],
        deadline: float | None,
        ended: Callable[[], Event | None] | None = None,
    ) -> Generator[Event, None, None]:
        """The stream's events to one of ``last``, resumed after each break.

        ``ended()`` gives the job's (or flow's) last event as its state shows it, or
        None while it goes on. A job retried after it failed has its first ending in its
        stream too: a last event counts only once ``ended()`` says the job has ended,
        and the stream is read on after it otherwise. A stream the API ends with no last
        event (expired, or its last event lost) ends with ``ended()``'s once it says so."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Expired
            timeout = core.stream_timeout(self.http.timeout, remaining)
            try:
                if cursor.ending and ended is not None and (end := ended()) is not None:
                    if cursor.lost_end:
                        yield end
                    return
                cursor.ending = cursor.lost_end = False
                self._open()
                with self.http.stream(
                    "GET", path, headers=cursor.headers(), timeout=timeout
                ) as response:
                    if response.status_code == 204:  # resumed after the last event
                        return
                    if not core.is_stream(response):
                        response.read()
                        raise core.stream_error(response, cursor)
                    cursor.followed = True
                    reader = core.SseReader()
                    final = None
                    for line in response.iter_lines():
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
                # The last event is told once the stream is closed: a download in the
                # caller's loop has its connection, and so has asking whether the job
                # has ended.
                if final is not None:
                    yield final
                    if ended is None:
                        return
                    cursor.ending = True
                if cursor.ending:
                    if ended is not None and ended() is not None:
                        return
                    cursor.ending = False  # an earlier run's end: read on
                    continue
                # The API's end, with no last event: ask (after a pause) whether the job
                # has ended, and read on only if it has not.
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
                time.sleep(pause)

    def _ended(self, job_id: str, deadline: float | None) -> Callable[[], Event | None]:
        return lambda: core.job_end(self._look(job_id, deadline))

    # -- results ----------------------------------------------------------------------------
    @overload
    def download(
        self, thing: ArtifactPublic, dest: PathLike = ..., *, overwrite: bool = ...
    ) -> Path: ...
    @overload
    def download(
        self, thing: JobPublic, dest: PathLike = ..., *, overwrite: bool = ...
    ) -> builtins.list[Path]: ...
    @overload
    def download(
        self, thing: str, dest: PathLike = ..., *, overwrite: bool = ...
    ) -> Path | builtins.list[Path]: ...

    def download(
        self,
        thing: ArtifactPublic | JobPublic | str,
        dest: PathLike = ".",
        *,
        overwrite: bool = False,
    ) -> Path | builtins.list[Path]:
        """Save an artifact (or an ``art_…`` id) at ``dest``, a file or a folder; or every
        output of a job (or a ``job_…`` id) in the folder ``dest``, in the order of its
        outputs. Each file is checked against its SHA-256 and appears whole or not at all.

        An existing file is kept unless ``overwrite``: the download then takes the first
        free ``name (1).ext``, ``name (2).ext``...; the paths returned are those written."""
        if isinstance(thing, JobPublic) or (
            isinstance(thing, str) and not core.is_artifact_id(thing)
        ):
            job = core.finished(self.get(thing))
            return [
                self._save(a, core.target_path(a, Path(dest), folder=True), overwrite)
                for a in job.outputs
            ]
        artifact = (
            thing
            if isinstance(thing, ArtifactPublic)
            else self._answer(ArtifactPublic, "GET", core.api_path("artifacts", thing))
        )
        return self._save(
            artifact, core.target_path(artifact, Path(dest), folder=core.is_folder(dest)), overwrite
        )

    def _save(self, artifact: ArtifactPublic, target: Path, overwrite: bool) -> Path:
        """Fetch an artifact's bytes into a part file, then put it at ``target``: from
        the start again after a lost connection, a 429 or a 503, as :meth:`_send`
        sends a request again."""
        part = core.part_file(target)
        patience = core.Patience(self.retry_budget)
        try:
            while True:
                self._open()
                started, digest = time.monotonic(), hashlib.sha256()
                try:
                    with self.http.stream("GET", artifact.links.content) as response:
                        if response.status_code >= 400:
                            response.read()
                            if (wait := patience.delay(response, True)) is None:
                                raise ApiError.of(response)
                        else:
                            with part.open("wb") as out:
                                for chunk in response.iter_bytes():
                                    digest.update(chunk)
                                    out.write(chunk)
                            break
                except httpx.TransportError as exc:
                    if (wait := patience.lost(exc, started, core.LINK_LOST)) is None:
                        raise core.no_answer(self.url, exc, None, self.max_connections) from exc
                time.sleep(wait)
            core.check_digest(artifact, digest.hexdigest())
            return core.place(part, target, overwrite=overwrite)
        finally:
            part.unlink(missing_ok=True)

    # -- flows ------------------------------------------------------------------------------
    def submit_flow(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> FlowPublic:
        """Submit a flow: ``{"stages": {...}, "callback_url": ...}`` as ``POST /v1/flows``,
        with an ``Idempotency-Key`` (a new UUID unless given), so that one sent again
        after a lost answer or a 429 gets the same flow back, not a second one."""
        headers = {core.IDEMPOTENCY_HEADER: idempotency_key or str(uuid.uuid4())}
        return self._answer(FlowPublic, "POST", "/v1/flows", json=dict(body), headers=headers)

    def flow(self, flow: FlowRef) -> FlowPublic:
        """A flow (or its id) as it is now: each stage's status and job."""
        return self._answer(FlowPublic, "GET", core.api_path("flows", id_of(flow)))

    def cancel_flow(self, flow: FlowRef) -> FlowPublic:
        """Cancel a flow: every stage not yet ended is cancelled, as :meth:`cancel`
        cancels a job; a flow that has ended already is a ``conflict`` (409)."""
        path = core.api_path("flows", id_of(flow), "cancel")
        return self._answer(FlowPublic, "POST", path)

    def flow_events(
        self, flow: FlowRef, *, last_event_id: str | None = None
    ) -> Generator[Event, None, None]:
        """Every stage's events of a flow (each with its ``stage``), to ``flow_ended``
        (made from the flow's state if its stream no longer has it)."""
        flow_id = id_of(flow)
        cursor = Cursor(last_id=last_event_id, retries=self.stream_retries)
        path = core.api_path("flows", flow_id, "events")
        return self._follow(path, cursor, FLOW_END, None, lambda: core.flow_end(self.flow(flow_id)))

    # -- collections (JSON as the API answers it) --------------------------------------------
    def create_collection(self, name: str) -> dict[str, Any]:
        return dict(self._json("POST", "/v1/collections", json={"name": name}))

    def collections(self) -> dict[str, Any]:
        return dict(self._json("GET", "/v1/collections"))

    def collection(self, collection_id: str) -> dict[str, Any]:
        return dict(self._json("GET", core.api_path("collections", collection_id)))

    def add_documents(
        self, collection_id: str, paths: PathLike | Iterable[PathLike]
    ) -> dict[str, Any]:
        """Upload documents to a collection: the documents and the ``index`` job reading them."""
        files = core.file_fields(core.paths_of(paths))
        path = core.api_path("collections", collection_id, "documents")
        return dict(self._json("POST", path, files=files))

    def add_artifacts(
        self, collection_id: str, artifacts: str | ArtifactPublic | Iterable[str | ArtifactPublic]
    ) -> dict[str, Any]:
        """Add files the service holds already (uploads, a job's outputs such as a
        transcript) to a collection, by artifact: the documents and the ``index`` job."""
        ids = [core.id_of(a) for a in core.items(artifacts, (str, ArtifactPublic))]
        path = core.api_path("collections", collection_id, "documents")
        return dict(self._json("POST", path, json={"artifacts": ids}))

    def search(self, collection_id: str, query: str, limit: int = 10) -> dict[str, Any]:
        return dict(
            self._json(
                "GET",
                core.api_path("collections", collection_id, "search"),
                params={"q": query, "limit": limit},
            )
        )


def _tell(event: Event, on_progress: EventCallback | None, on_event: EventCallback | None) -> None:
    if on_event is not None:
        on_event(event)
    if on_progress is not None and event.type == "progress":
        on_progress(event)
