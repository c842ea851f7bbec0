"""Benchmark the serving path on a fixed local workload (toy-world models, this CPU).

A scratch home gets the toy models, a small real sweep and trained predictors; then 60
feasible jobs (one tenant, loose SLO, min CLIP 0/30/40) are submitted to the embedded
broker at once and served in windows of at most 20 records. Reported:

* per window: wall time from reading it to its last outcome, minus its jobs' model time
  (windows overlap: the next is read while this one's jobs run);
* end-to-end JCT minus model run time per job (p50 / p95): queueing + overhead;
* sustained throughput (jobs / serving elapsed time) vs the backend's raw throughput on
  the same (model, steps) jobs run back to back, warm, without Kafka or Beam;
* light load, no window barrier: jobs submitted one at a time, LIGHT_GAP_S apart, to a
  server with windows of LIGHT_WINDOW_S: p50 of (JCT - run time) against the target of
  one window + 0.2 s (a job waits for its window to close, never for another window's
  jobs to finish).

Writes bench/results/serving_bench.json. Usage: python bench/serving_bench.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sdaas.records import model_key

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

RESULTS = Path(__file__).resolve().parent / "results"
N_JOBS = 60
PROMPT = "two small red circles on the left"


LIGHT_JOBS, LIGHT_GAP_S, LIGHT_WINDOW_S = 20, 1.0, 2.0


def light_load(settings) -> dict:
    """Jobs one at a time at light load through the real broker and `ServingDriver`:
    what a job waits beyond its own run time when the device is free."""
    from bench_serving import feed_and_serve

    from adapters.kafka_broker import EmbeddedBroker
    from pipelines.serving_setup import build_spec

    spec = build_spec(settings, window_s=LIGHT_WINDOW_S, max_backlog_s=1e9, device_processes=True)
    style = spec.planner.styles[0]
    jobs = [dict(prompt=PROMPT, style=style, latency_slo_s=60.0, min_clip=0.0, seed=i,
                 job_id=f"light-{i:02d}") for i in range(LIGHT_JOBS)]  # fmt: skip
    with EmbeddedBroker() as broker:
        _, results = feed_and_serve(spec, broker.bootstrap, "light", "light", jobs,
                                    [i * LIGHT_GAP_S for i in range(LIGHT_JOBS)],
                                    max_records=20, idle_exit_s=LIGHT_GAP_S + 4.0)  # fmt: skip
    done = [r for r in results if r.status == "done"]
    extra = [r.jct_s - r.run_s for r in done]
    target = LIGHT_WINDOW_S + 0.2
    return {
        "jobs": LIGHT_JOBS,
        "done": len(done),
        "gap_s": LIGHT_GAP_S,
        "window_s": LIGHT_WINDOW_S,
        "run_s_p50": round(pct([r.run_s for r in done], 50), 3),
        "jct_minus_run_p50_s": round(pct(extra, 50), 3),
        "jct_minus_run_p95_s": round(pct(extra, 95), 3),
        "target_p50_s": target,
        "met": len(done) == LIGHT_JOBS and pct(extra, 50) <= target,
    }


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def main() -> None:
    from adapters.job_client import JobClient
    from adapters.kafka_broker import EmbeddedBroker
    from adapters.kafka_io import Topics
    from engine.models import ServingModels
    from models.backend import GenerationRequest
    from pipelines.serving_driver import ServingDriver
    from pipelines.serving_setup import build_spec, prepare_toy_home

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        settings = prepare_toy_home(Path(tmp))
        print(f"home ready in {time.perf_counter() - t0:.0f} s (toy models, sweep, predictors)")
        spec = build_spec(settings, window_s=5.0, max_backlog_s=1e9, device_processes=True)
        styles = spec.planner.styles
        with EmbeddedBroker() as broker:
            topics = Topics("bench")
            driver = ServingDriver(spec, broker.bootstrap, topics, max_records=20, progress=print)
            client = JobClient(broker.bootstrap, topics)
            for i in range(N_JOBS):
                clip = (0.0, 30.0, 40.0)[i % 3]
                style = styles[i % len(styles)]
                client.submit(tenant="bench", prompt=PROMPT, style=style, latency_slo_s=600.0,
                              min_clip=clip, seed=i)  # fmt: skip
            client.flush()
            start = time.perf_counter()
            reports = driver.run(idle_exit_s=1.0)
            elapsed = time.perf_counter() - start
            driver.close()
        results = [r for r in driver.store.all() if r.tenant == "bench"]
        done = [r for r in results if r.status == "done"]
        # the same jobs straight through the warm backends, back to back
        models = ServingModels(spec.cards, spec.clip_path)
        raw_t0 = time.perf_counter()
        for r in done:
            key = model_key(r.model, r.model_version)
            card = spec.cards[key]
            w, h = card.resolution_pairs[0]
            backend = models.backend(key, spec.device(r.device).device)
            backend.generate(GenerationRequest((PROMPT,), (0,), r.steps, w, h, card.guidance_scale))
        raw_wall = time.perf_counter() - raw_t0
        light = light_load(settings)
        print(f"light load: {light}")
    extra = [r.jct_s - r.run_s for r in done]
    out = {
        "jobs": N_JOBS,
        "done": len(done),
        "windows": len(reports),
        "window_overhead_s": [round(r.overhead_s, 3) for r in reports],
        "window_overhead_mean_s": round(statistics.mean(r.overhead_s for r in reports), 3),
        "jct_minus_run_p50_s": round(pct(extra, 50), 3),
        "jct_minus_run_p95_s": round(pct(extra, 95), 3),
        "model_time_s": round(sum(r.run_s for r in done), 3),
        # windows overlap (no barrier): throughput over the whole serving run, reads
        # and the idle exit's last second included
        "serving_elapsed_s": round(elapsed, 3),
        "sustained_jobs_per_s": round(len(done) / elapsed, 2),
        "raw_backend_jobs_per_s": round(len(done) / raw_wall, 2),
        "throughput_ratio": round(raw_wall / elapsed, 3),
        "light_load": light,
        "load_avg_after": os.getloadavg(),
        "host": platform.node(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving_bench.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
