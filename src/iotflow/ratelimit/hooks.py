"""The rate-limit check of the ``/api/v1`` router: a ``before_request`` hook, so one limiter check per
request runs after routing (the route decides the rule) and before the endpoint.

A refused request raises :class:`~iotflow.errors.RateLimited`, rendered by the app's error handler.
The X-RateLimit-* headers of a counted request wait in its scope under
:data:`~iotflow.ratelimit.service.SCOPE_KEY`; :class:`~iotflow.metrics.middleware.MetricsMiddleware`,
which sees every response start anyway, adds them to the response (errors included).
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from iotflow.errors import RateLimited
from iotflow.http import runtime
from iotflow.ratelimit.service import SCOPE_KEY


async def check_rate_limit(request: Request[Any, Any, Any]) -> None:
    rt = runtime(request)
    limits = rt.limits
    if not limits.enabled:
        return
    scope: Any = request.scope
    rule = limits.rule_for(scope["method"], scope["path_template"])
    if rule is limits.login:
        return  # checked by the endpoint, which knows the username (per IP and per username)
    try:
        scope[SCOPE_KEY] = await limits.hit(rule, limits.identity(rule, scope))
    except RateLimited:
        if rule is limits.telemetry:
            rt.metrics.telemetry_rejected_reason("http", "rate_limited")
        raise
