"""The HTTP/1.1 layer of ``iotflow serve`` (uvicorn with IoTFlow's coalescing protocol), on raw sockets:
every way a client uses a connection still gets whole, ordered answers, and a response reaches the
socket in one write."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from iotflow.httpserver import CoalescingTransport
from tests.conftest import register
from tests.server import Server


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _post(device: dict[str, Any], value: float, *, extra: str = "") -> bytes:
    body = json.dumps({"data": {"temperature": value}}).encode()
    return (
        f"POST /api/v1/devices/telemetry HTTP/1.1\r\nHost: test\r\nX-API-Key: {device['api_key']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` whole responses (status, headers, body) read off the socket, in order."""
    data = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(data) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            data += chunk
        out.append((int(status_line.split()[1]), headers, data[:length]))
        data = data[length:]
    assert data == b"", "more bytes than the responses asked for"
    return out


def test_keep_alive_connection_answers_each_request_in_turn(server: Server) -> None:
    with server.client() as api:
        device = register(api)
    with _connect(server) as sock:
        for i in range(50):
            sock.sendall(_post(device, i))
            ((status, _, body),) = _read_responses(sock, 1)
            assert status == 201, body
            assert json.loads(body)["points"] == 1
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        ((status, _, body),) = _read_responses(sock, 1)
        assert status == 200 and json.loads(body)["status"] == "healthy"


def test_pipelined_requests_get_their_answers_in_order(server: Server) -> None:
    with server.client() as api:
        device = register(api)
    with _connect(server) as sock:
        sock.sendall(
            _post(device, 1.5)
            + b"GET /api/v1/nowhere HTTP/1.1\r\nHost: test\r\n\r\n"
            + _post(device, 2.5)
            + b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        statuses = [status for status, _, _ in _read_responses(sock, 4)]
    assert statuses == [201, 404, 201, 200]
    with server.client() as api:
        r = api.get(f"/api/v1/telemetry/{device['id']}/latest", headers={"X-API-Key": device["api_key"]})
    assert r.json()["latest_data"]["temperature"] == 2.5


def test_connection_close_gets_the_whole_answer_then_the_end(server: Server) -> None:
    with server.client() as api:
        device = register(api)
    with _connect(server) as sock:
        sock.sendall(_post(device, 3.0, extra="Connection: close\r\n"))
        ((status, headers, body),) = _read_responses(sock, 1)
        assert status == 201 and json.loads(body)["device_id"] == device["id"]
        assert headers.get("connection") == "close"
        assert sock.recv(1) == b""  # then the server closes the connection


def test_expect_100_continue_is_answered_before_the_body(server: Server) -> None:
    with server.client() as api:
        device = register(api)
    request = _post(device, 4.0, extra="Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    with _connect(server) as sock:
        sock.sendall(head + b"\r\n\r\n")
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        ((status, _, _),) = _read_responses(sock, 1)
    assert status == 201


def _latest(server: Server, device: dict[str, Any]) -> dict[str, Any]:
    with server.client() as api:
        r = api.get(f"/api/v1/telemetry/{device['id']}/latest", headers={"X-API-Key": device["api_key"]})
    return r.json() if r.status_code == 200 else {}  # type: ignore[no-any-return]


def test_a_body_arriving_in_pieces_is_read_whole(server: Server) -> None:
    with server.client() as api:
        device = register(api)
    request = _post(device, 21.25)
    with _connect(server) as sock:
        for i in range(0, len(request), 7):  # headers and body in small pieces, apart in time
            sock.sendall(request[i : i + 7])
            time.sleep(0.005)
        ((status, _, body),) = _read_responses(sock, 1)
    assert status == 201, body
    assert _latest(server, device)["latest_data"]["temperature"] == 21.25


def test_a_client_leaving_inside_its_body_stores_nothing_and_the_server_goes_on(server: Server) -> None:
    with server.client() as api:
        device = register(api)
    request = _post(device, 99.0)
    with _connect(server) as sock:
        sock.sendall(request[:-5])  # the headers and all but the end of the body
        time.sleep(0.2)
    with _connect(server) as sock:  # the server still answers, on a new connection
        sock.sendall(_post(device, 1.0))
        ((status, _, _),) = _read_responses(sock, 1)
    assert status == 201
    assert _latest(server, device)["latest_data"]["temperature"] == 1.0
    with server.client() as api:
        history = api.get(f"/api/v1/telemetry/{device['id']}", headers={"X-API-Key": device["api_key"]})
    assert history.json()["count"] == 1  # the cut-off reading was never stored


class _CountingTransport(asyncio.Transport):
    """A real transport that records each write it passes on."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def close(self) -> None:
        self.inner.close()


def test_writes_of_one_loop_step_reach_the_socket_as_one_write() -> None:
    async def run() -> tuple[list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        counting = _CountingTransport(transport)  # type: ignore[arg-type]
        coalescing = CoalescingTransport(counting, loop)
        coalescing.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n")
        coalescing.write(b"{}")
        assert counting.writes == []  # nothing before the step ends
        await asyncio.sleep(0)
        coalescing.write(b"last")
        coalescing.close()  # sends what is gathered, then closes
        theirs.settimeout(5)
        received = b""
        while chunk := await loop.run_in_executor(None, theirs.recv, 65536):
            received += chunk
        theirs.close()
        return counting.writes, received

    writes, received = asyncio.run(run())
    assert writes == [b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}", b"last"]
    assert received == b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}last"
