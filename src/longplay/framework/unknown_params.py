"""Parameter names a kind's model does not take, at any depth.

A model written as a plain ``BaseModel`` drops a name it does not have, and the job
then runs on the default: ``{"size": {"hieght": 64}}`` ran at the default height. The
service refuses such a name at submit, and :func:`~longplay.framework.testing.run_steps`
the same way, each naming it and the names that model does take.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class UnknownParam:
    """A name ``model`` does not take, at ``path`` in the parameters (its last part)."""

    path: Path
    model: type[BaseModel]

    def message(self, kind: str) -> str:
        takes = ", ".join(self.model.model_fields) or "none"
        if len(self.path) == 1:
            return f"{kind} has no parameter {self.path[0]!r}; its parameters: {takes}"
        return (
            f"{kind} has no parameter {dotted(self.path)!r}; "
            f"{dotted(self.path[:-1])} takes: {takes}"
        )


def dotted(path: Path) -> str:
    """``size.width``, ``speakers[1].voice``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def unknown_params(model: type[BaseModel], params: Mapping[str, Any]) -> list[UnknownParam]:
    """Every name in ``params`` that ``model`` (or a model nested in it: a field, an
    optional one, or the items of a list of one) does not take; none where a model
    allows extra fields."""
    return list(_unknown(model, params, ()))


def _unknown(model: type[BaseModel], given: Mapping[str, Any], at: Path) -> Iterator[UnknownParam]:
    fields = _fields_by_name(model)
    if fields is None:
        return
    for name, value in given.items():
        annotation = fields.get(name, _MISSING)
        if annotation is _MISSING:
            yield UnknownParam((*at, name), model)
            continue
        for nested, inner, index in _models_in(annotation, value):
            yield from _unknown(nested, inner, (*at, name, *index))


_MISSING = object()


def _fields_by_name(model: type[BaseModel]) -> dict[str, Any] | None:
    """Each name a model takes (its fields and their aliases) and the field's type;
    None where it allows extra fields."""
    if model.model_config.get("extra") == "allow":
        return None
    names: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        names[name] = field.annotation
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                names[alias] = field.annotation
    return names


Found = tuple[type[BaseModel], Mapping[str, Any], Path]
"""A model, the value read as it, and where that value is within the field's."""


def _models_in(annotation: Any, value: Any) -> Iterator[Found]:
    """The model a value given for a field of this type is read as, where there is
    exactly one (a union of several models is left to the models' own checks)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if isinstance(value, Mapping):
            yield annotation, value, ()
        return
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in arguments if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            yield from _models_in(models[0], value)
    elif origin in (list, tuple, set, frozenset) and arguments and isinstance(value, list):
        item = arguments[0]
        for index, each in enumerate(value):
            for nested, inner, at in _models_in(item, each):
                yield nested, inner, (index, *at)
    elif origin is typing.Annotated and arguments:
        yield from _models_in(arguments[0], value)
