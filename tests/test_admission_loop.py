"""Admission hands jobs over from each worker's admission loop: a process that died
holding the admission lock does not leave the queue stuck, and a job whose message the
broker lost is handed over again.

Real API, worker and beat processes; beat only where the test says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from conftest import Stack, submit, wait_for_status, wait_until

from longplay import keys


def test_a_lock_left_by_a_dead_process_holds_up_admission_only_until_it_lapses(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    warm = submit(client, params={"seconds": 0.1})
    wait_for_status(client, warm["id"], {"completed"}, timeout=30)

    # As a process killed in the middle of a round leaves it: the lock, for 3 s more.
    broker = redis.Redis.from_url(deployment.redis_url)
    broker.set(keys.ADMISSION_LOCK, "dead-process", px=3000)
    submitted = time.monotonic()
    job = submit(client, params={"seconds": 0.1})
    done = wait_for_status(client, job["id"], {"completed"}, timeout=30)
    waited = time.monotonic() - submitted
    assert done["attempts"] == 1
    assert 2.0 < waited < 10.0, f"handed over {waited:.1f} s after the submit"


def test_a_job_lost_with_the_broker_is_handed_over_again(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    deployment.env.update(LONGPLAY_DISPATCH_INTERVAL="0.5", LONGPLAY_REDISPATCH_AFTER="1")
    deployment.start_api()
    deployment.start_worker(concurrency=1)  # takes CPU work only; its loop hands over all
    client = deployment.client()
    job = submit(client, "gpu_sleep", params={"seconds": 0.1})
    broker = redis.Redis.from_url(deployment.redis_url)
    queue = keys.queue_name("gpu", "normal")
    wait_until(lambda: broker.llen(queue) == 1, timeout=30)
    broker.delete(queue)  # the broker forgot it, as a Redis restarted without its data would
    deployment.stop_worker()

    deployment.env["LONGPLAY_WORKER_QUEUES"] = "gpu"
    deployment.start_beat()
    deployment.start_worker(concurrency=1)
    done = wait_for_status(client, job["id"], {"completed"}, timeout=60)
    assert done["attempts"] == 1
