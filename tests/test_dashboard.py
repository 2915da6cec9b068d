"""The web dashboard in a real headless Chromium against the shared SQLite stack (a live
API, a Celery worker of 2 processes, Redis): sign in and out, submit a ``synthesize``
job from its form and watch its bar reach 100 % by SSE, play the result, follow a
list, cancel a running job, retry a failed one (and every failed one, on every page, and
one cancelled for the job it waits for), and markup from users and jobs shown as text.
Each test leaves a screenshot in its pytest tmp folder.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from browser import chromium
from conftest import Stack, signed_in_browser, submit, wait_for_status, wait_until
from playwright.sync_api import Browser, Dialog, Page, expect

from longplay.dashboard.forms import fields_of, params_from_form
from longplay.dashboard.jobs import FAILED_PAGE_SIZE
from longplay.dashboard.web import local_url
from longplay.jobs.refusals import Invalid

DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
SESSION = "longplay_session"
TEXT = (
    "The library opens early in the morning. Children can borrow books every week. "
    "The reading room stays quiet all afternoon. Everyone is welcome to stay and read. "
    "On Fridays the garden behind the library hosts a small market with fresh bread."
)
SCRIPT = "<script>alert('script')</script>"
IMG = '"><img src=x onerror=alert("img")>'
SAMPLER = """() => {
    window.__samples = [];
    window.__samePage = true;
    const sample = () => {
        document.querySelectorAll('[data-bar]').forEach((bar, i) => {
            (window.__samples[i] = window.__samples[i] || []).push(bar.value);
        });
    };
    sample();
    window.__sampler = setInterval(sample, 50);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


class Visit:
    """A signed-in browser context for one owner, with the dialogs its pages opened."""

    def __init__(self, stack: Stack, browser: Browser, owner: str, shots: Path) -> None:
        self.stack = stack
        self.key = stack.key(owner)
        self.context = browser.new_context(base_url=stack.api_url)
        self.dialogs: list[str] = []
        self.page = self.context.new_page()
        self.page.on("dialog", self._dialog)
        self.shots = shots

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def sign_in(self) -> Page:
        page = self.page
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login"))
        page.fill("#api_key", self.key)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/jobs$"))
        return page

    def cookie(self) -> dict[str, Any] | None:
        found = [c for c in self.context.cookies() if c["name"] == SESSION]
        return dict(found[0]) if found else None

    def session_client(self) -> httpx.Client:
        """Signed in: an HTTP client that sends this context's session cookie, as the
        browser does (for what a test reads or posts byte for byte)."""
        self.sign_in()
        cookie = self.cookie()
        assert cookie is not None
        return httpx.Client(
            base_url=self.stack.api_url, cookies={SESSION: cookie["value"]}, timeout=30
        )

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.api_url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def csrf_of(page: str) -> str:
    """The session's CSRF token, as a page's forms carry it."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


@pytest.fixture
def visit(stack: Stack, browser: Browser, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    made: list[Visit] = []

    def make(owner: str) -> Visit:
        made.append(Visit(stack, browser, owner, tmp_path))
        return made[-1]

    yield make
    for one in made:
        one.screenshot(f"end-{request.node.name}-{len(made)}")
        one.context.close()


@DATABASE
def test_sign_in_sets_an_opaque_strict_cookie_forms_need_csrf_and_sign_out_forgets_it(
    stack: Stack, visit: Any
) -> None:
    you = visit("dash-signin")
    page = you.page
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fjobs"))
    page.fill("#api_key", "lp_not-a-real-key")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("not valid")

    page.fill("#api_key", you.key)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/jobs$"))
    expect(page.locator(".who")).to_have_text("dash-signin")
    cookie = you.cookie()
    assert cookie is not None
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert you.key not in cookie["value"] and len(cookie["value"]) >= 40
    assert SESSION not in page.evaluate("document.cookie")  # scripts cannot read it
    you.screenshot("signed-in")

    cookies = {SESSION: cookie["value"]}
    with httpx.Client(base_url=stack.api_url, cookies=cookies, timeout=30) as forged:
        # A form posted without this session's token (another site's form) changes nothing.
        assert forged.post("/logout").status_code == 403
        refused = forged.post("/submit/sleep", data={"csrf": "guess", "seconds": "0"})
        assert refused.status_code == 403
        assert forged.get("/jobs").status_code == 200  # still signed in
        with you.api() as api:
            kinds = [k["name"] for k in api.get("/v1/kinds").json()]
        for kind in kinds:  # every kind's schema makes a form
            form = forged.get(f"/submit/{kind}")
            assert form.status_code == 200 and f'action="/submit/{kind}"' in form.text, kind
        assert forged.get("/submit/no-such-kind").status_code == 404
        # The file picker offers what the kind takes ("audio/" alone is no valid accept).
        assert 'accept="audio/*,video/*"' in forged.get("/submit/transcribe").text
        assert forged.get("/jobs?status=bogus").status_code == 422
    with you.api() as api:
        assert api.get("/v1/jobs").json()["items"] == []  # nothing was submitted

    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/login"))
    assert you.cookie() is None
    with httpx.Client(base_url=stack.api_url, cookies=cookies, timeout=30) as old:
        answer = old.get("/jobs")  # the session is gone from the server too
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


@DATABASE
def test_submit_synthesize_from_its_form_bar_reaches_100_live_and_result_plays(
    visit: Any,
) -> None:
    you = visit("dash-synth")
    page = you.sign_in()
    page.click("text=Submit")
    page.click("a[href='/submit/synthesize']")
    page.click("button.primary")  # neither text nor a file: the service says why
    expect(page.locator("[data-problem]")).to_contain_text("text")
    page.fill("#p-text", TEXT)
    page.click("button.primary")
    expect(page).to_have_url(re.compile(r"/jobs/job_"))
    job_id = page.url.rsplit("/", 1)[-1]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.evaluate(SAMPLER)

    bar = page.locator(".headline [data-bar]")
    expect(page.locator(".headline [data-status]")).to_have_text("completed", timeout=60_000)
    assert bar.evaluate("b => b.value") == 100
    samples = page.evaluate("window.__samples[0]")
    assert page.evaluate("window.__samePage") is True  # no reload: the script's state lives
    assert samples[0] < 100 and samples[-1] == 100, samples
    # Moved by the event stream, no polling: the page asked for itself once for the
    # results, and once more when attempt 1 started if it was drawn before that.
    drawn_attempts = int(page.locator("[data-live-job]").get_attribute("data-attempts") or 0)
    asked = 1 + (drawn_attempts == 0)
    assert sum(f"/jobs/{job_id}" in u for u in requests) <= asked, requests
    assert not any("/v1/jobs" in u for u in requests), requests
    expect(page.locator("[data-step-name=speak] [data-duration]")).not_to_have_text("")
    expect(page.locator("ol.log li[data-type=completed]")).to_have_count(1)

    audio = page.locator("article.output-audio audio")
    expect(audio).to_have_count(1)
    page.evaluate("() => { const a = document.querySelector('audio'); a.muted = true; a.play(); }")
    # Polled from here: the page's CSP forbids the eval wait_for_function needs.
    wait_until(lambda: audio.evaluate("a => a.currentTime") > 0.5, timeout=20)
    source = audio.get_attribute("src")
    assert source is not None
    ranged = page.request.get(source, headers={"Range": "bytes=100-199"})
    assert ranged.status == 206 and len(ranged.body()) == 100
    assert ranged.headers["content-range"].startswith("bytes 100-199/")
    you.screenshot("synthesized")


@DATABASE
def test_a_file_the_kind_cannot_read_is_refused_on_its_form(visit: Any) -> None:
    you = visit("dash-not-audio")
    page = you.sign_in()
    page.goto("/submit/convert")
    text = b"Minutes of the meeting\n"
    page.set_input_files(
        "#file", files=[{"name": "minutes.wav", "mimeType": "audio/wav", "buffer": text}]
    )
    page.click("button.primary")

    expect(page.locator("[data-problem]")).to_contain_text(
        "minutes.wav is not an audio or video file"
    )
    expect(page).to_have_url(re.compile(r"/submit/convert$"))
    with you.api() as api:
        assert api.get("/v1/jobs").json()["items"] == []


@DATABASE
def test_jobs_list_filters_pages_and_moves_bars_by_sse(visit: Any) -> None:
    you = visit("dash-list")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with you.api() as api:
        held = [submit(api, run_at=later, params={"seconds": 0})["id"] for _ in range(21)]
        running = [submit(api, params={"seconds": 3, "ticks": 30})["id"] for _ in range(2)]
    page = you.sign_in()
    page.evaluate(SAMPLER)
    for job_id in running:
        row = page.locator(f"tr[data-job={job_id}]")
        expect(row.locator("[data-status]")).to_have_text("completed", timeout=60_000)
        expect(row.locator("[data-percent]")).to_have_text("100 %")
        expect(row.locator("[data-step]")).to_have_text("")  # as the page draws a done job
    assert page.evaluate("window.__samePage") is True
    moving = page.evaluate("window.__samples").__getitem__
    for index in (0, 1):  # the two running jobs are the newest rows
        assert any(0 < v < 100 for v in moving(index)), moving(index)
    you.screenshot("list")

    expect(page.locator(f"tr[data-job={held[-1]}] [data-scheduled]")).to_contain_text("in ")
    page.select_option("select[name=status]", "queued")
    page.select_option("select[name=kind]", "sleep")
    page.click("text=Filter")
    expect(page.locator("tr[data-job]")).to_have_count(20)
    page.click("text=Older →")
    expect(page.locator("tr[data-job]")).to_have_count(1)
    expect(page.locator(f"tr[data-job={held[0]}]")).to_have_count(1)  # the oldest, last
    page.click("text=← Newest")
    expect(page.locator(f"tr[data-job={held[-1]}]")).to_have_count(1)
    page.goto("/jobs?status=failed&kind=sleep")
    expect(page.locator(".empty")).to_contain_text("No jobs match")
    with you.api() as api:
        for job_id in held:
            api.post(f"/v1/jobs/{job_id}/cancel")


@DATABASE
def test_live_tells_a_job_that_is_gone_as_deleted_and_follows_the_rest(visit: Any) -> None:
    """A list whose stream reconnects after one of its jobs was deleted keeps following
    the others: the gone job (and another owner's, which must look the same) ends with
    ``deleted`` instead of the whole stream being a 404, which EventSource never retries."""
    you, other = visit("dash-live-gone"), visit("dash-live-other")
    with you.api() as api:
        gone = submit(api, params={"seconds": 0})["id"]
        wait_for_status(api, gone, {"completed"})
        assert api.delete(f"/v1/jobs/{gone}").status_code == 204
        running = submit(api, params={"seconds": 1, "ticks": 5})["id"]
    with other.api() as api:
        theirs = submit(api, params={"seconds": 0})["id"]
    query = "&".join(f"job={j}" for j in (gone, running, theirs))
    events: list[dict[str, Any]] = []
    with (
        you.session_client() as client,
        client.stream("GET", f"/live?{query}", timeout=60) as stream,
    ):
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line == "event: end":
                break
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    ends = {e["job_id"]: e["type"] for e in events if e["type"] in {"deleted", "completed"}}
    assert ends == {gone: "deleted", theirs: "deleted", running: "completed"}
    assert not any(e["job_id"] == theirs and e["type"] != "deleted" for e in events)


@DATABASE
def test_a_form_through_a_reverse_proxy_is_taken_and_one_from_elsewhere_is_not(
    visit: Any,
) -> None:
    """Behind a proxy that passes the API another Host (nginx's default), a form's
    Origin is the public site's, which the proxy says in X-Forwarded-Host or Forwarded;
    a form from another site, whatever its token, is refused."""
    you = visit("dash-proxy")
    with you.session_client() as browser:
        form = {"csrf": csrf_of(browser.get("/jobs").text)}
        public = {"Origin": "https://media.example.org"}
        assert browser.post("/logout", data=form, headers=public).status_code == 403
        elsewhere = {"Origin": "https://evil.example", "X-Forwarded-Host": "media.example.org"}
        assert browser.post("/logout", data=form, headers=elsewhere).status_code == 403
        assert browser.get("/jobs").status_code == 200, "still signed in"
        proxied = {**public, "Forwarded": 'for=10.0.0.1;host="media.example.org";proto=https'}
        signed_out = browser.post("/logout", data=form, headers=proxied)
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == "/login?signed_out=1"
    with you.session_client() as browser:  # signed in again
        form = {"csrf": csrf_of(browser.get("/jobs").text)}
        via_nginx = {"Origin": "https://media.example.org", "X-Forwarded-Host": "media.example.org"}
        signed_out = browser.post("/logout", data=form, headers=via_nginx)
        assert signed_out.status_code == 303


def melody_wav() -> bytes:
    """A scale of plucked tones (five harmonics, a fast attack, a decay), half a second
    each, as a 16-bit WAV."""
    rate = 22_050
    t = np.arange(int(rate * 0.5)) / rate
    envelope = np.minimum(1, t / 0.01) * np.exp(-2 * t) * np.minimum(1, (0.5 - t) / 0.02)
    tones = []
    for pitch in (60, 62, 64, 65, 67, 69, 71, 72):
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        harmonics = sum(0.6**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(5))
        tones.append(0.2 * harmonics * envelope)
    samples = (np.concatenate(tones) * 32_767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


@DATABASE
def test_results_show_a_transcript_and_a_piano_roll(visit: Any) -> None:
    you = visit("dash-results")
    with you.api() as api:
        spoken = submit(api, "synthesize", params={"text": "The library opens early today."})
        heard = submit(
            api,
            "transcribe",
            inputs=[{"job": spoken["id"], "suffix": ".mp3"}],
            after=[spoken["id"]],
        )
        music = api.post(
            "/v1/jobs",
            data={"kind": "transcribe-music", "params": "{}"},
            files={"file": ("melody.wav", melody_wav(), "audio/wav")},
        )
        assert music.status_code == 202, music.text
        for job_id in (heard["id"], music.json()["id"]):
            done = wait_for_status(api, job_id, {"completed", "failed"}, timeout=180)
            assert done["status"] == "completed", done.get("error")
    page = you.sign_in()
    page.goto(f"/jobs/{heard['id']}")
    lines = page.locator("ol.transcript li .text")
    expect(lines.first).to_contain_text(re.compile("library", re.IGNORECASE))
    you.screenshot("transcript")
    page.goto(f"/jobs/{music.json()['id']}")
    roll = page.locator("article.output-image img")
    expect(roll).to_be_visible()
    assert page.wait_for_function("img => img.naturalWidth > 0", arg=roll.element_handle())
    expect(page.locator("a[download]", has_text="melody.mid")).to_have_count(1)
    expect(page.locator("a[download]", has_text="melody.musicxml")).to_have_count(1)
    expect(page.locator("article.output-data details:not([open])")).to_have_count(1)  # notes
    you.screenshot("piano-roll")


@DATABASE
def test_cancel_a_running_job_from_its_page(visit: Any) -> None:
    you = visit("dash-cancel")
    with you.api() as api:
        job = submit(api, params={"seconds": 60, "ticks": 600})
        wait_for_status(api, job["id"], {"running"})
        page = you.sign_in()
        watching = you.context.new_page()  # a second tab, left open: it sees the cancel live
        watching.goto(f"/jobs/{job['id']}")
        watching.evaluate("() => { window.__samePage = true; }")
        page.goto(f"/jobs/{job['id']}")
        step = page.locator("[data-step-name=work]")
        expect(step).to_have_attribute("data-state", "current")
        expect(step.locator("[data-details]")).to_contain_text('"tick"')
        page.click("button:has-text('Cancel')")
        expect(page.locator(".headline [data-status]")).to_have_text("cancelled")
        assert wait_for_status(api, job["id"], {"cancelled"})["status"] == "cancelled"
        # The step it was in is marked stopped, with how far it got: live in the open
        # tab, and as the page is drawn from the store.
        for shown in (watching, page):
            stopped = shown.locator("[data-step-name=work]")
            expect(stopped).to_have_attribute("data-state", "stopped")
            expect(stopped.locator("[data-details]")).to_contain_text('"tick"')
            expect(shown.locator("[data-step-name=prepare]")).to_have_attribute(
                "data-state", "done"
            )
        assert watching.evaluate("window.__samePage") is True
        watching.reload()
        expect(watching.locator("[data-step-name=work]")).to_have_attribute("data-state", "stopped")
        watching.close()
        expect(page.locator("button:has-text('Cancel')")).to_have_count(0)
        expect(page.locator("button:has-text('Delete')")).to_have_count(1)
        you.screenshot("cancelled")
        # The worker stops at its next checkpoint; delete once it has let go of the job.
        attempts = f"/v1/jobs/{job['id']}/attempts"
        wait_until(lambda: api.get(attempts).json()[-1]["finished_at"] is not None)
        page.click("text=Delete…")  # Delete takes two steps: open, then confirm
        page.click("button:has-text('Delete')")
        expect(page).to_have_url(re.compile(r"/jobs\?deleted="))
        assert api.get(f"/v1/jobs/{job['id']}").status_code == 404


@DATABASE
def test_retry_failed_jobs_from_the_failed_page(visit: Any) -> None:
    you = visit("dash-retry")
    with you.api() as api:
        failed = [
            submit(api, params={"seconds": 0.1, "ticks": 1, "fail": "permanent"})["id"]
            for _ in range(2)
        ]
        for job_id in failed:
            wait_for_status(api, job_id, {"failed"})
        page = you.sign_in()
        page.click("text=Failed")
        rows = page.locator("tr[data-job]")
        expect(rows).to_have_count(2)
        expect(rows.first.locator(".error .code")).to_have_text("asked_to_fail")
        expect(rows.first.locator(".error .message")).to_have_text(
            "the test asked this job to fail"
        )
        expect(rows.first.locator(".error .retryable")).to_contain_text("permanent")
        # Both failed for good: "Retry all" has nothing to do, and the page says why.
        expect(page.locator("button[name=every]")).to_have_count(0)
        expect(page.locator("[data-permanent]")).to_contain_text("2 failed for good")
        you.screenshot("failed")
        page.click("text=Retry selected")  # nothing ticked: the page again, saying so
        expect(page).to_have_url(re.compile(r"/failed\?unticked=1$"))
        expect(page.locator("[data-notice]")).to_have_text("Tick at least one job to retry.")
        page.check(f"input[name=ids][value={failed[0]}]")
        page.click("text=Retry selected")
        expect(page.locator("[data-notice]")).to_have_text("Retried 1.")

        def attempted_again() -> bool:
            job = api.get(f"/v1/jobs/{failed[0]}").json()
            return job["status"] == "failed" and job["attempts"] == 2

        wait_until(attempted_again)
        assert api.get(f"/v1/jobs/{failed[1]}").json()["attempts"] == 1  # not ticked
        # Its page offers no Retry for a permanent failure: it says what to do instead.
        page.goto(f"/jobs/{failed[1]}")
        expect(page.locator("button:has-text('Retry')")).to_have_count(0)
        expect(page.locator("[data-permanent]")).to_contain_text("gives the same result")
        retryable = submit(api, params={"seconds": 0, "ticks": 1, "fail": "retryable"})["id"]
        wait_for_status(api, retryable, {"failed"}, timeout=90)
        page.goto(f"/jobs/{retryable}")
        expect(page.locator("[data-permanent]")).to_have_count(0)
        page.click("button:has-text('Retry')")
        expect(page).to_have_url(re.compile(f"/jobs/{retryable}$"))
        wait_until(lambda: api.get(f"/v1/jobs/{retryable}").json()["attempts"] > 3)
        api.post(f"/v1/jobs/{retryable}/cancel")  # its retries back off for long
        # A key an operator must fix is no failure for good: once fixed, a retry passes.
        refused = submit(api, params={"seconds": 0, "ticks": 1, "fail": "settings"})["id"]
        wait_for_status(api, refused, {"failed"})
        page.goto(f"/jobs/{refused}")
        expect(page.locator("[data-permanent]")).to_have_count(0)
        expect(page.locator("[data-settings]")).to_contain_text("fix the engine's settings")
        page.click("button:has-text('Retry')")
        wait_until(lambda: api.get(f"/v1/jobs/{refused}").json()["attempts"] == 2)
        # A fault in the kind's code is mended by a fix: the page says so, and retries.
        bug = submit(api, params={"seconds": 0, "ticks": 1, "fail": "bug"})["id"]
        assert wait_for_status(api, bug, {"failed"})["error"]["code"] == "internal_error"
        page.goto(f"/jobs/{bug}")
        expect(page.locator("[data-permanent]")).to_have_count(0)
        expect(page.locator("[data-code-fault]")).to_contain_text("once a fixed version runs")
        page.click("button:has-text('Retry')")
        wait_until(lambda: api.get(f"/v1/jobs/{bug}").json()["attempts"] == 2)


@DATABASE
def test_failed_page_pages_and_retry_all_retries_every_page(visit: Any) -> None:
    you = visit("dash-retry-all")
    with you.api() as api:
        # The oldest, alone on the second page, may pass another time; the rest failed
        # for good, and "all" leaves them: they would only fail again.
        failed = [
            submit(api, params={"seconds": 0, "ticks": 1, "fail": fail})["id"]
            for fail in ["retryable"] + ["permanent"] * FAILED_PAGE_SIZE
        ]

        def attempts() -> dict[str, int]:
            found = api.get("/v1/jobs", params={"status": "failed", "limit": 200}).json()
            return {job["id"]: job["attempts"] for job in found["items"]}

        wait_until(lambda: set(attempts()) == set(failed), timeout=90)
        page = you.sign_in()
        page.goto("/failed")
        page.select_option("select[name=kind]", "sleep")
        page.click("text=Filter")
        rows = page.locator("tr[data-job]")
        expect(rows).to_have_count(FAILED_PAGE_SIZE)
        page.click("text=Older →")
        expect(rows).to_have_count(1)
        expect(page.locator(f"tr[data-job={failed[0]}]")).to_have_count(1)  # the oldest, last
        page.click("text=← Newest")
        expect(rows).to_have_count(FAILED_PAGE_SIZE)
        # "All" is every failed job of the filter, not only the fifty drawn.
        page.click("text=Retry all failed sleep jobs…")  # two steps: open, then confirm
        page.click("button[name=every]")
        expect(page.locator("[data-notice]")).to_have_text(
            f"Retried 1; {FAILED_PAGE_SIZE} failed for good and were left as they are: "
            "running them again gives the same result."
        )
        expect(page).to_have_url(re.compile(r"/failed\?kind=sleep&"))
        wait_until(lambda: api.get(f"/v1/jobs/{failed[0]}").json()["attempts"] > 3)
        assert {attempts()[job_id] for job_id in failed[1:]} == {1}
        api.post(f"/v1/jobs/{failed[0]}/cancel")  # its retries back off for long


@DATABASE
def test_a_job_cancelled_for_its_upstream_can_be_retried_from_its_page(visit: Any) -> None:
    you = visit("dash-upstream")
    with you.api() as api:
        made = api.post(
            "/v1/flows",
            json={
                "stages": {
                    "bad": {"kind": "sleep", "params": {"seconds": 2, "fail": "permanent"}},
                    "next": {"kind": "sleep", "after": ["bad"], "params": {"seconds": 0}},
                }
            },
        )
        assert made.status_code == 202, made.text
        bad, after = (made.json()["stages"][name]["id"] for name in ("bad", "next"))
        wait_for_status(api, after, {"cancelled"})
        page = you.sign_in()
        page.goto(f"/jobs/{after}")
        expect(page.locator("[data-refresh=error] .code")).to_have_text("upstream_failed")
        retry = page.locator("button:has-text('Retry')")
        expect(retry).to_have_count(1)
        retry.click()  # the job it waits for is still failed: the service says so
        expect(page.locator("main")).to_contain_text(f"{bad}, which job {after} waits for")
        assert api.post(f"/v1/jobs/{bad}/retry").status_code == 200
        page.goto(f"/jobs/{after}")
        page.click("button:has-text('Retry')")
        expect(page).to_have_url(re.compile(f"/jobs/{after}$"))
        expect(page.locator(".headline [data-status]")).to_have_text("waiting")
        expect(page.locator("button:has-text('Retry')")).to_have_count(0)


def test_a_job_waiting_a_minute_to_retry_is_run_at_once_from_its_page(visit: Any) -> None:
    """A job whose disk was full waits a minute, then two, for a person to free space;
    once freed, Retry now runs it without the rest of the wait."""
    you = visit("dash-retry-now")
    with you.api() as api:
        job = submit(api, params={"seconds": 0, "fail": "disk"})
        waiting = wait_until(
            lambda: (
                (j := api.get(f"/v1/jobs/{job['id']}").json())["status"] == "queued"
                and j["error"]
                and j
            ),
        )
        assert waiting["error"]["retry_in_seconds"] >= 60, waiting
        page = you.sign_in()
        page.goto(f"/jobs/{job['id']}")
        expect(page.locator("[data-refresh=error] .code")).to_have_text("storage_unavailable")
        # Waiting out its backoff, it is not "#1 in the queue": it says when it is retried.
        expect(page.locator("[data-retrying]")).to_contain_text("retried in")
        expect(page.locator("[data-position]")).to_have_count(0)
        page.goto("/jobs")
        expect(page.locator(f"tr[data-job={job['id']}] [data-retrying]")).to_contain_text("in")
        page.goto(f"/jobs/{job['id']}")
        page.click("button:has-text('Retry now')")
        expect(page).to_have_url(re.compile(f"/jobs/{job['id']}$"))
        # Run again at once (its disk still full here, so it fails again and waits two
        # minutes), in the attempts it had.
        again = wait_until(
            lambda: (
                (j := api.get(f"/v1/jobs/{job['id']}").json())["attempts"] == 2
                and j["status"] == "queued"
                and j
            ),
            timeout=30,
        )
        assert again["max_attempts"] == waiting["max_attempts"]
        assert again["error"]["retry_in_seconds"] >= 120, again


@DATABASE
def test_a_failed_job_shows_the_step_it_failed_in(visit: Any) -> None:
    you = visit("dash-failed-step")
    with you.api() as api:
        job = submit(api, params={"seconds": 2, "ticks": 4, "fail": "permanent"})
        wait_for_status(api, job["id"], {"running"})
        page = you.sign_in()
        page.goto(f"/jobs/{job['id']}")
        step = page.locator("[data-step-name=work]")
        # Live: the failed event marks the step it stopped in, with how far it got.
        expect(step).to_have_attribute("data-state", "failed")
        expect(step.locator("[data-details]")).to_contain_text('"tick": 4')
        expect(page.locator("[data-step-name=prepare]")).to_have_attribute("data-state", "done")
        assert wait_for_status(api, job["id"], {"failed"})["current_step"] == "work"
        # And as the page is drawn from the store.
        page.reload()
        expect(step).to_have_attribute("data-state", "failed")
        expect(step.locator("[data-details]")).to_contain_text('"tick": 4')
        you.screenshot("failed-step")


@DATABASE
def test_markup_from_users_and_jobs_shows_as_text(visit: Any) -> None:
    you = visit("dash-xss")
    # A stored file name keeps no slash, and a multipart one no double quote (httpx
    # writes it %22), so the file's payload breaks out of single-quoted attributes.
    name = f"'><img src=x onerror=alert('file')>{SCRIPT.replace('/', '')}.txt"
    with you.api() as api:
        said = submit(api, params={"seconds": 0, "ticks": 1, "text": SCRIPT + IMG})["id"]
        page = you.sign_in()
        page.goto("/submit/synthesize")  # a file with no words to speak: refused, naming it
        page.set_input_files(
            "#file", files=[{"name": name, "mimeType": "text/plain", "buffer": b"... !!! ---"}]
        )
        page.click("button.primary")
        expect(page.locator("[data-problem]")).to_contain_text(f"{name} has no words to speak")
        assert page.locator("img[src=x]").count() == 0
        # Stored before and named by id, it reaches a job, which fails naming it.
        stored = api.post("/v1/artifacts", files={"file": (name, b"... !!! ---", "text/plain")})
        wordless = submit(api, kind="synthesize", inputs=[stored.json()["id"]])["id"]
        wait_for_status(api, said, {"completed"})
        failed = wait_for_status(api, wordless, {"failed"})
        assert name in failed["error"]["message"]

    page.click("text=Submit")
    page.click("a[href='/submit/synthesize']")
    typed = f"Hello {SCRIPT} and {IMG} world"
    page.fill("#p-text", typed)
    page.click("button.primary")
    expect(page).to_have_url(re.compile(r"/jobs/job_"))
    expect(page.locator("pre.params")).to_contain_text(json.dumps(typed))  # as JSON shows it
    with you.api() as api:  # its speech is not needed: spare the worker
        api.post(f"/v1/jobs/{page.url.rsplit('/', 1)[-1]}/cancel")

    page.goto(f"/jobs/{said}")
    expect(page.locator("pre.text")).to_have_text(SCRIPT + IMG)  # the job's output
    page.goto(f"/jobs/{wordless}")
    expect(page.locator("ul.files")).to_contain_text(name)  # the upload's name
    expect(page.locator("[data-refresh=error] .message")).to_contain_text(name)
    expect(page.locator("ol.log li[data-type=failed]")).to_contain_text(name)  # live log
    page.goto("/failed")
    expect(page.locator(f"tr[data-job={wordless}] .message")).to_contain_text(name)
    you.screenshot("escaped")

    assert you.dialogs == []
    assert page.locator("img[src=x]").count() == 0
    for url in (f"/jobs/{said}", f"/jobs/{wordless}"):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert page.locator("img[src=x]").count() == 0
        assert page.locator("main script").count() == 0
    assert you.dialogs == []


@DATABASE
def test_admin_pages_show_workers_and_owners_to_admins_only(stack: Stack, visit: Any) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with stack.client("dash-counted") as other:
        held = submit(other, run_at=later, params={"seconds": 0})["id"]
        # No worker here takes GPU jobs: admission hands one to the broker ahead of a
        # worker, holds the others, due, and names them next.
        on_gpu = [submit(other, kind="gpu_sleep", params={"seconds": 0})["id"] for _ in range(3)]
    admin = visit("admin-dash")
    page = admin.sign_in()
    page.click("text=Workers")
    rows = page.locator("tr[data-worker]")
    expect(rows.first).to_be_visible()
    with admin.api() as api:
        names = {w["name"] for w in api.get("/v1/workers").json()}
    shown = {rows.nth(i).get_attribute("data-worker") for i in range(rows.count())}
    assert names and shown <= names | shown and names & shown
    admin.screenshot("workers")
    page.click("text=Owners")
    counted = page.locator("tr[data-owner=dash-counted]")
    expect(counted.locator("[data-queued]")).to_contain_text("4")
    expect(counted.locator("[data-running]")).to_contain_text("0")
    admin.screenshot("owners")
    page.click("text=Queues")
    expect(page.locator("tr[data-queue]").first).to_be_visible()
    expect(page.locator("tr[data-queue='longplay.gpu.normal'] [data-depth]")).to_have_text("1")
    expect(page.locator("tr[data-resource=gpu] [data-held]")).not_to_have_text("0")
    expect(page.locator("tr[data-held-owner=dash-counted]")).to_have_count(2)  # cpu and gpu
    expect(page.locator(f"[data-upcoming=gpu] li[data-job={on_gpu[-1]}]")).to_have_count(1)
    expect(page.locator(f"li[data-job={held}]")).to_have_count(0)  # not due: not next
    admin.screenshot("queues")
    with stack.client("dash-counted") as other:
        other.post(f"/v1/jobs/{held}/cancel")
        for job_id in on_gpu:
            other.post(f"/v1/jobs/{job_id}/cancel")

    owner = visit("dash-not-admin")
    page = owner.sign_in()
    expect(page.locator("text=Workers")).to_have_count(0)
    for url in ("/admin/workers", "/admin/queues", "/admin/owners"):
        response = page.goto(url)
        assert response is not None and response.status == 404


SCHEMA: dict[str, Any] = {
    "properties": {
        "auto": {"anyOf": [{"type": "boolean"}, {"type": "null"}], "default": None},
        "flag": {"type": "boolean", "default": True},
        "channels": {"anyOf": [{"enum": [1, 2], "type": "integer"}, {"type": "null"}]},
        "count": {"type": "integer", "minimum": 1},
        "names": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "object"},
    },
    "required": ["count"],
}


def test_a_schema_makes_fields_and_a_form_gives_typed_params() -> None:
    fields = {f.name: f for f in fields_of(SCHEMA)}
    assert {n: f.widget for n, f in fields.items()} == {
        "auto": "select",  # yes, no, or the kind's own choice: not a checkbox
        "flag": "checkbox",
        "channels": "select",
        "count": "number",
        "names": "lines",
        "extra": "json",
    }
    assert fields["flag"].checked and fields["count"].required and fields["count"].minimum == 1
    form = {"auto": "true", "channels": "2", "count": "5", "names": "a\n\nb\n", "extra": "{}"}
    assert params_from_form(SCHEMA, form) == {
        "auto": True,
        "flag": False,  # an unticked box
        "channels": 2,
        "count": 5,
        "names": ["a", "b"],
        "extra": {},
    }
    assert params_from_form(SCHEMA, {"auto": "", "channels": ""}) == {"flag": False}
    for name, bad in (("count", "five"), ("extra", "{not json")):
        with pytest.raises(Invalid, match=name):
            params_from_form(SCHEMA, {name: bad})
    # Every bad value at once, each field's problem without its label (the form's
    # summary puts the label before it).
    with pytest.raises(Invalid) as refused:
        params_from_form(SCHEMA, {"count": "five", "extra": "{not json"})
    assert [(e["loc"], e["msg"]) for e in refused.value.errors] == [
        (["params", "count"], "'five' is not a whole number"),
        (["params", "extra"], "'{not json' is not a JSON value"),
    ]


def test_sign_in_goes_back_only_to_pages_of_this_site() -> None:
    assert local_url("/jobs?status=failed") == "/jobs?status=failed"
    for elsewhere in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "", None):
        assert local_url(elsewhere) == "/jobs"


def _answer_before_the_body(stack: Stack, headers: dict[str, str]) -> str:
    """Post a 6 MB file to the convert form but send only its first KiB, and return the
    status line the dashboard answers with while the rest is still to come."""
    url = httpx.URL(stack.api_url)
    boundary = "lp-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    lines = [
        "POST /submit/convert HTTP/1.1",
        f"Host: {url.host}:{url.port}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        f"Content-Length: {len(head) + 6_000_000}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection((url.host, url.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head + b"\0" * 1024)
        try:
            return conn.recv(4096).decode("latin-1").split("\r\n", 1)[0]
        except TimeoutError:
            return "no answer: the dashboard is waiting for the rest of the file"


def test_a_form_with_files_is_refused_before_its_files_are_read(stack: Stack, visit: Any) -> None:
    """Nobody signed in, or a page of another site, may make the server store a file."""
    assert _answer_before_the_body(stack, {}) == "HTTP/1.1 303 See Other"
    you = visit("dash-early-refusal")
    with you.session_client() as signed_in:
        cookie = f"{SESSION}={signed_in.cookies[SESSION]}"
        foreign = {"Cookie": cookie, "Origin": "https://elsewhere.example"}
        assert _answer_before_the_body(stack, foreign) == "HTTP/1.1 403 Forbidden"
        # Signed in, a form holds the kind's fields alone, each once: a stranger is
        # refused as it arrives, not read into memory with a thousand others.
        strangers = {f"x{n}": (None, "y" * 1000) for n in range(50)}
        refused = signed_in.post("/submit/convert", files={"format": (None, "mp3"), **strangers})
    assert refused.status_code == 422 and "x0" in refused.text, refused.text[:300]


def _read_until_closed(client: httpx.Client, path: str, seen: list[str]) -> None:
    """Read a stream's lines into ``seen`` until the server closes it."""
    with client.stream("GET", path, timeout=60) as stream:
        seen.append(f"status {stream.status_code}")
        seen.extend(stream.iter_lines())
    seen.append("closed")


def test_streams_open_before_a_key_is_revoked_end_soon_after(stack: Stack, visit: Any) -> None:
    """A stream is checked when it opens, and again as it goes: a revoked key's API
    stream and its dashboard session's live stream both end, before the job does."""
    from longplay.store.db import session_scope
    from longplay.store.owners import owner_for_key, revoke_key

    you = visit("dash-revoked-streams")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with you.api() as api:
        job = submit(api, params={"seconds": 0}, run_at=later)
    followers = {
        "api": (you.api(), f"/v1/jobs/{job['id']}/events"),
        "live": (you.session_client(), f"/live?job={job['id']}"),
    }
    seen: dict[str, list[str]] = {name: [] for name in followers}
    threads = [
        threading.Thread(target=_read_until_closed, args=(client, path, seen[name]), daemon=True)
        for name, (client, path) in followers.items()
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: all(len(lines) > 1 for lines in seen.values()), timeout=10)
    with session_scope(stack.database_url) as session:
        owner = owner_for_key(session, you.key)
        assert owner is not None and revoke_key(session, owner, you.key)
    for thread in threads:
        thread.join(timeout=45)
    for name, lines in seen.items():
        assert lines[0] == "status 200" and lines[-1] == "closed", (name, lines)
        assert not any("cancelled" in line or "completed" in line for line in lines), lines
    api_client, live_client = (client for client, _ in followers.values())
    assert api_client.get(f"/v1/jobs/{job['id']}/events").status_code == 401
    assert live_client.get(f"/live?job={job['id']}").status_code == 303
    for client in (api_client, live_client):
        client.close()


def test_the_session_cookie_is_secure_behind_a_tls_proxy(stack: Stack) -> None:
    """A proxy that ends TLS says so in X-Forwarded-Proto; from an address uvicorn
    trusts (FORWARDED_ALLOW_IPS, this machine by default) the cookie is then Secure."""
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
        form = browser.get("/login")
        assert form.status_code == 200
        token = csrf_of(form.text)
        signed_in = browser.post(
            "/login",
            data={"csrf": token, "next": "/jobs", "api_key": stack.key("dash-proxied")},
            headers={"X-Forwarded-Proto": "https", "Origin": stack.api_url},
        )
    assert signed_in.status_code == 303, signed_in.text
    cookie = next(
        c for c in signed_in.headers.get_list("set-cookie") if c.startswith(f"{SESSION}=")
    )
    assert "secure" in cookie.lower() and "httponly" in cookie.lower(), cookie


def _form_of(client: httpx.Client, kind: str) -> dict[str, str]:
    """The hidden fields of a kind's form, as the browser sends them back."""
    page = client.get(f"/submit/{kind}").text
    found = re.search(r'name="form_id" value="([^"]+)"', page)
    assert found is not None
    return {"csrf": csrf_of(page), "form_id": found[1]}


@DATABASE
def test_a_reason_no_one_field_can_show_is_said_in_the_forms_summary(visit: Any) -> None:
    """A check across fields (a bitrate for a format that has none) names no field: its
    message is in the summary, not lost behind "bad parameters"."""
    you = visit("dash-cross-field")
    with you.session_client() as browser:
        sent = {**_form_of(browser, "convert"), "format": "wav", "bitrate": "128"}
        file = {"file": ("melody.wav", melody_wav(), "audio/wav")}
        refused = browser.post("/submit/convert", data=sent, files=file)
    assert refused.status_code == 422
    summary = refused.text.split("data-problem>", 1)[1].split("</div>", 1)[0]
    assert "bad parameters for convert" in summary
    assert "bitrate applies to mp3 and ogg, not wav" in summary, summary


@DATABASE
def test_an_unknown_collection_is_shown_on_its_field_with_the_form_kept(visit: Any) -> None:
    """A reference to nothing (a collection that is not there) is a problem with the
    form, shown at its field with everything typed kept, not a bare "Not found" page."""
    you = visit("dash-no-collection")
    page = you.sign_in()
    page.goto("/submit/podcast")
    page.fill("#p-collection", "col_nope")
    page.fill("#p-topic", "Markets <b>and</b> bread")
    page.click("button.primary")
    expect(page).to_have_url(re.compile(r"/submit/podcast$"))
    expect(page.locator("#error-collection")).to_contain_text("no collection col_nope")
    expect(page.locator("#p-collection")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#p-collection")).to_have_value("col_nope")
    expect(page.locator("#p-topic")).to_have_value("Markets <b>and</b> bread")
    expect(page.locator("[data-problem]")).to_contain_text("no collection col_nope")


@DATABASE
def test_a_job_page_redraws_its_facts_as_an_attempt_starts_and_a_cancel_says_stopping(
    visit: Any,
) -> None:
    """Drawn while queued, the page's facts (started, attempts) follow the job as it
    starts running, fetched once, without a reload; after Cancel, the attempt whose
    worker has yet to let go is "stopping", not "running"."""
    you = visit("dash-facts")
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    with you.api() as api:
        job = submit(api, "stubborn", run_at=soon, params={"seconds": 20})["id"]
        page = you.sign_in()
        page.goto(f"/jobs/{job}")
        facts = page.locator("[data-refresh=facts]")
        expect(facts).to_contain_text("0 of")
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.evaluate("() => { window.__samePage = true; }")
        expect(page.locator(".headline [data-status]")).to_have_text("running", timeout=30_000)
        expect(facts).to_contain_text("1 of", timeout=10_000)
        expect(facts.locator("dd").nth(1)).not_to_have_text("—")  # started
        assert api.get(f"/v1/jobs/{job}").json()["status"] == "running"  # not at its end
        assert page.evaluate("window.__samePage") is True
        assert sum(u.endswith(f"/jobs/{job}") for u in requests) == 1, requests
        page.click("button:has-text('Cancel')")
        expect(page.locator(".headline [data-status]")).to_have_text("cancelled")
        took = page.locator("table.attempts tbody tr td").nth(3)
        expect(took).to_have_text("stopping")
        wait_for_status(api, job, {"cancelled"})


@DATABASE
def test_a_job_page_says_where_its_waiting_job_stands_as_it_moves(stack: Stack, visit: Any) -> None:
    """No event tells of a place in the queue: a job page asks again every few seconds
    while its job waits there, so "#1 in the queue" becomes "#2" once a high-priority
    job comes in before it, without a reload."""
    you = visit("dash-place")
    with you.api() as api, stack.client("dash-busy") as busy, stack.client("dash-rush") as rush:
        blockers = [submit(busy, params={"seconds": 60})["id"] for _ in range(2)]
        for job in blockers:
            wait_for_status(busy, job, {"running"})
        waiting = submit(api, params={"seconds": 0})["id"]
        ahead = None
        try:
            page = you.sign_in()
            page.goto(f"/jobs/{waiting}")
            place = page.locator(".headline [data-position]")
            expect(place).to_have_text("#1 in the queue")
            page.evaluate("() => { window.__samePage = true; }")
            ahead = submit(rush, params={"seconds": 0}, priority="high")["id"]
            expect(place).to_have_text("#2 in the queue", timeout=15_000)
            assert page.evaluate("window.__samePage") is True
        finally:
            api.post(f"/v1/jobs/{waiting}/cancel")
            if ahead is not None:
                rush.post(f"/v1/jobs/{ahead}/cancel")
            for job in blockers:
                busy.post(f"/v1/jobs/{job}/cancel")


@DATABASE
def test_step_details_are_rounded_and_no_eta_is_told_at_100(stack: Stack, visit: Any) -> None:
    """A fraction in a step's details is drawn rounded; the log's last progress line of
    a finished step tells no time left."""
    from longplay.store.db import session_scope
    from longplay.store.models import Job

    you = visit("dash-rounded")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with you.api() as api:
        held = submit(api, run_at=later, params={"seconds": 0})["id"]
        with session_scope(stack.database_url) as session:
            row = session.get(Job, held)
            assert row is not None
            row.current_step = "work"
            row.step_details = {"done": 0.013315826554794082, "total": 1, "ms": 1234.5678}
        page = you.sign_in()
        page.goto(f"/jobs/{held}")
        details = page.locator("[data-step-name=work] [data-details]")
        expect(details).to_contain_text('"done": 0.0133,')
        expect(details).to_contain_text('"ms": 1234.57')
        api.post(f"/v1/jobs/{held}/cancel")
        done = submit(api, params={"seconds": 2, "ticks": 4})["id"]
        page.goto(f"/jobs/{done}")
        expect(page.locator(".headline [data-status]")).to_have_text("completed", timeout=60_000)
        last = page.locator("ol.log li[data-type=progress]").last
        expect(last).to_contain_text("100 %")
        expect(last).not_to_contain_text("left")
        expect(page.locator(".headline [data-eta]")).to_have_text("")


@DATABASE
def test_the_site_icon_is_served_and_no_page_asks_for_a_missing_file(visit: Any) -> None:
    you = visit("dash-icon")
    failed: list[str] = []
    you.page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page = you.sign_in()
    page.goto("/failed")
    page.wait_for_load_state("networkidle")
    assert failed == [], failed
    for path in ("/favicon.ico", "/static/favicon.svg"):
        icon = page.request.get(path)
        assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")


def test_the_jobs_list_says_what_each_job_reads_and_a_stage_page_its_flow_and_input(
    stack: Stack,
) -> None:
    """Rows of one kind were told apart only by their ids; a flow's stage page said
    neither its flow nor the other stage's output it reads."""
    client = stack.client("rhoda")
    notes = client.post("/v1/artifacts", files={"file": ("talk notes.txt", b"hi", "text/plain")})
    assert notes.status_code == 201, notes.text
    from_file = submit(client, inputs=[notes.json()["id"]], params={"seconds": 0})
    worded = submit(client, params={"seconds": 0, "text": "the harbour <b>ferry</b> " * 5})
    stages = {
        "first": {"kind": "sleep", "params": {"seconds": 0}},
        "second": {"kind": "sleep", "inputs": [{"stage": "first", "output": "result.txt"}]},
    }
    flow = client.post("/v1/flows", json={"stages": stages})
    assert flow.status_code == 202, flow.text
    first, second = (flow.json()["stages"][name]["id"] for name in ("first", "second"))
    wait_for_status(client, second, {"completed"})

    browser = signed_in_browser(stack, "rhoda")
    listed = browser.get("/jobs").text
    row = r'<a href="/jobs/(job_\w+)">\1</a><br><span class="muted reads" data-reads>([^<]*)<'
    reads = dict(re.findall(row, listed))
    assert reads[from_file["id"]] == "talk notes.txt", reads
    # The start of its text, escaped, on one line and cut at 60 characters.
    ferry = "the harbour &lt;b&gt;ferry&lt;/b&gt;"
    assert reads[worded["id"]] == f"{ferry} {ferry} the harbo…", reads
    assert reads[second] == f"result.txt of {first}", reads

    page = browser.get(f"/jobs/{second}").text
    assert f"stage <code>second</code> of <code>{flow.json()['id']}</code>" in page, page
    assert f'<li data-taken>result.txt of <a href="/jobs/{first}">{first}</a></li>' in page, page
