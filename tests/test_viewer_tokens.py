"""Viewer tokens and CORS: a web page on another origin follows one job and plays its
result without holding its owner's API key.

The HTTP tests use the shared stack; the browser test starts a deployment of its own
that allows a page's origin, serves that page from another port, and lets Chromium
run it: ``fetch`` for the job, ``EventSource`` for its events, ``fetch`` of the output.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from browser import chromium
from conftest import Stack, submit, wait_for_status
from test_cleanup import cleanup

from longplay import Client
from longplay.store.db import session_scope
from longplay.store.models import ViewerToken
from longplay.store.owners import hash_secret


def token_for(client: httpx.Client, job_id: str, **body: Any) -> dict[str, Any]:
    made = client.post(f"/v1/jobs/{job_id}/viewer-tokens", json=body or None)
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_a_viewer_token_reads_its_job_its_events_and_its_outputs(stack: Stack) -> None:
    owner = stack.client("vt-owner")
    job = submit(owner, params={"seconds": 0.2, "ticks": 2, "text": "the result"})
    made = token_for(owner, job["id"])
    token = made["token"]
    assert token.startswith("lpv_") and made["job_id"] == job["id"]
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:  # no key at all
        events = browser.get(made["links"]["events"])  # as EventSource would: ?token=
        assert events.status_code == 200 and "event: completed" in events.text
        seen = browser.get(made["links"]["self"])
        assert seen.status_code == 200, seen.text
        done = seen.json()
        assert done["status"] == "completed"
        assert done["links"]["events"].endswith(f"?token={token}")
        assert done["links"]["cancel"] is None, "a token cannot cancel; the link was a 401"
        [out] = done["outputs"]
        assert out["links"]["content"].endswith(f"?token={token}")
        assert browser.get(out["links"]["content"]).text == "the result"
        assert browser.head(out["links"]["content"]).status_code == 200
        assert browser.get(out["links"]["self"]).json()["name"] == "result.txt"
        bearer = {"Authorization": f"Bearer {token}"}
        assert browser.get(f"/v1/jobs/{job['id']}", headers=bearer).status_code == 200
        assert browser.get(f"/v1/jobs/{job['id']}").status_code == 401  # nothing sent
        with Client(stack.api_url, stack.key("vt-owner")) as sdk:
            from_sdk = sdk.viewer_token(job["id"], expires_in=600)
        assert browser.get(from_sdk["links"]["self"]).json()["id"] == job["id"]


def test_a_viewer_token_reads_nothing_else(stack: Stack) -> None:
    owner = stack.client("vt-owner")
    job = submit(owner, params={"seconds": 0, "text": "mine"})
    other = submit(owner, params={"seconds": 0})
    upload = owner.post("/v1/artifacts", files={"file": ("notes.txt", b"an upload")}).json()
    wait_for_status(owner, job["id"], {"completed"})
    token = token_for(owner, job["id"], expires_in=120)["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.api_url, headers=bearer, timeout=30) as browser:
        for path in (
            f"/v1/jobs/{other['id']}",
            f"/v1/jobs/{other['id']}/events",
            f"/v1/artifacts/{upload['id']}",
            f"/v1/artifacts/{upload['id']}/content",
        ):
            answer = browser.get(path)
            assert answer.status_code == 404, (path, answer.text)
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", f"/v1/jobs/{job['id']}/cancel"),
            ("DELETE", f"/v1/jobs/{job['id']}"),
            ("POST", f"/v1/jobs/{job['id']}/viewer-tokens"),
            ("GET", "/v1/webhooks/secret"),
        ]:
            # As a Bearer token, and as ?token= (told to send a key in a header).
            for answer in (
                browser.request(method, path),
                httpx.request(method, f"{stack.api_url}{path}", params={"token": token}),
            ):
                assert answer.status_code == 401, (method, path, answer.text)
                assert "viewer token reads its one job" in answer.json()["error"]["message"]
    # Another owner cannot make one for this job: it is not theirs to give.
    stranger = stack.client("vt-stranger")
    assert stranger.post(f"/v1/jobs/{job['id']}/viewer-tokens").status_code == 404
    too_long = owner.post(f"/v1/jobs/{job['id']}/viewer-tokens", json={"expires_in": 10**7})
    assert too_long.status_code == 422


def test_a_viewer_token_ends_when_it_expires_or_its_job_is_deleted(stack: Stack) -> None:
    owner = stack.client("vt-owner")
    job = submit(owner, params={"seconds": 0})
    wait_for_status(owner, job["id"], {"completed"})
    expiring, kept = token_for(owner, job["id"]), token_for(owner, job["id"])
    with session_scope(stack.database_url) as session:
        session.query(ViewerToken).filter(
            ViewerToken.secret_hash == hash_secret(expiring["token"])
        ).update({ViewerToken.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
        expired = browser.get(expiring["links"]["self"])
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
        assert browser.get(kept["links"]["self"]).status_code == 200
        # Retention removes the expired one's row (a dry run counts it first).
        assert cleanup(stack, "--dry-run")["viewer_tokens"] >= 1
        assert cleanup(stack)["viewer_tokens"] >= 1
        with session_scope(stack.database_url) as session:
            left = session.query(ViewerToken).filter(ViewerToken.job_id == job["id"]).count()
        assert left == 1, "the live token stays"
        assert owner.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert browser.get(kept["links"]["self"]).status_code == 401


# -- a page on another origin, in a real browser -----------------------------------------

PAGE = """<!doctype html><meta charset="utf-8"><title>app</title><audio id="player"></audio>
<script>
async function follow(api, job, token) {
  const seen = [];
  const ended = new Promise((resolve) => {
    const source = new EventSource(`${api}/v1/jobs/${job}/events?token=${token}`);
    source.addEventListener("progress", (e) => seen.push(JSON.parse(e.data).progress));
    source.addEventListener("completed", () => { source.close(); resolve(); });
    source.onerror = () => { source.close(); resolve(); };
  });
  await ended;
  const done = await (await fetch(`${api}/v1/jobs/${job}?token=${token}`)).json();
  const out = done.outputs[0];
  const text = await (await fetch(api + out.links.content)).text();
  let keyless = "sent", challenge = null;
  try {
    challenge = (await fetch(`${api}/v1/jobs`)).headers.get("WWW-Authenticate");
  } catch (e) { keyless = "refused"; }
  const allow = (await fetch(`${api}/v1/jobs/${job}/cancel?token=${token}`)).headers.get("Allow");
  return {status: done.status, progress: seen, text, keyless, challenge, allow};
}
</script>"""


@pytest.fixture
def page_server() -> Iterator[str]:
    """Serves the app's page from an origin of its own."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
def test_a_page_on_an_allowed_origin_follows_a_job_with_a_viewer_token(
    make_stack: Callable[[], Stack], page_server: str
) -> None:
    stack = make_stack()
    stack.env["LONGPLAY_API_CORS_ORIGINS"] = page_server
    stack.start_api()
    stack.start_worker()
    owner = stack.client("vt-page")
    job = submit(owner, params={"seconds": 1.0, "ticks": 5, "text": "played"})
    token = token_for(owner, job["id"])["token"]
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{page_server}/app.html")
        result = page.evaluate(
            "([api, job, token]) => follow(api, job, token)", [stack.api_url, job["id"], token]
        )
    assert result["status"] == "completed", result
    assert result["text"] == "played"
    assert result["progress"] and result["progress"] == sorted(result["progress"])
    assert result["keyless"] == "sent", "a CORS answer, a 401 the page may read"
    assert result["challenge"] == "Bearer" and result["allow"] == "POST", "headers it may read"
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    refused = httpx.options(f"{stack.api_url}/v1/jobs", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers
    allowed = httpx.options(
        f"{stack.api_url}/v1/jobs",
        headers={
            **preflight,
            "Origin": page_server,
            # A poller sends back the job's ETag (the README says to).
            # What some libraries add to every request, too.
            "Access-Control-Request-Headers": "authorization,if-none-match,last-event-id,"
            "x-requested-with,cache-control",
        },
    )
    assert (
        allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == page_server
    )
    assert json.loads(owner.get(f"/v1/jobs/{job['id']}").text)["status"] == "completed"


def test_a_viewer_token_ends_with_the_key_that_made_it(stack: Stack) -> None:
    """Revoking a leaked key ends the tokens it handed out; a key is never taken in a
    URL; a token's view of the job leaves out where its webhooks go."""
    from longplay.store.owners import create_key, get_or_create_owner, owner_for_key, revoke_key

    with session_scope(stack.database_url) as session:
        key = create_key(session, get_or_create_owner(session, "vt-leaky"))
    with httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as owner:
        hook = "https://hooks.example.com/cb?secret=s3cr3t"
        job = submit(owner, params={"seconds": 0}, callback_url=hook)
        made = token_for(owner, job["id"])
        assert owner.get(f"/v1/jobs/{job['id']}").json()["callback_url"] == hook
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
        seen = browser.get(made["links"]["self"])
        assert seen.status_code == 200 and seen.json()["callback_url"] is None
        for path in (f"/v1/jobs/{job['id']}", "/v1/jobs"):  # a route tokens open, or not
            in_url = browser.get(path, params={"token": key})
            assert in_url.status_code == 401, in_url.text
            assert "?token= takes a viewer token" in in_url.json()["error"]["message"]
        with session_scope(stack.database_url) as session:
            found = owner_for_key(session, key)
            assert found is not None and revoke_key(session, found, key)
        assert browser.get(made["links"]["self"]).status_code == 401
