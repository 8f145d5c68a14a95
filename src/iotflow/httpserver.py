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
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


def uvicorn_options() -> dict[str, Any]:
    """The ``uvicorn.run`` options of ``iotflow serve`` besides host and port (the P1 benchmark's bare
    ASGI baseline is served with them too)."""
    return {
        "http": CoalescingHttpProtocol,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
    }
