"""Rate limits (``spec/api.md`` §9) with the ``limits`` library: moving windows, in-process storage.

Each check raises :class:`~iotflow.errors.RateLimited` (429 with ``Retry-After``) when over the limit.
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from iotflow.config import Settings
from iotflow.errors import RateLimited


def client_ip(request: Any) -> str:
    client = request.client
    return client.host if client is not None else "unknown"


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.registration = parse("10/5 minutes")
        self.login = RateLimitItemPerMinute(10)
        self.telemetry = RateLimitItemPerMinute(settings.rate_limit_telemetry)
        self.heartbeat = RateLimitItemPerMinute(60)
        self.default = RateLimitItemPerMinute(settings.rate_limit_per_minute)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> dict[str, str]:
        """Count one request; raise 429 when over. Returns the X-RateLimit-* headers."""
        if not self.enabled:
            return {}
        allowed = await self._limiter.hit(item, *identifiers)
        stats = await self._limiter.get_window_stats(item, *identifiers)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(max(0, stats.remaining)),
            "X-RateLimit-Reset": str(int(stats.reset_time)),
        }
        if not allowed:
            window = item.get_expiry()
            raise RateLimited(
                f"Maximum {item.amount} requests per {window} seconds",
                headers={**headers, "Retry-After": str(max(1, reset))},
                extra={"retry_after": max(1, reset), "limit": item.amount, "window": window},
            )
        return headers

    async def check_login(self, request: Any, username: str) -> None:
        await self.hit(self.login, "login-ip", client_ip(request))
        if username:
            await self.hit(self.login, "login-user", username.lower())
