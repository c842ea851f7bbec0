"""Prometheus metrics of the front door (`/metrics`). Labels are tenants, models, step
counts, accelerators, devices, engines and nodes: never a prompt, never a job id."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from api.job_book import JobBook
from sdaas.job_status import OUTCOMES, JobStatus

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2, 4, 15)


class _BookGauges:
    """Gauges read from the job book at scrape time: queue per accelerator, jobs running
    per device, SLO attainment over the jobs with an outcome."""

    def __init__(self, book: JobBook):
        self.book = book

    def collect(self):
        q = GaugeMetricFamily(
            "sdaas_queue_depth", "jobs planned, not started", labels=["accelerator"]
        )
        for acc, n in self.book.queued_by_accelerator().items():
            q.add_metric([acc or "unplaced"], n)
        yield q
        r = GaugeMetricFamily(
            "sdaas_running_jobs", "jobs running (in-flight batch size)", labels=["device"]
        )
        for dev, n in self.book.running_by_device().items():
            r.add_metric([dev or "unknown"], n)
        yield r
        minutes = self.book.attainment_by_minute()
        ended = sum(n for _, n, _ in minutes)
        met = sum(m for _, _, m in minutes)
        yield GaugeMetricFamily(
            "sdaas_slo_attainment",
            "share of jobs ended in the last hour that met both SLOs",
            value=met / ended if ended else 0.0,
        )


class _EngineGauges:
    """Gauges of the serving processes' engines, from their last heartbeats at scrape
    time: engines per node, kind and state; jobs running and the core-to-engine command
    latency's p99 per engine (an engine two live processes both name: summed, worst)."""

    def __init__(self, engines: Callable[[], list[dict]]):
        self.engines = engines

    def collect(self):
        rows = self.engines()
        count: dict[tuple[str, str, str], int] = {}
        running: dict[tuple[str, str], int] = {}
        p99: dict[tuple[str, str], float] = {}
        for r in rows:
            at = (r["node"], r["kind"], r["state"])
            count[at] = count.get(at, 0) + 1
            e = (r["engine"], r["node"])
            if r["running"] is not None:
                running[e] = running.get(e, 0) + r["running"]
            if r["dispatch_p99_ms"] is not None:
                p99[e] = max(p99.get(e, 0.0), r["dispatch_p99_ms"] / 1000)
        g = GaugeMetricFamily(
            "sdaas_engines", "engines by node, kind and state", labels=["node", "kind", "state"]
        )
        for labels, n in sorted(count.items()):
            g.add_metric(list(labels), n)
        yield g
        g = GaugeMetricFamily(
            "sdaas_engine_running_jobs", "jobs running on an engine", labels=["engine", "node"]
        )
        for labels, n in sorted(running.items()):
            g.add_metric(list(labels), n)
        yield g
        g = GaugeMetricFamily(
            "sdaas_engine_dispatch_p99_seconds",
            "core-to-engine command latency, p99",
            labels=["engine", "node"],
        )
        for labels, s in sorted(p99.items()):
            g.add_metric(list(labels), s)
        yield g


class ApiMetrics:
    def __init__(self, book: JobBook, engines: Callable[[], list[dict]] | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "sdaas_jobs",
            "jobs by outcome (accepted at the door, then done/rejected/failed/cancelled)",
            ["tenant", "outcome"],
            registry=r,
        )
        self.refused = Counter(
            "sdaas_requests_refused", "requests refused at the door", ["code"], registry=r
        )
        self.latency = Histogram(
            "sdaas_job_latency_seconds",
            "submission to result, done jobs",
            ["model", "steps"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictor_error = Histogram(
            "sdaas_predictor_error_ratio",
            "observed run time / predicted latency, done jobs",
            ["model", "accelerator"],
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.submit_s = Histogram(
            "sdaas_submit_seconds",
            "POST /v1/jobs to its 202",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.ack_s = Histogram(
            "sdaas_kafka_ack_seconds",
            "a message sent to Kafka until the broker acknowledged it (part of every 202)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1),
            registry=r,
        )
        self.loop_lag = Histogram(
            "sdaas_api_loop_lag_seconds",
            "how late the API's event loop ticked (every request waits this long)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        r.register(_BookGauges(book))
        if engines is not None:
            r.register(_EngineGauges(engines))

    def outcome(self, tenant: str, event: str, result: dict) -> None:
        if event not in OUTCOMES:
            return
        self.jobs.labels(tenant, event).inc()
        if event != JobStatus.DONE.word:
            return
        model = result.get("model", "")
        self.latency.labels(model, str(result.get("steps", 0))).observe(result.get("jct_s", 0.0))
        pred = result.get("predicted_latency_s") or 0.0
        if pred > 0:
            self.predictor_error.labels(model, result.get("accelerator", "")).observe(
                result.get("run_s", 0.0) / pred
            )
