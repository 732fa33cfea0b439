"""Optional Prometheus metrics for the worker (``pip install pgrelay[metrics]``, ``--metrics-port``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import ClaimedJob

__all__ = ["PrometheusMetrics"]


class PrometheusMetrics:
    """Jobs by queue/task/outcome, durations, jobs in flight and claim latency."""

    def __init__(self, registry: object | None = None) -> None:
        try:
            from prometheus_client import REGISTRY, Counter, Gauge, Histogram
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("metrics need prometheus-client: pip install 'pgrelay[metrics]'") from exc
        registry = registry or REGISTRY
        self.registry = registry
        # outcome: the SQL's attempt outcomes (succeeded, failed, timeout, lease_expired, cancelled), else
        # dead_letter (failed for good), released (handed back at shutdown), stale or unconfirmed (the ack
        # found the lease gone), error (a bug in the worker)
        self.jobs = Counter("pgrelay_jobs_total", "Jobs finished by this worker, by outcome",
                            ["queue", "task", "outcome"], registry=registry)
        self.duration = Histogram("pgrelay_job_duration_seconds", "Time from claim to outcome",
                                  ["queue", "task"], registry=registry)
        self.in_flight = Gauge("pgrelay_jobs_in_flight", "Jobs running in this worker now", registry=registry)
        self.claim_latency = Histogram("pgrelay_claim_seconds", "Duration of one consume call",
                                       registry=registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=addr, registry=self.registry)

    def claimed(self, seconds: float) -> None:
        self.claim_latency.observe(seconds)

    def started(self, job: ClaimedJob) -> None:
        self.in_flight.inc()

    def finished(self, job: ClaimedJob, outcome: str, seconds: float) -> None:
        self.in_flight.dec()
        self.jobs.labels(job.queue, job.task, outcome).inc()
        self.duration.labels(job.queue, job.task).observe(seconds)
