"""Rate limits (``spec/api.md`` §9): which limit a request falls under, whose budget it spends, and
the check itself.

Rules (moving windows, :mod:`iotflow.ratelimit.window`), each with its own budget:

- ``registration``: ``POST /devices/register``, ``IOTFLOW_RATE_LIMIT_REGISTRATION`` (10) per 5 minutes
  per client IP;
- ``telemetry``: the three telemetry write endpoints, ``IOTFLOW_RATE_LIMIT_TELEMETRY`` (6000) per
  minute per device (its API key);
- ``heartbeat``: ``POST /devices/heartbeat``, ``IOTFLOW_RATE_LIMIT_HEARTBEAT`` (60) per minute per device;
- ``login``: ``POST /auth/login``, ``IOTFLOW_RATE_LIMIT_LOGIN`` (10) per minute per client IP and per
  username (checked by the endpoint, which reads the username);
- ``default``: every other ``/api/v1`` call, ``IOTFLOW_RATE_LIMIT_PER_MINUTE`` (600) per minute per
  credential: the user, admin, the API key, else the client IP.

A refused request raises :class:`~iotflow.errors.RateLimited` (429 with ``Retry-After``); every
limited response carries ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (epoch seconds when the
oldest counted request leaves the window). :mod:`iotflow.ratelimit.hooks` makes one check per request
before the endpoint runs.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from iotflow.auth.tokens import TokenCodec
from iotflow.config import Settings
from iotflow.errors import IoTFlowError, RateLimited
from iotflow.ratelimit.window import MemoryWindow, Window

RawHeaders = list[tuple[bytes, bytes]]

#: where a request's X-RateLimit-* headers wait for the response (an ASGI scope key)
SCOPE_KEY = "iotflow.ratelimit"

_TOKEN_CACHE_SIZE = 10_000


class Rule(NamedTuple):
    name: str
    amount: int
    window: int  # seconds
    limit_header: bytes


def _rule(name: str, amount: int, window: int) -> Rule:
    return Rule(name, amount, window, str(amount).encode())


# (method, path template without parameter types) → rule name; everything else under /api/v1 is
# "default". Login is checked inside its endpoint (it needs the username from the body).
_ROUTES = {
    ("POST", "/api/v1/devices/register"): "registration",
    ("POST", "/api/v1/devices/telemetry"): "telemetry",
    ("POST", "/api/v1/telemetry"): "telemetry",
    ("POST", "/api/v1/mqtt/telemetry/{device_id}"): "telemetry",
    ("POST", "/api/v1/devices/heartbeat"): "heartbeat",
    ("POST", "/api/v1/auth/login"): "login",
}
_PARAM_TYPE = re.compile(r"\{(\w+):[^}]*\}")


def plain_template(path_template: str) -> str:
    """``/telemetry/{device_id:int}`` → ``/telemetry/{device_id}``."""
    return _PARAM_TYPE.sub(r"{\1}", path_template)


def client_ip(request: Any) -> str:
    client = request.client
    return client.host if client is not None else "unknown"


def _scope_ip(scope: Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimits:
    def __init__(
        self,
        settings: Settings,
        window: Window | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        """``on_refused`` is told the rule's name of every refused request (metrics)."""
        self.enabled = settings.rate_limits
        self._window: Window = window if window is not None else MemoryWindow()
        self._on_refused = on_refused
        self.registration = _rule("registration", settings.rate_limit_registration, 300)
        self.login = _rule("login", settings.rate_limit_login, 60)
        self.telemetry = _rule("telemetry", settings.rate_limit_telemetry, 60)
        self.heartbeat = _rule("heartbeat", settings.rate_limit_heartbeat, 60)
        self.default = _rule("default", settings.rate_limit_per_minute, 60)
        self._by_name = {
            r.name: r for r in (self.registration, self.login, self.telemetry, self.heartbeat, self.default)
        }
        self._route_rules: dict[tuple[str, str], Rule] = {}
        self._admin_token = (settings.admin_token or "").encode()
        self._codec = TokenCodec(settings.secret_key or "", settings.token_ttl)
        self._token_users: dict[str, int] = {}

    # ----- which rule, whose budget ------------------------------------------------------------------

    def rule_for(self, method: str, path_template: str) -> Rule:
        """The rule of a route (cached: one dict lookup per request)."""
        found = self._route_rules.get((method, path_template))
        if found is None:
            name = _ROUTES.get((method, plain_template(path_template)), "default")
            found = self._route_rules[(method, path_template)] = self._by_name[name]
        return found

    def identity(self, rule: Rule, scope: Any) -> str:
        """Whose budget a request spends: per IP, per device key, or per credential."""
        if rule is self.registration:
            return "ip:" + _scope_ip(scope)
        api_key = authorization = None
        for name, value in scope["headers"]:  # the first of each, as authentication reads them
            if name == b"x-api-key" and api_key is None:
                api_key = value.strip()
            elif name == b"authorization" and authorization is None:
                authorization = value
        if authorization is not None and rule is self.default:
            scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
            scheme, token = scheme.lower(), token.strip()
            if (
                scheme == "admin"
                and self._admin_token
                and hmac.compare_digest(token.encode(), self._admin_token)
            ):
                return "admin"
            if scheme == "bearer" and token:
                user = self._user_of(token)
                if user is not None:
                    return f"user:{user}"
        if api_key:
            # one key per device: the key's digest is the device's budget (never the key itself)
            return "key:" + hashlib.sha256(api_key).hexdigest()
        return "ip:" + _scope_ip(scope)

    def _user_of(self, token: str) -> int | None:
        user = self._token_users.get(token)
        if user is None:
            try:
                user = self._codec.decode(token).user_pk
            except IoTFlowError:
                return None  # not a valid token: the client's IP pays (and the endpoint says 401)
            if len(self._token_users) >= _TOKEN_CACHE_SIZE:
                self._token_users.clear()
            self._token_users[token] = user
        return user

    # ----- the check ---------------------------------------------------------------------------------

    async def hit(self, rule: Rule, identity: str) -> RawHeaders:
        """Count one request; raise 429 when over. Returns the X-RateLimit-* headers."""
        state = await self._window.hit(f"{rule.name}:{identity}", rule.amount, rule.window)
        reset = math.ceil(state.reset_at)
        if not state.allowed:
            if self._on_refused is not None:
                self._on_refused(rule.name)
            retry = max(1, math.ceil(state.reset_at - time.time()))
            raise RateLimited(
                f"Maximum {rule.amount} requests per {rule.window} seconds",
                headers={
                    "X-RateLimit-Limit": str(rule.amount),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                    "Retry-After": str(retry),
                },
                extra={"retry_after": retry, "limit": rule.amount, "window": rule.window},
            )
        return [
            (b"x-ratelimit-limit", rule.limit_header),
            (b"x-ratelimit-remaining", str(state.remaining).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
        ]

    async def check_login(self, request: Any, username: str) -> None:
        """Login: 10/min per client IP and per username; the tighter budget goes in the headers."""
        if not self.enabled:
            return
        headers = await self.hit(self.login, "ip:" + client_ip(request))
        if username:
            per_user = await self.hit(self.login, "user:" + username.lower())
            if int(per_user[1][1]) < int(headers[1][1]):
                headers = per_user
        request.scope[SCOPE_KEY] = headers
