"""Collections bench: indexing and full-text search, SQLite (FTS5) beside PostgreSQL.

Run ``.venv/bin/python bench/search.py [--documents N] [--words W] [--queries Q]``.
For each database it starts a private deployment (embedded Redis, ``longplay api``
and a ``longplay worker`` of 2 processes), makes N Markdown documents of about W
words each, one per made-up town (English sentences on its history, transport, food,
sport and weather under headings, drawn from templates, so that the same sentences,
nouns and towns recur across documents as distractors) and plants one fact in each
("The amber lantern of Quellmoor weighs 412 kilograms."). It adds them to a collection
(32 to an ``index`` job, as many jobs as that takes), then asks Q questions about
the planted facts through ``GET /v1/collections/{id}/search`` ("How much does the
lantern of Quellmoor weigh?", sharing only some words with the fact).

It prints, per database: passages made, indexing time (first submit to last job
completed) and documents a second, the search latency (p50, p95 over HTTP), and how
often the passage with the fact came first (hit@1) or in the first five (hit@5);
then PostgreSQL's figures over SQLite's. Exits non-zero only when a job failed.

Each database is run twice side by side: full text only (``LONGPLAY_EMBED_ENGINE=off``)
and hybrid (full text fused with embeddings, ``LONGPLAY_EMBED_ENGINE=local``). A second
set of Q questions says the same in other words ("What is the mass of the lamp of
Quellmoor?": no word of the fact but the town), and the figures for it (hit@1, hit@5
"other words") show what the embeddings find that words do not; then hybrid's
indexing time and search latency over full text's.
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
FIRST_NAMES = ["Anna", "Tomas", "Greta", "Pavel", "Lena", "Marek", "Ines", "Otto", "Clara"]
TOPICS = {
    "History": [
        "The town was founded in {year} by settlers from the coast.",
        "In {year} a great fire destroyed much of the old quarter.",
        "{person} served as mayor for {n} years and built the first school.",
        "The old walls were torn down in {year} to make room for a market.",
        "During the war the harbour was closed for {n} months.",
        "Visitors often compare its {noun} with the one in {place}.",
    ],
    "Transport": [
        "A bus to the capital leaves every {n} minutes from the main square.",
        "The railway station was opened in {year} and still has its first clock.",
        "Cyclists can rent bicycles near the harbour for a small fee.",
        "The road over the pass is closed in winter because of snow.",
        "A small airport with {n} flights a week serves the valley.",
        "A ferry crosses to {place} twice a day in summer.",
    ],
    "Food": [
        "The bakery on the corner sells rye bread and honey cakes every morning.",
        "Local fishermen bring herring and cod to the market on Fridays.",
        "A cheese festival is held each autumn in the town hall.",
        "{person} runs a restaurant famous for its mushroom soup.",
        "Apples from the orchards are pressed into cider in October.",
    ],
    "Sport": [
        "The football club was founded in {year} and plays in a green stadium.",
        "Every summer a rowing race is held on the river.",
        "{person} won a medal in skiing in {year}.",
        "The swimming pool opens at {n} in the morning.",
        "A marathon through the hills attracts runners from {place}.",
    ],
    "Weather": [
        "Winters are long and the lake freezes by December.",
        "Summer storms often come from the west in the afternoon.",
        "The town gets about {n} days of rain a year.",
        "Fog covers the harbour on most mornings in spring.",
        "The warmest month is July, when the beaches fill with visitors.",
    ],
}
"""Sentences for the filler; the towns, people, years and numbers differ in each."""
NOUNS = "lantern bell anchor compass mill bridge organ clock tower ferry".split()  # noqa: SIM905
OTHER_WORDS = {
    "lantern": "lamp",
    "bell": "chime",
    "anchor": "mooring hook",
    "compass": "navigation instrument",
    "mill": "grinding works",
    "bridge": "river crossing",
    "organ": "pipe instrument",
    "clock": "timepiece",
    "tower": "spire",
    "ferry": "boat",
}
"""Each noun said in other words, for the questions that share no word with the fact
but the place."""
EMBED_MODES = ("off", "local")


def step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


Doc = tuple[str, bytes, str, str, str]
"""A document: name, Markdown bytes, the fact planted, a question about it in its
words, the same question in other words."""


def town_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES.split()) for _ in range(3)).capitalize()


def documents(n: int, words: int, seed: int = 7) -> list[Doc]:
    """N documents, each with its fact and the two questions about it."""
    rng = random.Random(seed)
    towns = [town_name(rng) for _ in range(n)]
    made = []
    for i, town in enumerate(towns):
        noun, adjective = rng.choice(NOUNS), rng.choice(ADJECTIVES)
        fact = f"The {adjective} {noun} of {town} weighs {rng.randint(100, 999)} kilograms."
        question = f"How much does the {noun} of {town} weigh?"
        other_words = f"What is the mass of the {OTHER_WORDS[noun]} of {town}?"
        sections: list[tuple[str, list[str]]] = []
        written = 0
        while written < words:
            topic = rng.choice(list(TOPICS))
            paragraphs = []
            for _ in range(rng.randint(2, 3)):
                sentences = [
                    rng.choice(TOPICS[topic]).format(
                        year=rng.randint(1200, 1990),
                        n=rng.randint(2, 90),
                        person=f"{rng.choice(FIRST_NAMES)} {town_name(rng)}",
                        noun=rng.choice(NOUNS),
                        place=rng.choice(towns),
                    )
                    for _ in range(rng.randint(4, 7))
                ]
                paragraphs.append(" ".join(sentences))
                written += sum(len(sentence.split()) for sentence in sentences)
            sections.append((topic, paragraphs))
        paragraphs = sections[rng.randrange(len(sections))][1]
        at = rng.randrange(len(paragraphs))
        paragraphs[at] += f" {fact}"
        text = f"# Notes on {town}\n\n" + "\n\n".join(
            f"## {topic}\n\n" + "\n\n".join(paragraphs) for topic, paragraphs in sections
        )
        made.append((f"notes-{i:04d}.md", (text + "\n").encode(), fact, question, other_words))
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


def bench(database: str, embed: str, docs: list[Doc], queries: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench-search-{database}-") as root:
        deployment = harness.Deployment(
            Path(root),
            database,
            plugin="bench_kinds",
            plugin_dir=BENCH,
            logs=True,
            env={"LONGPLAY_EMBED_ENGINE": embed},
        )
        with deployment:
            step(f"{database}, embeddings {embed}: starting the API and a worker")
            deployment.start_api()
            deployment.start_worker(concurrency=2)
            client = httpx.Client(
                base_url=deployment.api_url,
                headers={"Authorization": f"Bearer {deployment.key(OWNER)}"},
                timeout=60,
            )
            collection = client.post("/v1/collections", json={"name": "bench"}).json()["id"]
            step(f"{database}, embeddings {embed}: indexing {len(docs)} documents")
            started = time.perf_counter()
            jobs = []
            for at in range(0, len(docs), PER_JOB):
                files = [("file", (d[0], d[1], "text/markdown")) for d in docs[at : at + PER_JOB]]
                added = client.post(f"/v1/collections/{collection}/documents", files=files)
                added.raise_for_status()
                jobs.append(added.json()["job"]["id"])
            for job_id in jobs:
                wait_for(client, job_id)
            indexing = time.perf_counter() - started
            passages = client.get(f"/v1/collections/{collection}").json()["passage_count"]
            step(f"{database}, embeddings {embed}: {queries} searches of each set")
            asked = (docs * (queries // len(docs) + 1))[:queries]
            latencies: list[float] = []
            hits = {}
            for name, column in (("words", 3), ("other", 4)):
                hit1 = hit5 = 0
                for doc in asked:
                    began = time.perf_counter()
                    response = client.get(
                        f"/v1/collections/{collection}/search",
                        params={"q": doc[column], "limit": 5},
                    )
                    latencies.append(time.perf_counter() - began)
                    response.raise_for_status()
                    texts = [item["text"] for item in response.json()["items"]]
                    hit1 += bool(texts) and doc[2] in texts[0]
                    hit5 += any(doc[2] in text for text in texts)
                hits[f"{name}_hit1"], hits[f"{name}_hit5"] = hit1 / queries, hit5 / queries
    return {
        "passages": passages,
        "indexing_s": indexing,
        "docs_per_s": len(docs) / indexing,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        **hits,
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
    results = {
        (db, embed): bench(db, embed, docs, args.queries)
        for db in databases
        for embed in EMBED_MODES
    }
    print(f"{args.documents} documents of about {args.words} words, {args.queries} questions")
    print(f"{'':22}{'passages':>9}{'index s':>9}{'docs/s':>8}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'hit@1':>7}{'hit@5':>7}{'other words @1':>16}{'@5':>5}")  # fmt: skip
    for (db, embed), r in results.items():
        label = f"{db}, {'hybrid' if embed == 'local' else 'full text'}"
        print(
            f"{label:22}{r['passages']:>9.0f}{r['indexing_s']:>9.2f}{r['docs_per_s']:>8.1f}"
            f"{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}{r['words_hit1']:>7.2f}{r['words_hit5']:>7.2f}"
            f"{r['other_hit1']:>16.2f}{r['other_hit5']:>5.2f}"
        )
    for db in databases:
        hybrid, plain = results[(db, "local")], results[(db, "off")]
        print(
            f"{db}, hybrid / full text: indexing time "
            f"{hybrid['indexing_s'] / plain['indexing_s']:.2f}x, "
            f"search p50 {hybrid['p50_ms'] / plain['p50_ms']:.2f}x, "
            f"p95 {hybrid['p95_ms'] / plain['p95_ms']:.2f}x"
        )
    if len(databases) == 2:
        pg, lite = results[("postgresql", "local")], results[("sqlite", "local")]
        print(
            f"postgresql / sqlite (hybrid): indexing time "
            f"{pg['indexing_s'] / lite['indexing_s']:.2f}x, "
            f"search p50 {pg['p50_ms'] / lite['p50_ms']:.2f}x, "
            f"p95 {pg['p95_ms'] / lite['p95_ms']:.2f}x"
        )


if __name__ == "__main__":
    main()
