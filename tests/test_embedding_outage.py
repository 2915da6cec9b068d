"""An embedding server that hangs, met by a crowd of searches.

Real API, worker and beat processes; the embedding server is a small OpenAI-compatible
app of the test's own that answers until told to hang. Each search waited for its
question's embedding for the whole ``LONGPLAY_EMBED_TIMEOUT`` (a minute), on the
threads ``/healthz`` shares: 60 searches at once held them all, and the health check
a load balancer makes went unanswered for 30 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from conftest import Stack, wait_for_status
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from openai_stub_server import StubServer

from longplay.jobs.retrieval import QUESTION_WITHIN_S

SEARCHES = 50
"""More searches at once than the API's shared thread pool has threads (40)."""
HEALTH_PROMISE_S = 2.5


def hanging_embeddings() -> tuple[FastAPI, threading.Event]:
    """Vectors from each text's hash, until the event is set; then no answer."""
    app = FastAPI()
    hang = threading.Event()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        if hang.is_set():
            await asyncio.sleep(600)
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data: list[dict[str, Any]] = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [b / 255 - 0.5 for b in hashlib.sha256(t.encode()).digest()],
            }
            for i, t in enumerate(texts)
        ]
        return JSONResponse({"object": "list", "model": body["model"], "data": data})

    return app, hang


async def crowd(api: str, key: str, collection: str) -> tuple[list[Any], list[float]]:
    """:data:`SEARCHES` searches at once; the health check every half second meanwhile.
    Each search's ranking and seconds (or its error), and each health check's seconds."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=40) as client:

        async def search(n: int) -> Any:
            began = time.monotonic()
            try:
                answer = await client.get(
                    f"/v1/collections/{collection}/search", params={"q": f"ferry {n}"}
                )
            except httpx.TimeoutException as exc:
                return type(exc).__name__, time.monotonic() - began
            return answer.json()["ranking"], time.monotonic() - began

        searches = [asyncio.create_task(search(n)) for n in range(SEARCHES)]
        health: list[float] = []
        while not all(s.done() for s in searches) and len(health) < 40:
            began = time.monotonic()
            try:
                await client.get("/healthz", timeout=10)
                health.append(time.monotonic() - began)
            except httpx.TimeoutException:
                health.append(float("inf"))
            await asyncio.sleep(0.5)
        return list(await asyncio.gather(*searches)), health


def test_an_embedding_server_that_hangs_costs_searches_seconds_and_health_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    app, hang = hanging_embeddings()
    with StubServer(app) as server:
        deployment = make_stack(logs=True)
        deployment.env.update(LONGPLAY_EMBED_ENGINE="http", LONGPLAY_EMBED_URL=f"{server.url}/v1")
        deployment.start_api()
        deployment.start_beat()
        deployment.start_worker(concurrency=1)
        client = deployment.client("searcher")
        made = client.post("/v1/collections", json={"name": "Harbour"}).json()["id"]
        text = b"The ferry leaves at nine every morning from the north pier."
        added = client.post(
            f"/v1/collections/{made}/documents", files=[("file", ("harbour.txt", text))]
        ).json()
        assert (
            wait_for_status(client, added["job"]["id"], {"completed", "failed"})["status"]
            == "completed"
        )
        answer = client.get(f"/v1/collections/{made}/search", params={"q": "ferry"}).json()
        assert answer["ranking"] == "hybrid" and answer["items"], answer

        hang.set()
        searches, health = asyncio.run(crowd(deployment.api_url, deployment.key("searcher"), made))

        # Each search waited for the question's embedding a few seconds at most, the
        # first ones; then by the words alone at once, and each found the passage.
        assert all(ranking == "full_text" for ranking, _ in searches), searches
        slowest = max(seconds for _, seconds in searches)
        assert slowest < 3 * QUESTION_WITHIN_S, searches
        assert health and max(health) < HEALTH_PROMISE_S, health
        began = time.monotonic()
        answer = client.get(f"/v1/collections/{made}/search", params={"q": "ferry"}).json()
        assert answer["ranking"] == "full_text" and answer["items"], answer
        assert time.monotonic() - began < 1.0, "while the engine is out, no search waits on it"
        log = deployment.log_tails(200)
        assert log.count("searching by words only for 30 s") == 1, log
        assert f"did not embed the question within {QUESTION_WITHIN_S:g} s" in log, log
