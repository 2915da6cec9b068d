"""Collections' dashboard pages in a real headless Chromium against the shared SQLite
stack (a live API, a Celery worker, Redis): create a collection from its form, upload
documents (a file that is not one is refused, saying why, with nothing stored), watch
them reach "indexed" without a reload, search them, delete a document and the
collection; another owner's collection or an unknown one is the dashboard's 404 page,
and a form without the session's CSRF token changes nothing.
"""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from conftest import Stack, signed_in_browser, submit, wait_for_status
from playwright.sync_api import expect
from test_dashboard import DATABASE, browser, csrf_of, visit

__all__ = ["browser", "visit"]  # fixtures from test_dashboard: its Chromium, signed-in tabs

LIGHTHOUSE = """# The lighthouse

The keeper Ottilie Varga climbs the tower every evening to light the lamp.

## Storms

In winter storms she writes the weather in a blue logbook.
"""
FERRY = "The Kestrelwind ferry leaves the harbour at dawn and returns before noon.\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def documents_of(api: httpx.Client, collection: str) -> list[dict[str, Any]]:
    answer = api.get(f"/v1/collections/{collection}")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["documents"])


def index_jobs(api: httpx.Client) -> list[dict[str, Any]]:
    return list(api.get("/v1/jobs", params={"kind": "index"}).json()["items"])


@DATABASE
def test_a_collection_made_filled_searched_and_deleted_from_its_pages(
    visit: Any, tmp_path: Path
) -> None:
    you = visit("dash-collections")
    page = you.sign_in()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Collections").click()
    expect(page).to_have_url(re.compile(r"/collections$"))
    expect(page.locator("nav[aria-label=Main] a[aria-current=page]")).to_have_text("Collections")
    expect(page.locator(".empty")).to_contain_text("No collections yet")

    # A form posts once (a second click while the answer loads would add the same files
    # again), until the page is shown anew from the browser's cache.
    posted = """() => {
        const form = document.querySelector("form[action='/collections']");
        let went = 0;
        const count = (event) => {
            if (!event.defaultPrevented) went += 1;
            event.preventDefault();  // counted, never sent
        };
        const shown = () => window.dispatchEvent(new PageTransitionEvent("pageshow"));
        window.addEventListener("submit", count);
        form.requestSubmit(); form.requestSubmit();
        shown();
        form.requestSubmit();
        window.removeEventListener("submit", count);
        shown();
        return went;
    }"""
    page.fill("#name", "not made")
    assert page.evaluate(posted) == 2, "the first and the one after pageshow"
    page.fill("#name", "")

    # A name the API refuses (none: the browser's "required" taken off) says why.
    page.evaluate("() => { document.querySelector('#name').removeAttribute('required'); }")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("[data-problem]")).to_contain_text("name")
    expect(page.locator("#name")).to_have_attribute("aria-invalid", "true")

    name = "Field notes <b>bold</b>"
    page.fill("#name", name)
    page.get_by_role("button", name="Create").click()
    expect(page).to_have_url(re.compile(r"/collections/col_[0-9a-f]+$"))
    collection = page.url.rsplit("/", 1)[-1]
    expect(page.locator("h1")).to_contain_text(name)  # as text, not markup
    expect(page.locator("h1 b")).to_have_count(0)
    expect(page.locator(".empty")).to_contain_text("No documents yet")

    md, txt, png = tmp_path / "lighthouse.md", tmp_path / "ferry.txt", tmp_path / "x.png"
    md.write_text(LIGHTHOUSE)
    txt.write_text(FERRY)
    png.write_bytes(PNG)

    # One file that is not a document refuses them all: nothing stored, no job made.
    page.set_input_files("#file", [md, txt, png])
    page.get_by_role("button", name="Add").click()
    problem = page.locator("[data-problem]")
    expect(problem).to_contain_text("x.png is a PNG image, not a document")
    expect(problem).to_contain_text("Nothing was added")
    expect(page.locator("#file")).to_have_attribute("aria-invalid", "true")
    with you.api() as api:
        assert documents_of(api, collection) == []
        assert index_jobs(api) == []
        # Both worker slots busy for a while: the page is drawn before the index job
        # runs, so "indexed" can only come by the live redraw.
        busy = [submit(api, params={"seconds": 4, "ticks": 4})["id"] for _ in range(2)]
        for job_id in busy:
            wait_for_status(api, job_id, {"running"})

    page.set_input_files("#file", [md, txt])
    page.get_by_role("button", name="Add").click()
    expect(page).to_have_url(re.compile(rf"/collections/{collection}\?added=2$"))
    added = "2 documents added; an index job reads them."
    expect(page.locator("[data-notice]")).to_have_text(added)
    rows = page.locator("tr[data-document]")
    expect(rows).to_have_count(2)
    expect(rows.locator("[data-document-status]")).to_have_text(["queued", "queued"])
    expect(page.get_by_text("Delete collection…")).to_have_count(0)
    with you.api() as api:
        [job] = index_jobs(api)
    for row in (rows.nth(0), rows.nth(1)):
        expect(row.get_by_role("link", name=job["id"])).to_have_attribute(
            "href", f"/jobs/{job['id']}"
        )
    page.evaluate("() => { window.__samePage = true; }")

    for document in ("lighthouse.md", "ferry.txt"):
        row = page.locator("tr[data-document]", has_text=document)
        expect(row.locator("[data-document-status]")).to_have_text("indexed", timeout=60_000)
    assert page.evaluate("window.__samePage") is True  # no reload
    lighthouse = page.locator("tr[data-document]", has_text="lighthouse.md")
    expect(lighthouse.locator("td").nth(1)).to_have_text("text/markdown")
    assert int(lighthouse.locator("td").nth(3).inner_text()) >= 1
    expect(page.locator("[data-passage-count]")).not_to_have_text("0")
    you.screenshot("collection-indexed")

    # Search: the passage with the word, under its headings, with its score.
    page.fill("#q", "Ottilie Varga")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(rf"/collections/{collection}\?q=Ottilie\+Varga$"))
    found = page.locator("li[data-passage]")
    expect(found).to_have_count(1)
    expect(found.locator("h3")).to_have_text("lighthouse.md · The lighthouse")
    expect(found.locator(".text")).to_contain_text("The keeper Ottilie Varga climbs")
    expect(found.locator("[data-score]")).to_have_text(re.compile(r"^\d+\.\d{3}$"))
    expect(page.locator("[data-ranking]")).to_contain_text("1 passage for “Ottilie Varga”")
    page.fill("#q", "logbook")
    page.get_by_role("button", name="Search").click()
    expect(found.first.locator("h3")).to_have_text("lighthouse.md · The lighthouse > Storms")
    page.fill("#q", "Kestrelwind")
    page.get_by_role("button", name="Search").click()
    expect(found).to_have_count(1)
    expect(found.locator("h3")).to_contain_text("ferry.txt")
    page.fill("#q", "xylophonics")
    page.get_by_role("button", name="Search").click()
    expect(found).to_have_count(0)
    expect(page.locator(".empty")).to_contain_text("No passage has these words")

    # Both pages reflow on a narrow screen, with no sideways scrolling.
    page.set_viewport_size({"width": 320, "height": 640})
    for path in ("/collections", f"/collections/{collection}?q=Ottilie"):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, (path, width)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"/collections/{collection}")

    # Delete a document: two steps, and the collection's page says so.
    ferry = page.locator("tr[data-document]", has_text="ferry.txt")
    ferry.get_by_text("Delete…").click()
    ferry.get_by_role("button", name="Delete ferry.txt").click()
    expect(page).to_have_url(re.compile(rf"/collections/{collection}\?deleted=doc_[0-9a-f]+$"))
    expect(page.locator("[data-notice]")).to_contain_text("deleted")
    expect(rows).to_have_count(1)
    with you.api() as api:
        assert [d["name"] for d in documents_of(api, collection)] == ["lighthouse.md"]

    page.get_by_text("Delete collection…").click()
    page.get_by_role("button", name="Delete this collection").click()
    expect(page).to_have_url(re.compile(rf"/collections\?deleted={collection}$"))
    expect(page.locator("[data-notice]")).to_have_text(f"Collection {collection} deleted.")
    expect(page.locator("tr[data-collection]")).to_have_count(0)
    with you.api() as api:
        assert api.get(f"/v1/collections/{collection}").status_code == 404


@DATABASE
def test_another_owners_collection_and_an_unknown_one_are_not_found_and_forms_need_csrf(
    stack: Stack,
) -> None:
    with stack.client("col-owner") as api:
        made = api.post("/v1/collections", json={"name": "Mine"})
        assert made.status_code == 201, made.text
        collection = made.json()["id"]
        added = api.post(
            f"/v1/collections/{collection}/documents",
            files=[
                ("file", ("ferry.txt", FERRY.encode(), "text/plain")),
                ("file", ("blank.txt", b"  \n", "text/plain")),
            ],
        )
        assert added.status_code == 202, added.text
        wait_for_status(api, added.json()["job"]["id"], {"completed"})
        document, blank = documents_of(api, collection)
        assert blank["status"] == "failed", blank
        mine = f"/collections/{collection}"
        actions = [
            f"{mine}/delete",
            f"{mine}/documents/{document['id']}/delete",
        ]

        with closing(signed_in_browser(stack, "col-owner")) as owner:
            shown = owner.get(mine)
            assert shown.status_code == 200, shown.text
            assert "ferry.txt" in shown.text
            # A document that failed says why, as the API does.
            failed = re.search(
                rf'<tr data-document="{blank["id"]}".*?</tr>', shown.text, flags=re.DOTALL
            )
            assert failed is not None, shown.text
            assert ">failed</span>" in failed[0]
            assert f'<code class="code">{blank["error"]["code"]}</code>' in failed[0]
            assert blank["error"]["message"] in failed[0]
            listed = owner.get("/collections")
            assert f'href="/collections/{collection}"' in listed.text
            # A form without the session's CSRF token changes nothing.
            for url in actions:
                forged = owner.post(url, data={"csrf": "nope"})
                assert forged.status_code == 403, (url, forged.text)
            forged = owner.post("/collections", data={"csrf": "nope", "name": "Forged"})
            assert forged.status_code == 403, forged.text
            forged = owner.post(
                f"{mine}/documents",
                data={"csrf": "nope"},
                files={"file": ("more.txt", b"More words here.", "text/plain")},
            )
            assert forged.status_code == 403, forged.text
            # So does one from another site, with the right token.
            csrf = csrf_of(shown.text)
            foreign = owner.post(
                f"{mine}/delete", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
            )
            assert foreign.status_code == 403, foreign.text
        assert [d["id"] for d in documents_of(api, collection)] == [document["id"], blank["id"]]
        assert [c["name"] for c in api.get("/v1/collections").json()["items"]] == ["Mine"]

        with closing(signed_in_browser(stack, "col-owner")) as owner:
            csrf = csrf_of(owner.get(mine).text)
            # A name shown on one line: blank, or with a control character, it is refused.
            for name, told in ((" \n\t", "must not be blank"), ("a\x00b", "control character")):
                refused = owner.post("/collections", data={"csrf": csrf, "name": name})
                assert refused.status_code == 422 and told in refused.text, refused.text
                answer = api.post("/v1/collections", json={"name": name})
                assert answer.status_code == 422, answer.text
            # No file chosen, or a name too long for a part's header: said in plain words.
            chosen_none = (  # as a browser sends a file field left empty
                f'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
                '--b\r\nContent-Disposition: form-data; name="file"; filename=""\r\n'
                "Content-Type: application/octet-stream\r\n\r\n\r\n--b--\r\n"
            )
            none = owner.post(
                f"{mine}/documents",
                content=chosen_none.encode(),
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            )
            assert none.status_code == 422 and "choose one or more files" in none.text
            long_name = owner.post(
                f"{mine}/documents",
                data={"csrf": csrf},
                files={"file": ("n" * 5000 + ".txt", b"Words.", "text/plain")},
            )
            assert long_name.status_code == 422, long_name.text
            assert "give the file a shorter name" in long_name.text
        assert [c["name"] for c in api.get("/v1/collections").json()["items"]] == ["Mine"]
        assert len(documents_of(api, collection)) == 2

        with closing(signed_in_browser(stack, "col-other")) as other:
            for url in (mine, "/collections/col_0123456789abcdef0123"):
                page = other.get(url)
                assert page.status_code == 404, page.text
                assert "<h1>Not found</h1>" in page.text, page.text
                assert "ferry.txt" not in page.text
            searched = other.get(mine, params={"q": "Kestrelwind"})
            assert searched.status_code == 404, searched.text
            assert "Kestrelwind" not in searched.text
            assert f'href="/collections/{collection}"' not in other.get("/collections").text
            csrf = csrf_of(other.get("/collections").text)
            for url in actions:
                refused = other.post(url, data={"csrf": csrf})
                assert refused.status_code == 404, (url, refused.text)
                # Back to what they can see, not to the collection they cannot.
                assert '<a href="/collections">Back to the collections</a>' in refused.text
            upload = other.post(
                f"{mine}/documents",
                data={"csrf": csrf},
                files={"file": ("more.txt", b"More words here.", "text/plain")},
            )
            assert upload.status_code == 404, upload.text
        assert [d["id"] for d in documents_of(api, collection)] == [document["id"], blank["id"]]

        with httpx.Client(base_url=stack.api_url, timeout=30) as stranger:
            signed_out = stranger.get(mine)
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/login?next=")


@DATABASE
def test_right_to_left_text_runs_from_the_right_and_english_from_the_left(visit: Any) -> None:
    """Passages in Arabic were laid out left to right: their last word, and the full
    stop, drawn at the left edge. Each passage now takes its own first letter's
    direction."""
    you = visit("dash-rtl")
    page = you.sign_in()
    arabic = "تغادر العبارة كل صباح من الرصيف الشمالي في الساعة التاسعة."
    english = "The ferry leaves the north pier every morning at nine."
    with you.api() as api:
        collection = api.post("/v1/collections", json={"name": "مرفأ"}).json()["id"]
        added = api.post(
            f"/v1/collections/{collection}/documents",
            files=[("file", ("ar.txt", arabic.encode())), ("file", ("en.txt", english.encode()))],
        ).json()
        assert wait_for_status(api, added["job"]["id"], {"completed", "failed"})["status"] == (
            "completed"
        )
    edges = """(text) => {
        const shown = [...document.querySelectorAll('.passages .text')];
        const p = shown.find(e => e.textContent === text);
        const box = p.getBoundingClientRect(), range = document.createRange();
        range.selectNodeContents(p);
        const line = range.getClientRects()[0];
        range.setStart(p.firstChild, 0); range.setEnd(p.firstChild, 1);
        const first = range.getBoundingClientRect();
        return {left: line.left - box.left, right: box.right - line.right,
                firstAtRight: first.left > line.left + line.width / 2};
    }"""
    page.goto(f"/collections/{collection}?q=العبارة")
    ar = page.evaluate(edges, arabic)
    assert ar["right"] < 2 and ar["left"] > 20 and ar["firstAtRight"], ar
    page.goto(f"/collections/{collection}?q=ferry")
    en = page.evaluate(edges, english)
    assert en["left"] < 2 and en["right"] > 20 and not en["firstAtRight"], en
