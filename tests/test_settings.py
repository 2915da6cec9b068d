"""Settings in groups, each read from the ``LONGPLAY_*`` variables the README lists, and
unsafe values refused with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from longplay.settings import Settings


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
        ({"LONGPLAY_DISPATCH_AHEAD": "0"}, "dispatch_ahead"),
    ],
)
def test_unsafe_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=named):
        Settings(data_dir=tmp_path)
