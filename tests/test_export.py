"""The ``export`` kind through the API and a real worker: an owner's jobs as one zip whose
manifest matches the API, filtered, for an admin on another owner's behalf (and a 404
for anyone else), and files that retention deleted listed as expired."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any

import httpx
import pytest
from conftest import Stack, submit, wait_for_status
from test_cleanup import cleanup
from test_jobs_e2e import read_events

RESULT_RETENTION = 1.0


def exported(client: httpx.Client, **params: Any) -> tuple[dict[str, Any], zipfile.ZipFile]:
    """Run an export to its end: the finished job and its zip."""
    job = submit(client, "export", params=params)
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed", done["error"]
    [archive] = done["outputs"]
    assert archive["media_type"] == "application/zip"
    content = client.get(archive["links"]["content"]).content
    return done, zipfile.ZipFile(io.BytesIO(content))


def manifest_of(archive: zipfile.ZipFile) -> dict[str, Any]:
    return dict(json.loads(archive.read("manifest.json")))


def test_an_export_unpacks_to_the_owners_files_and_a_manifest_that_matches_the_api(
    stack: Stack,
) -> None:
    owner = f"exporter-{uuid.uuid4().hex[:8]}"
    client = stack.client(owner)
    upload = client.post("/v1/artifacts", files={"file": ("notes.txt", b"an input file")})
    assert upload.status_code == 201, upload.text
    note = upload.json()
    jobs = [
        submit(
            client,
            params={"seconds": 0, "ticks": 1, "text": f"job number {n}"},
            inputs=[note["id"]] if n < 2 else [],
        )
        for n in range(20)
    ]
    failing = submit(client, params={"seconds": 0, "ticks": 1, "fail": "permanent"})
    for job in [*jobs, failing]:
        wait_for_status(client, job["id"], {"completed", "failed"})

    done, archive = exported(client, statuses=["completed"], include_inputs=True)
    assert done["priority"] == "low", "exports go below the owner's tier"
    expected = {"manifest.json"}
    for n, job in enumerate(jobs):
        expected.add(f"jobs/{job['id']}/outputs/result.txt")
        assert archive.read(f"jobs/{job['id']}/outputs/result.txt") == f"job number {n}".encode()
        if n < 2:
            expected.add(f"jobs/{job['id']}/inputs/notes.txt")
            assert archive.read(f"jobs/{job['id']}/inputs/notes.txt") == b"an input file"
    assert set(archive.namelist()) == expected

    manifest = manifest_of(archive)
    assert manifest["owner"] == owner
    assert manifest["filter"]["statuses"] == ["completed"]
    assert [entry["job"]["id"] for entry in manifest["jobs"]] == [j["id"] for j in jobs]
    for entry in manifest["jobs"]:
        assert entry["job"] == client.get(f"/v1/jobs/{entry['job']['id']}").json()
        assert entry["events"]["types"]["completed"] == 1
        assert entry["events"]["first_at"] <= entry["events"]["last_at"]
        for line in entry["files"]:
            assert line["status"] == "included"
            assert archive.getinfo(line["path"]).file_size == line["size"]
    progress = [
        e["data"]["step_details"]
        for e in read_events(client, done["id"])
        if "files_done" in e["data"].get("step_details", {})
    ]
    assert [p["files_done"] for p in progress] == sorted(p["files_done"] for p in progress)
    final = progress[-1]
    assert final["files_done"] == final["files_total"] == 22
    assert (
        final["bytes_done"]
        == final["bytes_total"]
        == sum(line["size"] for entry in manifest["jobs"] for line in entry["files"])
    )
    assert manifest["totals"] == {"files": 22, "bytes": final["bytes_total"], "expired_files": 0}

    # Earlier exports are left out unless asked for: their zips hold the same files again.
    whole, everything = exported(client, since="2000-01-01")  # a date alone: its start, UTC
    listed = [entry["job"]["id"] for entry in manifest_of(everything)["jobs"]]
    assert listed == [job["id"] for job in [*jobs, failing]]
    _, exports = exported(client, kinds=["export"])
    assert [entry["job"]["id"] for entry in manifest_of(exports)["jobs"]] == [
        done["id"],
        whole["id"],
    ]

    admin = stack.client(f"admin-{owner}")
    _, failed_only = exported(admin, owner=owner, statuses=["failed"], kinds=["sleep"])
    [entry] = manifest_of(failed_only)["jobs"]
    assert entry["job"]["id"] == failing["id"]
    assert entry["job"]["error"]["code"] == "asked_to_fail"
    assert entry["files"] == [] and failed_only.namelist() == ["manifest.json"]


def test_an_input_another_job_made_is_filed_as_the_readers_input(stack: Stack) -> None:
    client = stack.client(f"chainer-{uuid.uuid4().hex[:8]}")
    first = submit(client, params={"seconds": 0, "ticks": 1, "text": "made first"})
    [made] = wait_for_status(client, first["id"], {"completed"})["outputs"]
    reader = submit(client, params={"seconds": 0, "ticks": 1}, inputs=[made["id"]])
    wait_for_status(client, reader["id"], {"completed"})

    _, archive = exported(client, include_inputs=True)

    entries = {entry["job"]["id"]: entry for entry in manifest_of(archive)["jobs"]}
    files = [(f["role"], f["path"]) for f in entries[reader["id"]]["files"]]
    assert files == [
        ("input", f"jobs/{reader['id']}/inputs/result.txt"),
        ("output", f"jobs/{reader['id']}/outputs/result.txt"),
    ]
    assert archive.read(f"jobs/{reader['id']}/inputs/result.txt") == b"made first"
    [(role, _)] = [(f["role"], f["path"]) for f in entries[first["id"]]["files"]]
    assert role == "output"


def test_a_kind_no_job_can_have_is_refused_at_its_field(stack: Stack) -> None:
    client = stack.client("kind-typist")
    refused = client.post(
        "/v1/jobs", json={"kind": "export", "params": {"kinds": ["sleep", "slep"]}}
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["details"][0]["loc"] == ["body", "params", "kinds"], error
    assert "no kind 'slep'" in error["message"] and "sleep" in error["message"], error


def test_another_owners_export_is_a_404(stack: Stack) -> None:
    owner = f"private-{uuid.uuid4().hex[:8]}"
    stack.client(owner)
    for asking, named in [("nosy", owner), ("admin-nosy", "nobody-at-all")]:
        response = stack.client(asking).post(
            "/v1/jobs", json={"kind": "export", "params": {"owner": named}}
        )
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == "not_found" and named in error["message"]


# SQLite only: it starts a deployment of its own (the export query runs on both above).
@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
def test_files_deleted_by_retention_are_listed_as_expired(make_stack) -> None:  # type: ignore[no-untyped-def]
    deployment: Stack = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    first = submit(client, params={"seconds": 0, "ticks": 1, "text": "made first"})
    first = wait_for_status(client, first["id"], {"completed"})
    [made] = first["outputs"]
    second = submit(client, params={"seconds": 0, "ticks": 1}, inputs=[made["id"]])
    wait_for_status(client, second["id"], {"completed"})
    time.sleep(RESULT_RETENTION + 0.1)
    counts = cleanup(
        deployment, job_retention=3600, result_retention=RESULT_RETENTION, upload_retention=3600
    )
    assert counts["results"] == 2

    _, archive = exported(client, include_inputs=True)
    assert archive.namelist() == ["manifest.json"]
    entries = {e["job"]["id"]: e for e in manifest_of(archive)["jobs"]}
    assert entries[first["id"]]["job"]["results_expired"] is True
    assert entries[first["id"]]["files"] == []
    [gone] = entries[second["id"]]["files"]
    assert gone["artifact_id"] == made["id"]
    assert (gone["role"], gone["status"], gone["path"]) == ("input", "expired", None)
    assert manifest_of(archive)["totals"]["expired_files"] == 1
