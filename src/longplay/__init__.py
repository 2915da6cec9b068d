"""longplay: long AI media work as background jobs you can follow to the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from longplay.client import ApiError as ApiError
    from longplay.client import ArtifactPublic as ArtifactPublic
    from longplay.client import AsyncClient as AsyncClient
    from longplay.client import Client as Client
    from longplay.client import ErrorPublic as ErrorPublic
    from longplay.client import Event as Event
    from longplay.client import FlowPublic as FlowPublic
    from longplay.client import JobList as JobList
    from longplay.client import JobPublic as JobPublic
    from longplay.client import JobStatus as JobStatus
    from longplay.client import KindPublic as KindPublic
    from longplay.client import SubmittedJob as SubmittedJob
    from longplay.client import WaitTimeout as WaitTimeout

_SDK = frozenset(
    {
        "ApiError",
        "ArtifactPublic",
        "AsyncClient",
        "Client",
        "ErrorPublic",
        "Event",
        "FlowPublic",
        "JobList",
        "JobPublic",
        "JobStatus",
        "KindPublic",
        "SubmittedJob",
        "WaitTimeout",
    }
)
"""The SDK's names that ``longplay`` itself gives: the README's "Python client" uses
each of them."""

__all__ = ["__version__", *sorted(_SDK)]


def __getattr__(name: str) -> Any:
    """``from longplay import Client``, imported only when asked for: the server's
    processes import ``longplay`` and need none of the SDK."""
    if name in _SDK:
        from longplay import client

        return getattr(client, name)
    raise AttributeError(f"module 'longplay' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SDK})
