"""The dashboard's accessibility and UX fixes in a real headless Chromium against the
shared SQLite stack: one polite live region that speaks status changes (not percents),
focus kept on a control when a live job ends, a short event log, a named progress bar,
step states in words, form problems tied to their fields, two-step Delete with a
notice after it, sign-out confirmed, a reflowing page at 320 px, a skip link, an
error page that says what could not be done and links back to the job, and every page
audited by axe-core on a desktop and a phone.

One browser context, signed in once, serves the module's tests (each opens its own
tab); the tests that sign in or out use contexts of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import Stack, submit, wait_for_status
from playwright.sync_api import Browser, Page, expect
from test_dashboard import DATABASE, Visit, browser, csrf_of, melody_wav

__all__ = ["browser"]  # the module's shared Chromium, a fixture from test_dashboard

# Records every text the live region takes, from before the page's own script runs.
RECORD_ANNOUNCEMENTS = """
window.__said = [];
new MutationObserver(() => {
    const region = document.querySelector('[data-announce]');
    if (region && region.textContent !== window.__said[window.__said.length - 1]) {
        window.__said.push(region.textContent);
    }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.fixture(scope="module")
def you(
    stack: Stack, browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Visit]:
    """One owner, signed in once for the module."""
    made = Visit(stack, browser, "dash-access", tmp_path_factory.mktemp("access"))
    made.sign_in()
    yield made
    made.context.close()


@pytest.fixture
def tab(you: Visit, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A new tab of the signed-in context, screenshotted and closed after the test."""
    page = you.context.new_page()
    yield page
    page.screenshot(path=str(you.shots / f"{request.node.name}.png"), full_page=True)
    page.close()


def finished_job(you: Visit, **params: Any) -> str:
    with you.api() as api:
        job = submit(api, params={"seconds": 0, "ticks": 1, **params})
        wait_for_status(api, job["id"], {"completed", "failed"})
    return str(job["id"])


@DATABASE
def test_live_job_speaks_its_status_changes_keeps_focus_and_a_short_log(
    you: Visit, tab: Page
) -> None:
    with you.api() as api:
        job = submit(api, params={"seconds": 3, "ticks": 150})["id"]
        tab.add_init_script(RECORD_ANNOUNCEMENTS)
        tab.goto(f"/jobs/{job}")
        region = tab.locator("[data-announce]")
        assert region.get_attribute("role") == "status"
        assert region.get_attribute("aria-live") == "polite"
        # The bar has a name, and its percent is not read a second time.
        expect(tab.get_by_role("progressbar", name="Progress")).to_have_count(1)
        expect(tab.locator("[data-static]")).to_be_hidden()  # it updates by itself
        expect(tab.locator("[data-percent]")).to_have_attribute("aria-hidden", "true")
        cancel = tab.locator("button:has-text('Cancel')")
        cancel.focus()
        expect(tab.locator("[data-step-name=work] [data-state-text]")).to_have_text(
            "running", timeout=30_000
        )
        wait_for_status(api, job, {"completed"})
        expect(region).to_have_text("Job completed", timeout=30_000)
        # The actions were drawn again (Delete is offered): focus went to it, not <body>.
        delete = tab.locator("details.confirm summary")
        expect(delete).to_be_focused()
        assert tab.evaluate("document.activeElement.tagName") != "BODY"
    said = tab.evaluate("window.__said")
    assert said[-1] == "Job completed"
    assert not any("%" in s for s in said), said
    assert len(set(said)) <= 3, said  # "", maybe "Job running", "Job completed"
    # Each step's state in words as well as its dot's colour.
    for step in ("prepare", "work"):
        expect(tab.locator(f"[data-step-name={step}] [data-state-text]")).to_have_text("done")
    # 150 ticks, but the log holds one progress line a step, updated in place.
    log = tab.locator("ol.log")
    expect(log).to_have_attribute("aria-label", "Event log")
    expect(log).to_have_attribute("tabindex", "0")
    expect(log.locator("li[data-type=completed]")).to_have_count(1)
    steps = log.locator("li[data-type=progress]").evaluate_all(
        "lines => lines.map(li => li.dataset.step)"
    )
    assert sorted(steps) == ["prepare", "work"], steps
    expect(log.locator("li[data-type=progress][data-step=work]")).to_contain_text("100 %")
    assert log.locator("li").count() < 12


@DATABASE
def test_the_jobs_list_speaks_a_job_ending_once(you: Visit, tab: Page) -> None:
    with you.api() as api:
        job = submit(api, params={"seconds": 2, "ticks": 100})["id"]
        tab.add_init_script(RECORD_ANNOUNCEMENTS)
        tab.goto("/jobs")
        region = tab.locator("main [data-announce][role=status]")
        expect(region).to_have_text(f"Job {job} completed", timeout=30_000)
    said = tab.evaluate("window.__said")
    assert not any("%" in s for s in said), said
    assert len(set(said)) <= 3, said
    expect(tab.locator("nav.paging")).to_have_count(0)  # one page: no empty paging nav


@DATABASE
def test_live_updates_paused_notice_shows_while_the_stream_is_down(you: Visit, tab: Page) -> None:
    with you.api() as api:
        job = submit(api, params={"seconds": 30, "ticks": 30})["id"]
        tab.route("**/live?**", lambda route: route.abort())
        tab.goto(f"/jobs/{job}")
        paused = tab.locator("[data-paused]")
        expect(paused).to_be_visible()
        expect(paused).to_have_text("Live updates paused; reconnecting…")
        tab.unroute("**/live?**")
        expect(paused).to_be_hidden(timeout=15_000)  # EventSource reconnects by itself
        assert api.post(f"/v1/jobs/{job}/cancel").status_code in (200, 202)


@DATABASE
def test_delete_takes_two_steps_and_the_jobs_list_says_it_was_deleted(
    you: Visit, tab: Page
) -> None:
    job = finished_job(you)
    tab.goto(f"/jobs/{job}")
    confirm = tab.get_by_role("button", name="Delete this job and its results")
    expect(confirm).to_be_hidden()
    tab.get_by_text("Delete…").click()  # the first step only opens the real button
    expect(tab).to_have_url(re.compile(f"/jobs/{job}$"))
    with you.api() as api:
        assert api.get(f"/v1/jobs/{job}").status_code == 200
        confirm.click()
        expect(tab).to_have_url(re.compile(r"/jobs\?deleted="))
        expect(tab.locator("[data-notice][role=status]")).to_have_text(f"Job {job} deleted.")
        assert api.get(f"/v1/jobs/{job}").status_code == 404
    # A link made to put other words in the notice shows none.
    tab.goto("/jobs?deleted=Your%20account%20is%20locked.%20Call%20us")
    expect(tab.locator("h1")).to_be_visible()
    expect(tab.locator("[data-notice]")).to_have_count(0)


@DATABASE
def test_a_bad_parameter_is_shown_at_its_field_and_the_summary_takes_focus(tab: Page) -> None:
    tab.goto("/submit/convert")
    expect(tab.locator("#file")).to_have_attribute("required", "")
    expect(tab.locator("main")).to_contain_text("Fields marked * are required.")
    help_ids = tab.locator("#p-loudness").get_attribute("aria-describedby") or ""
    assert "help-loudness" in help_ids.split()
    expect(tab.locator("#help-loudness")).to_contain_text("LUFS")
    tab.evaluate("document.querySelector('form.submit').noValidate = true")
    tab.fill("#p-loudness", "999")
    tab.click("button.primary")
    field = tab.locator("#p-loudness")
    expect(field).to_have_attribute("aria-invalid", "true")
    described = (field.get_attribute("aria-describedby") or "").split()
    assert described[0] == "error-loudness", described
    message = tab.locator("#error-loudness")
    expect(message).to_contain_text("allowed: from -60 to -5")
    expect(tab.locator("#p-true_peak")).not_to_have_attribute("aria-invalid", "true")
    summary = tab.locator("[data-problem]")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("bad parameters for convert")
    expect(summary.get_by_role("link", name=re.compile("^Loudness: "))).to_have_attribute(
        "href", "#p-loudness"
    )
    expect(field).to_have_value("999")  # what was sent is kept
    # Files chosen are gone after a problem (no browser fills a file input): said so.
    tab.set_input_files(
        "#file", files=[{"name": "a.wav", "mimeType": "audio/wav", "buffer": melody_wav()}]
    )
    tab.evaluate("document.querySelector('form.submit').noValidate = true")
    tab.click("button.primary")
    expect(tab.locator("[data-problem]")).to_contain_text("Choose the files again")
    # No file at all: the file input is the field marked, with its message.
    tab.fill("#p-loudness", "-16")
    tab.evaluate("document.querySelector('form.submit').noValidate = true")
    tab.click("button.primary")
    files = tab.locator("#file")
    expect(files).to_have_attribute("aria-invalid", "true")
    assert (files.get_attribute("aria-describedby") or "").split()[0] == "error-file"
    expect(tab.locator("#error-file")).not_to_be_empty()
    expect(tab.locator("#p-loudness")).not_to_have_attribute("aria-invalid", "true")


@DATABASE
def test_a_bad_key_marks_its_field_and_sign_out_is_confirmed(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    them = Visit(stack, browser, "dash-access-login", tmp_path)
    try:
        page = them.page
        page.goto("/login")
        key = page.locator("#api_key")
        expect(key).to_have_attribute("autocomplete", "current-password")
        expect(key).not_to_have_attribute("aria-invalid", "true")
        key.fill("lp_not-a-real-key")
        page.click("button[type=submit]")
        key = page.locator("#api_key")
        expect(key).to_have_attribute("aria-invalid", "true")
        assert "login-problem" in (key.get_attribute("aria-describedby") or "").split()
        expect(page.locator("#login-problem")).to_contain_text("not valid")
        them.sign_in()
        page.click("text=Sign out")
        expect(page).to_have_url(re.compile(r"/login"))
        expect(page.locator("[data-notice][role=status]")).to_have_text("You have signed out.")
    finally:
        them.context.close()


@DATABASE
def test_pages_reflow_at_320_px_without_sideways_scrolling(you: Visit, tab: Page) -> None:
    job = finished_job(you, text="x" * 200)
    tab.set_viewport_size({"width": 320, "height": 640})
    for path in ("/jobs", f"/jobs/{job}", "/submit/convert", "/failed"):
        tab.goto(path)
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, (path, width)


AUDIT = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
"""The axe-core rules the pages are held to: WCAG 2.2 A and AA, and axe's best practices."""


@DATABASE
def test_every_page_passes_an_accessibility_audit_on_a_desktop_and_a_phone(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    """axe-core, the engine behind Lighthouse's and the browsers' own accessibility
    checks, finds nothing on any page at 1280 and 375 px: among others, a table too
    wide for a phone scrolls in a region a keyboard can reach, and every column has a
    header a screen reader can say. On a phone a failed attempt's error is read without
    scrolling sideways."""
    admin = Visit(stack, browser, "admin-audit", tmp_path)
    with admin.api() as api:
        done = submit(api, params={"seconds": 0, "ticks": 1, "text": "The ferry leaves at nine."})
        failed = submit(api, params={"seconds": 0, "ticks": 1, "fail": "permanent"})
        flow = api.post(
            "/v1/flows",
            json={
                "stages": {
                    "first": {"kind": "sleep", "params": {"seconds": 0}},
                    "second": {"kind": "sleep", "params": {"seconds": 0}, "after": ["first"]},
                }
            },
        ).json()
        collection = api.post("/v1/collections", json={"name": "Harbour notes"}).json()["id"]
        note = (
            "harbour.md",
            b"# Harbour\n\nThe ferry leaves at nine every day.\n",
            "text/markdown",
        )
        long_name = "Quarterlyharbourreport" * 10 + ".txt"  # 224 characters, nowhere to break
        report = (long_name, b"Ferries ran on time all quarter.\n", "text/plain")
        added = api.post(
            f"/v1/collections/{collection}/documents",
            files=[("file", note), ("file", report)],
        )
        assert added.status_code == 202, added.text
        for job in (done["id"], failed["id"], *(s["id"] for s in flow["stages"].values())):
            wait_for_status(api, job, {"completed", "failed"})
        indexed = added.json()["job"]["id"]
        wait_for_status(api, indexed, {"completed"})
    pages = [
        "/login",  # before signing in
        "/jobs",
        f"/jobs/{done['id']}",
        f"/jobs/{failed['id']}",
        f"/flows/{flow['id']}",
        "/submit",
        "/submit/sleep",
        "/failed",
        "/collections",
        f"/collections/{collection}",
        "/admin/workers",
        "/admin/queues",
        "/admin/owners",
        "/jobz",
    ]
    axe = Axe()
    problems: list[str] = []
    page = admin.page
    for width, height in ((1280, 900), (375, 740)):
        page.set_viewport_size({"width": width, "height": height})
        for path in pages:
            if path == "/jobs" and admin.cookie() is None:
                admin.sign_in()
            page.goto(path)
            page.wait_for_load_state("networkidle")
            found = axe.run(page, options={"runOnly": {"type": "tag", "values": AUDIT}})
            problems += [
                f"{width} px {path}: {v['id']} ({v['impact']}) at {v['nodes'][0]['target']}: "
                f"{v['help']}"
                for v in found.response["violations"]
            ]
    assert not problems, "\n".join(problems)
    # A document's long name breaks; its status stays on the screen.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/collections/{collection}")
    sizes = page.evaluate(
        "() => { const box = document.querySelector('.scroll'); "
        "return [box.scrollWidth, box.clientWidth]; }"
    )
    assert sizes[0] <= sizes[1], sizes
    page.set_viewport_size({"width": 375, "height": 740})
    # On a phone, the attempt's error is under its row, not in a column off the screen.
    page.goto(f"/jobs/{failed['id']}")
    error = page.locator("table.attempts .error")
    expect(error).to_contain_text("asked_to_fail")
    box = error.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 375, box


@DATABASE
def test_the_skip_link_is_the_first_tab_stop_and_moves_focus_to_main(tab: Page) -> None:
    tab.goto("/jobs")
    expect(tab.locator("nav[aria-label=Main] a[aria-current=page]")).to_have_text("Jobs")
    tab.keyboard.press("Tab")
    skip = tab.locator("a.skip")
    expect(skip).to_be_focused()
    expect(skip).to_have_text("Skip to content")
    expect(skip).to_be_in_viewport()  # drawn when focused
    tab.keyboard.press("Enter")
    expect(tab.locator("main#main")).to_be_focused()


@DATABASE
def test_a_refused_action_has_a_titled_page_that_links_back_to_the_job(
    you: Visit, tab: Page
) -> None:
    job = finished_job(you)  # completed: there is nothing to retry
    tab.goto(f"/jobs/{job}")
    expect(tab.get_by_role("button", name="Retry")).to_have_count(0)
    csrf = csrf_of(tab.content())
    tab.evaluate(
        """([job, csrf]) => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = `/jobs/${job}/retry`;
            form.innerHTML = `<input type=hidden name=csrf value="${csrf}">`;
            document.body.append(form);
            form.submit();
        }""",
        [job, csrf],
    )
    expect(tab).to_have_title("Cannot retry · longplay")
    expect(tab.get_by_role("heading", level=1)).to_have_text("Cannot retry")
    back = tab.get_by_role("link", name=f"Back to job {job}")
    expect(back).to_have_attribute("href", f"/jobs/{job}")


@DATABASE
def test_an_address_no_page_has_is_a_titled_page_and_the_api_keeps_its_json(
    you: Visit, tab: Page
) -> None:
    job = finished_job(you)
    # A mistyped address, a form's address opened as a page, an id with an encoded slash.
    for address, title, words in [
        ("/jobz", "Not found", "there is no page at this address"),
        (f"/jobs/{job}/cancel", "Not a page", "open the page the form is on"),
        (f"/jobs/{job}%2Fevents", "Not found", "encoded slash"),
    ]:
        answer = tab.goto(address)
        assert answer is not None and answer.status in (404, 405), address
        assert answer.headers["content-type"].startswith("text/html"), address
        expect(tab.get_by_role("heading", level=1)).to_have_text(title)
        expect(tab.locator("[data-problem]")).to_contain_text(words)
        expect(tab.get_by_role("link", name="Back to the jobs")).to_have_attribute("href", "/jobs")
    assert answer.status == 404
    # The API's paths answer JSON to a browser too; a client that takes JSON gets it anywhere.
    with you.api() as api:
        for address in ("/v1/jobz", "/jobz"):
            refused = api.get(address, headers={"Accept": "application/json"})
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "not_found"
        refused = api.get(f"/v1/jobs/{job}%2Fevents", headers={"Accept": "text/html"})
        assert refused.json()["error"]["code"] == "not_found"
        refused = api.get(f"/jobs/{job}/cancel", headers={"Accept": "text/html"})
        assert refused.status_code == 405 and refused.headers["allow"] == "POST"
        assert "text/html" in refused.headers["content-type"]


@DATABASE
def test_without_javascript_the_job_page_says_to_reload_and_delete_still_confirms(
    you: Visit, stack: Stack, browser: Browser
) -> None:
    context = browser.new_context(base_url=stack.api_url, java_script_enabled=False)
    try:
        signed_in = you.cookie()  # the module's session, in a context without scripts
        assert signed_in is not None
        context.add_cookies([signed_in])  # type: ignore[list-item]
        page = context.new_page()
        with you.api() as api:
            running = submit(api, params={"seconds": 30, "ticks": 30})["id"]
            wait_for_status(api, running, {"running"})
            page.goto(f"/jobs/{running}")
            reload = page.locator("[data-static]")
            expect(reload).to_be_visible()
            expect(reload).to_contain_text("reload it to see how the job is doing")
            assert api.post(f"/v1/jobs/{running}/cancel").status_code in (200, 202)
        job = finished_job(you)
        page.goto(f"/jobs/{job}")
        expect(page.locator("main")).not_to_contain_text("reload it")  # finished: no news
        page.get_by_text("Delete…").click()
        page.get_by_role("button", name="Delete this job and its results").click()
        expect(page.locator("[data-notice]")).to_have_text(f"Job {job} deleted.")
    finally:
        context.close()
