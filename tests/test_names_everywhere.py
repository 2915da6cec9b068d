"""Names in any script, end to end: a file's name as it is cleaned and stored, saved
by the SDK, and given in ``Content-Disposition``; an owner's name in either Unicode
spelling."""

from __future__ import annotations

import asyncio
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import Stack, run_longplay
from sqlalchemy import select

from longplay import AsyncClient, Client
from longplay.api.content import content_disposition
from longplay.store.db import session_scope
from longplay.store.files import NAME_MAX_BYTES, safe_name, shorten
from longplay.store.models import Owner, new_id
from longplay.store.owners import get_or_create_owner

OWNER = "names"


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# -- a name as it is stored ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("👨\u200d👩\u200d👧 family.ogg", "👨\u200d👩\u200d👧 family.ogg"),  # joiners join emoji
        ("👩🏽\u200d💻.ogg", "👩🏽\u200d💻.ogg"),
        ("می\u200cخواهم.ogg", "می\u200cخواهم.ogg"),  # noqa: RUF001  (the non-joiner spells it)
        ("❤\ufe0f.ogg", "❤\ufe0f.ogg"),  # a variation selector
        ("会議\u3000録音.ogg", "会議 録音.ogg"),  # other spaces are plain ones
        ("a\u00a0b\u202fc.ogg", "a b c.ogg"),
        ("line\nbreak\t\x00.txt", "linebreak.txt"),
        ("photo\u202egpj.exe", "photogpj.exe"),  # a right-to-left override goes
        ("\u200ea\u200fb\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069.txt", "ab.txt"),
        (nfd("café résumé.ogg"), "café résumé.ogg"),  # stored composed (NFC)
    ],
)
def test_a_name_keeps_what_spells_it_and_loses_what_hides_it(given: str, stored: str) -> None:
    assert safe_name(given) == stored


def test_a_shortened_name_ends_on_no_dangling_joiner() -> None:
    family = "👨\u200d👩\u200d👧"  # 18 bytes: a cut may fall just after a joiner
    name = family * 20 + ".ogg"
    for room in range(20, 80):
        cut = shorten(name, room)
        assert len(cut.encode()) <= room
        assert cut.endswith(".ogg") and not cut.removesuffix(".ogg").endswith("\u200d"), cut


def test_outputs_named_after_one_long_name_share_their_stem() -> None:
    """A summary of a document with a 300-character name was ``…-Stra.summary.md`` and
    ``…-St.summary.json``: a client pairing them by name found no pair."""
    stem = "Die Geschichte der Straßenbrücke über den Fluss " * 7
    cut = [shorten(stem + ext, NAME_MAX_BYTES) for ext in (".summary.md", ".summary.json", ".md")]
    assert {name.split(".")[0] for name in cut} == {cut[0].split(".")[0]}, cut
    assert all(len(name.encode()) <= NAME_MAX_BYTES for name in cut)
    assert [name[len(cut[0].split(".")[0]) :] for name in cut] == [
        ".summary.md",
        ".summary.json",
        ".md",
    ]


def test_an_upload_is_stored_by_its_composed_name(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"x")
    with Client(stack.api_url, stack.key(OWNER)) as api:
        made = api.upload(path, name=nfd("Ångström\u00a0café.txt"))
    assert made.name == "Ångström café.txt"


# -- the SDK saves any name the service stores --------------------------------------------


LONG_NAMES = ["长文件名" * 55 + ".ogg", "a" * 249 + ".ogg"]
"""664 bytes of Chinese; 253 bytes, which fit until ``.NAME.part`` was added."""


@pytest.mark.parametrize("name", LONG_NAMES, ids=["chinese-664", "ascii-253"])
def test_a_long_name_is_saved_cut_to_the_file_systems_limit(
    stack: Stack, name: str, tmp_path: Path
) -> None:
    path, folder = tmp_path / "upload", tmp_path / "saved"
    path.write_bytes(b"OggS")
    with Client(stack.api_url, stack.key(OWNER)) as api:
        artifact = api.upload(path, name=name)
        assert artifact.name == name
        saved = [api.download(artifact.id, f"{folder}/") for _ in range(2)]

    async def again() -> Path:
        async with AsyncClient(stack.api_url, stack.key(OWNER)) as client:
            return await client.download(artifact.id, f"{folder}/")

    saved.append(asyncio.run(again()))
    assert saved[1] != saved[0] and saved[2] not in saved[:2]
    for path in saved:
        assert len(path.name.encode()) <= NAME_MAX_BYTES, path.name
        assert path.suffix == ".ogg" and path.read_bytes() == b"OggS"
    assert name.startswith(saved[0].stem)
    assert sorted(folder.iterdir()) == sorted(saved), "no part file is left"


# -- Content-Disposition and Content-Type -------------------------------------------------


def _fallback(name: str) -> str:
    disposition = content_disposition(name)
    assert disposition.isascii()
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name
    return disposition.split('filename="', 1)[1].split('"', 1)[0]


def test_the_plain_file_name_drops_accents_composed_or_not() -> None:
    for name in ("café résumé Ångström.ogg", nfd("café résumé Ångström.ogg")):
        assert _fallback(name) == "cafe resume Angstrom.ogg"
    assert _fallback("Straße, draft 録音.txt") == "Strasse, draft _.txt"
    assert _fallback('say "hi"; 100%.txt') == "say _hi_ 100_.txt"


def test_the_plain_file_name_of_a_non_latin_name_differs_between_files() -> None:
    names = ["会議 録音.ogg", "録音 会議.ogg", "Встреча 2024.ogg", "Интервью 2024.ogg"]
    fallbacks = [_fallback(name) for name in names]
    assert len(set(fallbacks)) == len(names), fallbacks
    for fallback in fallbacks:
        assert fallback.endswith(".ogg") and "_" not in fallback, fallback
        assert len(fallback) > len(".ogg")


def test_subrip_is_served_as_utf8_text_as_webvtt_is(stack: Stack) -> None:
    client = stack.client(OWNER)
    for name, declared in (("字幕.srt", "application/x-subrip"), ("字幕.vtt", "text/vtt")):
        text = "1\n00:00:00,000 --> 00:00:01,000\n你好\n".encode()
        made = client.post("/v1/artifacts", files={"file": (name, text, declared)})
        assert made.status_code == 201, made.text
        link = made.json()["links"]["content"]
        for answer in (client.get(link), client.head(link)):
            assert answer.headers["content-type"] == f"{declared}; charset=utf-8"
        assert client.get(link).text.endswith("你好\n")


# -- owners -------------------------------------------------------------------------------


def test_an_owner_name_in_either_spelling_is_one_owner(stack: Stack) -> None:
    composed, decomposed = "équipe", nfd("équipe")
    assert composed != decomposed
    env = {**stack.env, "LONGPLAY_API_URL": stack.api_url}
    for name in (composed, decomposed):
        made = run_longplay("keys", "create", name, env=env)
        assert made.returncode == 0, made.stderr
    with session_scope(stack.database_url) as session:
        named = session.scalars(select(Owner.name).where(Owner.name.in_([composed, decomposed])))
        assert list(named) == [composed]
        assert get_or_create_owner(session, decomposed).name == composed
    # An admin who types the other spelling sets the one owner's limits and lists its keys.
    limited = run_longplay("owners", "set", decomposed, "--max-running", "3", env=env)
    assert limited.returncode == 0, limited.stderr
    assert composed in limited.stdout, limited.stdout
    listed = run_longplay("keys", "list", decomposed, env=env)
    assert listed.returncode == 0 and listed.stdout.count("lp_") == 2, listed


def test_an_owner_stored_decomposed_before_is_still_found(stack: Stack) -> None:
    """An owner made before names were normalised keeps its row: no second one is made."""
    decomposed = nfd("Zoë Müller")
    with session_scope(stack.database_url) as session:
        session.add(Owner(id=new_id("own"), name=decomposed))
    with session_scope(stack.database_url) as session:
        assert get_or_create_owner(session, decomposed).name == decomposed
        count = session.scalars(select(Owner).where(Owner.name.like("Zo%"))).all()
        assert len(count) == 1
