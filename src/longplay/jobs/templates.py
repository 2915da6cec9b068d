"""Owners' own summary templates: stored, listed, replaced, deleted, and used by name.

A template belongs to its owner: another owner's is not found (404), never forbidden.
A ``summarize`` job that names one gets the template's sections copied into its params
when it is submitted (:func:`with_own_template`), so the job keeps the template it was
given whatever later happens to it (an edit, a delete), a retry reads the same one,
``dedupe`` tells two versions apart, and the kind never reads the store. A name that is
neither built in nor one of the owner's is refused at submit: 422 ``unknown_template``,
as an unknown artifact is, since the submission is what is wrong, not its address.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from longplay.engines.summaries import SummaryOptions
from longplay.jobs.refusals import Conflict, Invalid, NotFound
from longplay.store.models import Owner, Template, new_id, utcnow
from longplay.text.summary import BUILTIN_TEMPLATES, TemplateBody, TemplateSection


def list_templates(session: Session, *, owner: Owner) -> list[Template]:
    """The owner's templates, by name."""
    return list(
        session.scalars(
            select(Template).where(Template.owner_id == owner.id).order_by(Template.name)
        )
    )


def get_template(session: Session, *, owner: Owner, name: str) -> Template:
    """The owner's template called ``name``; :class:`NotFound` for any other."""
    template = _find(session, owner, name)
    if template is None:
        raise NotFound(f"no template {name!r} among yours (GET /v1/templates lists them)")
    return template


def create_template(session: Session, *, owner: Owner, name: str, body: TemplateBody) -> Template:
    """Store a new template; a built-in name or one the owner already has is refused."""
    if name in BUILTIN_TEMPLATES:
        raise Invalid(
            f"{name!r} is a built-in template; give yours another name",
            [{"loc": ["body", "name"], "msg": "a built-in template's name", "type": "value_error"}],
        )
    if _find(session, owner, name) is not None:
        raise Conflict(
            f"you already have a template {name!r}; PUT /v1/templates/{name} replaces it"
        )
    template = Template(
        id=new_id("tpl"),
        owner_id=owner.id,
        name=name,
        description=body.description,
        sections=_sections(body),
    )
    session.add(template)
    try:
        session.flush()
    except IntegrityError as exc:  # the same name, stored by a request at the same time
        raise Conflict(f"you already have a template {name!r}") from exc
    return template


def replace_template(session: Session, *, owner: Owner, name: str, body: TemplateBody) -> Template:
    """Replace the sections and description of the owner's template ``name``; jobs
    already submitted keep the version they were given."""
    template = get_template(session, owner=owner, name=name)
    template.description = body.description
    template.sections = _sections(body)
    template.updated_at = utcnow()
    session.flush()
    return template


def delete_template(session: Session, *, owner: Owner, name: str) -> None:
    session.delete(get_template(session, owner=owner, name=name))


def with_own_template(session: Session, owner: Owner, params: BaseModel) -> BaseModel:
    """``params`` of a summary naming one of the owner's templates, with its sections
    filled in; other params as they are. Unknown names are refused here, at submit."""
    if (
        not isinstance(params, SummaryOptions)
        or params.sections is not None
        or params.template in BUILTIN_TEMPLATES
    ):
        return params
    template = _find(session, owner, params.template)
    if template is None:
        message = (
            f"unknown template {params.template!r}: use brief, key-points, meeting-notes, "
            "chapters or one of yours (GET /v1/templates)"
        )
        raise Invalid(
            message,
            [{"loc": ["body", "params", "template"], "msg": message, "type": "unknown_template"}],
            code="unknown_template",
        )
    sections = [TemplateSection.model_validate(s) for s in template.sections]
    return params.model_copy(update={"sections": sections})


def _find(session: Session, owner: Owner, name: str) -> Template | None:
    return session.scalar(
        select(Template).where(Template.owner_id == owner.id, Template.name == name)
    )


def _sections(body: TemplateBody) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in body.sections]
