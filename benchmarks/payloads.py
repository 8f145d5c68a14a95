"""The telemetry bodies the HTTP benchmarks send, shared by the wrk scripts and the Python client.

Every request gets a sequence number that is unique within a run; timestamps are derived from it,
so no two points of one device and key share a timestamp (nothing is an upsert, and every
acknowledged point must show up in the store). Requests rotate over the run's devices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

TELEMETRY_PATH = "/api/v1/devices/telemetry"
# Batched posts: 100 payloads x 5 keys = 500 points per request.
BATCH_PAYLOADS = 100
BATCH_KEYS = ("temperature", "humidity", "pressure", "battery", "rssi")
POINTS_PER_BATCH = BATCH_PAYLOADS * len(BATCH_KEYS)
SINGLE_FORMAT = '{{"data":{{"temperature":{value:.1f}}},"timestamp":{ts}}}'
BATCH_ITEM_FORMAT = (
    '{{"data":{{"temperature":{t:.2f},"humidity":{h:.2f},"pressure":{p:.1f},"battery":{b},"rssi":{r}}},'
    '"timestamp":{ts}}}'
)


def base_timestamp_ms() -> int:
    """A week ago, on a whole second: far from "now", so every timestamp is accepted as past."""
    return (int(time.time()) - 7 * 86_400) * 1000


@dataclass(frozen=True, slots=True)
class Workload:
    """What one load run sends: ``single`` (one reading per POST) or ``batch`` (500 points per POST)."""

    kind: str
    api_keys: tuple[str, ...]
    base_ts: int
    path: str = TELEMETRY_PATH

    def shifted(self, offset_ms: int) -> Workload:
        """The same load with every timestamp ``offset_ms`` later (a second run on the same devices)."""
        return replace(self, base_ts=self.base_ts + offset_ms)

    @property
    def points_per_request(self) -> int:
        return 1 if self.kind == "single" else POINTS_PER_BATCH

    def body(self, seq: int) -> bytes:
        if self.kind == "single":
            return SINGLE_FORMAT.format(value=20 + (seq % 100) / 10, ts=self.base_ts + seq).encode()
        first = seq * BATCH_PAYLOADS
        items = ",".join(
            BATCH_ITEM_FORMAT.format(
                t=20 + (i % 100) / 10,
                h=50 + (i % 50) / 10,
                p=1013 + (i % 20) / 10,
                b=100 - i % 100,
                r=-60 - i % 30,
                ts=self.base_ts + first + i,
            )
            for i in range(BATCH_PAYLOADS)
        )
        return b'{"batch":[' + items.encode() + b"]}"

    def request(self, seq: int, host: str) -> bytes:
        """The full HTTP/1.1 request (keep-alive) for sequence number ``seq``."""
        body = self.body(seq)
        key = self.api_keys[seq % len(self.api_keys)]
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body
