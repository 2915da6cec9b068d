"""The shapes the SDK returns: the API's own Pydantic models, :class:`SubmittedJob`
(a job as ``submit`` got it) and :class:`Event`.

``JobPublic``, ``ArtifactPublic`` and ``FlowPublic`` are defined in ``store/views.py``
(the API answers them from there); ``JobList``, ``KindPublic`` and ``RetryManyResult``
in ``api/schemas.py``. Importing these loads pydantic and SQLAlchemy's model classes
(their enums), never FastAPI, Celery or a database connection: ``tests/test_sdk.py``
checks that.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from longplay.api.schemas import JobList, KindPublic, RetryManyResult
from longplay.store.models import JobStatus
from longplay.store.views import ArtifactPublic, ErrorPublic, FlowPublic, JobPublic

__all__ = [
    "ArtifactPublic",
    "ErrorPublic",
    "Event",
    "FlowPublic",
    "JobList",
    "JobPublic",
    "JobStatus",
    "KindPublic",
    "RetryManyResult",
    "SubmittedJob",
]


class SubmittedJob(JobPublic):
    """What ``submit`` returns: the job, as a :class:`JobPublic` like any other, and
    whether it is an earlier one (:attr:`deduplicated`).

    ``deduplicated`` is the SDK's, taken from the answer's ``Longplay-Deduplicated``
    header: it is no field of the API's JSON, and ``model_dump`` leaves it out.
    """

    deduplicated: bool = Field(default=False, exclude=True)
    """With ``dedupe``: this is an earlier completed job of yours with the same kind,
    parameters and input bytes, given back instead of a new one; nothing new was stored
    or run."""


FINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "stopped", "expired"})
"""Event types after which a job's stream has nothing more to say."""


class Event(BaseModel):
    """One event of a job's (or a flow's) live stream.

    ``type`` is ``queued``, ``running``, ``progress``, ``note``, ``token``,
    ``retrying``, ``completed``, ``failed``, ``cancelled``, ... ; a progress event has
    ``progress`` (percent), ``step``, ``step_details`` and ``eta_seconds``. Fields that
    only some types carry (``message``, ``text``, ``error``, ``stage``...) are read
    with :meth:`get` or as attributes. ``id`` resumes a stream after this event
    (``events(job, last_event_id=...)``); it is None for an event made from the job
    as ``wait`` polled it (where streams could not be followed).
    """

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    type: str
    job_id: str | None = None
    at: datetime | None = None
    status: str | None = None
    progress: float | None = None
    step: str | None = None
    step_details: dict[str, Any] | None = None
    eta_seconds: float | None = None

    @property
    def final(self) -> bool:
        """Whether the job ends with this event."""
        return self.type in FINAL_EVENTS

    def get(self, name: str, default: Any = None) -> Any:
        """A field by name, ``default`` if the event has none (as a dict's ``get``)."""
        value = getattr(self, name, None)
        if value is None and self.model_extra:
            value = self.model_extra.get(name)
        return default if value is None else value
