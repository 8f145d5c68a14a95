"""How ``iotflow serve`` runs uvicorn: its options, and an HTTP protocol that sends a response in one write.

uvicorn's httptools protocol writes a response's status line and headers to the socket as soon as
the app sends ``http.response.start``, and the body in a second write on ``http.response.body``.
Each write is a system call that, on loopback or a busy small machine, also wakes the client; for
the small JSON answer of a telemetry POST the second one cost the server about 6 µs of system time
per request (measured: 13 → 7 µs of the event loop's system time per request, and 20-25 % more
requests per second for IoTFlow and for a bare ASGI app alike).

:class:`CoalescingHttpProtocol` is uvicorn's protocol writing through :class:`CoalescingTransport`,
which gathers what one step of the event loop writes to a connection and hands it to the real
transport in one write at the end of that step. Nothing waits longer than the current step; closing
the connection sends what was gathered first; flow control still acts on the real transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from iotflow.ingest.http_fast import ROUTES, ingest_answer
from iotflow.ratelimit.service import SCOPE_KEY

if TYPE_CHECKING:
    from litestar import Litestar

    from iotflow.runtime import Runtime

log = logging.getLogger(__name__)


class CoalescingTransport:
    """A transport whose writes within one event-loop step reach the socket as one write."""

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def flush(self) -> None:
        buffer = self._buffer
        if not buffer:
            return
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

    def eof_received(self) -> None:
        # The client closed its side after its request: asyncio closes the transport when this
        # returns, so an answer gathered in this loop step goes out now.
        self.transport.flush()  # type: ignore[attr-defined]
        super().eof_received()


class FastPathHttpProtocol(CoalescingHttpProtocol):
    """:class:`CoalescingHttpProtocol` serving the two telemetry POST routes straight from the
    connection: their requests skip the ASGI stack (framework, metrics layer) and run
    :func:`~iotflow.ingest.http_fast.ingest_answer`, the same steps as the framework's handlers.
    Everything else (parsing, keep-alive, pipelining, ``Expect: 100-continue``, flow control, the
    concurrency limit) stays uvicorn's."""

    app_of: ClassVar[Litestar]  # set on the subclass made for one app by :func:`uvicorn_options`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn applies X-Forwarded-For/-Proto from trusted proxies in a middleware around the app;
        # these requests do not pass through it, so the same middleware rewrites their scope (the
        # rate limit of a request without a usable key counts by the client's address).
        config = self.config
        self.proxy = (
            ProxyHeadersMiddleware(_scope_only, config.forwarded_allow_ips) if config.proxy_headers else None
        )

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        scope: Any = cycle.scope
        if app is self.app and scope["method"] == "POST":  # not a 503 of the concurrency limit
            message = ROUTES.get(scope["path"])
            if message is not None:
                rt = self.app_of.state.runtime
                task = self.loop.create_task(_serve_ingest(rt, cycle, message, self.proxy))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
        super()._start_asgi_task(cycle, app)


async def _scope_only(scope: Any, receive: Any, send: Any) -> None:
    """The app behind the fast path's proxy-headers step: that step only rewrites the scope."""


async def _serve_ingest(
    rt: Runtime, cycle: RequestResponseCycle, message: str, proxy: ProxyHeadersMiddleware | None
) -> None:
    """One telemetry POST, answered as uvicorn's ``run_asgi`` would answer the ASGI fast path's."""
    scope: Any = cycle.scope
    started = time.perf_counter()
    status = 500  # what the request counts as if no response was started (as the metrics layer)
    try:
        if proxy is not None:
            await proxy(scope, cycle.receive, cycle.send)
        answer = await ingest_answer(rt, scope, cycle.receive, message)
        if answer is not None:
            status = answer[0]
            await _answer(cycle, *answer, scope.get(SCOPE_KEY))
    except BaseException as exc:
        log.error("Exception in the telemetry fast path", exc_info=exc)
        if not cycle.response_started:
            await cycle.send_500_response()
        else:
            cycle.transport.close()
    finally:
        rt.metrics.observe_request(scope["path"], "POST", status, time.perf_counter() - started)
        cycle.on_response = lambda: None


_encode = msgspec.json.Encoder().encode


async def _answer(
    cycle: RequestResponseCycle,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None,
    extra: list[tuple[bytes, bytes]] | None,
) -> None:
    """Write a JSON answer and complete the request, as uvicorn's ``send`` does for the two ASGI
    messages of a response with a Content-Length (its default headers, ``connection: close`` when
    the connection ends, flow control), in one write and without the per-message checks: every
    header here is IoTFlow's own."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    payload = _encode(body)
    lines = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload))
    if headers:
        for key, text in headers.items():
            lines += (key.lower().encode("latin-1"), b": ", text.encode("latin-1"), b"\r\n")
    if extra:
        for name, value in extra:
            lines += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        lines.append(b"connection: close\r\n")
    lines += (b"\r\n", payload)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(lines))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


def uvicorn_options(app: Litestar | None = None) -> dict[str, Any]:
    """The ``uvicorn.run`` options of ``iotflow serve`` besides host and port (the P1 benchmark's bare
    ASGI baseline is served with them too). With ``app``, its telemetry POSTs are served by
    :class:`FastPathHttpProtocol`."""
    protocol: type[HttpToolsProtocol] = CoalescingHttpProtocol
    if app is not None:
        protocol = type("IoTFlowHttpProtocol", (FastPathHttpProtocol,), {"app_of": app})
    return {
        "http": protocol,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
    }
