"""Settings in groups, each read from the ``LONGPLAY_*`` variables the README lists, and
unsafe values refused with the variable's name."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

from longplay.settings import Settings, SettingWarning

DAY = 24 * 3600


def test_each_group_reads_its_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "LONGPLAY_API_PORT": "8123",
        "LONGPLAY_MAX_UPLOAD_BYTES": "1000",
        "LONGPLAY_WORKER_CONCURRENCY": "3",
        "LONGPLAY_WORKER_QUEUES": "cpu,gpu",
        "LONGPLAY_LEASE_SECONDS": "30",
        "LONGPLAY_DISPATCH_AHEAD": "4",
        "LONGPLAY_TIERS": '{"gold": {"priority": "high"}}',
        "LONGPLAY_WEBHOOK_TIMEOUT": "2.5",
        "LONGPLAY_JOB_RETENTION": "0",
        "LONGPLAY_ENGINE_THREADS": "2",
        "LONGPLAY_STT_MODEL": "/models/whisper",
        "LONGPLAY_TTS_HTTP_VOICE": "nova",
        "LONGPLAY_LLM_CONTEXT_TOKENS": "4096",
        "LONGPLAY_EMBED_ENGINE": "http",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path)
    assert (settings.api.port, settings.api.max_upload_bytes) == (8123, 1000)
    assert settings.worker.concurrency == 3 and settings.worker.queues == "cpu,gpu"
    assert settings.worker.lease_seconds == 30
    assert settings.admission.dispatch_ahead == 4
    assert set(settings.admission.tiers) == {"standard", "gold"}
    assert settings.webhooks.timeout == 2.5
    assert settings.retention.job_retention == 0
    assert settings.engines.threads == 2
    assert settings.stt.model == "/models/whisper"
    assert settings.embed.engine == "http"
    assert settings.tts.http_voice == "nova"
    assert settings.llm.context_tokens == 4096


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"LONGPLAY_HEARTBEAT_INTERVAL": "60", "LONGPLAY_LEASE_SECONDS": "30"}, "LEASE_SECONDS"),
        ({"LONGPLAY_WORKER_QUEUES": "tpu"}, "LONGPLAY_WORKER_QUEUES"),
        ({"LONGPLAY_WEBHOOK_RETRY_BASE": "10", "LONGPLAY_WEBHOOK_RETRY_MAX": "5"}, "RETRY_MAX"),
        ({"LONGPLAY_WORKER_CONCURRENCY": "0"}, "LONGPLAY_WORKER_CONCURRENCY"),
        ({"LONGPLAY_API_WORKERS": "0"}, "LONGPLAY_API_WORKERS"),
        ({"LONGPLAY_DISPATCH_AHEAD": "0"}, "LONGPLAY_DISPATCH_AHEAD"),
        ({"LONGPLAY_STT_TIMEOUT": "0"}, "LONGPLAY_STT_TIMEOUT"),
        ({"LONGPLAY_TIERS": '{"gold": {"max_running": 4,}}'}, "LONGPLAY_TIERS"),
        ({"LONGPLAY_PLUGINS": "notjson"}, "LONGPLAY_PLUGINS"),
    ],
)
def test_unsafe_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=named):
        Settings(data_dir=tmp_path)


RETENTIONS = ("JOB", "RESULT", "UPLOAD", "TURN_CACHE")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30d", 30 * DAY),
        ("12h", 12 * 3600),
        ("90m", 90 * 60),
        ("45s", 45),
        ("1.5h", 5400),
        ("1d12h", 36 * 3600),
        (" 7d ", 7 * DAY),
        ("3600", 3600),  # a plain number is seconds, as it always was
        ("2.5", 2.5),
        ("0", 0),
    ],
)
def test_retention_takes_a_unit_and_a_plain_number_is_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, seconds: float
) -> None:
    for name in RETENTIONS:
        monkeypatch.setenv(f"LONGPLAY_{name}_RETENTION", value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SettingWarning)  # 2.5 is doubtful, and still read
        kept = Settings(data_dir=tmp_path).retention
    assert kept.job_retention == kept.result_retention == seconds
    assert kept.upload_retention == kept.turn_cache_retention == seconds


def test_every_duration_takes_a_unit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Long ones and short ones alike: a setting whose default is a few seconds read
    "2s" as no number and refused the start. A plain number is still seconds."""
    for name, value in {
        "LONGPLAY_CLEANUP_INTERVAL": "30m",
        "LONGPLAY_EVENT_RETENTION_SECONDS": "2d",
        "LONGPLAY_VISIBILITY_TIMEOUT": "1d12h",
        "LONGPLAY_WEBHOOK_RETRY_MAX": "2h",
        "LONGPLAY_WEBHOOK_RETRY_BASE": "2s",
        "LONGPLAY_SHUTDOWN_GRACE": "1m",
        "LONGPLAY_HEARTBEAT_INTERVAL": "5",
        "LONGPLAY_STT_TIMEOUT": "1h",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path)
    assert settings.retention.cleanup_interval == 1800
    assert settings.retention.event_retention_seconds == 2 * DAY
    assert settings.worker.visibility_timeout == 36 * 3600
    assert isinstance(settings.worker.visibility_timeout, int)
    assert settings.webhooks.retry_max == 7200
    assert settings.webhooks.retry_base == 2
    assert settings.worker.shutdown_grace == 60 and settings.worker.heartbeat_interval == 5
    assert settings.stt.timeout == 3600


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LONGPLAY_JOB_RETENTION", "30x"),
        ("LONGPLAY_RESULT_RETENTION", "-3d"),
        ("LONGPLAY_UPLOAD_RETENTION", "-3"),
        ("LONGPLAY_TURN_CACHE_RETENTION", "d"),
        ("LONGPLAY_JOB_RETENTION", "1d-2h"),
        ("LONGPLAY_JOB_RETENTION", ""),
        ("LONGPLAY_CLEANUP_INTERVAL", "0s"),
        ("LONGPLAY_EVENT_RETENTION_SECONDS", "1.5s"),
        ("LONGPLAY_VISIBILITY_TIMEOUT", "7 days"),
    ],
)
def test_bad_durations_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        Settings(data_dir=tmp_path)


def test_a_short_retention_without_a_unit_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LONGPLAY_JOB_RETENTION", "30")
    with pytest.warns(SettingWarning) as doubts:
        kept = Settings(data_dir=tmp_path).retention
    assert kept.job_retention == 30  # warned, not changed: a trial may want 30 seconds
    assert [str(doubt.message) for doubt in doubts] == [
        "LONGPLAY_JOB_RETENTION=30 is 30 seconds; write 30d for days (or 30s to mean seconds)"
    ]


@pytest.mark.parametrize("value", ["30s", "30d", "0", "3600", "86400"])
def test_a_retention_with_a_unit_or_of_an_hour_is_not_doubted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    for name in RETENTIONS:
        monkeypatch.setenv(f"LONGPLAY_{name}_RETENTION", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        Settings(data_dir=tmp_path)


def test_cors_origins_are_written_as_a_browser_sends_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A browser's Origin is lower case, without a default port or a slash at the end;
    an origin written otherwise would never match one."""
    monkeypatch.setenv(
        "LONGPLAY_API_CORS_ORIGINS", "HTTPS://App.Example.com:443/, http://localhost:3000"
    )
    origins = Settings(data_dir=tmp_path).api.cors_origins
    assert origins == ["https://app.example.com", "http://localhost:3000"]
    monkeypatch.setenv("LONGPLAY_API_CORS_ORIGINS", "app.example.com")
    with pytest.raises(ValueError, match="LONGPLAY_API_CORS_ORIGINS"):
        Settings(data_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LONGPLAY_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.1/8"),
        ("LONGPLAY_WEBHOOK_ALLOWED_NETWORKS", "intranet"),
        ("LONGPLAY_WEBHOOK_SECRET_OVERLAP", "-1"),
    ],
)
def test_bad_webhook_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings(data_dir=tmp_path)
