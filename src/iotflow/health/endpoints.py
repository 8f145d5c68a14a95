"""Root, health and status endpoints (``spec/api.md`` §10)."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State

from iotflow import __version__
from iotflow.errors import ValidationFailed
from iotflow.http import query_bool, query_str, runtime
from iotflow.timeutil import format_ts, now_ms

Req = Request[Any, Any, State]
CHECKS: tuple[str, ...] = ("database", "telemetry", "cache", "mqtt")


@get("/", summary="What this server is and where its endpoints are")
async def root() -> dict[str, Any]:
    return {
        "name": "IoTFlow",
        "version": __version__,
        "description": "Self-hosted IoT device connectivity platform",
        "endpoints": {
            "health": "/health",
            "status": "/status",
            "devices": "/api/v1/devices",
            "register_device": "/api/v1/devices/register",
            "telemetry": "/api/v1/telemetry",
            "telemetry_status": "/api/v1/telemetry/status",
            "admin": "/api/v1/admin",
        },
        "documentation": "/schema",
    }


async def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        extra = await check()
        healthy = True
    except Exception as exc:
        extra, healthy = {"error": str(exc) or type(exc).__name__}, False
    return {"healthy": healthy, **extra, "response_time_ms": round((time.perf_counter() - started) * 1000, 2)}


async def status_body(request: Req, include: tuple[str, ...] = CHECKS) -> tuple[dict[str, Any], int]:
    rt = runtime(request)

    async def database() -> dict[str, Any]:
        async with rt.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return {"backend": rt.engine.dialect.name}

    async def telemetry() -> dict[str, Any]:
        await rt.store.ping()
        return {"backend": rt.store.backend, "queue_depth": rt.pipeline.queue_depth}

    async def cache() -> dict[str, Any]:
        return {"backend": rt.cache.backend}

    async def mqtt() -> dict[str, Any]:
        st = rt.mqtt.status()
        if st["mode"] != "disabled" and not st["connected"]:
            raise RuntimeError(f"the {st['mode']} MQTT transport is not connected")
        return {
            "mode": st["mode"],
            "enabled": st["mode"] != "disabled",
            "clients_connected": st["clients_connected"],
        }

    funcs = {"database": database, "telemetry": telemetry, "cache": cache, "mqtt": mqtt}
    checks = {name: await _timed(funcs[name]) for name in include}
    required_ok = all(checks[n]["healthy"] for n in ("database", "telemetry") if n in checks)
    optional_ok = all(c["healthy"] for c in checks.values())
    status = "healthy" if required_ok and optional_ok else ("degraded" if required_ok else "unhealthy")
    now = now_ms()
    total, online = await rt.devices.online_counts() if required_ok else (0, 0)
    body = {
        "status": status,
        "timestamp": format_ts(now),
        "version": __version__,
        "uptime_seconds": round(time.time() - rt.started_at, 1),
        "checks": checks,
        "metrics": {
            "devices": {"total": total, "online": online, "offline": total - online},
            "ingest": {
                "queue_depth": rt.pipeline.queue_depth,
                "points_committed": rt.pipeline.stats.points_committed,
                "batches_committed": rt.pipeline.stats.batches_committed,
                "points_per_second": rt.pipeline.stats.points_per_second(),
            },
        },
    }
    return body, 503 if status == "unhealthy" else 200


@get("/health", summary="Liveness; ?detailed=true for the full status")
async def health(request: Req) -> Response[dict[str, Any]]:
    include_raw = query_str(request, "include")
    if query_bool(request, "detailed", False) or include_raw:
        include = CHECKS
        if include_raw:
            include = tuple(i.strip() for i in include_raw.split(",") if i.strip())
            unknown = [i for i in include if i not in CHECKS]
            if unknown:
                raise ValidationFailed(
                    "include", f"Unknown check(s) {', '.join(unknown)}; valid: {', '.join(CHECKS)}"
                )
        body, code = await status_body(request, include)
        return Response(body, status_code=code)
    return Response({"status": "healthy", "message": "IoTFlow is running", "version": __version__})


@get("/status", summary="Health of every part, device counts and ingest figures")
async def status(request: Req) -> Response[dict[str, Any]]:
    body, code = await status_body(request)
    return Response(body, status_code=code)


ROUTES = [root, health, status]
