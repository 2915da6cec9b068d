"""Fan-out: one ``transcribe`` job spreads the pieces of a long recording over the
worker pool (``ctx.map``), end to end through HTTP with a real worker of 2 processes.

The stack here takes recordings over 20 s as long and cuts them into pieces of at most
15 s, so a 50-second recording that Piper says makes several pieces.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import plugin_kinds  # noqa: F401  (registers `sleep` here too, for help_job)
import pytest
from conftest import Stack, submit, wait_for_status, wait_until
from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import Engine
from step_context import RecordingContext

from longplay.engines import get_synthesizer
from longplay.framework import ItemContext, NoParams, PermanentError
from longplay.framework.fanout import function_ref, resolve
from longplay.jobs import fanout
from longplay.jobs.context import JobContext
from longplay.jobs.fanout import help_job
from longplay.jobs.fanout_items import Planner
from longplay.media import AudioEncoder
from longplay.settings import get_settings
from longplay.store.models import FanOutItem, Job

SENTENCES = (
    "The museum opens its doors early in the morning.",
    "A guide walks the first visitors through the painting hall.",
    "Large paintings of the sea hang along the western wall.",
    "Children draw the ships they see in the glass cases.",
    "At noon the cafe serves soup and fresh bread.",
    "A quiet garden lies behind the main building.",
    "Students sketch the statues near the fountain.",
    "The library upstairs keeps letters from the founders.",
    "In the afternoon a musician plays the old piano.",
    "Volunteers answer questions at the front desk.",
    "The shop sells postcards and small wooden boats.",
    "The doors close again in the evening.",
)
GAPS_S = (0.9, 1.4, 1.1)


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def sentences_heard(text: str) -> list[float]:
    """For each sentence said, the share of its words found, in order, in ``text``."""
    said = [normalized(sentence).split() for sentence in SENTENCES]
    flat = [word for sentence in said for word in sentence]
    matcher = difflib.SequenceMatcher(a=flat, b=normalized(text).split(), autojunk=False)
    found = [False] * len(flat)
    for block in matcher.get_matching_blocks():
        found[block.a : block.a + block.size] = [True] * block.size
    shares, at = [], 0
    for sentence in said:
        shares.append(sum(found[at : at + len(sentence)]) / len(sentence))
        at += len(sentence)
    return shares


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 50 s of speech: the sentences with pauses of about a second between them."""
    synthesizer = get_synthesizer()
    speeches = [synthesizer.synthesize(sentence) for sentence in SENTENCES]
    rate = speeches[0].sample_rate
    parts: list[np.ndarray] = []
    for n, speech in enumerate(speeches):
        if parts:
            parts.append(np.zeros(round(GAPS_S[n % len(GAPS_S)] * rate), np.float32))
        parts.append(speech.samples)
    path = tmp_path_factory.mktemp("fanout") / "museum.wav"
    with AudioEncoder(path, format="wav", sample_rate=rate, channels=1) as encoder:
        encoder.write(np.concatenate(parts).astype(np.float32)[:, None])
    return path


@pytest.fixture(scope="module")
def one_pass(stack: Stack, recording: Path) -> str:
    """The recording's text from one pass: a ``transcribe`` job on the shared stack,
    whose worker does not fan out and runs the model with the same threads."""
    client = stack.client()
    job = wait_for_status(
        client, transcribe(client, recording), {"completed", "failed"}, timeout=120
    )
    assert job["status"] == "completed", job["error"]
    return text_of(client, job)


@pytest.fixture(scope="module")
def fanout_stack(database_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    deployment = Stack(tmp_path_factory.mktemp(f"fanout-{database_kind}"), database_kind)
    deployment.env["LONGPLAY_STT_FAN_OUT_ABOVE"] = "20"
    deployment.env["LONGPLAY_STT_FAN_OUT_PIECE"] = "15"
    deployment.env["LONGPLAY_SHUTDOWN_GRACE"] = "1"
    try:
        deployment.start_api()
        deployment.start_worker(concurrency=2)
        yield deployment
    finally:
        deployment.close()


@pytest.fixture(scope="module")
def store(fanout_stack: Stack) -> Iterator[Engine]:
    engine = create_engine(fanout_stack.database_url)
    yield engine
    engine.dispose()


def items_of(store: Engine, job_id: str) -> list[FanOutItem]:
    with store.connect() as connection:
        rows = connection.execute(
            select(FanOutItem).where(FanOutItem.job_id == job_id).order_by(FanOutItem.position)
        ).all()
    return [FanOutItem(**row._mapping) for row in rows]


def transcribe(client: httpx.Client, recording: Path) -> str:
    response = client.post(
        "/v1/jobs",
        data={"kind": "transcribe", "params": "{}"},
        files={"file": (recording.name, recording.read_bytes(), "audio/wav")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def helper_item(store: Engine, job_id: str, parent: str) -> FanOutItem | None:
    """An item running in a process other than the job's own."""
    running = [i for i in items_of(store, job_id) if i.status == "running"]
    return next((i for i in running if i.worker and i.worker != parent), None)


def worker_of(client: httpx.Client, job_id: str) -> str:
    """The pool process running the job."""
    wait_for_status(client, job_id, {"running"})
    [attempt] = client.get(f"/v1/jobs/{job_id}/attempts").json()
    return str(attempt["worker"])


def text_of(client: httpx.Client, job: dict[str, Any]) -> str:
    [txt] = [o for o in job["outputs"] if o["name"].endswith(".txt")]
    return client.get(txt["links"]["content"]).text


def test_a_long_recording_spreads_over_the_pool_and_survives_a_killed_helper(
    fanout_stack: Stack, store: Engine, recording: Path, one_pass: str
) -> None:
    client = fanout_stack.client()
    job_id = transcribe(client, recording)
    parent = worker_of(client, job_id)
    # kill -9 the pool process that helps, while it runs a piece.
    victim = wait_until(lambda: helper_item(store, job_id, parent), timeout=60, every=0.02)
    os.kill(int(str(victim.worker).rsplit(":", 1)[1]), signal.SIGKILL)
    seen: list[dict[str, Any]] = []

    def ended() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(job["step_details"])
        return job if job["status"] in {"completed", "failed", "cancelled"} else None

    job = wait_until(ended, timeout=120, every=0.1)

    assert job["status"] == "completed", job["error"]
    assert job["attempts"] == 1, "only the lost piece ran again, not the job"
    items = items_of(store, job_id)
    assert len(items) >= 3 and all(i.status == "done" for i in items)
    [redone] = [i for i in items if i.tries > 1]  # the piece the killed process held
    assert redone.tries == 2 and redone.worker != victim.worker
    assert sum(i.tries for i in items) == len(items) + 1, "nothing but the lost piece ran twice"
    assert any(d.get("items") == len(items) and "items_done" in d for d in seen)
    text = text_of(client, job)
    # Nothing lost, nothing duplicated at the joins: every sentence heard (Whisper hears
    # less context in a piece, so a word or two of one may differ from one pass; a
    # sentence lost at a join has none of its words), no more words than were said, and
    # (every sentence being different) no four words in a row heard twice.
    assert min(sentences_heard(text)) >= 0.5, text
    assert min(sentences_heard(one_pass)) >= 0.5, one_pass
    words = normalized(text).split()
    assert len(words) <= sum(len(s.split()) for s in SENTENCES) + 3
    runs = list(zip(words, words[1:], words[2:], words[3:], strict=False))
    assert len(set(runs)) == len(runs)
    transcript = json.loads(
        client.get(
            next(o for o in job["outputs"] if o["name"].endswith(".json"))["links"]["content"]
        ).text
    )
    segments = transcript["segments"]
    assert all(a["start"] < b["start"] for a, b in pairwise(segments)), "times in order"
    assert transcript["duration"] == pytest.approx(sum(i.item["seconds"] for i in items), abs=0.01)


def test_cancelling_the_job_cancels_its_items(
    fanout_stack: Stack, store: Engine, recording: Path
) -> None:
    client = fanout_stack.client()
    job_id = transcribe(client, recording)
    parent = worker_of(client, job_id)
    wait_until(lambda: helper_item(store, job_id, parent), timeout=60, every=0.02)

    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    wait_for_status(client, job_id, {"cancelled"})

    def settled() -> list[FanOutItem] | None:
        items = items_of(store, job_id)
        return items if all(i.status in {"done", "cancelled"} for i in items) else None

    items = wait_until(settled, timeout=15)
    assert any(i.status == "cancelled" for i in items)
    time.sleep(2.0)  # a helper that went on would finish a piece in this time
    assert [(i.status, i.finished_at) for i in items_of(store, job_id)] == [
        (i.status, i.finished_at) for i in items
    ]


def test_items_go_out_while_the_step_still_makes_them(fanout_stack: Stack) -> None:
    """A step that makes an item every 0.6 s: a helper runs the first ones long before
    the last is made, and keeps taking them as they come."""
    client = fanout_stack.client()
    job = submit(client, "trickle", params={"items": 6, "gap": 0.6, "work": 0.1})
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done["error"]
    [output] = done["outputs"]
    body = client.get(output["links"]["content"]).json()
    assert [r["item"] for r in body["results"]] == list(range(6))
    helped = [r for r in body["results"] if r["pid"] != body["pid"]]
    assert len(helped) >= 4, body
    assert min(r["done_at"] for r in helped) < body["made_last_at"] - 1.0, body


def test_a_step_made_again_keeps_the_same_items_and_drops_the_rest(
    fanout_stack: Stack, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a retried step's items keep: those it makes again, in the same places,
    keep what they got done (a failed one runs again); from the first that differs,
    the earlier run's are gone. Nothing is stored once the job stopped running."""
    client = fanout_stack.client()
    job_id = submit(client, "sleep", params={"seconds": 60})["id"]
    wait_for_status(client, job_id, {"running"})
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", fanout_stack.database_url)
    get_settings.cache_clear()

    def make(*items: str) -> list[tuple[str, str]]:
        planner = Planner(job_id, "cut", "plugin_kinds:run_item")
        assert all([planner.add(item) for item in items])
        planner.finish()
        return [(i.item, i.status) for i in items_of(store, job_id)]

    try:
        assert make("a", "b", "c", "d") == [(x, "pending") for x in "abcd"]
        with store.begin() as connection:
            for position, status in ((0, "done"), (1, "failed"), (2, "done")):
                connection.execute(
                    update(FanOutItem)
                    .where(FanOutItem.job_id == job_id, FanOutItem.position == position)
                    .values(status=status)
                )
        assert make("a", "b", "x") == [("a", "done"), ("b", "pending"), ("x", "pending")]
        assert make("a", "b") == [("a", "done"), ("b", "pending")]
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        wait_for_status(client, job_id, {"cancelled"})
        late = Planner(job_id, "cut", "plugin_kinds:run_item")
        assert late.add("a") is False and late.add("z") is False
        assert [(i.item, i.status) for i in items_of(store, job_id)] == [
            ("a", "done"),
            ("b", "cancelled"),
        ]
    finally:
        get_settings.cache_clear()


def squared(ctx: ItemContext[Any], item: int) -> int:
    ctx.advance(1, 1)
    return item * item


def test_map_outside_the_pool_runs_here_in_order(tmp_path: Path) -> None:
    ctx = RecordingContext(NoParams(), [], tmp_path)
    assert ctx.map(squared, [3, 1, 2]) == [9, 1, 4]
    assert [(done, total) for _, done, total, _ in ctx.progress] == [(1, 3), (2, 3), (3, 3)]


def test_map_takes_only_functions_other_processes_can_import(tmp_path: Path) -> None:
    """A lambda is refused by every map, with a code of its own: in the job's process,
    over the pool and in a test's context alike."""
    assert resolve(function_ref(squared)) is squared

    def nested(ctx: ItemContext[Any], item: Any) -> Any:
        return item

    for fn in (lambda ctx, item: item, nested):
        with pytest.raises(PermanentError, match="module-level function") as refused:
            function_ref(fn)
        assert refused.value.code == "invalid_map"
        for ctx in (job_context(tmp_path, width=1), RecordingContext(NoParams(), [], tmp_path)):
            with pytest.raises(PermanentError) as refused:
                ctx.map(fn, [1, 2])
            assert refused.value.code == "invalid_map"


def test_an_item_that_raises_fails_the_step_naming_it(tmp_path: Path) -> None:
    """In the job's own process, a bug in an item is an internal error that says which
    item it was."""
    with pytest.raises(PermanentError) as failed:
        job_context(tmp_path, width=1).map(failing_item, ["bug"])
    assert (failed.value.code, failed.value.message) == (
        "internal_error",
        "ctx.map: item 0 failed: internal error: ValueError: a bug in the item",
    )


def failing_item(ctx: ItemContext[Any], item: str) -> None:
    """An item that fails as one may in a helper: its database locked, memory short, a bug."""
    if item == "locked":
        with tempfile.TemporaryDirectory() as folder:
            engine = create_engine(f"sqlite:///{folder}/db", connect_args={"timeout": 0})
            try:
                with engine.connect() as holder, engine.connect() as other:
                    holder.exec_driver_sql("BEGIN EXCLUSIVE")
                    other.exec_driver_sql("CREATE TABLE t (x)")  # database is locked
            finally:
                engine.dispose()
    if item == "memory":
        np.empty(2**62, np.uint8)  # more than any machine has: numpy raises a MemoryError
    raise ValueError("a bug in the item")


def test_a_helper_judges_a_failed_item_as_the_job_process_would(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item failing in a helper is kept with the error the job's own process would
    settle it with: a locked database and a lack of memory may pass (retryable), a bug
    is an internal error."""
    client = stack.client()
    job_id = submit(client, "sleep", params={"seconds": 60})["id"]
    wait_for_status(client, job_id, {"running"})
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", stack.database_url)
    get_settings.cache_clear()
    engine = create_engine(stack.database_url)
    try:
        planner = Planner(job_id, "cut", function_ref(failing_item))
        assert all([planner.add(item) for item in ("locked", "memory", "bug")])
        planner.finish()
        for _ in range(3):  # a helper stops at the item that fails
            assert help_job(job_id, "cut", worker="helper:1", is_gone=lambda _: False) == 0
        errors = [(i.status, i.error or {}) for i in items_of(engine, job_id)]
        assert [(status, e.get("code"), e.get("retryable")) for status, e in errors] == [
            ("failed", "store_unavailable", True),
            ("failed", "out_of_memory", True),
            ("failed", "internal_error", False),
        ]
        locked = str(errors[0][1]["message"])  # no SQL, no link
        assert locked == "ctx.map: item 0 failed: the database did not answer: database is locked"
        bug = str(errors[2][1]["message"])
        assert bug == "ctx.map: item 2 failed: internal error: ValueError: a bug in the item"
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
        engine.dispose()
        get_settings.cache_clear()


def paired(ctx: ItemContext[Any], item: Any) -> tuple[Any, ...]:
    """A tuple of the item as the item sees it: JSON turns each into a list."""
    return ("got", item)


def stamped(ctx: ItemContext[Any], item: Any) -> dict[str, Any]:
    """A result JSON cannot carry: a datetime in it."""
    return {"item": item, "at": datetime(2026, 1, 1, tzinfo=UTC)}


class _NoPool:
    """A pool of 2 processes that a map of fewer than 2 items must not use."""

    width = 2

    def map(self, *_: Any) -> list[Any]:
        raise AssertionError("one item is not spread")


class _Reporter:
    tracker = SimpleNamespace(step="cut")

    def advance(self, done: float, total: float, **details: Any) -> None:
        pass


def job_context(workdir: Path, *, width: int = 2) -> JobContext:
    """The runner's context of a job whose kind has ``fan_out`` ``width``, without a store."""
    job = Job(id="job-map", owner_id="owner-1", kind="sleep", checkpoint={})
    pool = _NoPool() if width > 1 else None
    return JobContext(job, NoParams(), [], workdir, cast(Any, _Reporter()), pool=pool)


NOT_JSON = (
    "ctx.map: the result of item 0 is not a JSON value (dict): "
    "Object of type datetime is not JSON serializable"
)


def test_map_gives_the_same_results_and_failures_with_one_item_as_with_many(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items and results go through JSON in the job's process as over the pool: a
    tuple comes back a list, and a result JSON cannot carry fails the step for good,
    saying which item and why, with one item as with two (and in a helper)."""
    items = [(1, "a"), (2, "b")]
    expected = [["got", [1, "a"]], ["got", [2, "b"]]]
    here = job_context(tmp_path)
    assert here.map(paired, items[:1]) == expected[:1]  # fewer than 2: in this process
    assert job_context(tmp_path, width=1).map(paired, items) == expected  # fan_out 1
    assert RecordingContext(NoParams(), [], tmp_path).map(paired, items) == expected
    for ctx in (here, job_context(tmp_path, width=1)):
        with pytest.raises(PermanentError) as failed:
            ctx.map(stamped, items[:1])
        assert (failed.value.code, failed.value.message) == ("not_json", NOT_JSON)
    with pytest.raises(PermanentError, match=r"ctx\.map: item 0 is not a JSON value \(set\)"):
        here.map(paired, [{1}])

    client = stack.client()
    job_id = submit(client, "sleep", params={"seconds": 60})["id"]
    wait_for_status(client, job_id, {"running"})
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", stack.database_url)
    monkeypatch.setattr(fanout, "_call_helpers", lambda *_: None)  # this process runs them
    get_settings.cache_clear()
    engine = create_engine(stack.database_url)
    try:
        pool = fanout.Pool(job_id, "cpu", "normal", 2, "tester:1", lambda _: False)
        spread = RecordingContext(NoParams(), [], tmp_path)
        assert pool.map(spread, "pairs", paired, items) == expected
        with pytest.raises(PermanentError) as failed:
            pool.map(spread, "stamps", stamped, items)
        assert (failed.value.code, failed.value.message) == ("not_json", NOT_JSON)

        planner = Planner(job_id, "helped", function_ref(stamped))
        assert all([planner.add(item) for item in ([1, "a"], [2, "b"])])
        planner.finish()
        assert help_job(job_id, "helped", worker="helper:1", is_gone=lambda _: False) == 0
        [first, _] = [i for i in items_of(engine, job_id) if i.step == "helped"]
        assert first.status == "failed"
        assert first.error == {"code": "not_json", "message": NOT_JSON, "retryable": False}
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
        engine.dispose()
        get_settings.cache_clear()


def test_add_output_refuses_a_file_added_twice_in_a_step(tmp_path: Path) -> None:
    ctx = job_context(tmp_path / "work")
    out = ctx.workdir / "out.txt"
    out.write_text("once")
    ctx.add_output(out)
    with pytest.raises(PermanentError, match="already added in this step") as refused:
        ctx.add_output(ctx.workdir / "." / "out.txt", name="copy.txt")
    assert refused.value.code == "invalid_output" and str(out) in refused.value.message
    assert [name for _, name, _ in ctx.pending_outputs] == ["out.txt"]
    copy = ctx.workdir / "copy.txt"
    copy.write_text("once")
    ctx.add_output(copy)  # another file is fine
    for path, code in ((ctx.workdir / "none.txt", "invalid_output"), (tmp_path, "invalid_output")):
        with pytest.raises(PermanentError) as refused:
            ctx.add_output(path)
        assert refused.value.code == code
