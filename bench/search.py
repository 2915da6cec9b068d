"""Collections bench: indexing and full-text search, SQLite (FTS5) beside PostgreSQL.

Run ``.venv/bin/python bench/search.py [--documents N] [--words W] [--queries Q]``.
For each database it starts a private deployment (embedded Redis, ``longplay api``
and a ``longplay worker`` of 2 processes), makes N Markdown documents of about W
words each (sections under headings, words drawn from a made-up vocabulary, so the
same nouns and places recur across documents) and plants one fact in each ("The
amber lantern of Quellmoor weighs 412 kilograms."). It adds them to a collection
(32 to an ``index`` job, as many jobs as that takes), then asks Q questions about
the planted facts through ``GET /v1/collections/{id}/search`` ("How much does the
lantern of Quellmoor weigh?", sharing only some words with the fact).

It prints, per database: passages made, indexing time (first submit to last job
completed) and documents a second, the search latency (p50, p95 over HTTP), and how
often the passage with the fact came first (hit@1) or in the first five (hit@5);
then PostgreSQL's figures over SQLite's. Exits non-zero only when a job failed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# The process harness is shared with the tests, and lives with them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness

BENCH = Path(__file__).parent
OWNER = "bench"
PER_JOB = 32
SYLLABLES = "ka lo mi ren sul tor vex ba din fel gor hal jun mar nol pes quin ras tem ulo"
ADJECTIVES = ["amber", "silver", "quiet", "broken", "hollow", "northern", "bitter", "painted"]
NOUNS = "lantern bell anchor compass mill bridge organ clock tower ferry".split()  # noqa: SIM905


def step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def made_up_words(rng: random.Random, count: int) -> list[str]:
    syllables = SYLLABLES.split()
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) for _ in range(count)]


def documents(n: int, words: int, seed: int = 7) -> list[tuple[str, bytes, str, str]]:
    """N documents: (name, Markdown bytes, the fact planted, the question about it)."""
    rng = random.Random(seed)
    vocabulary = made_up_words(rng, 3000)
    places = [w.capitalize() for w in made_up_words(rng, max(n, 50))]
    made = []
    for i in range(n):
        place, noun, adjective = places[i], rng.choice(NOUNS), rng.choice(ADJECTIVES)
        fact = f"The {adjective} {noun} of {place} weighs {rng.randint(100, 999)} kilograms."
        question = f"How much does the {noun} of {place} weigh?"
        sections, written = [], 0
        while written < words:
            paragraphs = []
            for _ in range(rng.randint(2, 4)):
                # Filler that mentions other places and the same nouns: distractors.
                sentence_words = [rng.choice(vocabulary) for _ in range(rng.randint(40, 80))]
                sentence_words[rng.randrange(len(sentence_words))] = rng.choice(places)
                sentence_words[rng.randrange(len(sentence_words))] = rng.choice(NOUNS)
                paragraphs.append(" ".join(sentence_words).capitalize() + ".")
                written += len(sentence_words)
            sections.append(
                f"## {rng.choice(vocabulary).capitalize()}\n\n" + "\n\n".join(paragraphs)
            )
        at = rng.randrange(len(sections))
        sections[at] += f"\n\n{fact}"
        text = f"# Notes on {place}\n\n" + "\n\n".join(sections) + "\n"
        made.append((f"notes-{i:04d}.md", text.encode(), fact, question))
    return made


def wait_for(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job = dict(client.get(f"/v1/jobs/{job_id}").json())
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = harness.wait_until(finished, timeout=1800, every=0.1, what=f"index job {job_id}")
    if job["status"] != "completed":
        raise RuntimeError(f"index job {job_id} ended {job['status']}: {job['error']}")
    return dict(job)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench(database: str, docs: list[tuple[str, bytes, str, str]], queries: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-search-{database}-") as root:
        deployment = harness.Deployment(
            Path(root), database, plugin="bench_kinds", plugin_dir=BENCH, logs=True
        )
        with deployment:
            step(f"{database}: starting the API and a worker")
            deployment.start_api()
            deployment.start_worker(concurrency=2)
            client = httpx.Client(
                base_url=deployment.api_url,
                headers={"Authorization": f"Bearer {deployment.key(OWNER)}"},
                timeout=60,
            )
            collection = client.post("/v1/collections", json={"name": "bench"}).json()["id"]
            step(f"{database}: indexing {len(docs)} documents")
            started = time.perf_counter()
            jobs = []
            for at in range(0, len(docs), PER_JOB):
                files = [
                    ("file", (n, data, "text/markdown"))
                    for n, data, _, _ in docs[at : at + PER_JOB]
                ]
                added = client.post(f"/v1/collections/{collection}/documents", files=files)
                added.raise_for_status()
                jobs.append(added.json()["job"]["id"])
            for job_id in jobs:
                wait_for(client, job_id)
            indexing = time.perf_counter() - started
            passages = client.get(f"/v1/collections/{collection}").json()["passage_count"]
            step(f"{database}: {queries} searches")
            latencies, hit1, hit5 = [], 0, 0
            for _, _, fact, question in (docs * (queries // len(docs) + 1))[:queries]:
                began = time.perf_counter()
                response = client.get(
                    f"/v1/collections/{collection}/search", params={"q": question, "limit": 5}
                )
                latencies.append(time.perf_counter() - began)
                response.raise_for_status()
                texts = [item["text"] for item in response.json()["items"]]
                hit1 += bool(texts) and fact in texts[0]
                hit5 += any(fact in text for text in texts)
    return {
        "passages": passages,
        "indexing_s": indexing,
        "docs_per_s": len(docs) / indexing,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "hit1": hit1 / queries,
        "hit5": hit5 / queries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--words", type=int, default=1000, help="about this many per document")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    docs = documents(args.documents, args.words)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if "postgresql" in databases and not harness.postgres_reachable():
        step("no PostgreSQL reachable: SQLite only")
        databases = ["sqlite"]
    results = {db: bench(db, docs, args.queries) for db in databases}
    print(f"{args.documents} documents of about {args.words} words, {args.queries} questions")
    print(f"{'':12}{'passages':>9}{'index s':>9}{'docs/s':>8}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'hit@1':>7}{'hit@5':>7}")  # fmt: skip
    for db, r in results.items():
        print(
            f"{db:12}{r['passages']:>9.0f}{r['indexing_s']:>9.2f}{r['docs_per_s']:>8.1f}"
            f"{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}{r['hit1']:>7.2f}{r['hit5']:>7.2f}"
        )
    if len(results) == 2:
        pg, lite = results["postgresql"], results["sqlite"]
        print(
            f"postgresql / sqlite: indexing time {pg['indexing_s'] / lite['indexing_s']:.2f}x, "
            f"search p50 {pg['p50_ms'] / lite['p50_ms']:.2f}x, "
            f"p95 {pg['p95_ms'] / lite['p95_ms']:.2f}x"
        )


if __name__ == "__main__":
    main()
