"""``GET /metrics``: Prometheus text exposition (``spec/api.md`` §10).

Admin credentials are required unless ``IOTFLOW_METRICS_PUBLIC=true``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State

from iotflow.auth.guards import require_admin
from iotflow.http import runtime

Req = Request[Any, Any, State]
#: the Prometheus text format 0.0.4 (Litestar adds "; charset=utf-8")
CONTENT_TYPE = "text/plain; version=0.0.4"


@get("/metrics", summary="Prometheus metrics (admin, or public with IOTFLOW_METRICS_PUBLIC=true)")
async def metrics(request: Req) -> Response[bytes]:
    rt = runtime(request)
    if not rt.settings.metrics_public:
        await require_admin(request)
    return Response(content=await rt.metrics.render(rt), media_type=CONTENT_TYPE)


ROUTES = [metrics]
