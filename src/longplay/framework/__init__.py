"""Everything a job kind's author needs, in one import::

    from longplay.framework import JobKind, Step, StepContext, register, InvalidInput

A kind is a params model, a list of weighted steps and a call to :func:`register`;
``StepContext[MyParams]`` gives each step its job's validated params as ``ctx.params``.
"""

from longplay.framework.callbacks import Note, Progress, no_note, no_progress
from longplay.framework.errors import (
    InvalidInput,
    InvalidParams,
    JobCancelled,
    JobError,
    PermanentError,
    RetryableError,
)
from longplay.framework.kinds import (
    UPLOAD_READ_BYTES,
    FieldError,
    InputFile,
    ItemContext,
    ItemFn,
    JobKind,
    NoParams,
    Resource,
    RetryPolicy,
    Step,
    StepContext,
    StepFn,
    SubmitCheck,
    SubmittedInput,
    UploadCheck,
    all_kinds,
    get_kind,
    register,
)

__all__ = [
    "UPLOAD_READ_BYTES",
    "FieldError",
    "InputFile",
    "InvalidInput",
    "InvalidParams",
    "ItemContext",
    "ItemFn",
    "JobCancelled",
    "JobError",
    "JobKind",
    "NoParams",
    "Note",
    "PermanentError",
    "Progress",
    "Resource",
    "RetryPolicy",
    "RetryableError",
    "Step",
    "StepContext",
    "StepFn",
    "SubmitCheck",
    "SubmittedInput",
    "UploadCheck",
    "all_kinds",
    "get_kind",
    "no_note",
    "no_progress",
    "register",
]
