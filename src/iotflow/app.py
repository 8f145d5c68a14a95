"""The Litestar application: routes, error rendering, OpenAPI, and the lifespan that owns the Runtime."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from iotflow import __version__
from iotflow.admin.endpoints import ROUTES as ADMIN_ROUTES
from iotflow.alerts.endpoints import ROUTES as ALERT_ROUTES
from iotflow.background import finish
from iotflow.commands.endpoints import ROUTES as COMMAND_ROUTES
from iotflow.config import Settings
from iotflow.devices.endpoints import ROUTES as DEVICE_ROUTES
from iotflow.events.endpoints import ROUTES as EVENT_ROUTES
from iotflow.groups.endpoints import ROUTES as GROUP_ROUTES
from iotflow.health.endpoints import ROUTES as HEALTH_ROUTES
from iotflow.http import render_error
from iotflow.metrics.endpoints import ROUTES as METRICS_ROUTES
from iotflow.metrics.middleware import MetricsMiddleware
from iotflow.mqtt.endpoints import ROUTES as MQTT_ROUTES
from iotflow.ratelimit.hooks import check_rate_limit
from iotflow.runtime import Runtime, open_runtime
from iotflow.telemetry.endpoints import ROUTES as TELEMETRY_ROUTES
from iotflow.telemetry.fast_reads import FastReads
from iotflow.users.endpoints import ROUTES as USER_ROUTES

log = logging.getLogger(__name__)


def _tune_gc() -> None:
    """Keep the garbage collector from pausing request handling.

    Under load the default thresholds ran a full collection about once a second, each pausing the
    event loop for ~85 ms while walking every long-lived object. Freezing what start-up created moves
    it out of the collector's view, and a larger young-generation threshold makes collections rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _sweep_orphans(rt: Runtime) -> None:
    """Telemetry left behind by devices deleted just before the server stopped goes at start-up."""
    try:
        await rt.devices.sweep_orphans()
    except Exception as exc:  # the next start tries again
        log.warning("could not look for the telemetry of deleted devices: %s", exc)


def fast_paths(settings: Settings) -> bool:
    """Whether telemetry POSTs and a device's own latest and history reads skip the framework
    (IOTFLOW_HTTP_FASTPATH; not with CORS, whose headers the framework adds)."""
    return settings.http_fastpath and not settings.cors_origins


def create_app(settings: Settings) -> Litestar:
    """Build the app for complete settings (see :func:`iotflow.config.prepare_data_dir`)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_runtime(settings) as rt:
            app.state.runtime = rt
            _tune_gc()
            sweep = asyncio.create_task(_sweep_orphans(rt), name="iotflow-orphan-sweep")
            try:
                yield
            finally:
                await finish([sweep])

    api = Router(
        path="/api/v1",
        route_handlers=[
            *USER_ROUTES,
            *DEVICE_ROUTES,
            *TELEMETRY_ROUTES,
            *GROUP_ROUTES,
            *ALERT_ROUTES,
            *COMMAND_ROUTES,
            *EVENT_ROUTES,
            *ADMIN_ROUTES,
            *MQTT_ROUTES,
        ],
        before_request=check_rate_limit,
    )
    cors = None
    if settings.cors_origins:
        cors = CORSConfig(allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()])
    handlers: dict[Any, Any] = {Exception: render_error}
    app = Litestar(
        route_handlers=[*HEALTH_ROUTES, *METRICS_ROUTES, api],
        lifespan=[lifespan],
        exception_handlers=handlers,
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors,
        openapi_config=OpenAPIConfig(
            title="IoTFlow",
            version=__version__,
            description="Devices, telemetry over HTTP, history, latest values and aggregates.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/swagger"), JsonRenderPlugin(path="/openapi.json")],
        ),
        logging_config=None,
    )
    # outside routing: counts the requests no route matches too, and adds the rate-limit headers
    handler = app.asgi_handler
    if fast_paths(settings):
        handler = FastReads(handler)  # a device's own latest values and history without the framework
    app.asgi_handler = MetricsMiddleware(handler)
    return app
