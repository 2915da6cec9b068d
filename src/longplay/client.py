"""A small HTTP client for the CLI: the same API a curl user sees."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from longplay.settings import Settings

RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout)
"""Failures after which an event stream that was followed is resumed."""
STREAM_READ_TIMEOUT = 45.0
"""Seconds an event stream may be silent (the API pings every 15) before it counts as lost."""
LAST_EVENTS = frozenset({"completed", "failed", "cancelled", "stopped", "expired"})
"""Event types after which a job's stream has nothing more to say."""


class ApiError(Exception):
    """A request the API refused, or could not answer: :attr:`code` says which kind
    (the API's error code, or ``unreachable`` and ``timeout``), ``str()`` says it in
    one line."""

    def __init__(self, message: str, *, code: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = status_code

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """The error a response carries: ``{"error": {"code", "message", "details"?}}``,
        or FastAPI's ``{"detail": ...}``, or whatever text it has."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or "error")
            message = str(error.get("message") or response.reason_phrase)
            message += _details(error.get("details"))
        else:
            code = "error"
            detail = body.get("detail") if isinstance(body, dict) else None
            message = str(detail) if detail else (response.text or response.reason_phrase)
        text = " ".join(message.split())  # one line
        return cls(
            f"{response.status_code} {code}: {text}", code=code, status_code=response.status_code
        )


def _details(details: Any) -> str:
    """A few of an error's details, as ``(field: message; ...)``."""
    if not isinstance(details, list) or not details:
        return ""
    shown = []
    for item in details[:3]:
        if isinstance(item, dict):
            where = item.get("field") or ".".join(map(str, item.get("loc") or []))
            what = item.get("message") or item.get("msg") or ""
            shown.append(f"{where}: {what}" if where else str(what))
        else:
            shown.append(str(item))
    more = f"; and {len(details) - 3} more" if len(details) > 3 else ""
    return f" ({'; '.join(shown)}{more})"


def key_file(settings: Settings) -> Path:
    return settings.data_dir / "api-key"


def find_key(settings: Settings) -> str | None:
    """``LONGPLAY_API_KEY``, else the key ``longplay up`` wrote for this data folder."""
    key = os.environ.get("LONGPLAY_API_KEY")
    if key:
        return key
    path = key_file(settings)
    return path.read_text().strip() if path.is_file() else None


class Client:
    """The API's routes as methods; every failure, the API's or the network's, is an
    :class:`ApiError`."""

    def __init__(self, base_url: str, key: str | None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def _request(self, method: str, url: str, **options: Any) -> Any:
        """Send a request and return its JSON body."""
        with self._reaching():
            response = self.http.request(method, url, **options)
        if response.status_code >= 400:
            raise ApiError.of(response)
        return response.json() if response.content else None

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """The network's failures as ApiError: no answer in time, or no API there."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"no answer from the API at {self.http.base_url} in time ({type(exc).__name__})",
                code="timeout",
            ) from exc
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach the API at {self.http.base_url}: {exc or type(exc).__name__}",
                code="unreachable",
            ) from exc

    def submit(
        self, kind: str, paths: list[Path], params: dict[str, Any], priority: str | None = None
    ) -> dict[str, Any]:
        with ExitStack() as stack:
            uploads = [
                ("file", (p.name, stack.enter_context(p.open("rb")), "application/octet-stream"))
                for p in paths
            ]
            data = {"kind": kind, "params": json.dumps(params)}
            if priority is not None:
                data["priority"] = priority
            return self._request("POST", "/v1/jobs", data=data, files=uploads)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._request("GET", "/v1/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Follow the job's SSE stream, resuming after the last event id on a dropped link."""
        with self._reaching():
            yield from self._events(job_id)

    def _events(self, job_id: str) -> Iterator[dict[str, Any]]:
        # The API sends a ping every 15 s, so a read that waits longer than this has
        # lost the link.
        timeout = httpx.Timeout(
            self.http.timeout.connect, read=max(STREAM_READ_TIMEOUT, self.http.timeout.read or 0)
        )
        last_id: str | None = None
        followed = False
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = ApiError.of(response)
                        if response.status_code < 500 or not followed:
                            raise error
                        # The API or its store is restarting: try again like a dropped link.
                        raise httpx.RemoteProtocolError(str(error))
                    followed = True
                    for event_id, data in _parse_sse(response.iter_lines()):
                        failures = 0
                        last_id = event_id or last_id
                        yield data
                        if data.get("type") in LAST_EVENTS:
                            return
                # Ended before the job did (the API or Redis restarting): resume.
                raise httpx.RemoteProtocolError("the event stream ended early")
            except RETRYABLE:
                failures += 1
                if not followed or failures > 30:
                    raise  # no API there at all, or not coming back
                time.sleep(min(5.0, 0.5 * failures))

    def download(self, artifact: dict[str, Any], folder: Path) -> Path:
        """Save an artifact in ``folder`` under its name (its id, if the name is no
        plain file name)."""
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(artifact["name"]).name
        target = folder / (name if name not in ("", ".", "..") else artifact["id"])
        with self._reaching(), self.http.stream("GET", artifact["links"]["content"]) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError.of(response)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, json.loads("\n".join(data))
            event_id, data = None, []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
