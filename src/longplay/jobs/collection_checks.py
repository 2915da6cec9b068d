"""The submit-time check of any kind whose params name a ``collection``: the owner's,
and with passages to read (see :mod:`longplay.framework.library`)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.orm import Session

from longplay.framework.library import FillsCollection
from longplay.jobs.refusals import Invalid, NotFound
from longplay.store import library as queries

COLLECTION_FIELD = "collection"


def check_named_collection(
    session: Session, owner_id: str, params: BaseModel, *, waits: bool = False
) -> None:
    """The submit-time check of a job whose params name a ``collection``: another
    owner's or an unknown one is :class:`NotFound`; one without indexed passages is
    :class:`Invalid`, unless the job ``waits`` for others (which may fill it) or the
    field is marked :data:`~longplay.framework.library.FILLS_COLLECTION` (``index``)."""
    field = type(params).model_fields.get(COLLECTION_FIELD)
    collection_id = getattr(params, COLLECTION_FIELD, None)
    if field is None or not isinstance(collection_id, str):
        return
    if queries.collection_of(session, owner_id, collection_id) is None:
        raise NotFound(f"no collection {collection_id}")
    if waits or any(isinstance(m, FillsCollection) for m in field.metadata):
        return
    if queries.passage_count(session, collection_id) == 0:
        message = (
            f"collection {collection_id} has no indexed passages yet: add documents and "
            "wait for their index job to complete"
        )
        loc = ["body", "params", COLLECTION_FIELD]
        raise Invalid(message, [{"loc": loc, "msg": message, "type": "empty_collection"}])
