"""A flow's dashboard page in a real headless Chromium against the shared SQLite stack (a
live API, a Celery worker, Redis): its stages move live to their end and the flow's own
status follows without a reload, Cancel stops what has not ended, a job page links to
its flow, and another owner's flow or an unknown one is the dashboard's 404 page.
"""

from __future__ import annotations

import re
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from conftest import Stack, signed_in_browser, wait_for_status, wait_until
from playwright.sync_api import expect
from test_dashboard import DATABASE, SESSION, browser, csrf_of, visit

__all__ = ["browser", "visit"]  # fixtures from test_dashboard: its Chromium, signed-in tabs


def post_flow(client: httpx.Client, stages: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/flows", json={"stages": stages})
    assert response.status_code == 202, response.text
    return dict(response.json())


@DATABASE
def test_a_flow_page_follows_its_stages_live_to_the_end(visit: Any) -> None:
    you = visit("dash-flow-live")
    page = you.sign_in()  # first: the page is to be drawn while the first stage runs
    with you.api() as api:
        flow = post_flow(
            api,
            {
                "first": {"kind": "sleep", "params": {"seconds": 6, "ticks": 60}},
                "second": {"kind": "sleep", "params": {"seconds": 1}, "after": ["first"]},
            },
        )
    first, second = (flow["stages"][name]["id"] for name in ("first", "second"))
    page.goto(f"/flows/{flow['id']}")
    expect(page.locator("h1")).to_contain_text(flow["id"])
    expect(page.locator("[data-flow-status]")).to_have_text("running")
    rows = page.locator("tr[data-job]")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-stage", "first")
    expect(rows.nth(1).get_by_role("link", name="second")).to_have_attribute(
        "href", f"/jobs/{second}"
    )
    # Drawn while the first stage runs: the second says which stage it waits for.
    expect(page.locator(f"tr[data-job={second}] [data-waiting]")).to_have_text("for first")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(1)
    expect(page.locator("[data-flow-finished]")).to_have_text("—")
    page.evaluate("() => { window.__samePage = true; }")

    for job_id in (first, second):
        row = page.locator(f"tr[data-job={job_id}]")
        expect(row.locator("[data-status]")).to_have_text("completed", timeout=60_000)
        expect(row.locator("[data-percent]")).to_have_text("100 %")
    expect(page.locator(f"tr[data-job={second}] [data-waiting]")).to_have_count(0)
    # The flow's own status, finished time and actions, drawn again without a reload.
    expect(page.locator("[data-flow-status]")).to_have_text("completed", timeout=10_000)
    expect(page.locator("[data-flow-finished] time")).to_have_count(1)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator("[data-announce]")).to_have_text("Stage second completed")
    assert page.evaluate("window.__samePage") is True
    you.screenshot("flow-completed")

    # A stage's page links to its flow's.
    page.goto(f"/jobs/{second}")
    page.get_by_role("link", name=re.compile(r"stage second of")).click()
    expect(page).to_have_url(re.compile(f"/flows/{flow['id']}$"))
    expect(page.locator("[data-flow-status]")).to_have_text("completed")


@DATABASE
def test_cancel_a_flow_from_its_page(stack: Stack, visit: Any) -> None:
    you = visit("dash-flow-cancel")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with you.api() as api:
        flow = post_flow(
            api,
            {
                "long": {"kind": "sleep", "params": {"seconds": 60, "ticks": 600}},
                "later": {"kind": "sleep", "params": {"seconds": 0}, "run_at": later},
                "then": {"kind": "sleep", "params": {"seconds": 0}, "after": ["long"]},
            },
        )
        stages = {name: job["id"] for name, job in flow["stages"].items()}
        wait_for_status(api, stages["long"], {"running"})
        page = you.sign_in()
        watching = you.context.new_page()  # a second tab, left open: it sees the cancel live
        watching.goto(f"/flows/{flow['id']}")
        watching.evaluate("() => { window.__samePage = true; }")
        page.goto(f"/flows/{flow['id']}")
        expect(page.locator(f"tr[data-job={stages['later']}] [data-scheduled]")).to_contain_text(
            "in "
        )
        expect(page.locator(f"tr[data-job={stages['then']}] [data-waiting]")).to_have_text(
            "for long"
        )
        expect(page.locator(f"tr[data-job={stages['long']}] [data-step]")).to_have_text(
            "work", timeout=30_000
        )

        # A form without the session's CSRF token changes nothing.
        with closing(signed_in_browser(stack, "dash-flow-cancel")) as forged:
            refused = forged.post(f"/flows/{flow['id']}/cancel", data={"csrf": "nope"})
            assert refused.status_code == 403, refused.text
        assert api.get(f"/v1/flows/{flow['id']}").json()["status"] == "running"

        page.get_by_role("button", name="Cancel").click()
        expect(page).to_have_url(re.compile(f"/flows/{flow['id']}$"))
        for shown in (page, watching):
            expect(shown.locator("[data-flow-status]")).to_have_text("cancelled")
            for job_id in stages.values():
                row = shown.locator(f"tr[data-job={job_id}]")
                expect(row.locator("[data-status]")).to_have_text("cancelled")
            expect(shown.get_by_role("button", name="Cancel")).to_have_count(0)
            expect(shown.locator("[data-scheduled], [data-waiting]")).to_have_count(0)
        assert watching.evaluate("window.__samePage") is True
        watching.close()
        ended = api.get(f"/v1/flows/{flow['id']}").json()
        assert ended["status"] == "cancelled", ended
        assert {job["status"] for job in ended["stages"].values()} == {"cancelled"}

        # Cancelling again is refused with a page that says so.
        cookie = you.cookie()
        assert cookie is not None
        with httpx.Client(
            base_url=stack.api_url, cookies={SESSION: cookie["value"]}, timeout=30
        ) as again:
            drawn = again.get(f"/flows/{flow['id']}").text
            refused = again.post(f"/flows/{flow['id']}/cancel", data={"csrf": csrf_of(drawn)})
        assert refused.status_code == 409, refused.text
        assert "has already ended" in refused.text and "<h1>Cannot cancel</h1>" in refused.text
        assert f'<a href="/flows/{flow["id"]}">Back to flow {flow["id"]}</a>' in refused.text
        # The worker stops at its next checkpoint.
        attempts = f"/v1/jobs/{stages['long']}/attempts"
        wait_until(lambda: api.get(attempts).json()[-1]["finished_at"] is not None)


@DATABASE
def test_another_owners_flow_and_an_unknown_one_are_not_found(stack: Stack) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with stack.client("flow-owner") as api:
        flow = post_flow(api, {"held": {"kind": "sleep", "run_at": later}})["id"]
        try:
            with closing(signed_in_browser(stack, "flow-owner")) as owner:
                mine = owner.get(f"/flows/{flow}")
                assert mine.status_code == 200, mine.text
                assert 'data-stage="held"' in mine.text
            with closing(signed_in_browser(stack, "flow-other")) as other:
                theirs = other.get(f"/flows/{flow}")
                unknown = other.get("/flows/flow_0123456789abcdef")
                for page in (theirs, unknown):
                    assert page.status_code == 404, page.text
                    assert "<h1>Not found</h1>" in page.text, page.text
                    assert "data-stage" not in page.text
                csrf = csrf_of(other.get("/jobs").text)
                cancel = other.post(f"/flows/{flow}/cancel", data={"csrf": csrf})
                assert cancel.status_code == 404, cancel.text
            assert api.get(f"/v1/flows/{flow}").json()["status"] == "running"
            with httpx.Client(base_url=stack.api_url, timeout=30) as stranger:
                signed_out = stranger.get(f"/flows/{flow}")
            assert signed_out.status_code == 303
            assert signed_out.headers["location"].startswith("/login?next=")
        finally:
            api.post(f"/v1/flows/{flow}/cancel")
