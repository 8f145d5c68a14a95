"""The Prometheus metrics of one running IoTFlow (``spec/api.md`` §10), in a registry of its own.

Counted as things happen: HTTP requests (by route template, method and status) and their latency,
telemetry messages, points and rejects by transport, refusals by rate-limit rule, ingest batch sizes
and commit times. Read when scraped: ingest queue depth, devices registered and online, cache figures,
process figures. MQTT series appear with the MQTT transport.

The per-request series are plain integers in dicts, turned into metric families only when scraped:
counting a request costs a dict lookup and a few additions (no locks: everything runs on the event
loop, the scrape included).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from iotflow import __version__
from iotflow.errors import Forbidden
from iotflow.ratelimit.service import plain_template

if TYPE_CHECKING:
    from iotflow.runtime import Runtime

UNMATCHED = "unmatched"
TRANSPORTS = ("http",)
#: why a telemetry message was refused (by the HTTP status it got)
REJECT_REASONS = {
    400: "bad_payload",
    401: "auth",
    403: "forbidden",
    413: "too_large",
    415: "bad_payload",
    429: "rate_limited",
    503: "unavailable",  # ingest queue full, shutting down, or the store is down
}
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def reject_reason(exc: BaseException) -> str:
    if isinstance(exc, Forbidden) and exc.title == "Device inactive":
        return "inactive"
    return REJECT_REASONS.get(getattr(exc, "status_code", 500), "error")


class _HotCounters(Collector):
    """Requests and telemetry, counted in plain dicts and exported as metric families on scrape."""

    def __init__(self) -> None:
        # (path template or None, method, status) → [count, seconds sum, per-bucket counts..., +Inf]
        self.requests: dict[tuple[str | None, str, int], list[float]] = {}
        self.messages: dict[str, int] = dict.fromkeys(TRANSPORTS, 0)
        self.points: dict[str, int] = dict.fromkeys(TRANSPORTS, 0)
        self.rejected: dict[tuple[str, str], int] = {
            (t, r): 0 for t in TRANSPORTS for r in (*dict.fromkeys(REJECT_REASONS.values()), "inactive")
        }

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "iotflow_http_requests",
            "HTTP requests by route template (unmatched: no route), method and status",
            labels=["route", "method", "status"],
        )
        latency = HistogramMetricFamily(
            "iotflow_http_request_duration_seconds",
            "Time from request to the end of the response, by route template and method",
            labels=["route", "method"],
        )
        by_status: dict[tuple[str, str, str], float] = defaultdict(float)
        by_route: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * (len(LATENCY_BUCKETS) + 3))
        for (template, method, status), counts in list(self.requests.items()):
            route = UNMATCHED if template is None else plain_template(template)
            by_status[(route, method, str(status))] += counts[0]
            total = by_route[(route, method)]
            for i, n in enumerate(counts):
                total[i] += n
        for labels, n in by_status.items():
            requests.add_metric(list(labels), n)
        for (route, method), counts in by_route.items():
            cumulative, buckets = 0.0, []
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), counts[2:], strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            latency.add_metric([route, method], buckets, counts[1])
        yield requests
        yield latency
        messages = CounterMetricFamily(
            "iotflow_telemetry_messages", "Telemetry messages accepted (stored)", labels=["transport"]
        )
        points = CounterMetricFamily(
            "iotflow_telemetry_points", "Telemetry points accepted (stored)", labels=["transport"]
        )
        for transport in self.messages:
            messages.add_metric([transport], self.messages[transport])
            points.add_metric([transport], self.points[transport])
        rejected = CounterMetricFamily(
            "iotflow_telemetry_rejected",
            "Telemetry messages refused, by reason: bad_payload, auth, forbidden, inactive, too_large, "
            "rate_limited, unavailable (queue full or store down), error",
            labels=["transport", "reason"],
        )
        for (transport, reason), n in self.rejected.items():
            rejected.add_metric([transport, reason], n)
        yield messages
        yield points
        yield rejected


class Metrics:
    def __init__(self) -> None:
        # no *_created series: they would double the series count for nothing
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = reg = CollectorRegistry()
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        Gauge("iotflow_build_info", "IoTFlow version", ["version"], registry=reg).labels(__version__).set(1)
        self._hot = _HotCounters()
        reg.register(self._hot)
        self._limited = Counter(
            "iotflow_rate_limited", "Requests refused with 429, by rate-limit rule", ["rule"], registry=reg
        )
        self._batch_points = Histogram(
            "iotflow_ingest_batch_points",
            "Points per committed ingest batch",
            buckets=_BATCH_BUCKETS,
            registry=reg,
        )
        self._commit_seconds = Histogram(
            "iotflow_ingest_commit_seconds",
            "Time to write one ingest batch to the telemetry store",
            buckets=_COMMIT_BUCKETS,
            registry=reg,
        )
        self._queue = Gauge("iotflow_ingest_queue_points", "Points waiting to be committed", registry=reg)
        self._devices = Gauge("iotflow_devices_registered", "Devices registered", registry=reg)
        self._online = Gauge("iotflow_devices_online", "Devices heard from recently (online)", registry=reg)
        self._cache_entries = Gauge(
            "iotflow_cache_entries", "Entries in the cache, by kind", ["backend", "kind"], registry=reg
        )
        self._cache_hit_ratio = Gauge(
            "iotflow_cache_hit_ratio",
            "Share of cache lookups answered from the cache since start, by kind",
            ["backend", "kind"],
            registry=reg,
        )

    # ----- counted as it happens ---------------------------------------------------------------------

    def observe_request(self, path_template: str | None, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "other"
        counts = self._hot.requests.get((path_template, method, status))
        if counts is None:
            counts = self._hot.requests[(path_template, method, status)] = [0.0] * (len(LATENCY_BUCKETS) + 3)
        counts[0] += 1
        counts[1] += seconds
        counts[2 + bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def telemetry_received(self, transport: str, points: int, *, messages: int = 1) -> None:
        self._hot.messages[transport] = self._hot.messages.get(transport, 0) + messages
        self._hot.points[transport] = self._hot.points.get(transport, 0) + points

    def telemetry_rejected(self, transport: str, exc: BaseException) -> None:
        self.telemetry_rejected_reason(transport, reject_reason(exc))

    def telemetry_rejected_reason(self, transport: str, reason: str) -> None:
        key = (transport, reason)
        self._hot.rejected[key] = self._hot.rejected.get(key, 0) + 1

    def rate_limited(self, rule: str) -> None:
        self._limited.labels(rule).inc()

    def batch_committed(self, points: int, seconds: float) -> None:
        self._batch_points.observe(points)
        self._commit_seconds.observe(seconds)

    # ----- read when scraped -------------------------------------------------------------------------

    async def render(self, rt: Runtime) -> bytes:
        """The Prometheus text exposition, after reading the figures that live elsewhere."""
        self._queue.set(rt.pipeline.queue_depth)
        total, online = await rt.devices.online_counts()
        self._devices.set(total)
        self._online.set(online)
        stats: dict[str, Any] = await rt.cache.stats()
        backend = str(stats.get("backend", "unknown"))
        for kind, field in (
            ("api_key", "api_key_entries"),
            ("latest", "latest_entries"),
            ("device_status", "device_status_count"),
        ):
            if isinstance(stats.get(field), int):
                self._cache_entries.labels(backend, kind).set(stats[field])
        for kind, ratio in (stats.get("hit_rate") or {}).items():
            if isinstance(ratio, (int, float)):
                self._cache_hit_ratio.labels(backend, str(kind)).set(ratio)
        return generate_latest(self.registry)
