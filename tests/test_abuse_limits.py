"""What a request or an input may cost, and who may read what is kept: multipart forms
bounded as they stream in, a .docx that would unpack to hundreds of MiB refused before
it is unpacked, search words kept out of the access log, the data folder private to
its user, and downloads that a browser never runs as a page of the API's site."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import docx
import httpx
import pytest
from conftest import PG_ADMIN, TESTS, Stack, free_port, submit, wait_for_status, wait_until
from harness import Deployment
from test_up import api_client, start_up, stop

from longplay.framework import InputFile, InvalidInput
from longplay.settings import get_settings
from longplay.text.reading import read_document

MiB = 1024 * 1024


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# Multipart forms ----------------------------------------------------------------------


def test_an_upload_is_one_file_part_and_nothing_else(stack: Stack) -> None:
    client = stack.client("uploader")
    two = client.post("/v1/artifacts", files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))])
    assert two.status_code == 422, two.text
    error = error_of(two)
    assert error["code"] == "invalid_request" and "file" in str(error["message"])
    assert error["details"] == [
        {
            "loc": ["body", "file"],
            "message": "at most 1 part named 'file'",
            "type": "too_many_parts",
        }
    ]
    stranger = client.post(
        "/v1/artifacts", data={"note": "x" * 1000}, files={"file": ("a.txt", b"a")}
    )
    assert stranger.status_code == 422, stranger.text
    assert error_of(stranger)["details"][0]["loc"] == ["body", "note"]
    one = client.post("/v1/artifacts", files={"file": ("a.txt", b"a")})
    assert one.status_code == 201, one.text
    # A type that says only "bytes" (S3's default) is told by the name, as none is.
    for generic in ("application/octet-stream", "binary/octet-stream"):
        stored = client.post("/v1/artifacts", files={"file": ("talk.ogg", b"OggS", generic)})
        assert stored.json()["media_type"] == "audio/ogg", (generic, stored.text)


def test_a_submissions_text_fields_are_bounded_together(stack: Stack) -> None:
    """Each ``after`` is under the limit of one field, together they are far over it:
    refused as too large while they stream in, not held in memory and checked after."""
    client = stack.client("former")
    limit = get_settings().api.max_json_bytes
    chunk = "j" * (limit * 3 // 4)
    fields = {"kind": "sleep", "after": [chunk] * 2}
    refused = client.post("/v1/jobs", data=fields, files=[("file", ("a.txt", b"a"))])
    assert refused.status_code == 413, refused.text
    assert error_of(refused)["code"] == "too_large"
    assert "text fields" in str(error_of(refused)["message"])
    too_many = client.post(
        "/v1/jobs",
        data={"kind": ["sleep", "sleep"]},
        files=[("file", ("a.txt", b"a"))],
    )
    assert too_many.status_code == 422, too_many.text
    assert error_of(too_many)["details"][0]["loc"] == ["body", "kind"]
    fine = client.post(
        "/v1/jobs",
        data={"kind": "sleep", "params": json.dumps({"seconds": 0.1, "ticks": 1})},
        files=[("file", ("a.txt", b"a"))],
    )
    assert fine.status_code == 202, fine.text


def test_documents_come_as_files_alone(stack: Stack) -> None:
    client = stack.client("collector")
    made = client.post("/v1/collections", json={"name": "Limits"})
    assert made.status_code == 201, made.text
    added = client.post(
        f"/v1/collections/{made.json()['id']}/documents",
        data={"title": "t" * 100_000},
        files={"file": ("a.txt", b"words")},
    )
    assert added.status_code == 422, added.text
    assert error_of(added)["details"][0]["loc"] == ["body", "title"]


# Zip bombs ---------------------------------------------------------------------------


def docx_with(comment: int = 0, parts: dict[str, int] | None = None) -> bytes:
    """A real .docx whose ``word/document.xml`` holds a comment of ``comment`` bytes,
    with a part more per name in ``parts`` of that many bytes: one repeated letter,
    which packs to almost nothing, written in pieces."""
    made = docx.Document()
    made.add_paragraph("A harbour timetable.")
    plain = io.BytesIO()
    made.save(plain)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(plain.getvalue())) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb,
    ):
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename != "word/document.xml":
                bomb.writestr(entry, data)
                continue
            head, _, body = data.partition(b"?>")
            with bomb.open(entry.filename, "w") as part:
                part.write(head + b"?><!--")
                _write_letters(part, comment)
                part.write(b"-->" + body)
        for name, size in (parts or {}).items():
            with bomb.open(name, "w") as part:
                _write_letters(part, size)
    return out.getvalue()


def _write_letters(part: IO[bytes], size: int) -> None:
    for start in range(0, size, MiB):
        part.write(b"a" * min(MiB, size - start))


def read(tmp_path: Path, data: bytes) -> InvalidInput | str:
    path = tmp_path / "notes.docx"
    path.write_bytes(data)
    media = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    source = InputFile(
        artifact_id="art_x", name="notes.docx", media_type=media, path=path, size=len(data)
    )
    try:
        return read_document(source).text
    except InvalidInput as exc:
        return exc


@pytest.mark.parametrize(
    ("parts", "says"),
    [
        # word/document.xml holds 300 MiB of a comment, as in the report.
        ({"comment": 300 * MiB}, "beyond its own size"),
        # Less in all, but packed far tighter than a real document's text packs.
        ({"comment": 40 * MiB}, "compressed"),
        # Many parts, each small enough to be any ratio, together too much.
        ({"parts": {f"word/part{i}.xml": 3 * MiB for i in range(24)}}, "beyond its own size"),
    ],
)
def test_a_docx_that_unpacks_too_far_is_refused_unread(
    tmp_path: Path, parts: dict[str, Any], says: str
) -> None:
    bomb = docx_with(**parts)
    assert len(bomb) < 2 * MiB
    refused = read(tmp_path, bomb)
    assert isinstance(refused, InvalidInput), refused
    assert refused.code == "unreadable"
    assert refused.message.startswith("notes.docx unpacks to ") and says in refused.message
    assert str(tmp_path) not in refused.message


def test_a_docx_within_bounds_is_read(tmp_path: Path) -> None:
    fine = docx_with(comment=3 * MiB, parts={"word/media/notes.xml": 3 * MiB})
    assert read(tmp_path, fine) == "A harbour timetable."


def test_a_docx_bomb_fails_its_document_not_the_worker(stack: Stack) -> None:
    client = stack.client("bomber")
    made = client.post("/v1/collections", json={"name": "Bombs"})
    collection = made.json()["id"]
    bomb = docx_with(comment=300 * MiB)
    added = client.post(
        f"/v1/collections/{collection}/documents", files={"file": ("bomb.docx", bomb)}
    )
    assert added.status_code == 202, added.text
    wait_for_status(client, added.json()["job"]["id"], {"completed", "failed"}, timeout=120)
    [document] = client.get(f"/v1/collections/{collection}").json()["documents"]
    assert document["status"] == "failed", document
    assert document["error"]["code"] == "unreadable"
    assert re.match(r"bomb\.docx unpacks to \d+ MiB", document["error"]["message"])


def test_an_upload_the_client_cuts_off_is_no_server_error(tmp_path: Path) -> None:
    """A client that dropped mid-upload (a phone leaving Wi-Fi) was a 500 in the metrics
    and a 51-line traceback at ERROR in the log, every time."""
    with Stack(tmp_path / "stack", "sqlite", logs=True) as deployment:
        deployment.start_api()
        key = deployment.key("alice")
        port = int(deployment.api_url.rsplit(":", 1)[1])
        for path in ("/v1/artifacts", "/v1/jobs"):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: multipart/form-data; boundary=cut\r\n"
                f"Content-Length: {8_000_000}\r\n\r\n"
                '--cut\r\nContent-Disposition: form-data; name="file"; filename="talk.wav"\r\n'
                "Content-Type: audio/wav\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(head.encode() + b"\0" * 2_000_000)
            wait_until(lambda p=path: f"{p}: the client went away" in api_log(deployment))
        metrics = deployment.client("alice").get("/metrics").text
        assert 'status="499"' in metrics and 'status="500"' not in metrics, metrics[-2000:]
        logged = api_log(deployment)
        assert "Traceback" not in logged and " ERROR " not in logged, logged[-3000:]
        incoming = deployment.data_dir / "files" / ".incoming"
        assert not incoming.exists() or not any(incoming.iterdir())


def api_log(deployment: Stack) -> str:
    return (deployment.data_dir / "api.log").read_text()


# The access log ----------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_access_log_leaves_out_query_strings(tmp_path: Path, log_format: str) -> None:
    with Deployment(
        tmp_path,
        "sqlite",
        plugin="plugin_kinds",
        plugin_dir=TESTS,
        env={"LONGPLAY_LOG_FORMAT": log_format},
        postgres_admin=PG_ADMIN,
        logs=True,
    ) as deployment:
        deployment.start_api()
        client = deployment.client("alice")
        path = "/v1/collections/col_nope/search"
        answer = client.get(path, params={"q": "text:secret-word"})
        assert answer.status_code == 404

        def logged() -> list[str]:
            lines = (tmp_path / "api.log").read_text().splitlines()
            return [line for line in lines if path in line]

        [line] = wait_until(logged)
    assert "secret-word" not in (tmp_path / "api.log").read_text()
    assert "?" not in line
    if log_format == "json":
        assert json.loads(line)["message"].endswith(f'"GET {path} HTTP/1.1" 404')
    else:
        assert f'"GET {path} HTTP/1.1" 404' in line


# Who may read the data ---------------------------------------------------------------


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Path, httpx.Client]]:
    data_dir, port = tmp_path / "data", free_port()
    # The plugin's folder, and whatever the tests run with (another longplay's source).
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    process = start_up(data_dir, port, PYTHONPATH=path)
    try:
        client = api_client(data_dir, port)
        try:
            yield data_dir, client
        finally:
            client.close()
    finally:
        stop(process, signal.SIGTERM)


def test_what_longplay_keeps_is_its_users_alone(up: tuple[Path, httpx.Client]) -> None:
    data_dir, client = up
    uploaded = client.post("/v1/artifacts", files={"file": ("in.txt", b"input")})
    assert uploaded.status_code == 201, uploaded.text
    job = submit(client, params={"seconds": 0.1, "ticks": 1, "text": "out"})
    assert wait_for_status(client, job["id"], {"completed"})["outputs"]
    wait_until(lambda: list(data_dir.rglob("*.aof")))
    kept = [data_dir, *data_dir.rglob("*")]
    names = {p.name for p in kept}
    assert {"longplay.db", "files", "api-key"} <= names, names
    assert any(p.suffix == ".aof" for p in kept), names
    shared = {
        str(p.relative_to(data_dir)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in kept
        if not p.is_socket() and p.stat().st_mode & 0o077
    }
    assert shared == {}


def test_a_download_never_runs_as_a_page(stack: Stack) -> None:
    client = stack.client("pages")
    page = b"<html><script>alert(document.cookie)</script></html>"
    uploaded = client.post("/v1/artifacts", files={"file": ("page.html", page, "text/html")})
    assert uploaded.status_code == 201, uploaded.text
    url = f"/v1/artifacts/{uploaded.json()['id']}/content"
    for answer in (
        client.get(url),
        client.head(url),
        client.get(url, headers={"Range": "bytes=0-3"}),
    ):
        assert answer.status_code in (200, 206), answer.text
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"].startswith("sandbox")
