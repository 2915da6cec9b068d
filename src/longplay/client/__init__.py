"""The Python SDK: :class:`Client` and :class:`AsyncClient` over the HTTP API.

```python
from longplay import Client

with Client() as api:  # LONGPLAY_API_URL / LONGPLAY_API_KEY, or this machine's
    job = api.submit("transcribe", files=["talk.mp3"], params={"language": "en"})
    job = api.wait(job, on_progress=lambda e: print(f"{e.progress:.0f}% {e.step}"))
    api.download(job, "out/")
```

Results are the API's own Pydantic models (``JobPublic``, ``ArtifactPublic``...);
``submit`` returns a ``SubmittedJob``, a ``JobPublic`` that also says whether
``dedupe`` gave back an earlier job (``deduplicated``);
failures are :class:`ApiError` carrying the API's error ``code``. The CLI's client
commands use this package, and no other HTTP client.
"""

from longplay.client.aio import AsyncClient
from longplay.client.core import find_key, find_url, key_file
from longplay.client.errors import ApiError, WaitTimeout
from longplay.client.models import (
    ArtifactPublic,
    ErrorPublic,
    Event,
    FlowPublic,
    JobList,
    JobPublic,
    JobStatus,
    KindPublic,
    SubmittedJob,
)
from longplay.client.sync import Client

__all__ = [
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
    "find_key",
    "find_url",
    "key_file",
]
