"""Serving a timed stream of jobs through the real broker, for the benchmarks that
measure what a job waits (bench/serving_bench.py, bench/sim_to_real_bench.py)."""

from __future__ import annotations

import threading
import time


def feed_and_serve(spec, bootstrap: str, prefix: str, tenant: str, jobs: list[dict],
                   offsets, *, max_records: int, idle_exit_s: float):  # fmt: skip
    """Submit `jobs` (`JobClient.submit` arguments) for `tenant` at `offsets` (seconds
    from now) on topics `prefix.*` while a `ServingDriver` serves them, until it has
    been idle for `idle_exit_s`. Returns the closed driver (its runtime's core keeps
    what the core recorded) and the tenant's results."""
    from adapters.job_client import JobClient
    from adapters.kafka_io import Topics
    from pipelines.serving_driver import ServingDriver

    topics = Topics(prefix)
    driver = ServingDriver(spec, bootstrap, topics, max_records=max_records,
                           progress=lambda *_: None)  # fmt: skip
    client = JobClient(bootstrap, topics)

    def feed() -> None:
        t0 = time.perf_counter()
        for job, at in zip(jobs, offsets, strict=True):
            while (left := at - (time.perf_counter() - t0)) > 0:
                time.sleep(min(left, 0.005))
            client.submit(tenant=tenant, **job)
            client.flush()

    feeder = threading.Thread(target=feed)
    feeder.start()
    driver.run(idle_exit_s=idle_exit_s)
    feeder.join()
    driver.close()
    return driver, [r for r in driver.store.all() if r.tenant == tenant]
