"""One beat schedules at a time: real ``longplay beat`` processes on one deployment's
Redis. A second waits while the first holds the lease, takes over when it stops, and
takes a lease at once from a beat of this host that was killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import redis
from conftest import Stack, wait_until
from harness import kill_group

from longplay import keys
from longplay.broker.single_beat import LEASE_SECONDS, RENEW_EVERY

BEAT = [sys.executable, "-m", "longplay", "beat"]


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)  # the lease is Redis'
def test_a_second_beat_waits_and_takes_over(database_kind: str, tmp_path: Path) -> None:
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        client = redis.Redis.from_url(deployment.redis_url)

        def holder() -> str:
            raw = client.get(keys.BEAT_LEASE)
            return raw.decode() if raw else ""

        deployment.spawn("first", BEAT, deployment.env)
        first = deployment.processes["first"]
        wait_until(lambda: holder().endswith(f":{first.pid}"), timeout=60)
        deployment.spawn("second", BEAT, deployment.env)
        second = deployment.processes["second"]
        second_log = deployment.data_dir / "second.log"
        wait_until(lambda: "schedules already; this one waits" in second_log.read_text())
        time.sleep(RENEW_EVERY + 1)  # a renewal goes by: the first keeps its lease
        assert holder().endswith(f":{first.pid}")
        assert "Starting" not in second_log.read_text(), "the second does not schedule"

        deployment.stop("first")  # a clean stop gives the lease back: no lapse to wait
        stopped = time.monotonic()
        wait_until(lambda: holder().endswith(f":{second.pid}"), timeout=LEASE_SECONDS)
        assert time.monotonic() - stopped < RENEW_EVERY + 3
        wait_until(lambda: "beat: Starting" in second_log.read_text(), timeout=30)
        # The handover shows in the logs, on both sides.
        gave = "stops and gives back the lease: a standby takes over"
        assert gave in (deployment.data_dir / "first.log").read_text()
        assert f":{second.pid} holds the lease and schedules" in second_log.read_text()

        # Killed, it cannot give the lease back; a beat of this host finds it gone.
        kill_group(second)
        second.wait(10)
        deployment.spawn("third", BEAT, deployment.env)
        third = deployment.processes["third"]
        wait_until(lambda: holder().endswith(f":{third.pid}"), timeout=LEASE_SECONDS - 5)
        third_log = (deployment.data_dir / "third.log").read_text()
        assert f"beat {holder().rpartition(':')[0]}:{second.pid} was gone" in third_log

        # A lease that vanished (Redis restarted empty, the key evicted) is held again.
        client.delete(keys.BEAT_LEASE)
        wait_until(lambda: holder().endswith(f":{third.pid}"), timeout=RENEW_EVERY + 3)
        assert third.poll() is None, "it schedules on"
        # One another beat holds: it stops, failing, for its supervisor to start it
        # again as a standby.
        client.set(keys.BEAT_LEASE, "elsewhere:1", px=int(LEASE_SECONDS * 1000))
        assert third.wait(RENEW_EVERY + 15) == 1
        assert "another beat holds the lease now" in (deployment.data_dir / "third.log").read_text()
