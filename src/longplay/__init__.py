"""longplay: long AI media work as background jobs you can follow to the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from longplay.client import ApiError as ApiError
    from longplay.client import AsyncClient as AsyncClient
    from longplay.client import Client as Client

_SDK = frozenset({"ApiError", "AsyncClient", "Client"})


def __getattr__(name: str) -> Any:
    """``from longplay import Client``, imported only when asked for: the server's
    processes import ``longplay`` and need none of the SDK."""
    if name in _SDK:
        from longplay import client

        return getattr(client, name)
    raise AttributeError(f"module 'longplay' has no attribute {name!r}")
