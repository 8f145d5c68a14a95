"""GET /telemetry/{id}: the fast path answers exactly as the framework handler does.

Two servers, one with the HTTP fast path (the default) and one without, get the same devices, the
same data and the same requests; every answer (status, body, rate-limit headers) must be the same,
including the errors the fast path hands on to the framework and the 429s once a key's read budget
is spent (a request handed on must not be counted twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from iotflow.telemetry.fast_reads import _history_device, history_params
from tests.conftest import ADMIN, HIGH_RATE_LIMITS
from tests.server import Server, device_pair, fast_and_framework, rate_limit_headers

READS_PER_MINUTE = 30
LIMITS = {**HIGH_RATE_LIMITS, "IOTFLOW_RATE_LIMIT_PER_MINUTE": str(READS_PER_MINUTE)}
T0_MS = 1751466600000  # 2025-07-02T14:30:00Z
RANGE = "start_time=2025-07-02T14:00:00Z&end_time=2025-07-02T15:00:00Z"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    with fast_and_framework(tmp_path_factory.mktemp, **LIMITS) as pair:
        yield pair


def _setup(srv: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    """Device A with three readings, device B without data (same names, so the same ids, on both)."""
    readings: tuple[dict[str, Any], ...] = (
        {"temp": 20.5, "hum": 40},
        {"temp": {"value": 21.25, "unit": "°C"}},
        {"hum": 41, "note": "door open, 'quoted' <b>"},
    )
    return device_pair(srv, ("history-a", "history-b"), readings, T0_MS)


def _answer(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = r.json()
    if "=2025-07-02T14" not in str(r.request.url) and isinstance(body, dict):  # a range ending now
        body.pop("start_time", None)
        body.pop("end_time", None)
    return r.status_code, body, rate_limit_headers(r)


def _requests(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any]]:
    key_a, key_b = {"X-API-Key": a["api_key"]}, {"X-API-Key": b["api_key"]}
    path = f"/api/v1/telemetry/{a['id']}"
    requests: list[tuple[str, Any]] = [
        (f"{path}?{RANGE}", key_a),  # taken by the fast path
        (f"{path}?{RANGE}&keys=temp&limit=1&order=asc", key_a),
        (f"{path}?{RANGE}&keys=temp,note&order=desc&limit=2", key_a),
        (f"{path}?start_date=2025-07-02T14:00:00Z&stop_time=2025-07-02T14:30:01Z", key_a),  # aliases
        (f"{path}?start_time=-1h&end_time=now", key_a),  # relative bounds: nothing in the last hour
        (path, key_a),  # the default range
        (f"{path}?{RANGE}&limit=0", key_a),  # bad queries: 400 from the framework
        (f"{path}?{RANGE}&limit=abc", key_a),
        (f"{path}?{RANGE}&order=sideways", key_a),
        (f"{path}?start_time=bogus", key_a),
        (f"{path}?start_time=2025-07-02T15:00:00Z&end_time=2025-07-02T14:00:00Z", key_a),
        (f"{path}?{RANGE}&unknown=1", key_a),  # not read by the fast path: the framework
        (f"{path}?start_time=2025-07-02T14%3A00%3A00Z&end_time=2025-07-02T15%3A00%3A00Z", key_a),
        (f"{path}?{RANGE}&keys=temp&keys=hum", key_a),  # repeated
        (f"{path}?{RANGE}&keys=temp+hum", key_a),
        (f"{path}?{RANGE}", key_b),  # another device's key: 403
        (f"{path}?{RANGE}", {"X-API-Key": "not-a-key"}),  # 401
        (f"{path}?{RANGE}", ADMIN),  # admin: the framework
        (f"{path}?{RANGE}", {**key_a, **ADMIN}),  # Authorization wins
        (f"/api/v1/telemetry/{a['id'] + 1000}?{RANGE}", ADMIN),  # no such device: 404
        (f"/api/v1/telemetry/{b['id']}?{RANGE}", key_b),  # no data: 200, empty
        # two X-API-Key headers: the first one counts (401, 403), for the rate limit too
        (f"{path}?{RANGE}", [("X-API-Key", "bogus"), ("X-API-Key", a["api_key"])]),
        (f"{path}?{RANGE}", [("X-API-Key", b["api_key"]), ("X-API-Key", a["api_key"])]),
    ]
    # Then A's key reads until its budget is spent: the last ones are 429s, from the fast path too.
    return requests + [(f"{path}?{RANGE}&limit=2", key_a)] * READS_PER_MINUTE


def test_every_answer_is_the_frameworks(servers: tuple[Server, Server]) -> None:
    answers: list[list[tuple[int, Any, dict[str, str]]]] = []
    for srv in servers:
        a, b = _setup(srv)
        with srv.client() as api:
            answers.append([_answer(api.get(path, headers=headers)) for path, headers in _requests(a, b)])
    got_fast, got_framework = answers
    assert got_fast == got_framework
    statuses = [status for status, _, _ in got_fast]
    assert statuses[:23] == [200] * 6 + [400] * 5 + [200] * 4 + [403, 401, 200, 200, 404, 200, 401, 403]
    assert set(statuses[23:]) == {200, 429} and statuses[-1] == 429
    assert got_fast[-1][2]["x-ratelimit-remaining"] == "0"

    _, everything, _ = got_fast[0]
    assert everything["count"] == 3
    assert [r["timestamp"] for r in everything["data"]] == [
        "2025-07-02T14:30:02.000Z",
        "2025-07-02T14:30:01.000Z",
        "2025-07-02T14:30:00.000Z",
    ]
    assert everything["data"][0]["note"] == "door open, 'quoted' <b>"
    assert (everything["start_time"], everything["end_time"]) == (
        "2025-07-02T14:00:00.000Z",
        "2025-07-02T15:00:00.000Z",
    )
    _, first_temp, _ = got_fast[1]
    assert first_temp["count"] == 1 and first_temp["data"][0]["temp"] == 20.5
    _, aliases, _ = got_fast[3]
    assert aliases["count"] == 2
    for i in (4, 5):
        assert got_fast[i][1]["count"] == 0


@pytest.mark.parametrize(
    ("path", "device_id"),
    [
        ("/api/v1/telemetry/12", 12),
        ("/api/v1/telemetry/012", None),
        ("/api/v1/telemetry/-1", None),
        ("/api/v1/telemetry/12/", None),
        ("/api/v1/telemetry/12/aggregated", None),
        ("/api/v1/telemetry/\u0661\u0662", None),
        ("/api/v1/telemetry/", None),
        ("/api/v1/telemetry/status", None),
    ],
)
def test_which_paths_the_history_fast_path_considers(path: str, device_id: int | None) -> None:
    assert _history_device({"path": path}) == device_id  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("query", "params"),
    [
        (b"", {}),
        (b"keys=a,b&limit=10&order=asc", {"keys": "a,b", "limit": "10", "order": "asc"}),
        (b"start_time=-6h&end_time=now", {"start_time": "-6h", "end_time": "now"}),
        (b"start_time=2025-07-02T14:00:00Z", {"start_time": "2025-07-02T14:00:00Z"}),
        (b"keys=", {"keys": ""}),
        (b"keys=a&keys=b", None),  # repeated
        (b"keys=a%2Cb", None),  # percent-encoding
        (b"keys=a+b", None),
        (b"keys", None),  # no value
        (b"keys=a&&limit=1", None),
        (b"page=2", None),  # not a history parameter
        (b"start_time=2025-07-02T14:00:00+02:00", None),
    ],
)
def test_which_query_strings_the_history_fast_path_reads(query: bytes, params: dict[str, str] | None) -> None:
    assert history_params(query) == params
