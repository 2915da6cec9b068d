"""What :class:`~longplay.client.Client` and :class:`~longplay.client.AsyncClient` share
and that does no I/O: where the API is, what a submission sends, how long a 429 or
503 is waited out, how an event stream is read and resumed, where a download goes."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from longplay.client.errors import IDEMPOTENCY_HEADER, ApiError, retry_after
from longplay.client.models import ArtifactPublic, Event, FlowPublic, JobPublic, SubmittedJob
from longplay.settings import Settings, get_settings
from longplay.store.files import NAME_MAX_BYTES, safe_name, shorten
from longplay.store.views import OutputRef

log = logging.getLogger("longplay.client")

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for each answer (``LONGPLAY_API_TIMEOUT`` in the CLI)."""
STREAM_READ_TIMEOUT = 45.0
"""Seconds an event stream may be silent (the API pings every 15) before it counts as lost."""
RETRY_BUDGET = 120.0
"""Seconds one call may spend waiting out 429 and 503 answers, by their Retry-After."""
RETRY_AFTER_DEFAULT = 1.0
"""Seconds to wait after a 429, 503, or a proxy's 502 or 504, that names no Retry-After."""
STREAM_RETRIES = 30
"""Broken event streams in a row, with no event between, before a follower gives up
(``wait`` then polls): with the pauses of :meth:`Cursor.broke`, about two minutes, long
enough for an API to be restarted under its followers."""
RESEND_PAUSE = 0.5
"""Seconds before the first resend after a lost answer; each next pause doubles."""
MAX_CONNECTIONS = 100
"""Connections one client opens at most, its requests and event streams together
(httpx's own default); a wait beyond them waits for one to be free."""
POLL_INTERVAL = 1.0
"""Seconds between two looks at a job when ``wait`` polls."""
DEDUPLICATED_HEADER = "Longplay-Deduplicated"
"""The header of a submission's answer that says the job is an earlier one (``dedupe``):
the API's own (``api/routes/jobs.py``), written again here to keep FastAPI out."""

PathLike = str | os.PathLike[str]
JobRef = str | JobPublic
"""A job, or its id."""
FlowRef = str | FlowPublic
"""A flow (as ``submit_flow`` or ``flow`` gave it), or its id."""
InputRef = str | ArtifactPublic | OutputRef | Mapping[str, Any]
"""An input: an artifact (or its id), or another job's output (``{"job", "output"}``)."""


def key_file(settings: Settings) -> Path:
    """Where ``longplay up`` saves the key it made for this data folder."""
    return settings.data_dir / "api-key"


def find_key(settings: Settings | None = None) -> str | None:
    """``LONGPLAY_API_KEY``, else the key ``longplay up`` wrote for this data folder."""
    key = os.environ.get("LONGPLAY_API_KEY")
    if key:
        return key
    path = key_file(settings or get_settings())
    return path.read_text().strip() if path.is_file() else None


def url_file(settings: Settings) -> Path:
    """Where ``longplay up`` saves, while it runs, the URL a client on this machine
    reaches its API at."""
    return settings.data_dir / "api-url"


def find_url(settings: Settings | None = None) -> str:
    """``LONGPLAY_API_URL``; else, when ``LONGPLAY_API_HOST`` or ``LONGPLAY_API_PORT``
    is set, this machine's API there; else the URL the ``longplay up`` of this data
    folder saved; else this machine's API on the default host and port."""
    url = os.environ.get("LONGPLAY_API_URL")
    if url:
        return url.rstrip("/")
    settings = settings or get_settings()
    api = settings.api
    # Only the host and port that were set count: defaults would hide the saved URL.
    if not {"host", "port"} & api.model_fields_set:
        saved = url_file(settings)
        with contextlib.suppress(FileNotFoundError):
            if url := saved.read_text().strip():
                return url
    return local_url(api.host, api.port)


ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})
"""Hosts a server listens on to be reached on every interface; no client can ask for them."""


def local_url(host: str, port: int) -> str:
    """Where a client on this machine reaches a server listening on ``host`` and
    ``port``: this machine itself for an every-interface host, IPv6 in brackets."""
    host = "127.0.0.1" if host in ALL_INTERFACES else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def base_url(url: str) -> str:
    """The API's root as a client is given it, checked: an ``http`` or ``https`` URL
    with a host, without a trailing slash or ``/v1`` (every path the SDK sends begins
    with ``/v1`` itself). A URL with no scheme (``127.0.0.1:8000``) is refused here,
    where it is a mistake of configuration, not later as an API that cannot be reached."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{url!r} is no API URL: write it with its scheme and host, "
            "as http://127.0.0.1:8000 or https://longplay.example.com"
        )
    return text.removesuffix("/v1").rstrip("/")


def api_path(*segments: str) -> str:
    """``/v1/`` and ``segments``, each quoted whole: an id cannot reach another route
    (``../kinds``), and ``.`` or ``..`` stay segments instead of moving up."""
    return "/v1/" + "/".join(_segment(s) for s in segments)


def _segment(text: str) -> str:
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def headers_for(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def id_of(thing: str | BaseModel) -> str:
    """The id of a job, an artifact or a flow given as itself or as its id."""
    if isinstance(thing, str):
        return thing
    value = getattr(thing, "id", None)
    if not isinstance(value, str):
        raise TypeError(f"expected a job, an artifact, a flow or an id, not {type(thing).__name__}")
    return value


def items(value: Any, single: type | tuple[type, ...]) -> list[Any]:
    """``value`` as a list: a value of the ``single`` types (a ``str``, a path, an
    id...) is one item, never split into its characters or keys."""
    return [value] if isinstance(value, single) else list(value)


def aware(name: str, when: datetime | None) -> str | None:
    """A time in the API's spelling; a naive one is refused rather than guessed at."""
    if when is None:
        return None
    if when.utcoffset() is None:
        raise ValueError(
            f"{name}={when.isoformat()} has no timezone: give an aware datetime, "
            "as datetime.now(UTC) or datetime(..., tzinfo=ZoneInfo('Europe/Rome'))"
        )
    return when.isoformat()


# -- answers ------------------------------------------------------------------------------


def checked(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; an error's as :class:`ApiError`, and so
    is an answer that is not the API's (a proxy's redirect or HTML page)."""
    if response.status_code >= 400:
        raise ApiError.of(response)
    if response.status_code >= 300:
        raise bad_answer(response, "not JSON")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise bad_answer(response, "not JSON") from None


T = TypeVar("T")


def answer_as(shape: type[T], response: httpx.Response) -> T:
    """A successful answer's JSON (:func:`checked`) read as ``shape`` (a model, or a
    list of one); an answer that does not read as it is not the API's answer to this
    request, and is ``bad_answer`` too."""
    body = checked(response)
    try:
        return TypeAdapter(shape).validate_python(body)
    except ValidationError:
        name = getattr(shape, "__name__", str(shape))
        raise bad_answer(response, f"not the {name} the API answers") from None


def bad_answer(response: httpx.Response, wanted: str) -> ApiError:
    """The error for an answer that is not one the API gives (``bad_answer``): say its
    status, content type and any redirect, so a wrong URL or a proxy shows."""
    kind = response.headers.get("content-type") or "no content type"
    moved = response.headers.get("location")
    where = f", to {moved}" if moved else ""
    return ApiError(
        f"{response.status_code} bad_answer: {response.request.url} answered "
        f"{response.status_code} ({kind}{where}), {wanted}; is LONGPLAY_API_URL the API's?",
        code="bad_answer",
        status_code=response.status_code,
    )


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LINK_LOST: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""The connection was reset or closed after the request went out, its answer lost."""
ANSWER_LOST = (*LINK_LOST, httpx.ReadTimeout, httpx.WriteTimeout)
"""Every failure after which the request may have reached the API: unlike a refused
connection, only a resend can tell whether it did."""
MAX_RESENDS = 4
"""Resends after lost answers, at most, in one call (besides :class:`Patience`'s budget)."""


def resent_after(
    method: str, headers: Mapping[str, str] | None
) -> tuple[type[httpx.TransportError], ...]:
    """The failures after which a request is sent again: a submission with an
    ``Idempotency-Key`` after any lost answer (the API gives the same job back); a
    safe method after a lost connection, not after a timeout (an API too slow to answer
    is not asked again); any other request never."""
    if IDEMPOTENCY_HEADER in (headers or {}):
        return ANSWER_LOST
    return LINK_LOST if method.upper() in SAFE_METHODS else ()


@dataclass
class Patience:
    """How long one call waits out 429 and 503 answers and lost answers: a 429 or 503
    by its ``Retry-After``, a lost answer with a pause that doubles from
    :data:`RESEND_PAUSE`; the waits and the failed tries' time all together at most
    ``budget`` seconds. A wait that would pass the budget is not begun: the caller
    gets the error at once."""

    budget: float
    spent: float = 0.0
    resends: int = 0

    def delay(self, response: httpx.Response, resendable: bool) -> float | None:
        """Seconds to wait before sending again, or None to give up: after a 429 or a
        503; after a proxy's 502 or 504 too where the request is ``resendable`` (see
        :func:`resent_after`), as the API behind it may have had it or not."""
        gateway = resendable and response.status_code in (502, 504)
        if response.status_code not in (429, 503) and not gateway:
            return None
        wait = retry_after(response)
        wait = RETRY_AFTER_DEFAULT if wait is None else wait
        if not self._afford(wait):
            return None
        log.info(
            "%s %s answered %d; trying again in %g s",
            response.request.method,
            response.request.url.path,
            response.status_code,
            wait,
        )
        return wait

    def lost(
        self,
        exc: httpx.TransportError,
        started: float,
        resent_after: tuple[type[httpx.TransportError], ...],
    ) -> float | None:
        """Seconds to wait before sending again a request that failed with ``exc`` in a
        try begun at ``started`` (on the monotonic clock), or None to give up: ``exc``
        is none of the failures it is ``resent_after`` (see :func:`resent_after`), or
        the resends or the budget are spent."""
        if not isinstance(exc, resent_after) or self.resends >= MAX_RESENDS:
            return None
        self.spent += time.monotonic() - started
        wait = RESEND_PAUSE * 2**self.resends
        if not self._afford(wait):
            return None
        self.resends += 1
        log.info("no answer (%s); sending again in %g s", type(exc).__name__, wait)
        return wait

    def _afford(self, wait: float) -> bool:
        if self.spent + wait > self.budget:
            return False
        self.spent += wait
        return True


def no_answer(
    url: str, exc: httpx.TransportError, idempotency_key: str | None, connections: int | None
) -> ApiError:
    """What a request that got no answer raises: ``pool_full`` when all this client's
    ``connections`` were taken (the API is not to blame), ``timeout`` when the API was
    too slow, ``unreachable`` when it could not be reached; with the request's
    ``idempotency_key``, to send it again by hand."""
    if isinstance(exc, httpx.PoolTimeout):
        return ApiError(
            f"all {connections} connections of this client are busy (open event streams "
            "and requests); wait for fewer jobs at once or raise max_connections",
            code="pool_full",
            retryable=True,
            idempotency_key=idempotency_key,
        )
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(
            f"no answer from the API at {url} in time ({type(exc).__name__})",
            code="timeout",
            idempotency_key=idempotency_key,
        )
    return ApiError(
        f"cannot reach the API at {url}: {exc or type(exc).__name__}",
        code="unreachable",
        idempotency_key=idempotency_key,
    )


def limits(max_connections: int | None) -> httpx.Limits:
    """A client's connection pool: ``max_connections`` at once (None: no limit), as
    many kept open (httpx keeps 20 by default, and each wait opens its own)."""
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


def pool_timeout(client_timeout: httpx.Timeout, deadline: float | None) -> httpx.Timeout:
    """A follower's timeouts for a request: the client's, none past the follower's
    ``deadline``; and a free connection is waited for as long as the follower may wait
    (forever without a deadline), not the client's timeout, so many followers on one
    client share its connections."""
    if deadline is None:
        return httpx.Timeout(
            connect=client_timeout.connect,
            read=client_timeout.read,
            write=client_timeout.write,
            pool=None,
        )
    remaining = max(0.05, deadline - time.monotonic())

    def capped(seconds: float | None) -> float:
        return remaining if seconds is None else min(seconds, remaining)

    return httpx.Timeout(
        connect=capped(client_timeout.connect),
        read=capped(client_timeout.read),
        write=capped(client_timeout.write),
        pool=remaining,
    )


FIRST_LOOK = 2.0
"""Seconds a wait's first look at its job may take whatever its timeout (even 0): a
job that has ended is returned at once."""


def other_loop(url: str) -> ApiError:
    """What a call on an :class:`AsyncClient` raises from a second event loop while the
    first, whose connections it holds, still runs."""
    return ApiError(
        f"this client of {url} is in use by another event loop, which still runs: make "
        "one AsyncClient for each event loop",
        code="other_loop",
        retryable=False,
    )


def closed(url: str) -> ApiError:
    """What a call on a client that was closed raises (httpx's own is a RuntimeError)."""
    return ApiError(
        f"this client of {url} is closed: make a new one for more calls (a with block, "
        "close() or aclose() ends its connections, and the follows still on them)",
        code="closed",
        retryable=False,
    )


def budget_until(budget: float, deadline: float | None) -> float:
    """A call's retry ``budget``, no longer than a follower has left."""
    return budget if deadline is None else max(0.0, min(budget, deadline - time.monotonic()))


def past(deadline: float | None) -> bool:
    """Whether a follower's ``deadline`` (on the monotonic clock; None: none) is past."""
    return deadline is not None and time.monotonic() >= deadline


# -- uploads ------------------------------------------------------------------------------


def file_fields(paths: Sequence[Path]) -> Callable[[ExitStack], list[Any]]:
    """The multipart ``file`` fields that upload ``paths``, each under its own name:
    called with an :class:`ExitStack`, it opens the files in it, afresh for each try."""

    def opened(stack: ExitStack) -> list[Any]:
        return [("file", (p.name, stack.enter_context(p.open("rb")))) for p in paths]

    return opened


# -- submissions --------------------------------------------------------------------------


@dataclass
class Submission:
    """What ``POST /v1/jobs`` is sent: a JSON body, or (with files) a multipart form."""

    kind: str
    params: dict[str, Any]
    inputs: list[str | dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def plain_inputs(self) -> bool:
        """Whether every input is an artifact id (a form field can say only those)."""
        return all(isinstance(i, str) for i in self.inputs)

    def json(self, uploaded: Sequence[str] = ()) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self.params,
            "inputs": [*self.inputs, *uploaded],
            **self.options,
        }

    def form(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "params": json.dumps(self.params)}
        if self.inputs:
            data["inputs"] = [str(i) for i in self.inputs]
        for name, value in self.options.items():
            data[name] = (
                [str(v) for v in value]
                if isinstance(value, list)
                else ("true" if value is True else str(value))
            )
        return data


SINGLE_INPUT = (str, ArtifactPublic, OutputRef, Mapping)
"""What one input is given as (a Mapping is ``{"job", "output"}``, not a list)."""


def submission(
    kind: str,
    params: Mapping[str, Any] | BaseModel | None,
    inputs: InputRef | Iterable[InputRef],
    *,
    priority: str | None = None,
    after: JobRef | Iterable[JobRef] = (),
    run_at: datetime | None = None,
    deadline: datetime | None = None,
    dedupe: bool = False,
    callback_url: str | None = None,
    callback_events: Iterable[str] = (),
) -> Submission:
    """A submission's parts, every value in the API's JSON spelling. A single input or
    job (``inputs="art_…"``, ``after=job``) is one item; a naive ``run_at`` or
    ``deadline`` is a ValueError."""
    if isinstance(params, BaseModel):
        values = params.model_dump(mode="json", exclude_unset=True)
    else:
        values = dict(params or {})
    options: dict[str, Any] = {}
    if priority is not None:
        options["priority"] = priority
    if waits := [id_of(j) for j in items(after, (str, JobPublic))]:
        options["after"] = waits
    for name, when in (("run_at", run_at), ("deadline", deadline)):
        if (text := aware(name, when)) is not None:
            options[name] = text
    if dedupe:
        options["dedupe"] = True
    if callback_url is not None:
        options["callback_url"] = callback_url
    if events := list(callback_events):
        options["callback_events"] = events
    sent = [_input(i) for i in items(inputs, SINGLE_INPUT)]
    return Submission(kind, values, sent, options)


def paths_of(files: PathLike | Iterable[PathLike]) -> list[Path]:
    """Files to upload as paths; a single file (a ``str`` or a path) is one."""
    return [Path(f) for f in items(files, (str, os.PathLike))]


def submitted(response: httpx.Response) -> SubmittedJob:
    """The job a submission's answer gives, marked ``deduplicated`` when the API says
    it is an earlier one (``dedupe``)."""
    job = answer_as(SubmittedJob, response)
    job.deduplicated = response.headers.get(DEDUPLICATED_HEADER) == "true"
    return job


def _input(value: InputRef) -> str | dict[str, Any]:
    if isinstance(value, str):
        return value
    if isinstance(value, ArtifactPublic):
        return value.id
    if isinstance(value, OutputRef):
        return value.model_dump(exclude_none=True)
    return dict(value)


# -- event streams ------------------------------------------------------------------------


class SseReader:
    """Server-Sent Events, line by line: :meth:`feed` gives an event when one ends."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            data, event_id = self._data, self._id
            self._data, self._id = [], None
            if not data:
                return None
            text = "\n".join(data)
            try:
                return Event.model_validate({**json.loads(text), "id": event_id})
            except (ValueError, TypeError):  # not JSON, not an object, not an event
                raise ApiError(
                    f"the event stream sent what is not one of the API's events: {text[:80]!r}",
                    code="bad_answer",
                    retryable=False,
                ) from None
        if line.startswith("id:"):
            self._id = line[3:].strip() or None
        elif line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        return None


@dataclass
class Cursor:
    """Where a follower is in a stream, and how its link has fared: it resumes after
    :attr:`last_id`, and gives up after ``retries`` breaks with no event between."""

    last_id: str | None = None
    retries: int = STREAM_RETRIES
    breaks: int = 0
    followed: bool = False
    """Whether the stream was ever reached (an API that is not there at all is an error
    at once, not a break to resume from)."""
    ending: bool = False
    """The stream stopped at a last event, or (:attr:`lost_end`) the API ended it
    before one, and whether the job (or flow) has ended is still to be asked (or the
    API went away while it was asked): ask before reading on."""
    lost_end: bool = False
    """The API ended the stream with no last event (its stream expired, or lost it):
    if the job has ended, its end as the API now shows it is the last event."""

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_id} if self.last_id else {}

    def saw(self, event: Event) -> None:
        self.breaks = 0
        if event.id:
            self.last_id = event.id

    def broke(self, exc: Exception) -> float | None:
        """A break: the seconds to wait before resuming, or None to give up. Before the
        stream was ever followed only an API that said to retry is resumed from (a
        :class:`StreamBroken`: a 503 while Redis restarts); one that did not answer
        is not there."""
        self.breaks += 1
        if not (self.followed or isinstance(exc, StreamBroken)) or self.breaks > self.retries:
            return None
        return float(min(5.0, 0.1 * 2 ** (self.breaks - 1)))


class StreamBroken(Exception):
    """The stream ended or broke before its last event (resumed after a pause)."""


def is_stream(response: httpx.Response) -> bool:
    return response.status_code < 300 and response.headers.get("content-type", "").startswith(
        "text/event-stream"
    )


def stream_error(response: httpx.Response, cursor: Cursor) -> Exception:
    """What an answer to a stream request that is no stream means: a 4xx (and a 5xx
    before the stream was followed, unless it says to retry) is the caller's error; a
    5xx that says to retry (a 503 while Redis restarts), or any 5xx later, is a break;
    a redirect or a page (a proxy's) is ``bad_answer``."""
    if response.status_code < 400:
        return bad_answer(response, "not an event stream")
    error = ApiError.of(response)
    if response.status_code < 500 or not (cursor.followed or error.retryable):
        return error
    return StreamBroken(str(error))


def stream_timeout(client_timeout: httpx.Timeout, remaining: float | None) -> httpx.Timeout:
    """A stream's timeouts: reads wait for the API's pings, not past a wait's end, and
    a free connection is waited for as long as the wait may last (see
    :func:`pool_timeout`)."""
    read = max(STREAM_READ_TIMEOUT, client_timeout.read or 0)
    pool = None
    if remaining is not None:
        read = pool = max(0.05, min(read, remaining))
    return httpx.Timeout(client_timeout.connect, read=read, pool=pool)


def progress_of(job: JobPublic) -> Event:
    """A progress event made from a job looked at by polling."""
    return Event(
        type="progress",
        job_id=job.id,
        status=job.status.value,
        progress=job.progress,
        step=job.current_step,
        step_details=job.step_details,
        eta_seconds=job.eta_seconds,
        at=job.updated_at,
    )


def status_event(job: JobPublic) -> Event:
    """The event a status seen by polling stands for (``running``, ``completed``...)."""
    return Event(type=job.status.value, job_id=job.id, status=job.status.value, at=job.updated_at)


def job_end(job: JobPublic) -> Event | None:
    """A job's last event as its state shows it, or None while it goes on."""
    return status_event(job) if job.status.finished else None


def flow_end(flow: FlowPublic) -> Event | None:
    """A flow's ``flow_ended`` event as its state shows it, or None while it goes on."""
    if flow.finished_at is None:
        return None
    return Event.model_validate(
        {
            "type": "flow_ended",
            "flow_id": flow.id,
            "status": flow.status.value,
            "at": flow.finished_at,
        }
    )


# -- downloads ----------------------------------------------------------------------------


def target_path(artifact: ArtifactPublic, dest: Path, *, folder: bool) -> Path:
    """Where an artifact is saved: ``dest`` itself, or (``folder``) a file in it named
    as the artifact, cut to a file system's :data:`NAME_MAX_BYTES` as the service cuts
    its own names (its id, if the name is no plain file name)."""
    if not folder:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    return dest / safe_name(artifact.name, default=artifact.id)


_PART_NAME = ".{name}.{tag}.part"
_PART_TAG_LENGTH = 8


def part_file(target: Path) -> Path:
    """A new, empty file beside ``target`` to download into (never a user's file),
    named after it, cut to fit :data:`NAME_MAX_BYTES`. It is made with the permissions
    any new file gets (``tempfile.mkstemp``'s are the owner's alone, and the download
    keeps them)."""
    room = NAME_MAX_BYTES - len(_PART_NAME.format(name="", tag="x" * _PART_TAG_LENGTH))
    name = shorten(target.name, room)
    while True:
        tag = secrets.token_hex(_PART_TAG_LENGTH // 2)
        part = target.parent / _PART_NAME.format(name=name, tag=tag)
        try:
            part.open("xb").close()
        except FileExistsError:
            continue
        return part


def place(part: Path, target: Path, *, overwrite: bool) -> Path:
    """Move a whole download from ``part`` to ``target`` and say where it went. Unless
    ``overwrite``, an existing file is never replaced: the first free ``name (1).ext``,
    ``name (2).ext``... is taken instead, as browsers do. A hard link claims a name at
    once, so a file that appears meanwhile is not replaced either."""
    if overwrite:
        part.replace(target)
        return target
    tries = itertools.count(1)
    name = target
    while True:
        try:
            os.link(part, name)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system (FAT, some shares)
            if not name.exists():
                part.replace(name)
                return name
        else:
            part.unlink()
            return name
        name = numbered(target, next(tries))


def numbered(target: Path, number: int) -> Path:
    """``name (number).ext`` beside ``target``, its name cut so that it still fits in
    :data:`NAME_MAX_BYTES`."""
    mark = f" ({number})"
    fitted = Path(shorten(target.name, NAME_MAX_BYTES - len(mark)))
    return target.with_name(f"{fitted.stem}{mark}{fitted.suffix}")


def is_folder(dest: PathLike) -> bool:
    """A destination is a folder when it is one, or is written ending in a slash."""
    text = os.fspath(dest)
    return Path(text).is_dir() or text.endswith(("/", os.sep))


def check_digest(artifact: ArtifactPublic, sha256: str) -> None:
    """A download whose bytes are not the artifact's is an error, never a file."""
    if sha256 != artifact.sha256:
        raise ApiError(
            f"{artifact.id} ({artifact.name}) arrived damaged: its SHA-256 is not the API's",
            code="corrupt_download",
        )


def finished(job: JobPublic) -> JobPublic:
    """A job whose outputs are all there, to download: one still queued or running is
    ``not_finished``, rather than an empty list that looks like a job without outputs."""
    if not job.status.finished:
        raise ApiError(
            f"{job.id} is {job.status.value}: it has no outputs to download until it ends "
            "(wait for it first)",
            code="not_finished",
            retryable=True,
        )
    return job


def is_artifact_id(thing: str) -> bool:
    return thing.startswith("art_")


def broke_while_ending(exc: Exception, cursor: Cursor) -> bool:
    """Whether an error while following is a break to resume from: the link's, or the
    API gone while it was asked whether the job has ended."""
    if isinstance(exc, ApiError):
        return cursor.ending and lost_link(exc)
    return True


def lost_link(exc: ApiError) -> bool:
    """Whether an error is the link's (worth polling through), not the request's."""
    return exc.code in ("unreachable", "timeout", "stream_lost") or (exc.status_code or 0) >= 500


class Expired(Exception):
    """A wait's time ran out while following (becomes WaitTimeout with the job's id)."""


def gave_up(url: str, exc: Exception, connections: int | None) -> ApiError:
    """The error a follower raises once it stops resuming a stream: a network failure
    as any request's (:func:`no_answer`), else a stream that kept breaking."""
    if isinstance(exc, httpx.TransportError):
        return no_answer(url, exc, None, connections)
    return ApiError(f"the event stream kept breaking: {exc}", code="stream_lost")
