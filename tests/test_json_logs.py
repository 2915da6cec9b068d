"""``LONGPLAY_LOG_FORMAT=json``: a real worker process (and the API and beat beside it)
writes its log to a file, one JSON object per line, and every line written while a job
runs names the job, its kind, owner, attempt and step."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import PG_ADMIN, TESTS, free_port, submit, wait_for_status, wait_until
from harness import Deployment
from sqlalchemy import select

from longplay.store.db import session_scope
from longplay.store.models import Job


def _accepting_receiver() -> str:
    """``host:port`` of a webhook receiver that accepts every POST (until the tests end)."""

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


def records(log: Path) -> list[dict[str, Any]]:
    """Every line of the log that is a logging record; a line that is not JSON fails."""
    found = []
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON line: {line!r}") from exc
    return found


def test_worker_lines_are_json_with_the_job_fields(tmp_path: Path) -> None:
    receiver = _accepting_receiver()
    with Deployment(
        tmp_path,
        "sqlite",
        plugin="plugin_kinds",
        plugin_dir=TESTS,
        env={
            "LONGPLAY_LOG_FORMAT": "json",
            "LONGPLAY_PROGRESS_WRITE_INTERVAL": "0.2",
            "LONGPLAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        },
        postgres_admin=PG_ADMIN,
        logs=True,
    ) as stack:
        stack.start_api()
        stack.start_beat()
        stack.start_worker(concurrency=1)
        client = stack.client("alice")
        # Its webhook goes to a port where nothing listens: a line about the delivery.
        nowhere = f"http://127.0.0.1:{free_port()}/hook"
        done = submit(client, params={"seconds": 0.3, "ticks": 3}, callback_url=nowhere)
        failed = submit(client, params={"seconds": 0.2, "ticks": 2, "fail": "permanent"})
        # A receiver whose URL holds a password: the request line never shows it.
        secret_hook = submit(
            client, params={"seconds": 0.1}, callback_url=f"http://user:pw-9x7q@{receiver}/hook"
        )
        # A scanner's multipart headers with bad bytes: a 422 for it, no WARNING for us.
        scanned = client.post(
            "/v1/artifacts",
            content=b'--b\r\nContent[Disposition: form-data; name="file"\r\n\r\nx\r\n--b--\r\n',
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert scanned.status_code == 422, scanned.text
        wait_for_status(client, done["id"], {"completed"})
        wait_for_status(client, failed["id"], {"failed"})
        with session_scope(stack.database_url) as session:
            owner = session.scalar(select(Job.owner_id).where(Job.id == done["id"]))
        # Read while the worker runs: Celery prints its shutdown notices raw, not logged.
        ended = (
            f"job {done['id']} completed",
            f"job {failed['id']} failed",
            "(job.completed)",
            f"job {secret_hook['id']} completed",
            "204 -> delivered",
        )
        wait_until(lambda: all(text in (tmp_path / "worker.log").read_text() for text in ended))
        lines = records(tmp_path / "worker.log")
        api_lines = records(tmp_path / "api.log")
        wait_until(lambda: "beat: Starting" in (tmp_path / "beat.log").read_text())
        beat_lines = records(tmp_path / "beat.log")  # no banner: every line a record
    assert any(r["logger"] == "uvicorn.access" for r in api_lines)
    assert not [r for r in api_lines if r["level"] == "WARNING"], api_lines
    # The API's line for each submission names the job, as the access line cannot.
    for job in (done, failed):
        [made] = [r for r in api_lines if r.get("job_id") == job["id"]]
        assert made["message"] == f"job {job['id']} (sleep) submitted by alice", made
        assert (made["kind"], made["owner"], made["level"]) == ("sleep", owner, "INFO")
    assert any(r["logger"] == "celery.beat" for r in beat_lines), beat_lines
    for required in ("time", "level", "logger", "message", "process"):
        assert all(required in line for line in lines), required

    by_job = {
        job["id"]: [r for r in lines if r.get("job_id") == job["id"]] for job in (done, failed)
    }
    for job_id, mine in by_job.items():
        # The runner's own lines from the start of the run to its end all carry the fields.
        started = [r for r in mine if r["message"].startswith(f"job {job_id} (sleep) started")]
        assert len(started) == 1, mine
        for record in (r for r in mine if "kind" in r):  # written while it runs
            assert record["kind"] == "sleep"
            assert record["owner"] == owner
            assert record["attempt"] == 1
        # Every line that names the job while it runs is one of its lines.
        naming = [
            r for r in lines if job_id in r["message"] and r["logger"].startswith("longplay.jobs")
        ]
        assert naming and all(r.get("job_id") == job_id for r in naming), naming
    ending = [r for r in by_job[failed["id"]] if "failed" in r["message"]]
    assert ending and ending[-1]["level"] == "WARNING" and ending[-1]["step"] == "work"
    completed = [r for r in by_job[done["id"]] if r["message"] == f"job {done['id']} completed"]
    assert len(completed) == 1 and completed[0]["step"] == "work"
    # A line about a job written outside its run (its webhook's delivery) names it too.
    [delivery] = [
        r
        for r in lines
        if "(job.completed) attempt 1" in r["message"] and r.get("job_id") != secret_hook["id"]
    ]
    assert delivery["job_id"] == done["id"] and "kind" not in delivery
    # Lines outside a job carry no job fields.
    assert any("job_id" not in r for r in lines)
    # The delivery to the receiver with a password was made, and logged without it.
    sent = [r["message"] for r in lines if r.get("job_id") == secret_hook["id"]]
    assert [m for m in sent if m.startswith("webhook ") and m.endswith("204 -> delivered")], sent
    assert not [r for r in lines if "pw-9x7q" in json.dumps(r)]
