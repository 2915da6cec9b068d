"""Every metric longplay keeps, by name: what the hooks and the API add to."""

from __future__ import annotations

from longplay.jobs.metrics.kept import Counter, Family, Histogram

JOB_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
"""Bucket bounds for queue waits, runs and steps: from a tenth of a second to six hours."""
REQUEST_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

SUBMITTED = Counter("longplay_jobs_submitted", "Jobs submitted.", ("kind",))
STARTED = Counter(
    "longplay_jobs_started", "Runs started (a retry or a requeued job starts again).", ("kind",)
)
COMPLETED = Counter("longplay_jobs_completed", "Jobs completed.", ("kind",))
FAILED = Counter("longplay_jobs_failed", "Jobs failed for good, by error code.", ("kind", "code"))
RETRIED = Counter(
    "longplay_jobs_retried",
    "Runs that failed and will be retried, by error code.",
    ("kind", "code"),
)
CANCELLED = Counter("longplay_jobs_cancelled", "Jobs cancelled.", ("kind",))
EXPIRED = Counter("longplay_jobs_expired", "Queued jobs whose deadline passed.", ("kind",))
REQUEUED = Counter(
    "longplay_jobs_requeued",
    "Running jobs sent back to the queue (their worker stopped).",
    ("kind",),
)
QUEUE_WAIT = Histogram(
    "longplay_job_queue_wait_seconds",
    "From submission (or its run_at, or its retry time) to the start of its run.",
    ("kind",),
    JOB_SECONDS,
)
RUN_TIME = Histogram(
    "longplay_job_run_seconds",
    "One run of a job, from its start to its outcome (completed, failed, retrying,"
    " cancelled, requeued).",
    ("kind", "outcome"),
    JOB_SECONDS,
)
STEP_TIME = Histogram(
    "longplay_job_step_seconds",
    "A step, from its start to the next step's start or the job's completion (the step a"
    " run failed or stopped in is not counted).",
    ("kind", "step"),
    JOB_SECONDS,
)
WEBHOOKS = Counter(
    "longplay_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, retrying, failed (given up).",
    ("outcome",),
)
HTTP_REQUESTS = Counter(
    "longplay_http_requests",
    "API requests by method, route template and status code.",
    ("method", "route", "status"),
)
HTTP_LATENCY = Histogram(
    "longplay_http_request_seconds",
    "API request latency by method and route template, to the end of the response.",
    ("method", "route"),
    REQUEST_SECONDS,
)

ALL: tuple[Family, ...] = (
    SUBMITTED,
    STARTED,
    COMPLETED,
    FAILED,
    RETRIED,
    CANCELLED,
    EXPIRED,
    REQUEUED,
    QUEUE_WAIT,
    RUN_TIME,
    STEP_TIME,
    WEBHOOKS,
    HTTP_REQUESTS,
    HTTP_LATENCY,
)
