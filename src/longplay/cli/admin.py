"""Looking after a deployment: cleanup, API keys, owners and their limits, the schema."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from longplay.cli.app import (
    app,
    console,
    err,
    hide_passwords,
    keys_app,
    opening_database,
    owners_app,
    prepare,
    schema_app,
    setup_logging,
)
from longplay.settings import Settings, get_settings


@app.command()
def cleanup(
    dry_run: Annotated[bool, typer.Option(help="Count what would go; delete nothing.")] = False,
) -> None:
    """Apply the retention settings once (beat does it every LONGPLAY_CLEANUP_INTERVAL)."""
    from longplay.jobs.cleanup import run_cleanup

    settings = get_settings()
    setup_logging(settings)
    prepare(settings, make=False)
    typer.echo(json.dumps(run_cleanup(dry_run=dry_run).as_dict()))


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Argument(help="Owner name; made if new.")],
    admin: Annotated[
        bool, typer.Option(help="The owner may see every owner's jobs (an existing one too).")
    ] = False,
    label: str = "",
    tier: Annotated[
        str | None, typer.Option(help="The owner's tier (settings `tiers`); new owners: standard.")
    ] = None,
) -> None:
    """Make an API key for an owner; it is shown once."""
    from longplay.store.db import session_scope
    from longplay.store.owners import create_key, get_or_create_owner

    settings = get_settings()
    _check_tier(settings, tier)
    prepare(settings, make=False)
    with session_scope() as session:
        found = get_or_create_owner(session, owner, is_admin=admin)
        made_admin = admin and not found.is_admin
        if made_admin:  # an existing owner: the key would be refused what --admin asked
            found.is_admin = True
        if tier is not None:
            found.tier = tier
        secret = create_key(session, found, label=label)
    if made_admin:
        err.print(f"{owner} is an admin now (longplay owners set {owner} --no-admin undoes it)")
    console.print(secret)


def _check_tier(settings: Settings, tier: str | None) -> None:
    if tier is not None and tier not in settings.admission.tiers:
        raise typer.BadParameter(
            f"no tier {tier!r}; the tiers are {', '.join(settings.admission.tiers)}"
        )


@owners_app.command("set")
def owners_set(
    name: Annotated[str, typer.Argument(help="Owner name.")],
    tier: Annotated[str | None, typer.Option(help="standard, priority, batch, ...")] = None,
    max_running: Annotated[
        int | None, typer.Option(min=0, help="Jobs running at once; 0: the tier's.")
    ] = None,
    max_queued: Annotated[
        int | None, typer.Option(min=0, help="Jobs waiting at once; 0: the tier's.")
    ] = None,
    submit_rate: Annotated[
        float | None, typer.Option(min=0, help="Submissions a minute; 0: the tier's.")
    ] = None,
    admin: Annotated[
        bool | None,
        typer.Option("--admin/--no-admin", help="Whether the owner may see every owner's jobs."),
    ] = None,
) -> None:
    """Set an owner's tier, limits and whether it is an admin.

    A limit the owner has none of is its tier's."""
    from longplay.store.db import session_scope
    from longplay.store.owners import find_owner

    settings = get_settings()
    _check_tier(settings, tier)
    prepare(settings, make=False)
    with session_scope() as session:
        found = find_owner(session, name)
        if found is None:
            err.print(f"no owner {name} (longplay keys create {name} makes one)")
            raise typer.Exit(1)
        if tier is not None:
            found.tier = tier
        if max_running is not None:
            found.max_running = max_running or None
        if max_queued is not None:
            found.max_queued = max_queued or None
        if submit_rate is not None:
            found.submit_rate = submit_rate or None
        if admin is not None:
            found.is_admin = admin
        shown = found.name
    _print_owners([shown])


@owners_app.command("list")
def owners_list() -> None:
    """Every owner with its tier and the limits that apply to it."""
    prepare(get_settings(), make=False)
    _print_owners(None)


def _print_owners(names: list[str] | None) -> None:
    from sqlalchemy import select

    from longplay.jobs.admission.limits import limits_of
    from longplay.store.db import session_scope
    from longplay.store.models import Owner

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    query = select(Owner).order_by(Owner.name)
    if names is not None:
        query = query.where(Owner.name.in_(names))
    table = Table("owner", "tier", "priority", "max running", "max queued", "submits/min")
    with session_scope() as session:
        for owner in session.scalars(query):
            limits = limits_of(owner)
            table.add_row(
                owner.name + (" (admin)" if owner.is_admin else ""),
                owner.tier,
                limits.priority.value,
                shown(limits.max_running),
                shown(limits.max_queued),
                shown(limits.submit_rate),
            )
    console.print(table)


@keys_app.command("list")
def keys_list(owner: str) -> None:
    """An owner's live keys: the start of each, its label and when it was made.

    The first characters are all that is kept of a key in the clear."""
    from longplay.store.db import session_scope
    from longplay.store.owners import find_owner, live_keys

    prepare(get_settings(), make=False)
    table = Table("key", "label", "created")
    with session_scope() as session:
        found = find_owner(session, owner)
        if found is None:
            err.print(f"no owner {owner}")
            raise typer.Exit(1)
        for key in live_keys(session, found):
            table.add_row(f"{key.prefix}…", key.label, f"{key.created_at:%Y-%m-%d %H:%M} UTC")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    owner: str,
    key: Annotated[
        str,
        typer.Argument(
            help="The whole key, or its first 10 characters or more (`longplay keys list` "
            "shows them); a text longer than 23 characters is taken as the whole key."
        ),
    ],
) -> None:
    """Revoke an owner's key; requests with it get 401 from then on."""
    from longplay.store.db import session_scope
    from longplay.store.owners import PREFIX_LENGTH, find_owner, revoke_key

    prepare(get_settings(), make=False)
    key = key.strip()
    shown = f"{key[:PREFIX_LENGTH]}…"
    with session_scope() as session:
        found = find_owner(session, owner)
        if found is None:
            err.print(f"no owner {owner}")
            raise typer.Exit(1)
        try:
            revoked = revoke_key(session, found, key)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="KEY") from None
        if not revoked:
            err.print(_not_revoked(owner, key), soft_wrap=True)
            raise typer.Exit(1)
    console.print(f"revoked {shown}")


def _not_revoked(owner: str, key: str) -> str:
    """Why nothing was revoked, and what to give instead. A whole key is matched
    exactly: one that is not a live key of the owner's (mistyped, say) revokes no key
    that merely begins as it does, and the message says so."""
    from longplay.store.owners import LONGEST_PREFIX, PREFIX_LENGTH, is_whole_key

    listed = f"`longplay keys list {owner}` shows their keys"
    if is_whole_key(key):
        return (
            f"{owner} has no live key that is exactly the {len(key)} characters given "
            f"(revoked already, mistyped, or not theirs); a text longer than "
            f"{LONGEST_PREFIX} characters is taken as a whole key, never as a key's start, "
            f"so nothing was revoked: {listed}, and their first {PREFIX_LENGTH} "
            f"characters revoke one"
        )
    return (
        f"{owner} has no live key {key[:PREFIX_LENGTH]}… (revoked already, or not theirs): {listed}"
    )


@keys_app.command("webhook-secret")
def keys_webhook_secret(
    owner: str,
    rotate: Annotated[bool, typer.Option(help="Replace it with a new one first.")] = False,
) -> None:
    """Print the secret an owner's webhooks are signed with."""
    from longplay.jobs.webhooks.signing import rotate_secret
    from longplay.store.db import session_scope
    from longplay.store.owners import find_owner

    prepare(get_settings(), make=False)
    with session_scope() as session:
        found = find_owner(session, owner)
        if found is None:
            err.print(f"no owner {owner}")
            raise typer.Exit(1)
        secret = rotate_secret(session, found) if rotate else found.webhook_secret
    console.print(secret)


@schema_app.command("show")
def schema_show() -> None:
    """The revision the database's schema is at, and the newest this longplay knows.

    Unlike every other command, it changes nothing: it does not upgrade the schema."""
    from longplay.store.db import NoDatabase, schema_revisions

    settings = get_settings()
    try:
        with opening_database(settings.effective_database_url):
            current, newest = schema_revisions(settings.effective_database_url)
    except NoDatabase as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    where = hide_passwords(settings.effective_database_url)
    console.print(
        f"{where}: at {current or 'no revision'}; this longplay's newest is {newest}",
        soft_wrap=True,
    )


@schema_app.command("upgrade")
def schema_upgrade() -> None:
    """Make the database's schema, or bring it to this longplay's newest.

    Every part does it as it starts; this is for keys and owners made before then."""
    from longplay.store.db import schema_revisions

    settings = get_settings()
    setup_logging(settings)
    prepare(settings)
    url = settings.effective_database_url
    current, _ = schema_revisions(url)
    console.print(f"{hide_passwords(url)}: at {current}", soft_wrap=True)


@schema_app.command("downgrade")
def schema_downgrade(
    revision: Annotated[
        str, typer.Argument(help="The revision to go back to: the newest the older longplay knows.")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before dropping.")] = False,
) -> None:
    """Move the schema back to REVISION, to run an older longplay on it.

    Run it with this (newer) longplay, which has the migrations to undo, before the
    older one starts. What the later revisions added (tables, columns) is dropped with
    what it held."""
    from alembic.util.exc import CommandError

    from longplay.store.db import NoDatabase, downgrade

    settings = get_settings()
    setup_logging(settings)
    url = settings.effective_database_url
    if not yes:
        typer.confirm(
            f"move {hide_passwords(url)} back to revision {revision}, dropping what later "
            "revisions added?",
            abort=True,
        )
    try:
        with opening_database(url):
            downgrade(url, revision)
    except (CommandError, NoDatabase) as exc:
        err.print(f"cannot move the schema back to {revision}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
