"""Using the service as a client: submit, follow, list and cancel jobs.

Every command here prints an API error, an API it cannot reach, or a file it cannot
read or write, as one line on stderr and exits with 1 (:func:`_one_line_errors`);
never a traceback. A usage mistake exits with 2, a follow stopped by Ctrl-C with 130.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Column, Table

from longplay.cli.app import app, console, err
from longplay.settings import get_settings

if TYPE_CHECKING:
    from longplay.client import Client, Event, FlowPublic, JobPublic

P = ParamSpec("P")

Overwrite = Annotated[
    bool, typer.Option(help="Replace files of the results' names in --out (else: NAME (1).EXT).")
]
"""``--overwrite`` of the commands that save results."""


class _Waits(logging.Handler):
    """The SDK's waits (a 503 while the store or Redis is away, a 429, a request sent
    again after a lost answer) as dim lines on stderr: a command that waits says why,
    rather than nothing for half a minute."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(record.getMessage(), style="dim", markup=False, soft_wrap=True)


def _client() -> Client:
    """A client for ``LONGPLAY_API_URL`` (else this machine's API), waiting up to
    ``LONGPLAY_API_TIMEOUT`` seconds (60) for each answer, and saying why it waits."""
    from longplay.client import Client, find_key, find_url

    said = logging.getLogger("longplay.client")
    if not any(isinstance(handler, _Waits) for handler in said.handlers):
        said.addHandler(_Waits(logging.INFO))
        said.setLevel(logging.INFO)
    settings = get_settings()
    try:
        timeout = float(os.environ.get("LONGPLAY_API_TIMEOUT") or 60)
    except ValueError:
        raise typer.BadParameter("LONGPLAY_API_TIMEOUT must be a number of seconds") from None
    try:
        return Client(find_url(settings), find_key(settings) or "", timeout=timeout)
    except ValueError as exc:  # a URL with no scheme
        raise typer.BadParameter(str(exc), param_hint="LONGPLAY_API_URL") from None


KEY_HINT = (
    " (the CLI sends LONGPLAY_API_KEY, or else the key longplay up saved in its data "
    "folder; longplay keys create NAME makes one)"
)


def _one_line_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Run ``command``; an ApiError, a wait that ran out of time or a file that could
    not be read or written (OSError) becomes one red line on stderr and exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        from longplay.client import ApiError, WaitTimeout

        try:
            command(*args, **kwargs)
        except ApiError as exc:
            # Where the key comes from, for a CLI on another machine than the API's.
            hint = KEY_HINT if exc.code == "unauthorized" else ""
            _fail(f"{exc}{hint}")
        except WaitTimeout as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))

    return run


def _fail(message: str) -> None:
    err.print(f"[red]{escape(message)}[/]", soft_wrap=True)
    raise typer.Exit(1)


def _check_out(out: Path) -> None:
    """``--out`` must be a folder (or not yet be): said before any job is submitted."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "--out is a file, not a folder", str(out))


def save_results(client: Client, job: JobPublic, out: Path, *, overwrite: bool) -> None:
    """Save a job's outputs in ``out``, one line each; a name already taken there is
    kept, and the line says which free name the output got instead. A job whose results
    retention deleted says so, rather than save nothing without a word."""
    if job.results_expired:
        err.print(
            f"{job.id}'s results were deleted (the service keeps them for "
            "LONGPLAY_RESULT_RETENTION): nothing to save; submit it again to run it anew",
            markup=False,
            soft_wrap=True,
        )
        return
    saved = client.download(job, out, overwrite=overwrite)
    for artifact, path in zip(job.outputs, saved, strict=True):
        wanted = Path(artifact.name).name
        taken = f" ({wanted} was there already)" if path.name != wanted else ""
        console.print(f"saved {escape(str(path))}{escape(taken)}", soft_wrap=True)


JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
"""The JSON Schema type of a value ``json.loads`` gives (``null``, arrays and objects
aside)."""


def _parse_params(
    pairs: list[str], raw: str | None, schema: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``--params`` and then each ``NAME=VALUE``, its VALUE read as JSON (``5``,
    ``true``, ``[1, 2]``) unless the kind's parameter ``schema`` (asked only then) has
    the field as text that JSON value cannot be: ``--text 1984`` stays ``"1984"``."""
    try:
        params: Any = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--params") from None
    if not isinstance(params, dict):
        raise typer.BadParameter("write a JSON object: {...}", param_hint="--params")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r}: write NAME=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            # Text, unless it was meant as an object or a list for a field that takes no
            # text: then the JSON's mistake is said, not the type the API would name.
            if value.lstrip().startswith(("{", "[")) and not _wants_text(schema(), name, {}):
                raise typer.BadParameter(f"{name}: not JSON: {exc}") from None
            parsed = value
        if not isinstance(parsed, str) and _wants_text(schema(), name, parsed):
            parsed = value
        params[name] = parsed
    return params


def _wants_text(schema: dict[str, Any], name: str, value: Any) -> bool:
    """Whether the field ``name`` of a params JSON Schema takes a string and not
    ``value``'s JSON type."""
    field = (schema.get("properties") or {}).get(name) or {}
    options = field.get("anyOf") or field.get("allOf") or [field]
    types = {_resolved(schema, o).get("type") for o in options if isinstance(o, dict)}
    kind = "null" if value is None else JSON_TYPES.get(type(value), "array/object")
    if kind == "integer" and "number" in types:
        return False
    return "string" in types and kind not in types


def _resolved(schema: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``part``, or the definition its ``$ref`` names (pydantic puts an enum or a model
    a field takes under ``$defs``)."""
    ref = part.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found = (schema.get("$defs") or {}).get(ref.removeprefix("#/$defs/"))
        return found if isinstance(found, dict) else {}
    return part


def _params_schema(client: Client, kind: str) -> Callable[[], dict[str, Any]]:
    """The kind's parameter schema, asked of the API once, when first needed (``{}``
    for a kind it does not know: the submission then says so)."""

    @functools.cache
    def schema() -> dict[str, Any]:
        return next((k.params_schema for k in client.kinds() if k.name == kind), {})

    return schema


def _is_flag(word: str) -> bool:
    return word.startswith("--") and len(word) > 2


def _files_and_options(words: list[str]) -> tuple[list[Path], list[str]]:
    """The input files among ``words``, and ``--NAME VALUE`` pairs as ``NAME=VALUE``
    (``--minutes 5``: any parameter a kind takes, as an option of its own). A
    ``--NAME`` last or before another ``--NAME`` is ``true``; ``--NAME=VALUE`` gives
    a value that itself starts with ``--``."""
    paths: list[Path] = []
    pairs: list[str] = []
    rest = deque(words)
    while rest:
        word = rest.popleft()
        if _is_flag(word):
            name, sep, value = word[2:].partition("=")
            if not sep:
                value = "true" if not rest or _is_flag(rest[0]) else rest.popleft()
            pairs.append(f"{name.replace('-', '_')}={value}")
            continue
        path = Path(word)
        if not path.is_file():
            raise typer.BadParameter(f"{word}: no such file", param_hint="FILES")
        paths.append(path)
    return paths, pairs


def _input(text: str) -> str | dict[str, str]:
    """``art_…`` (an uploaded artifact), ``JOB:NAME`` (that job's output named NAME) or
    ``JOB:*SUFFIX`` (its first output whose name ends with SUFFIX)."""
    job, sep, name = text.partition(":")
    if not sep:
        return text
    if not job or not name:
        raise typer.BadParameter(
            f"{text!r}: write ART_ID, JOB:NAME or JOB:*SUFFIX", param_hint="--input"
        )
    return (
        {"job": job, "suffix": name[1:]} if name.startswith("*") else {"job": job, "output": name}
    )


@app.command(context_settings={"ignore_unknown_options": True})
@_one_line_errors
def submit(
    kind: Annotated[str, typer.Argument(help="A job kind (longplay kinds lists them).")],
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="Input files, and any parameter as --NAME VALUE (--NAME alone, or before "
            "another --NAME, is true; --NAME=VALUE for a value starting with --)."
        ),
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE")] = None,
    params: Annotated[str | None, typer.Option(help="All parameters as a JSON object.")] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="An input besides FILES: ART_ID, JOB:NAME or JOB:*SUFFIX (another job's "
            "output); before the files.",
        ),
    ] = None,
    after: Annotated[
        list[str] | None, typer.Option(help="A job to wait for before this one starts.")
    ] = None,
    priority: Annotated[
        str | None, typer.Option(help="high, normal or low; default: your tier's.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send the same key again to get the same job back.")
    ] = None,
    dedupe: Annotated[
        bool,
        typer.Option(
            help="Get back an earlier completed job of yours with the same kind, parameters "
            "and input files, if there is one, instead of running it again."
        ),
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow it live and save the results.")] = False,
    out: Annotated[Path, typer.Option(help="Where --wait saves results.")] = Path("."),
    overwrite: Overwrite = False,
) -> None:
    """Submit a job of any kind with its input files.

    With --wait, follow it with a live progress bar and save its results. With
    --dedupe, an earlier completed job of the same content may come back instead of a
    new one: a line on stderr says so.

    Parameters go as -p NAME=VALUE, --params JSON or --NAME VALUE (a bare --NAME is
    true): longplay submit podcast --collection col_1 --minutes 5 --wait

    longplay kinds KIND lists the parameters KIND takes."""
    paths, pairs = _files_and_options(files or [])
    if wait:
        _check_out(out)
    client = _client()
    job = client.submit(
        kind,
        files=paths,
        params=_parse_params([*pairs, *(param or [])], params, _params_schema(client, kind)),
        inputs=[_input(i) for i in input_ or []],
        after=after or [],
        priority=priority,
        idempotency_key=idempotency_key,
        dedupe=dedupe,
    )
    console.print(f"submitted [bold]{job.id}[/] ({job.status.value})")
    if job.deduplicated:
        err.print(
            f"{job.id} reused (--dedupe): an earlier completed job with the same kind, "
            "parameters and inputs; nothing new was run",
            markup=False,
            soft_wrap=True,
        )
    if wait:
        _follow(client, job.id, out, overwrite=overwrite)


def _follow(client: Client, job_id: str, out: Path, *, overwrite: bool = False) -> None:
    """A live bar (step, percent, ETA) until the job ends; then its results saved in
    ``out``, or its error on stderr and exit status 1. Ctrl-C stops following, not the
    job: a line says how to follow or cancel it, and the exit status is 130."""
    try:
        job = _followed(client, job_id)
    except KeyboardInterrupt:
        _stopped_following(job_id)
    if job.status.value != "completed":
        _say_ended(job_id, job)
        raise typer.Exit(1)
    save_results(client, job, out, overwrite=overwrite)
    if job.results_expired:
        raise typer.Exit(1)


def _say_ended(label: str, job: JobPublic, stages: Mapping[str, str] | None = None) -> None:
    """A job that did not complete, on stderr: how it ended and why, where it says why;
    in a flow (``stages``: each job id's stage), the jobs it names named as stages."""
    line = f"[red]{escape(label)} {job.status.value}[/]"
    if job.error is not None:
        message = job.error.message
        for job_id, stage in (stages or {}).items():
            message = message.replace(f"job {job_id}", f"stage {stage!r}")
        line += f": {escape(message)}"
    err.print(line, soft_wrap=True)


def _stopped_following(some_id: str) -> NoReturn:
    """Say how to follow a job or flow again after Ctrl-C; exit with 130."""
    err.print(
        f"stopped following {some_id}; it keeps running. Follow it again with "
        f"`longplay watch {some_id}`, or cancel it with `longplay cancel {some_id}`.",
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(130) from None


def _follow_flow(client: Client, flow: FlowPublic, out: Path, *, overwrite: bool) -> None:
    """One bar per stage until the flow ends; then each stage's results saved in
    ``out/STAGE/``, and exit status 1 if a stage did not complete (its error on
    stderr). Ctrl-C as for a job (:func:`_follow`)."""
    try:
        _flow_bars(client, flow)
    except KeyboardInterrupt:
        _stopped_following(flow.id)
    ended = client.flow(flow.id)
    stages = {job.id: name for name, job in ended.stages.items()}
    for name, job in ended.stages.items():
        if job.status.value != "completed":
            _say_ended(name, job, stages)
        save_results(client, job, out / name, overwrite=overwrite)
    if ended.status.value != "completed":
        raise typer.Exit(1)


def _flow_bars(client: Client, flow: FlowPublic) -> None:
    """One bar per stage, moved by the flow's events until it ends."""
    columns = (
        TextColumn("{task.fields[stage]}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=console) as bars:
        tasks: dict[str, TaskID] = {
            name: bars.add_task(job.status.value, total=100, stage=name)
            for name, job in flow.stages.items()
        }
        for event in client.flow_events(flow.id):
            task = tasks.get(event.get("stage") or "")
            if task is None:
                continue
            kind = event.type
            if kind == "progress":
                bars.update(
                    task,
                    completed=event.progress or 0,
                    description=event.step or "running",
                )
            elif kind == "completed":
                bars.update(task, completed=100, description="completed")
            elif kind != "note":
                bars.update(task, description=kind)


def _followed(client: Client, job_id: str) -> JobPublic:
    """The job once it has ended, followed with a live bar (step, percent, ETA); first a
    line saying why, if it is stuck (no worker takes its kind's work, or its worker has
    fallen silent)."""
    import httpx

    from longplay.client import ApiError

    first = client.get(job_id)  # an unknown id fails here, before a bar shows
    if first.stalled:
        err.print(f"waiting: {first.stalled}", markup=False, soft_wrap=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(_in_line(first), total=100, eta="")
        moved = threading.Event()
        """Set once the job left the queue: the line says no more where it stands."""

        def place() -> None:
            """While it waits: where it stands, every few seconds (its events say
            nothing of that)."""
            while not moved.wait(QUEUE_LOOK_EVERY_S):
                try:
                    now = client.get(job_id)
                except (ApiError, httpx.HTTPError):  # a look missed; the events go on
                    continue
                if now.status.value != "queued" or moved.is_set():
                    return
                bar.update(task, description=_in_line(now))

        threading.Thread(target=place, daemon=True).start()

        def show(event: Event) -> None:
            if event.type != "queued":
                moved.set()
            if event.type == "progress":
                eta = event.eta_seconds
                bar.update(
                    task,
                    completed=event.progress or 0,
                    description=event.step or "running",
                    eta=f"ETA {eta:.0f}s" if eta is not None else "",
                )
            elif event.type == "note":
                bar.console.print(f"note: {escape(str(event.get('message', '')))}")
            elif event.type == "completed":
                bar.update(task, completed=100, description="completed", eta="")
            elif event.type != "token":  # no time left to tell once it waits or ended
                bar.update(task, description=event.type, eta="")

        try:
            return client.wait(job_id, on_event=show)
        finally:
            moved.set()


QUEUE_LOOK_EVERY_S = 5.0
"""How often a followed job that waits in the queue is asked where it stands."""


def _in_line(job: JobPublic) -> str:
    """The bar's words for a job: where it stands while it waits in the queue."""
    if job.status.value != "queued" or job.queue_position is None:
        return job.status.value
    if job.queue_position == 0:
        return "queued, next"
    more = "+" if job.queue_position >= 100 else ""
    return f"queued, {job.queue_position}{more} ahead"


@app.command()
@_one_line_errors
def watch(
    job_id: Annotated[str, typer.Argument(help="A job's id, or a flow's.")],
    out: Path = Path("."),
    overwrite: Overwrite = False,
) -> None:
    """Follow a job (or a flow) live and save its results when it completes.

    A flow's results go in OUT/STAGE/."""
    _check_out(out)
    client = _client()
    if job_id.startswith("flow_"):
        _follow_flow(client, client.flow(job_id), out, overwrite=overwrite)
        return
    _follow(client, job_id, out, overwrite=overwrite)


@app.command()
@_one_line_errors
def status(job_id: Annotated[str, typer.Argument(help="A job's id, or a flow's.")]) -> None:
    """Show one job (or flow) as JSON."""
    client = _client()
    shown = client.flow(job_id) if job_id.startswith("flow_") else client.get(job_id)
    console.print_json(data=shown.model_dump(mode="json"))


@app.command()
@_one_line_errors
def cancel(job_id: Annotated[str, typer.Argument(help="A job's id, or a flow's.")]) -> None:
    """Cancel a job, or every stage of a flow that has not ended."""
    if job_id.startswith("flow_"):
        flow = _client().cancel_flow(job_id)
        console.print(f"{flow.id} {flow.status.value}")
        return
    job = _client().cancel(job_id)
    console.print(f"{job.id} {job.status.value}")


@app.command()
@_one_line_errors
def retry(job_id: str) -> None:
    """Run a failed job again, or one waiting to retry at once.

    A job cancelled because its --after job failed waits for that job again."""
    job = _client().retry(job_id)
    console.print(f"{job.id} {job.status.value}")


@app.command()
@_one_line_errors
def delete(job_id: str) -> None:
    """Delete a job that has ended, with its results and the files uploaded with it."""
    _client().delete(job_id)
    console.print(f"{job_id} deleted")


@app.command()
@_one_line_errors
def jobs(
    status: Annotated[
        str | None, typer.Option(help="queued, running, completed, failed, cancelled, expired")
    ] = None,
    kind: str | None = None,
    limit: int = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Where the next page begins (printed after a full page).")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Each job as the API's JSON, one a line.")
    ] = False,
) -> None:
    """List your newest jobs; --cursor goes on from where a page ended."""
    page = _client().list(status=status, kind=kind, limit=limit, cursor=cursor)
    if json_:
        for job in page.items:
            print(job.model_dump_json())
    else:
        _job_table(page.items)
    if page.next_cursor:
        err.print(f"next page: --cursor {page.next_cursor}", markup=False, soft_wrap=True)


def _job_table(items: list[JobPublic]) -> None:
    # One line a job in an 80-column terminal: the step gives way, nothing else is cut.
    table = Table(
        Column("id", no_wrap=True),
        Column("kind", no_wrap=True),
        Column("status", no_wrap=True),
        Column("%", justify="right", no_wrap=True),
        Column("step", no_wrap=True, overflow="ellipsis", min_width=4),
        Column("created", no_wrap=True),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    today = datetime.now().astimezone().date()
    for job in items:
        created = job.created_at.astimezone()
        table.add_row(
            job.id,
            job.kind,
            job.status.value,
            f"{job.progress:.0f}",
            job.current_step or "",
            created.strftime("%H:%M" if created.date() == today else "%Y-%m-%d %H:%M"),
        )
    console.print(table)
