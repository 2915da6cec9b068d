"""A small HTTP client for the CLI: the same API a curl user sees."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from longplay.settings import Settings

RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout)
LAST_EVENTS = frozenset({"completed", "failed", "cancelled", "stopped", "expired"})
"""Event types after which a job's stream has nothing more to say."""


class ApiError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        super().__init__(f"{response.status_code}: {detail}")
        self.status_code = response.status_code


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
    def __init__(self, base_url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=60)

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise ApiError(response)
        return response.json() if response.content else None

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
            return self._check(self.http.post("/v1/jobs", data=data, files=uploads))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}"))

    def jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._check(self.http.get("/v1/jobs", params=params))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/jobs/{job_id}/cancel"))

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Follow the job's SSE stream, resuming after the last event id on a dropped link."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = ApiError(response)
                        if response.status_code < 500:
                            raise error
                        # The API or its store is restarting: try again like a dropped link.
                        raise httpx.RemoteProtocolError(str(error))
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
                if failures > 30:
                    raise
                time.sleep(min(5.0, 0.5 * failures))

    def download(self, artifact: dict[str, Any], folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(artifact["name"]).name
        with self.http.stream("GET", artifact["links"]["content"]) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response)
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
