"""Retention through a real deployment: beat's cleanup task and ``longplay cleanup``
with retention settings of a few seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
from conftest import Stack, signed_in_browser, submit, wait_for_status, wait_until

from longplay import keys
from longplay.engines.tts import get_synthesizer
from longplay.engines.turns import TurnVoicer, turn_cache
from longplay.settings import Settings, TtsSettings

RETENTION = 3.0
DAY = 24 * 3600.0


def upload(client: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
    response = client.post("/v1/artifacts", files={"file": (name, data, "text/plain")})
    assert response.status_code == 201, response.text
    return dict(response.json())


def submit_with_file(
    client: httpx.Client, data: bytes, run_at: str | None = None, **params: Any
) -> dict[str, Any]:
    form = {"kind": "sleep", "params": json.dumps(params)}
    if run_at:
        form["run_at"] = run_at
    response = client.post(
        "/v1/jobs",
        data=form,
        files={"file": ("in.txt", data, "text/plain")},
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def cleanup(stack: Stack, *args: str, **settings: float | str) -> dict[str, Any]:
    """Run ``longplay cleanup`` once with these retention settings; its counts."""
    env = {**stack.env, **{f"LONGPLAY_{k.upper()}": str(v) for k, v in settings.items()}}
    done = subprocess.run(
        [sys.executable, "-m", "longplay", "cleanup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def file_of(stack: Stack, artifact_id: str) -> Any:
    return stack.data_dir / "files" / artifact_id


def test_beat_deletes_old_finished_jobs_only(make_stack) -> None:  # type: ignore[no-untyped-def]
    deployment: Stack = make_stack()
    deployment.env.update(
        LONGPLAY_JOB_RETENTION=str(RETENTION),
        LONGPLAY_RESULT_RETENTION="0",
        LONGPLAY_UPLOAD_RETENTION="0",
        LONGPLAY_CLEANUP_INTERVAL="1",
    )
    deployment.start_api()
    deployment.start_worker(concurrency=1)  # its one slot runs a job: beat runs the cleanup
    client = deployment.client()
    events = redis.Redis.from_url(deployment.redis_url)

    old = submit_with_file(client, b"old input", seconds=0.1)
    done = wait_for_status(client, old["id"], {"completed"})
    [old_input] = done["inputs"]
    [old_output] = [o["id"] for o in done["outputs"]]
    running = submit(client, params={"seconds": 60, "ticks": 60})
    wait_for_status(client, running["id"], {"running"})
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    queued = submit_with_file(client, b"queued input", seconds=0.1, run_at=later)
    [queued_input] = queued["inputs"]
    for artifact_id in (old_input, old_output, queued_input):
        assert file_of(deployment, artifact_id).is_file()
    assert events.exists(keys.events_stream(old["id"]))

    time.sleep(RETENTION)  # all three are old enough now; only the finished one may go
    deployment.start_beat()
    wait_until(lambda: client.get(f"/v1/jobs/{old['id']}").status_code == 404, timeout=30)
    assert not file_of(deployment, old_input).exists()
    assert not file_of(deployment, old_output).exists()
    # Asked for right after, what went with the job says so (it is remembered as long as
    # a finished job is, 3 s here); then it is a plain 404.
    for artifact_id in (old_output, old_input):
        gone = client.get(f"/v1/artifacts/{artifact_id}")
        assert gone.status_code == 410, gone.text
        assert gone.json()["error"]["code"] == "gone"
        said = gone.json()["error"]["message"]
        assert f"is gone with job {old['id']}" in said and "LONGPLAY_JOB_RETENTION" in said
    wait_until(lambda: client.get(f"/v1/artifacts/{old_output}").status_code == 404, timeout=30)
    assert not events.exists(keys.events_stream(old["id"]))
    assert client.get(f"/v1/jobs/{old['id']}/attempts").status_code == 404

    time.sleep(2)  # more cleanup runs
    assert client.get(f"/v1/jobs/{running['id']}").json()["status"] == "running"
    assert (deployment.data_dir / "work" / running["id"]).is_dir()
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"
    assert file_of(deployment, queued_input).is_file()
    assert client.get(f"/v1/artifacts/{queued_input}").status_code == 200
    for job in (running, queued):
        client.post(f"/v1/jobs/{job['id']}/cancel")


def test_results_uploads_and_dry_run(make_stack) -> None:  # type: ignore[no-untyped-def]
    deployment: Stack = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    client = deployment.client()
    settings = {
        "job_retention": 0,
        "result_retention": RETENTION,
        "upload_retention": RETENTION,
    }

    orphan = upload(client, "orphan.txt", b"never used")
    named = upload(client, "named.txt", b"named by a job")
    done = [
        submit(client, params={"seconds": 0.1, "text": "kept?"}, dedupe=True),
        submit(client, params={"seconds": 0.1}, inputs=[named["id"]]),
    ]
    done = [wait_for_status(client, j["id"], {"completed"}) for j in done]
    outputs = [o["id"] for j in done for o in j["outputs"]]
    assert len(outputs) == 2
    young = cleanup(deployment, job_retention=0, result_retention=600, upload_retention=600)
    assert {k: young[k] for k in ("results", "uploads", "files")} == {
        "results": 0,
        "uploads": 0,
        "files": 0,
    }, "nothing is old enough yet"
    stray = deployment.data_dir / "files" / "art_stray_from_a_dead_process"
    stray.write_bytes(b"no row names me")
    scratch = deployment.data_dir / "work" / "job_long_gone"
    scratch.mkdir(parents=True)
    (scratch / "leftover.wav").write_bytes(b"\0")
    past = time.time() - 3600
    for path in (stray, scratch):
        os.utime(path, (past, past))

    time.sleep(RETENTION + 0.5)
    expected = {"jobs": 0, "results": 2, "uploads": 1, "scratch": 1, "stray_files": 1}

    dry = cleanup(deployment, "--dry-run", **settings)
    assert dry["dry_run"] is True
    assert {k: dry[k] for k in expected} == expected
    for artifact_id in [*outputs, orphan["id"]]:
        assert file_of(deployment, artifact_id).is_file()
    assert stray.is_file() and scratch.is_dir()
    assert client.get(f"/v1/jobs/{done[0]['id']}").json()["outputs"]

    real = cleanup(deployment, **settings)
    assert {k: real[k] for k in expected} == expected
    assert real["files"] == 3
    for job in done:
        shown = client.get(f"/v1/jobs/{job['id']}").json()
        assert shown["status"] == "completed", "the job stays"
        assert shown["outputs"] == [] and shown["results_expired"] is True
        assert shown["step_details"]["results_expired"] is True
    # Asked for, what retention removed is 410 Gone, saying when and by which setting.
    for artifact_id, job in zip(outputs, done, strict=True):
        assert not file_of(deployment, artifact_id).exists()
        for path in (f"/v1/artifacts/{artifact_id}", f"/v1/artifacts/{artifact_id}/content"):
            gone = client.get(path)
            assert gone.status_code == 410, gone.text
            said = gone.json()["error"]["message"]
            assert f"the results of job {job['id']} were removed on 20" in said, said
            assert "LONGPLAY_RESULT_RETENTION" in said and "submit the job again" in said
    gone = client.get(f"/v1/artifacts/{orphan['id']}")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone", gone.text
    said = gone.json()["error"]["message"]
    assert "orphan.txt" in said and "LONGPLAY_UPLOAD_RETENTION" in said, said
    assert not file_of(deployment, orphan["id"]).exists()
    # A viewer token of a job hears of that job's outputs alone; another owner of none.
    token = client.post(f"/v1/jobs/{done[0]['id']}/viewer-tokens").json()["token"]
    reader = httpx.Client(base_url=deployment.api_url, timeout=30)
    assert reader.get(f"/v1/artifacts/{outputs[0]}?token={token}").status_code == 410
    assert reader.get(f"/v1/artifacts/{outputs[1]}?token={token}").status_code == 404
    assert reader.get(f"/v1/artifacts/{orphan['id']}?token={token}").status_code == 404
    assert deployment.client("bob").get(f"/v1/artifacts/{outputs[0]}").status_code == 404
    # Named in a submission or a collection's documents, it is refused with the reason.
    refused = client.post("/v1/jobs", json={"kind": "sleep", "inputs": [orphan["id"]]})
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["error"]["details"]
    assert problem["type"] == "gone" and "LONGPLAY_UPLOAD_RETENTION" in problem["message"]
    shelf = client.post("/v1/collections", json={"name": "Shelf"}).json()["id"]
    refused = client.post(f"/v1/collections/{shelf}/documents", json={"artifacts": [outputs[1]]})
    assert refused.status_code == 422, refused.text
    assert "LONGPLAY_RESULT_RETENTION" in refused.json()["error"]["message"]
    # Following such a job to save its results says they went, and fails.
    out = deployment.data_dir.parent / "saved"
    watched = subprocess.run(
        [sys.executable, "-m", "longplay", "watch", done[0]["id"], "--out", str(out)],
        env={
            **deployment.env,
            "LONGPLAY_API_URL": deployment.api_url,
            "LONGPLAY_API_KEY": deployment.key("alice"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert watched.returncode == 1, watched.stderr
    said = " ".join(watched.stderr.split())
    assert f"{done[0]['id']}'s results were deleted" in said, said
    assert "LONGPLAY_RESULT_RETENTION" in said and not list(out.glob("*"))
    page = signed_in_browser(deployment, "alice").get(f"/jobs/{done[0]['id']}").text
    assert "data-expired" in page and "LONGPLAY_RESULT_RETENTION" in page
    assert client.get(f"/v1/artifacts/{named['id']}").status_code == 200, "a job names it"
    assert not stray.exists() and not scratch.exists()

    # Expired results are not handed out again: the same submission runs anew.
    again = client.post(
        "/v1/jobs",
        json={"kind": "sleep", "params": {"seconds": 0.1, "text": "kept?"}, "dedupe": True},
    )
    assert again.status_code == 202 and again.json()["id"] != done[0]["id"]
    rerun = wait_for_status(client, again.json()["id"], {"completed"})
    assert rerun["outputs"] and not rerun["results_expired"]
    # Its results are young: a cleanup keeps them (a retention longer than a cleanup
    # process takes to start on a loaded machine, which is seconds).
    young = cleanup(deployment, **{**settings, "result_retention": 600})
    assert young["results"] == 0, "it finished just now"

    # What retention removed is remembered as long as finished jobs are kept.
    time.sleep(RETENTION)
    forgetting = cleanup(deployment, **{**settings, "job_retention": RETENTION})
    assert forgetting["gone_artifacts"] == 3, forgetting
    for artifact_id in [*outputs, orphan["id"]]:
        assert client.get(f"/v1/artifacts/{artifact_id}").status_code == 404


def test_turns_no_job_used_for_a_while_go_and_so_do_abandoned_partial_files(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    folder = turn_cache(deployment.data_dir)
    settings = Settings(data_dir=deployment.data_dir, tts=TtsSettings(engine="local"))
    voicer = TurnVoicer(get_synthesizer(settings), folder, engine="local")
    said = "The keeper trimmed the wicks at dusk."
    assert voicer.voice(said, voice=None).synthesized
    [used] = folder.glob("*.wav")
    now = time.time()

    def aged(path: Path, seconds: float, data: bytes = b"RIFF") -> Path:
        if not path.exists():
            path.write_bytes(data)
        os.utime(path, (now - seconds, now - seconds))
        return path

    aged(used, 8 * DAY)
    assert not voicer.voice(said, voice=None).synthesized, "kept: read back, not synthesized"
    assert used.stat().st_mtime >= now - 1, "reading a kept turn counts as using it"
    old = aged(folder / f"{'a' * 64}.wav", 8 * DAY)
    recent = aged(folder / f"{'b' * 64}.wav", 6 * DAY)
    abandoned = aged(folder / f"{'c' * 64}.wav.4242.part", 2 * 3600)
    being_written = aged(folder / f"{'d' * 64}.wav.4243.part", 600)
    kept = {"job_retention": 0, "result_retention": 0, "upload_retention": 0}

    dry = cleanup(deployment, "--dry-run", turn_cache_retention=7 * DAY, **kept)
    assert dry["dry_run"] is True and dry["turns"] == 2
    assert all(p.is_file() for p in (used, old, recent, abandoned, being_written))

    real = cleanup(deployment, turn_cache_retention=7 * DAY, **kept)
    assert real["turns"] == 2
    assert not old.exists() and not abandoned.exists()
    assert used.is_file() and recent.is_file() and being_written.is_file()
    assert not voicer.voice(said, voice=None).synthesized, "the used turn is still kept"

    # 0 keeps turns forever; leftovers of killed writes still go after an hour.
    aged(recent, 365 * DAY)
    aged(being_written, 2 * 3600)
    forever = cleanup(deployment, turn_cache_retention=0, **kept)
    assert forever["turns"] == 1
    assert recent.is_file() and not being_written.exists()


def test_a_documents_file_outlives_the_jobs_that_made_it_until_the_document_goes(
    make_stack: Callable[[], Stack],
) -> None:
    """A collection's document is read from a file the ``index`` job uploaded, or from
    another job's output: deleting either job, or their retention, keeps the file while
    the document is there; once the document is deleted, retention removes it."""
    deployment = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    client = deployment.client()
    made = wait_for_status(
        client, submit(client, params={"seconds": 0.1, "text": "Marsh birds."})["id"], {"completed"}
    )
    [output] = [o["id"] for o in made["outputs"]]
    collection = client.post("/v1/collections", json={"name": "Kept"}).json()["id"]
    added = client.post(
        f"/v1/collections/{collection}/documents",
        files=[("file", ("notes.txt", b"The heron nests by the old mill.", "text/plain"))],
    ).json()
    by_id = client.post(f"/v1/collections/{collection}/documents", json={"artifacts": [output]})
    assert by_id.status_code == 202, by_id.text
    for job in (added["job"], by_id.json()["job"]):
        assert wait_for_status(client, job["id"], {"completed", "failed"})["status"] == "completed"
    [document] = added["documents"]
    source = document["artifact_id"]
    assert source and file_of(deployment, source).is_file()

    assert client.delete(f"/v1/jobs/{added['job']['id']}").status_code == 204
    assert client.delete(f"/v1/jobs/{made['id']}").status_code == 204
    time.sleep(RETENTION + 0.5)
    settings = {"job_retention": RETENTION, "result_retention": RETENTION}
    cleanup(deployment, **settings, upload_retention=RETENTION)
    for artifact_id in (source, output):
        assert client.get(f"/v1/artifacts/{artifact_id}").status_code == 200, artifact_id
        assert file_of(deployment, artifact_id).is_file(), artifact_id
    shown = client.get(f"/v1/collections/{collection}").json()["documents"]
    assert [d["artifact_id"] for d in shown if d["id"] == document["id"]] == [source]
    kept = client.get(f"/v1/artifacts/{source}/content")
    assert kept.content == b"The heron nests by the old mill."

    assert client.delete(f"/v1/collections/{collection}").status_code == 204
    swept = cleanup(deployment, **settings, upload_retention=RETENTION)
    assert swept["uploads"] == 2, swept
    for artifact_id in (source, output):
        gone = client.get(f"/v1/artifacts/{artifact_id}")
        assert gone.status_code == 410, artifact_id
        assert "LONGPLAY_UPLOAD_RETENTION" in gone.json()["error"]["message"]
        assert not file_of(deployment, artifact_id).exists(), artifact_id


def test_passages_an_older_longplay_stored_are_made_searchable(
    make_stack: Callable[[], Stack],
) -> None:
    """In a rolling upgrade, an ``index`` job of an older longplay's worker stores
    passages without their searchable text (migration 0018 added it): search found none
    of them, for good. The cleanup's round gives it to them."""
    from sqlalchemy import update

    from longplay.store.db import session_scope
    from longplay.store.models import Passage

    deployment = make_stack()
    deployment.env["LONGPLAY_EMBED_ENGINE"] = "off"  # words alone: what the index holds
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    collection = client.post("/v1/collections", json={"name": "Rolling"}).json()["id"]
    added = client.post(
        f"/v1/collections/{collection}/documents",
        files=[
            ("file", ("notes.md", b"# Shore\n\nA walrus sleeps on the ice floe.", "text/markdown"))
        ],
    ).json()
    assert (
        wait_for_status(client, added["job"]["id"], {"completed", "failed"})["status"]
        == "completed"
    )

    def found(query: str) -> list[Any]:
        answer = client.get(f"/v1/collections/{collection}/search", params={"q": query})
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    assert found("walrus")
    with session_scope(deployment.database_url) as session:  # as an older worker stores them
        session.execute(
            update(Passage)
            .where(Passage.collection_id == collection)
            .values(search_text=None, search_heading=None)
        )
    assert found("walrus") == []
    dry = cleanup(deployment, "--dry-run")
    assert dry["passages_made_searchable"] >= 1 and found("walrus") == []
    real = cleanup(deployment)
    assert real["passages_made_searchable"] == dry["passages_made_searchable"]
    [hit] = found("walrus")
    assert hit["heading"] == "Shore"
    assert cleanup(deployment)["passages_made_searchable"] == 0
