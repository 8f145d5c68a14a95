"""GET /telemetry/{id}/latest: the fast path answers exactly as the framework handler does.

Two servers, one with the HTTP fast path (the default) and one without, get the same devices, the
same data and the same requests; every answer (status, body, rate-limit headers) must be the same.
The read rule allows 5 requests a minute per credential, so the rate limit is part of the comparison:
a request the fast path hands on to the framework must not be counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from iotflow.telemetry.fast_reads import _latest_device
from tests.conftest import ADMIN, HIGH_RATE_LIMITS
from tests.server import Server, device_pair, fast_and_framework, rate_limit_headers

READS_PER_MINUTE = 5
LIMITS = {**HIGH_RATE_LIMITS, "IOTFLOW_RATE_LIMIT_PER_MINUTE": str(READS_PER_MINUTE)}
T0_MS = 1751466600000


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    with fast_and_framework(tmp_path_factory.mktemp, **LIMITS) as pair:
        yield pair


def _setup(srv: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    """Device A with two readings, device B without data (same names, so the same ids, on both)."""
    readings: tuple[dict[str, Any], ...] = (
        {"temp": 20.5, "hum": 40},
        {"temp": {"value": 21.25, "unit": "°C"}},
    )
    return device_pair(srv, ("latest-a", "latest-b"), readings, T0_MS)


def _answer(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    return r.status_code, r.json(), rate_limit_headers(r)


def test_every_answer_is_the_frameworks(servers: tuple[Server, Server]) -> None:
    fast, framework = servers
    answers: list[list[tuple[int, Any, dict[str, str]]]] = []
    for srv in (fast, framework):
        a, b = _setup(srv)
        key_a, key_b = {"X-API-Key": a["api_key"]}, {"X-API-Key": b["api_key"]}
        requests: list[tuple[str, Any]] = [
            (f"/api/v1/telemetry/{a['id']}/latest", key_a),  # taken by the fast path
            (f"/api/v1/telemetry/{a['id']}/latest?keys=temp", key_a),  # a query string: the framework
            (f"/api/v1/telemetry/{b['id']}/latest", key_b),  # no data: 404
            (f"/api/v1/telemetry/{a['id']}/latest", key_b),  # another device's key: 403
            (f"/api/v1/telemetry/{a['id']}/latest", {"X-API-Key": "not-a-key"}),  # 401
            (f"/api/v1/telemetry/{a['id']}/latest", ADMIN),  # admin: the framework
            (f"/api/v1/telemetry/{a['id']}/latest", {**key_a, **ADMIN}),  # Authorization wins
            (f"/api/v1/telemetry/{a['id'] + 1000}/latest", ADMIN),  # no such device: 404
            # two X-API-Key headers: the first one counts (401, 403), for the rate limit too
            (f"/api/v1/telemetry/{a['id']}/latest", [("X-API-Key", "bogus"), ("X-API-Key", a["api_key"])]),
            (
                f"/api/v1/telemetry/{a['id']}/latest",
                [("X-API-Key", b["api_key"]), ("X-API-Key", a["api_key"])],
            ),
        ]
        # A's key has made 2 counted reads; 3 more pass, then 429 (also from the fast path).
        requests += [(f"/api/v1/telemetry/{a['id']}/latest", key_a)] * (READS_PER_MINUTE - 2 + 2)
        with srv.client() as api:
            answers.append([_answer(api.get(path, headers=headers)) for path, headers in requests])
    got_fast, got_framework = answers
    assert got_fast == got_framework
    statuses = [status for status, _, _ in got_fast]
    assert statuses == [200, 200, 404, 403, 401, 200, 200, 404, 401, 403, 200, 200, 200, 429, 429]
    _, body, _ = got_fast[0]
    assert body["keys"] == {
        "hum": {"value": 40, "timestamp": "2025-07-02T14:30:00.000Z"},
        "temp": {"value": 21.25, "timestamp": "2025-07-02T14:30:01.000Z", "unit": "°C"},
    }
    assert (
        body["latest_data"]
        == body["data"]
        == {"timestamp": "2025-07-02T14:30:01.000Z", "hum": 40, "temp": 21.25}
    )
    assert got_fast[-1][2]["x-ratelimit-remaining"] == "0"


@pytest.mark.parametrize(
    ("path", "query", "device_id"),
    [
        ("/api/v1/telemetry/12/latest", b"", 12),
        ("/api/v1/telemetry/12/latest", b"keys=temp", None),
        ("/api/v1/telemetry/012/latest", b"", None),
        ("/api/v1/telemetry/-1/latest", b"", None),
        ("/api/v1/telemetry/abc/latest", b"", None),
        ("/api/v1/telemetry/12/latest/", b"", None),
        ("/api/v1/telemetry/\u0661\u0662/latest", b"", None),
        ("/api/v1/telemetry/12", b"", None),
    ],
)
def test_which_requests_the_fast_path_considers(path: str, query: bytes, device_id: int | None) -> None:
    assert _latest_device({"path": path, "query_string": query}) == device_id  # type: ignore[typeddict-item]
