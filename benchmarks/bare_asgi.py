"""The P1 baseline: a bare ASGI callable served the way ``iotflow serve`` serves IoTFlow.

    python -m benchmarks.bare_asgi --port 8001

Every request has its body read in full and gets ``201`` with a small JSON body, except
``GET /health`` which gets ``200``. No framework, no parsing, no storage: the ceiling that uvicorn
plus the load generator allow on this machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CREATED_BODY = b'{"message":"Telemetry data received successfully","points":1}'
HEALTH_BODY = b'{"status":"healthy"}'


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    if scope["method"] == "GET" and scope["path"] == "/health":
        status, body = 200, HEALTH_BODY
    else:
        status, body = 201, CREATED_BODY
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the bare ASGI baseline app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    from iotflow.httpserver import uvicorn_options

    # The same uvicorn.run options as ``iotflow serve`` (src/iotflow/cli.py).
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options())


if __name__ == "__main__":
    main()
