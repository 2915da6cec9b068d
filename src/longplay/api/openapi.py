"""The OpenAPI document: FastAPI's, completed with what it cannot see by itself.

- The submit body (``POST /v1/jobs``) is read by hand, as JSON or multipart, so its
  schema is added here: a union of one model per registered kind (plugins included),
  told apart by ``kind``, whose ``params`` is that kind's own model.
- A Server-Sent Events stream is described the way OpenAPI 3.1 can.
- Every validation error answers the one error shape (:mod:`longplay.api.errors`), so
  FastAPI's ``HTTPValidationError`` is replaced by it wherever FastAPI put it.

Built once, on the first request for it, after the kinds were loaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from longplay.api.errors import ErrorBody
from longplay.api.schemas import job_create_model
from longplay.framework import all_kinds

REF = "#/components/schemas/{model}"
SUBMIT_PATH = "/v1/jobs"
ERROR_REF = {"$ref": REF.format(model=ErrorBody.__name__)}
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
_BODIES: list[type[BaseModel]] = []


def ref_of(model: type[BaseModel]) -> str:
    """The ``$ref`` of a body model a route reads by hand (with its own limits), which
    FastAPI therefore does not see; the document gets its schema."""
    _BODIES.append(model)
    return REF.format(model=model.__name__)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra`` for a JSON body of ``model`` read by hand
    (:func:`longplay.api.bodies.read_json_body`), so that the document shows it."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": ref_of(model)}}},
        }
    }


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, made on first use and kept."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
        _add_schemas(schemas, _BODIES)
        _one_error_shape(spec, schemas)
        _event_streams(spec)
        _submit_body(spec, schemas)
        app.openapi_schema = spec
    return app.openapi_schema


def _add_schemas(
    schemas: dict[str, Any], models: Sequence[type[BaseModel]], *, rename: bool = False
) -> dict[str, str]:
    """Put the models' schemas (and the ones they refer to) in ``components``; their
    ``$ref`` by model name. With ``rename`` (the kinds' params, plugins' included), one
    named as a different schema already there is put under a name of its own: a kind
    whose params nest a model called ``ErrorPublic`` broke the whole document."""
    keys, made = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    defs: dict[str, Any] = made.get("$defs", {})
    moved: dict[str, str] = {}
    for name, schema in defs.items():
        if name in schemas and _without_defaults(schemas[name]) != _without_defaults(schema):
            if not rename:
                # FastAPI made one of that name for a route (leaving out defaults): it
                # must be the same model, or one of them would be documented wrongly.
                raise ValueError(
                    f"two different schemas are both named {name} in the OpenAPI document"
                )
            moved[name] = next(
                new
                for n in itertools.count(1)
                if (new := f"{name}InParams{n if n > 1 else ''}") not in schemas and new not in defs
            )
    refs = {REF.format(model=old): REF.format(model=new) for old, new in moved.items()}
    for name, schema in _with_refs(defs, refs).items():
        schemas.setdefault(moved.get(name, name), schema)
    found = {m.__name__: keys[(m, "validation")]["$ref"] for m in models}
    return {name: refs.get(ref, ref) for name, ref in found.items()}


def _with_refs(schema: Any, refs: dict[str, str]) -> Any:
    """``schema`` with each ``$ref`` in ``refs`` pointing to its new place."""
    if isinstance(schema, dict):
        return {
            k: refs.get(v, v) if k == "$ref" else _with_refs(v, refs) for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_with_refs(v, refs) for v in schema]
    return schema


def _without_defaults(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_defaults(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [_without_defaults(v) for v in schema]
    return schema


def _one_error_shape(spec: dict[str, Any], schemas: dict[str, Any]) -> None:
    _add_schemas(schemas, [ErrorBody])
    for name in FASTAPI_VALIDATION:
        schemas.pop(name, None)
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                is_error = any(c.get("schema") == ERROR_REF for c in content.values())
                if status == "422" or is_error:  # FastAPI's, or under a stream's media type
                    response["content"] = {"application/json": {"schema": ERROR_REF}}


def _event_streams(spec: dict[str, Any]) -> None:
    """FastAPI describes a Server-Sent Events answer with ``itemSchema``, which is
    OpenAPI 3.2's; in the 3.1 document it claims to be, the stream is a string."""
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                stream = response.get("content", {}).get("text/event-stream")
                if stream is not None and "itemSchema" in stream:
                    item = stream.pop("itemSchema")
                    fields = ", ".join(item.get("properties", {}))
                    stream["schema"] = {
                        "type": "string",
                        "description": f"Server-Sent Events, each with {fields}.",
                    }


def _submit_body(spec: dict[str, Any], schemas: dict[str, Any]) -> None:
    kinds = all_kinds()
    models = [job_create_model(kind) for kind in kinds]
    refs = _add_schemas(schemas, models, rename=True)
    mapping = {kind.name: refs[model.__name__] for kind, model in zip(kinds, models, strict=True)}
    schemas["JobCreate"] = {
        "title": "JobCreate",
        "description": "A job to run; `kind` decides the shape of `params`.",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "kind", "mapping": mapping},
    }
    schemas["JobCreateForm"] = _form_schema(schemas, mapping)
    operation = spec["paths"][SUBMIT_PATH]["post"]
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": REF.format(model="JobCreate")}},
            "multipart/form-data": {
                "schema": {"$ref": REF.format(model="JobCreateForm")},
                "encoding": {"params": {"contentType": "application/json"}},
            },
        },
    }


def _form_schema(schemas: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """The multipart body: the JSON body's fields as form fields, ``params`` a JSON part,
    and the input files as ``file`` parts (uploaded and used in that order, after
    ``inputs``)."""
    variants = []
    for kind, ref in mapping.items():
        json_model = schemas[ref.rsplit("/", 1)[1]]
        properties = dict(json_model["properties"])
        properties["file"] = {
            "type": "array",
            "items": {"type": "string", "contentMediaType": "application/octet-stream"},
            "description": "Input files, uploaded with the job.",
        }
        variants.append(
            {
                "title": f"{json_model['title']}Form",
                "type": "object",
                "properties": properties,
                "required": json_model.get("required", ["kind"]),
                "additionalProperties": False,
                "description": f"A `{kind}` job with its input files; `params` is a JSON part.",
            }
        )
    return {
        "title": "JobCreateForm",
        "description": "The JSON body's fields as form fields, with the input files as `file`.",
        "oneOf": variants,
    }
