"""MQTT status and counters over HTTP (``spec/api.md`` §10)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State

from iotflow.auth.guards import require_admin
from iotflow.http import runtime
from iotflow.timeutil import format_ts, now_ms

Req = Request[Any, Any, State]


@get("/mqtt/status", summary="MQTT transport status (no credentials needed)")
async def mqtt_status(request: Req) -> dict[str, Any]:
    return {"status": "success", "mqtt_status": runtime(request).mqtt.status()}


@get("/mqtt/monitoring/metrics", summary="Detailed MQTT counters (admin)")
async def mqtt_metrics(request: Req) -> dict[str, Any]:
    """Connections (accepted, refused by reason, disconnects by kind), messages by topic type, rejects
    by reason, subscriptions, throughput over the last ten seconds."""
    await require_admin(request)
    return {"status": "success", "timestamp": format_ts(now_ms()), "metrics": runtime(request).mqtt.metrics()}


ROUTES = [mqtt_status, mqtt_metrics]
