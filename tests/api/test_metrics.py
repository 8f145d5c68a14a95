"""GET /metrics (spec §10): access, Prometheus text format, and counters that match what was sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN, key_headers, register
from tests.server import Server

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: httpx.Client, headers: dict[str, str] = ADMIN) -> Samples:
    r = api.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_need_admin(api: httpx.Client) -> None:
    r = api.get("/metrics")
    assert r.status_code == 401 and r.json()["error"] == "Admin token required"
    assert api.get("/metrics", headers={"Authorization": "admin wrong"}).status_code == 403
    r = api.post(
        "/api/v1/auth/register",
        json={"username": "metrics-reader", "email": "metrics-reader@example.com", "password": "long enough"},
    )
    assert r.status_code == 201, r.text
    assert api.get("/metrics", headers={"Authorization": f"Bearer {r.json()['token']}"}).status_code == 403
    assert value(scrape(api), "iotflow_build_info", version=api.get("/health").json()["version"]) == 1


def test_metrics_can_be_public(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", IOTFLOW_METRICS_PUBLIC="true").start()
    try:
        with srv.client() as client:
            assert "iotflow_http_requests_total" in {name for name, _ in scrape(client, headers={})}
    finally:
        srv.stop()


def test_counters_match_what_was_sent(api: httpx.Client) -> None:
    before = scrape(api)
    device = register(api)
    route = "/api/v1/devices/telemetry"
    n, k = 4, 3
    for i in range(n):
        r = api.post(route, json={"data": {f"m{j}": i + j for j in range(k)}}, headers=key_headers(device))
        assert r.status_code == 201, r.text
    assert api.post(route, json={"data": {}}, headers=key_headers(device)).status_code == 400
    assert api.post(route, content=b"{not json", headers=key_headers(device)).status_code == 400
    assert api.post(route, json={"data": {"x": 1}}, headers={"X-API-Key": "nope" * 8}).status_code == 401
    assert api.post(route, json={"data": {"x": 1}}).status_code == 401
    assert api.get("/no/such/path").status_code == 404
    inactive = register(api)
    r = api.put(f"/api/v1/admin/devices/{inactive['id']}/status", json={"status": "inactive"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert api.post(route, json={"data": {"x": 1}}, headers=key_headers(inactive)).status_code == 403
    after = scrape(api)

    http = {"transport": "http"}
    assert delta(before, after, "iotflow_telemetry_points_total", **http) == n * k
    assert delta(before, after, "iotflow_telemetry_messages_total", **http) == n
    assert delta(before, after, "iotflow_telemetry_rejected_total", reason="bad_payload", **http) == 2
    assert delta(before, after, "iotflow_telemetry_rejected_total", reason="auth", **http) == 2
    assert delta(before, after, "iotflow_telemetry_rejected_total", reason="inactive", **http) == 1
    requests = "iotflow_http_requests_total"
    assert delta(before, after, requests, route=route, method="POST", status="201") == n
    assert delta(before, after, requests, route=route, method="POST", status="400") == 2
    assert delta(before, after, requests, route=route, method="POST", status="401") == 2
    assert delta(before, after, requests, route=route, method="POST", status="403") == 1
    assert delta(before, after, requests, route="/api/v1/devices/register", method="POST", status="201") == 2
    assert delta(before, after, requests, route="unmatched", method="GET", status="404") == 1
    assert (
        delta(before, after, requests, route="/metrics", method="GET", status="200") == 1
    )  # the first scrape
    latency = "iotflow_http_request_duration_seconds"
    assert delta(before, after, f"{latency}_count", route=route, method="POST") == n + 5
    assert delta(before, after, f"{latency}_bucket", route=route, method="POST", le="+Inf") == n + 5
    assert delta(before, after, f"{latency}_sum", route=route, method="POST") > 0
    # every accepted point went through one committed batch
    assert delta(before, after, "iotflow_ingest_batch_points_sum") == n * k
    assert 1 <= delta(before, after, "iotflow_ingest_batch_points_count") <= n
    assert delta(before, after, "iotflow_ingest_commit_seconds_count") == delta(
        before, after, "iotflow_ingest_batch_points_count"
    )
    assert value(after, "iotflow_ingest_queue_points") == 0


def test_device_and_cache_figures(api: httpx.Client) -> None:
    before = scrape(api)
    device = register(api)
    assert api.post("/api/v1/devices/heartbeat", headers=key_headers(device)).status_code == 200
    after = scrape(api)
    assert delta(before, after, "iotflow_devices_registered") == 1
    stats: dict[str, Any] = api.get("/api/v1/admin/stats", headers=ADMIN).json()["device_stats"]
    assert value(after, "iotflow_devices_registered") == stats["total"]
    assert 1 <= value(after, "iotflow_devices_online") <= stats["total"]
    assert ("iotflow_cache_entries", frozenset({("backend", "memory"), ("kind", "api_key")})) in after
    ratio = value(after, "iotflow_cache_hit_ratio", backend="memory", kind="api_key")
    assert 0 < ratio <= 1
    assert "process_resident_memory_bytes" in {name for name, _ in after}
