"""The registry of job kinds: a kind is a named list of weighted steps.

A team adds its own kind with :func:`register`; the queue, store, progress, API and
CLI pick it up with no other change::

    class ResizeParams(BaseModel):
        width: int = 640

    def resize(ctx: StepContext[ResizeParams]) -> None:
        for i, frame in enumerate(frames):
            ...  # ctx.params.width is an int to the type checker too
            ctx.advance(i + 1, len(frames), frames=i + 1)

    register(JobKind(name="resize", params=ResizeParams, steps=[Step("resize", resize)]))

:class:`StepContext`, :class:`Step` and :class:`JobKind` are generic in the params
model: the runner validates a job's params with ``kind.params`` before the first step,
so a step reads ``ctx.params`` as its kind's model and never validates it again.
Definitions are checked when :class:`JobKind` is made, so a typo fails at import time.
"""

from __future__ import annotations

import json
import numbers
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from longplay.framework.errors import InvalidParams, JobError, PermanentError
from longplay.framework.fanout import function_ref, item_error, run_item
from longplay.framework.library import Catalog
from longplay.framework.records import JobRecords

P = TypeVar("P", bound=BaseModel)
"""The params model of a kind, as its steps see it in ``ctx.params``."""
T = TypeVar("T")
R = TypeVar("R")
Resource = Literal["cpu", "gpu"]
KindPriority = Literal["high", "normal", "low"]
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class InputFile:
    """An artifact handed to a job as input, already on local disk."""

    artifact_id: str
    name: str
    media_type: str
    path: Path
    size: int


class StepContext(ABC, Generic[P]):
    """What a step sees of its job while it runs; ``params`` is already validated."""

    job_id: str
    params: P
    inputs: Sequence[InputFile]
    workdir: Path
    state: dict[str, Any]
    """JSON-serialisable values steps hand to later steps; saved with each finished
    step, so a retried job that skips a finished step still has what it left."""
    attempt: int
    """Which run of the job this is: 1 at first, one more after each transient error,
    lost worker or retry (a step may then try something more careful)."""
    partial: bool = False
    """Whether a step of this run said it had nothing to do in it (:meth:`nothing_to_do`):
    the run is of another shape than the kind's whole runs."""

    @abstractmethod
    def advance(self, done: float, total: float, **details: Any) -> None:
        """Report progress inside the current step; a cancellation checkpoint.

        Raises :class:`~longplay.framework.errors.JobCancelled` once the job is cancelled.
        """

    @abstractmethod
    def add_output(
        self, path: Path, *, name: str | None = None, media_type: str | None = None
    ) -> None:
        """Keep a file the step wrote (under ``workdir``) as one of the job's results.

        The file is moved into the store when the step ends: a step adds each file once
        (copy it to keep it under two names). A path that is not a file, is outside
        ``workdir`` or was already added in this step is refused at the call with a
        :class:`PermanentError` (code ``invalid_output``)."""

    @abstractmethod
    def outputs(self, step: str | None = None) -> list[InputFile]:
        """Files earlier steps kept (in this run or an earlier attempt), oldest first;
        how a step reads what the one before it made, even after a retry skipped it."""

    @abstractmethod
    def note(self, message: str, **data: Any) -> None:
        """Publish a human-readable note as a job event (e.g. a fallback taken)."""

    def stream(self, text: str) -> None:
        """Publish the next piece of a text the step is writing (an LLM's reply) as a
        ``token`` event, so a follower shows it as it is written. Call it at a bounded
        rate, with batches. A context nobody follows live drops it: the step's outputs
        still carry the whole text."""

    def nothing_to_do(self, **details: Any) -> None:
        """Say the running step has nothing to do in this run (a podcast that writes only
        its script voices nothing), then return from it: its part of the bar is done
        (with ``details``, as :meth:`advance` takes them), and the run teaches the kind's
        ETA nothing. A whole run's steps' times are what the ETA learns; one whose
        voicing took no time taught it that voicing takes none."""
        self.advance(1.0, 1.0, **details)
        self.partial = True

    def records(self) -> JobRecords:
        """The job records of the owner this job acts for (its own, or the one an admin
        named in a :class:`~longplay.framework.records.ForOwner` parameter); a context
        made outside a running job has none."""
        raise NotImplementedError(f"{type(self).__name__} has no job records")

    def map(self, fn: ItemFn[P, T, R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items``, the results in the items' order: on a running job,
        spread over the worker pool, up to the kind's ``fan_out`` processes at once.

        ``fn`` must be a module-level function (every worker process imports it by
        name; another fails the step, code ``invalid_map``, however few the items);
        items and results must be JSON values, and an item may read what the step
        wrote in ``workdir`` (its path is the same in every process). ``items``
        may be a generator: each item is handed out as soon as it is made, so other
        processes start on the first while this one makes the rest. Progress is the
        sum of the items'; a lost item runs again on its own; cancelling the job stops
        them all; an item that raises fails the step, the error naming the item
        (:meth:`item_failed`). This base version runs the items here, one after another.

        Items and results pass through JSON (:func:`as_json`) wherever they run, so a
        tuple comes back a list, a dict's keys strings, and an item or result that is
        no JSON value (a datetime, a path, NaN) fails the step for good (code
        ``not_json``), with one item as with thousands.
        """
        function_ref(fn)  # as a running job names it, wherever the items run
        items = [as_json(item, f"ctx.map: item {n}") for n, item in enumerate(items)]
        results: list[R] = []
        for index, item in enumerate(items):

            def progress(done: float, total: float, _i: int = index, **details: Any) -> None:
                self.advance(_i + (done / total if total else 0.0), len(items), **details)

            item_ctx = ItemContext(self.job_id, self.params, self.inputs, self.workdir, progress)
            result = run_item(fn, item_ctx, item, index, self.item_failed)
            results.append(as_json(result, f"ctx.map: the result of item {index}"))
        return results

    def item_failed(self, index: int, exc: Exception) -> Exception:
        """What :meth:`map` fails with when item ``index`` raised ``exc``: a
        :class:`JobError` naming the item (its class, code and retryability kept); a
        running job's context judges any other error as the job's run would, this one
        raises it as it is."""
        return item_error(index, exc) if isinstance(exc, JobError) else exc

    @property
    def library(self) -> Catalog:
        """The collections of the job's owner: passages to search and cite (another
        owner's collection is not found). A context made outside a running job has none."""
        raise NotImplementedError(f"{type(self).__name__} has no library of collections")


@dataclass(frozen=True)
class ItemContext(Generic[P]):
    """What one item of :meth:`StepContext.map` sees, in whichever process runs it."""

    job_id: str
    params: P
    inputs: Sequence[InputFile]
    workdir: Path
    """The job's work folder: what the step wrote there before mapping."""
    progress: Callable[..., None]
    """``progress(done, total, **details)``, as :meth:`advance` takes it."""

    def advance(self, done: float, total: float, **details: Any) -> None:
        """Report how far this item got; a cancellation checkpoint (raises
        :class:`~longplay.framework.errors.JobCancelled`)."""
        self.progress(done, total, **details)


ItemFn = Callable[[ItemContext[P], T], R]
"""The work of one item: ``fn(item_ctx, item) -> result``, item and result JSON values."""

_AS_THEMSELVES = frozenset({str, int, bool, type(None)})
"""Types whose values JSON gives back unchanged (exactly these: not a subclass, as an
``IntEnum``): no encoding needed."""


def as_json(value: Any, what: str) -> Any:
    """``value`` as it comes back from JSON, the way an item or a result of
    :meth:`StepContext.map` crosses between processes (a tuple as a list, a dict's keys
    as strings); one in-process map encodes the same, so it gives the same results.

    A value that is no JSON value raises a :class:`PermanentError` (code ``not_json``)
    that starts with ``what`` (which item, or its result) and names the value's type."""
    if type(value) in _AS_THEMSELVES:  # the common cheap case: nothing to encode
        return value
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise PermanentError(
            f"{what} is not a JSON value ({type(value).__name__}): {exc}", code="not_json"
        ) from exc


StepFn = Callable[[StepContext[P]], None]
"""A step's work: ``StepFn[MyParams]`` is a function of a ``StepContext[MyParams]``."""


@dataclass(frozen=True)
class Step(Generic[P]):
    """One named stage of a job; ``weight`` is its share of the job's progress bar."""

    name: str
    run: StepFn[P]
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"step name {self.name!r} must match {_NAME.pattern}")
        if not callable(self.run):
            raise TypeError(f"step {self.name!r}: run must be a function, not {self.run!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, numbers.Real):
            raise TypeError(f"step {self.name!r}: weight must be a number, not {self.weight!r}")
        if self.weight <= 0:
            raise ValueError(f"step {self.name!r} needs a positive weight")


@dataclass(frozen=True)
class RetryPolicy:
    """How a kind retries after a retryable error: exponential backoff with full jitter."""

    max_attempts: int | None = None
    """Runs in all, the first included; None: the ``max_attempts`` setting."""
    backoff: float = 2.0
    """Seconds; the n-th retry waits a random time up to ``backoff * 2**n``."""
    max_backoff: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError("backoff must be >= 0 and <= max_backoff")

    def delay(self, attempt: int) -> float:
        """Seconds before the retry that follows ``attempt``."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))


@dataclass(frozen=True)
class SubmittedInput:
    """An input as a submission names it: what a submit-time check can know of it
    before any worker has the file.

    An input taken from another job's outputs (a later stage of a flow) is not made
    yet: it has no ``artifact_id``, its ``name`` is the output's name or ``*`` and the
    suffix asked for, its ``media_type`` is guessed from that name ("" where nothing
    can be), its ``size`` is 0 and ``from_job`` names the job that will make it."""

    artifact_id: str | None
    name: str
    media_type: str
    size: int
    from_job: str | None = None


SubmitCheck = Callable[[P, Sequence[SubmittedInput]], None]
"""A kind's own check of a submission, run before anything is stored: it raises
:class:`InvalidParams` (a :class:`FieldError` to name the parameter) or
:class:`InvalidInput`, and the submission is refused with 422 and that message. Keep
it to what can be known without the files' contents; what only running finds out,
the steps still raise."""

UploadCheck = Callable[[InputFile], None]
"""A kind's quick look into a file uploaded with a submission, before anything is
stored: given the file as its steps would get it (its ``artifact_id`` empty, as it has
none yet), it raises :class:`InvalidInput` (with the code the job would fail with) when
the file cannot be an input of the kind, as audio that does not decode, and the
submission is refused with 422 and that message. A look that reads the whole file
reads one of at most :data:`UPLOAD_READ_BYTES` and leaves a larger one to the job.
Inputs named by id were uploaded without a kind; only the job's steps see into those."""
UPLOAD_READ_BYTES = 256 * 1024
"""The largest file an :data:`UploadCheck` reads in full, to keep a submission quick:
the readers of the text kinds take about 0.1 s for this much."""


@dataclass
class FieldError(InvalidParams):
    """:class:`InvalidParams` that names the parameter at fault (``field``)."""

    field: str = ""


UNKNOWN_MEDIA_TYPE = "application/octet-stream"
"""What an input whose type nothing names is stored as; only decoding can tell."""


class NoParams(BaseModel):
    """The parameters of a kind that takes none."""


@dataclass(frozen=True)
class JobKind(Generic[P]):
    """A registered kind of job: ``JobKind[MyParams]`` runs steps of ``StepContext[MyParams]``."""

    name: str
    steps: Sequence[Step[P]]
    # A kind without params takes NoParams; the checker cannot see that the default
    # fits whatever P the steps ask for, which is why it is told to look away.
    params: type[P] = NoParams  # type: ignore[assignment]
    description: str = ""
    min_inputs: int = 0
    max_inputs: int | None = None
    input_types: Sequence[str] = field(default_factory=tuple)
    """Media type prefixes the kind accepts (``("audio/", "video/")``); empty: any.
    Checked at submit: an input of another known type is refused there."""
    check: SubmitCheck[P] | None = None
    """The kind's own submit-time check of its params and inputs (see :data:`SubmitCheck`)."""
    check_upload: UploadCheck | None = None
    """A look into each file uploaded with a submission (see :data:`UploadCheck`), for
    the files of a type the kind takes."""
    resource: Resource = "cpu"
    priority: KindPriority = "normal"
    """Where the kind's jobs stand against the owner's tier when a submission names no
    priority: ``normal`` takes the tier's, ``low`` one step below it (bulk work, an
    export), ``high`` one step above."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    soft_time_limit: float | None = None
    """Seconds after which the job fails with a message saying so."""
    time_limit: float | None = None
    """Seconds after which the worker process running it is killed (and replaced)."""
    fan_out: int = 1
    """Worker processes a step's :meth:`StepContext.map` may keep busy at once, the
    job's own included; 1 runs the items in the job's process."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"job kind name {self.name!r} must match {_NAME.pattern}")
        _check_params_model(self.name, self.params)
        if not self.steps:
            raise ValueError(f"job kind {self.name!r} needs at least one step")
        strangers = [s for s in self.steps if not isinstance(s, Step)]
        if strangers:
            raise TypeError(
                f"job kind {self.name!r}: steps must be Step(...), not {strangers[0]!r}"
            )
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"job kind {self.name!r} repeats a step name: {names}")
        if self.max_inputs is not None and self.max_inputs < self.min_inputs:
            raise ValueError(f"job kind {self.name!r}: max_inputs < min_inputs")
        if self.fan_out < 1:
            raise ValueError(f"job kind {self.name!r}: fan_out must be at least 1")
        soft, hard = self.soft_time_limit, self.time_limit
        if soft is not None and hard is not None and soft >= hard:
            raise ValueError(f"job kind {self.name!r}: soft_time_limit must be below time_limit")

    def accepts(self, media_type: str) -> bool:
        """Whether an input of ``media_type`` may be submitted: one of :attr:`input_types`,
        or a type nothing named (the steps find out by decoding it)."""
        if not self.input_types or media_type in ("", UNKNOWN_MEDIA_TYPE):
            return True
        return any(media_type.startswith(prefix) for prefix in self.input_types)

    def params_from_json(self, params: Mapping[str, Any]) -> P:
        """``params`` as a submission sends them, read as the API reads them: strictly,
        from their JSON (``"3"`` is no number, ``0`` no boolean); pydantic's
        ``ValidationError`` where they do not pass."""
        return self.params.model_validate_json(json.dumps(params), strict=True)

    @property
    def total_weight(self) -> float:
        """The sum of the steps' weights: the whole progress bar."""
        return sum(s.weight for s in self.steps)


class ParamsSchema(GenerateJsonSchema):
    """JSON Schema of a kind's params that shows a default made by a factory too
    (``Field(default_factory=list)``): the CLI and the dashboard's forms show defaults
    from it, and pydantic leaves such a one out, which read as ``null``."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return super().get_default_value(schema)


def params_schema(params: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema a kind's params are published with (``GET /v1/kinds``)."""
    return params.model_json_schema(schema_generator=ParamsSchema)


def _check_params_model(kind: str, params: object) -> None:
    """Refuse, at registration, params the API could not validate or describe: an
    instance (``params=MyParams()``) or another type got this far and then failed every
    submission of the kind and the whole OpenAPI document."""
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError(
            f"job kind {kind!r}: params must be a pydantic model class (params=MyParams), "
            f"not {params!r}"
        )
    _check_defaults(kind, params)
    try:
        json.dumps(params_schema(params), allow_nan=False)
    except Exception as exc:  # pydantic raises several types; each means the same here
        raise TypeError(
            f"job kind {kind!r}: its params {params.__name__} cannot be described as JSON "
            f"Schema: {exc}"
        ) from exc


def _check_defaults(kind: str, params: type[BaseModel]) -> None:
    """Refuse a field whose default JSON cannot carry (NaN, infinity, bytes that are no
    UTF-8): the OpenAPI document and every submission of the kind would fail on it."""
    defaults = params.model_construct()  # the defaults, made as a submission makes them
    for name, info in params.model_fields.items():
        if info.is_required():
            continue
        try:
            json.dumps(defaults.model_dump(mode="json", include={name}), allow_nan=False)
        except Exception as exc:  # pydantic and json raise several types; all mean this
            raise TypeError(
                f"job kind {kind!r}: the default of {params.__name__}.{name} "
                f"({getattr(defaults, name, None)!r}) cannot be written as JSON: {exc}"
            ) from exc


_KINDS: dict[str, JobKind[Any]] = {}


def register(kind: JobKind[P]) -> JobKind[P]:
    """Add a job kind; registering a second kind under a taken name is an error."""
    existing = _KINDS.get(kind.name)
    if existing is not None and existing is not kind:
        raise ValueError(f"a job kind named {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> JobKind[Any] | None:
    """The registered kind called ``name``; None when no module registered one.

    A pure lookup: the processes that accept or run jobs import the kinds once, at
    start (:func:`longplay.kinds.load`)."""
    return _KINDS.get(name)


def all_kinds() -> list[JobKind[Any]]:
    """Every registered kind, by name."""
    return sorted(_KINDS.values(), key=lambda k: k.name)
