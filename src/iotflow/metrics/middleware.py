"""The one wrapper every HTTP request passes through, outside routing.

It counts each request — unknown paths and refused methods included, labelled ``unmatched`` — by
route template, method and status, with its latency. And because it sees every response start, it
also adds the X-RateLimit-* headers that the rate-limit check left in the request's scope
(:data:`iotflow.ratelimit.service.SCOPE_KEY`), so that errors carry them too. One wrapper instead of
two keeps the per-request cost to one extra ``send`` layer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from iotflow.ratelimit.service import SCOPE_KEY

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        state: Any = scope
        status = 500  # what the request counts as if no response was started

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = state.get(SCOPE_KEY)
                if extra:
                    message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state["litestar_app"].state.runtime.metrics.observe_request(
                state.get("path_template"), state["method"], status, time.perf_counter() - started
            )
