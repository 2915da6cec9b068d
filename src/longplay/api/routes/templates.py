"""Own summary templates: ``summarize`` jobs name one by name (``params.template``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from longplay.api import bodies
from longplay.api.deps import KeyDep, as_owner
from longplay.api.errors import errors
from longplay.api.openapi import json_body
from longplay.jobs import templates
from longplay.store.models import Template
from longplay.text.summary import TEMPLATE_NAME, TemplateBody, TemplateSection

router = APIRouter(prefix="/v1/templates", tags=["templates"])


class TemplateCreate(TemplateBody):
    """A new template: its name, and its sections in order."""

    name: str = Field(
        pattern=TEMPLATE_NAME,
        description="What jobs call it (`params.template`): lower case, digits, - and _; "
        "not a built-in name (brief, key-points, meeting-notes, chapters).",
    )


class TemplateUpdate(TemplateBody):
    """A template's new sections and description; its name stays."""


class TemplatePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    description: str
    sections: list[TemplateSection]
    created_at: datetime
    updated_at: datetime


class TemplateList(BaseModel):
    items: list[TemplatePublic]


def _public(template: Template) -> TemplatePublic:
    return TemplatePublic.model_validate(template)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TemplatePublic,
    responses=errors(401, 409, 413, 422),
    openapi_extra=json_body(TemplateCreate),
)
async def create_template(request: Request, key: KeyDep) -> TemplatePublic:
    """Save a template of your own for ``summarize`` jobs."""
    _, raw = await bodies.read_json_body(request)
    body = bodies.validated(TemplateCreate, raw)
    template_body = TemplateBody(description=body.description, sections=body.sections)
    return await as_owner(
        key,
        lambda session, owner: _public(
            templates.create_template(session, owner=owner, name=body.name, body=template_body)
        ),
    )


@router.get("", response_model=TemplateList, responses=errors(401))
async def list_templates(key: KeyDep) -> TemplateList:
    """Your templates, by name (the built-in ones are not listed)."""
    return await as_owner(
        key,
        lambda session, owner: TemplateList(
            items=[_public(t) for t in templates.list_templates(session, owner=owner)]
        ),
    )


@router.get("/{name}", response_model=TemplatePublic, responses=errors(401, 404))
async def get_template(name: str, key: KeyDep) -> TemplatePublic:
    """One of your templates."""
    return await as_owner(
        key, lambda session, owner: _public(templates.get_template(session, owner=owner, name=name))
    )


@router.put(
    "/{name}",
    response_model=TemplatePublic,
    responses=errors(401, 404, 413, 422),
    openapi_extra=json_body(TemplateUpdate),
)
async def replace_template(name: str, request: Request, key: KeyDep) -> TemplatePublic:
    """Replace one of your templates' sections; jobs already submitted keep the old ones."""
    _, raw = await bodies.read_json_body(request)
    body = bodies.validated(TemplateUpdate, raw)
    return await as_owner(
        key,
        lambda session, owner: _public(
            templates.replace_template(session, owner=owner, name=name, body=body)
        ),
    )


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404))
async def delete_template(name: str, key: KeyDep) -> Response:
    """Delete one of your templates; jobs already submitted keep it."""
    await as_owner(
        key, lambda session, owner: templates.delete_template(session, owner=owner, name=name)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
