"""``longplay collections create/add/list/search``: collections of documents that jobs
(``podcast``, ...) draw on, used as a client of the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from longplay.cli.app import app, console, err
from longplay.cli.jobs import _client, _follow, _one_line_errors

collections_app = typer.Typer(
    help="Collections of documents: create, add documents, list, search.", no_args_is_help=True
)
app.add_typer(collections_app, name="collections")


@collections_app.command("create")
@_one_line_errors
def create(name: str) -> None:
    """Create an empty collection and print its id."""
    made = _client().create_collection(name)
    console.print(f"created collection [bold]{made['id']}[/] ({escape(made['name'])})")


@collections_app.command("add")
@_one_line_errors
def add(
    collection_id: str,
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
    wait: Annotated[bool, typer.Option(help="Follow the index job to its end.")] = False,
) -> None:
    """Add documents to a collection; an index job reads them.

    It reads .txt .md .html .pdf .docx .srt .vtt and transcript .json files. With
    --wait, follow the index job and show how each document went."""
    client = _client()
    added = client.add_documents(collection_id, list(files))
    job = added["job"]
    console.print(f"added {len(added['documents'])} document(s); index job [bold]{job['id']}[/]")
    if not wait:
        return
    _follow(client, job["id"], Path("."))
    _print_documents(client.collection(collection_id), only={d["id"] for d in added["documents"]})


@collections_app.command("list")
@_one_line_errors
def list_(
    collection_id: Annotated[
        str | None, typer.Argument(help="Show this collection's documents.")
    ] = None,
) -> None:
    """List your collections, or the documents of one."""
    client = _client()
    if collection_id is not None:
        _print_documents(client.collection(collection_id))
        return
    table = Table(Column("id", no_wrap=True, min_width=24), "name", "documents", "passages")
    for item in client.collections()["items"]:
        table.add_row(
            item["id"],
            escape(item["name"]),
            str(item["document_count"]),
            str(item["passage_count"]),
        )
    console.print(table)


@collections_app.command("search")
@_one_line_errors
def search(
    collection_id: str,
    query: str,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 5,
) -> None:
    """The passages that best match QUERY, best first."""
    found = _client().search(collection_id, query, limit)["items"]
    if not found:
        err.print("nothing found")
        raise typer.Exit(1)
    for passage in found:
        where = passage["document_name"] + (
            f" > {passage['heading']}" if passage["heading"] else ""
        )
        console.print(f"[bold]{escape(where)}[/] [dim]{passage['score']:.3f} {passage['id']}[/]")
        console.print(escape(passage["text"]), soft_wrap=True)
        console.print()


def _print_documents(collection: dict[str, Any], only: set[str] | None = None) -> None:
    table = Table(Column("id", no_wrap=True, min_width=24), "name", "status", "passages", "note")
    for document in collection["documents"]:
        if only is not None and document["id"] not in only:
            continue
        error = document["error"] or {}
        table.add_row(
            document["id"],
            escape(document["name"]),
            document["status"],
            str(document["passages"]),
            escape(error.get("message", "")),
        )
    console.print(table)
    if any(d["status"] == "failed" for d in collection["documents"] if not only or d["id"] in only):
        raise typer.Exit(1)
