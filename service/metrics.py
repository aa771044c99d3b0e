"""Prometheus metrics, `gmaivl_*` only, with bounded labels.

Labels are drawn from closed sets: model (the served model ids), route (the
route template, never the raw path), status class (2xx/4xx/5xx), lane, reason
(an error code), tenant (only tenants declared in the key file, at most
GMAIVL_MAX_TENANT_LABELS of them). Never a user, patient, study, request id or free text.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from service.core.lanes import Lane

# No `*_created` series per counter and histogram: they double a scrape for a value
# (process start) nobody graphs. Process-wide, as vLLM does it.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Labelled:
    """A labelled metric whose children are looked up in a plain dict.

    prometheus_client's `labels()` validates and locks on every call; ours are
    called several times per request and per token, with label values from
    closed sets, so each child is resolved once.
    """

    def __init__(self, metric: Counter | Gauge | Histogram) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class ServiceMetrics:
    """All series of one process, on their own registry (one per app, so tests don't collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Labelled(
            Counter(
                "gmaivl_requests",
                "HTTP requests answered.",
                ["route", "status_class", "model"],
                registry=r,
            )
        )
        self.request_duration = Labelled(
            Histogram(
                "gmaivl_request_duration_seconds",
                "Time from request to last byte.",
                ["route", "model"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.time_to_first_token = Labelled(
            Histogram(
                "gmaivl_time_to_first_token_seconds",
                "Time from request to first generated text.",
                ["model", "lane"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.in_flight = Labelled(
            Gauge("gmaivl_in_flight_requests", "Requests being handled.", ["route"], registry=r)
        )
        self.queue_depth = Labelled(
            Gauge(
                "gmaivl_queue_depth",
                "Jobs waiting, per model and priority lane.",
                ["model", "lane"],
                registry=r,
            )
        )
        self.queue_wait = Labelled(
            Histogram(
                "gmaivl_queue_wait_seconds",
                "Time a job waited before a worker took it.",
                ["lane"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.prompt_tokens = Labelled(
            Counter("gmaivl_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        )
        self.completion_tokens = Labelled(
            Counter("gmaivl_completion_tokens", "Tokens generated.", ["model"], registry=r)
        )
        self.image_preprocess = Histogram(
            "gmaivl_image_preprocess_seconds",
            "Decoding and normalizing one request's images.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.rejections = Labelled(
            Counter(
                "gmaivl_rejections",
                "Requests refused, by reason (an error code).",
                ["reason"],
                registry=r,
            )
        )
        self.tenant_rejections = Labelled(
            Counter(
                "gmaivl_tenant_rejections",
                "Requests refused by a tenant's policy, by tenant (declared tenants only, "
                "up to GMAIVL_MAX_TENANT_LABELS; the rest are 'other') and reason.",
                ["tenant", "reason"],
                registry=r,
            )
        )
        self.engine_aborts = Labelled(
            Counter(
                "gmaivl_engine_aborts",
                "Running generations aborted (cancel or deadline).",
                ["reason"],
                registry=r,
            )
        )
        self.queue_oldest_age = Labelled(
            Gauge(
                "gmaivl_queue_oldest_age_seconds",
                "Wait of the oldest queued job, per model and lane (with depth, the "
                "autoscaling signal).",
                ["model", "lane"],
                registry=r,
            )
        )
        self.live_workers = Labelled(
            Gauge(
                "gmaivl_live_workers",
                "Workers of each model with a fresh heartbeat.",
                ["model"],
                registry=r,
            )
        )
        self.redeliveries = Counter(
            "gmaivl_redeliveries",
            "Jobs taken over from a worker that stopped answering.",
            registry=r,
        )
        self.dead_letters = Counter(
            "gmaivl_dead_letters",
            "Jobs given up after every allowed delivery failed.",
            registry=r,
        )
        self.dicom_reads = Labelled(
            Counter(
                "gmaivl_dicom_reads",
                "Study reads finished, by outcome (completed, failed, cancelled) and reason.",
                ["outcome", "reason"],
                registry=r,
            )
        )
        self.dicom_reads_running = Gauge(
            "gmaivl_dicom_reads_running",
            "Study reads this gateway is running now.",
            registry=r,
        )
        self.dicom_read_duration = Histogram(
            "gmaivl_dicom_read_duration_seconds",
            "Time from a read's submission to its end.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dicom_instances = Labelled(
            Counter(
                "gmaivl_dicom_instances_received",
                "C-STORE requests to the DICOM node, by outcome (stored, out_of_resources, "
                "malformed, failed).",
                ["outcome"],
                registry=r,
            )
        )
        self.dicom_associations = Labelled(
            Counter(
                "gmaivl_dicom_associations",
                "Associations to the DICOM node, by outcome (accepted, rejected, aborted, "
                "refused_address).",
                ["outcome"],
                registry=r,
            )
        )
        self.dicom_spool_bytes = Gauge(
            "gmaivl_dicom_spool_bytes", "Bytes the DICOM node's spool holds.", registry=r
        )
        self.dicom_studies = Labelled(
            Counter(
                "gmaivl_dicom_studies",
                "Received studies that became complete, by routing outcome (read, ignored, "
                "unmatched, no_images, refused).",
                ["outcome"],
                registry=r,
            )
        )
        self.dicom_sr_sends = Labelled(
            Counter(
                "gmaivl_dicom_sr_sends",
                "Result SR sends (C-STORE or STOW-RS), by outcome (stored, retried, failed).",
                ["outcome"],
                registry=r,
            )
        )
        self.webhook_deliveries = Labelled(
            Counter(
                "gmaivl_webhook_deliveries",
                "Read webhooks, by outcome (delivered, failed).",
                ["outcome"],
                registry=r,
            )
        )

    def set_queue_state(
        self,
        model: str,
        depths: dict[Lane, int],
        oldest_ages: dict[Lane, float],
        live_workers: int,
    ) -> None:
        """One model's queue (the labels are the known model ids: a closed set)."""
        for lane, depth in depths.items():
            self.queue_depth.labels(model, lane.value).set(depth)
        for lane, age in oldest_ages.items():
            self.queue_oldest_age.labels(model, lane.value).set(age)
        self.live_workers.labels(model).set(live_workers)


def status_class(status_code: int) -> str:
    return f"{status_code // 100}xx"
