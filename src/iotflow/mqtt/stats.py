"""Counters of the MQTT transport, shown by ``GET /api/v1/mqtt/status`` and ``.../monitoring/metrics``.

Plain integers in dicts, touched only on the event loop (no locks). Rejections are also logged, at
most once per device per minute, so a device that floods garbage cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Any

from iotflow.timeutil import format_ts

log = logging.getLogger("iotflow.mqtt")

LOG_EVERY_MS = 60_000
_WINDOW_S = 10


class _Rate:
    """Events per second over the last ten whole seconds."""

    def __init__(self) -> None:
        self._recent: deque[tuple[int, int]] = deque(maxlen=_WINDOW_S + 2)

    def add(self, n: int = 1) -> None:
        now = int(time.monotonic())
        if self._recent and self._recent[-1][0] == now:
            self._recent[-1] = (now, self._recent[-1][1] + n)
        else:
            self._recent.append((now, n))

    def per_second(self) -> float:
        now = int(time.monotonic())
        total = sum(n for s, n in self._recent if now - _WINDOW_S <= s < now)
        return round(total / _WINDOW_S, 1)


class MqttStats:
    def __init__(self) -> None:
        self.started = time.time()
        self.connections_accepted = 0
        self.connections_refused: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self.received: Counter[str] = Counter()  # by topic type
        self.accepted: Counter[str] = Counter()  # by topic type
        self.rejected: Counter[str] = Counter()  # by reason
        self.ignored_stale = 0  # status messages older than the device's last_seen
        self.subscriptions_refused = 0
        self.points = 0
        self.bytes_received = 0
        self.sent = 0
        self.errors_reported = 0
        self.errors_suppressed = 0
        self.last_message_ms: int | None = None
        self.messages_rate = _Rate()
        self.points_rate = _Rate()
        self._last_logged: dict[tuple[str, int | None], int] = {}

    def message(self, kind: str, size: int, now_ms: int) -> None:
        self.messages(kind, 1, size, now_ms)

    def messages(self, kind: str, count: int, size: int, now_ms: int) -> None:
        """``count`` messages of ``size`` bytes in all."""
        self.received[kind] += count
        self.bytes_received += size
        self.last_message_ms = now_ms
        self.messages_rate.add(count)

    def stored(self, kind: str, points: int, *, messages: int = 1) -> None:
        self.accepted[kind] += messages
        if points:
            self.points += points
            self.points_rate.add(points)

    def reject(self, reason: str, device_id: int | None, client_id: str, text: str, now_ms: int) -> None:
        self.rejected[reason] += 1
        self.log_once(device_id, client_id, f"message rejected ({reason}): {text}", now_ms)

    def log_once(self, device_id: int | None, client_id: str, text: str, now_ms: int) -> None:
        """Log a refusal, at most once a minute per device (per client id for unknown devices)."""
        key = (client_id, None) if device_id is None else ("", device_id)
        if now_ms - self._last_logged.get(key, -LOG_EVERY_MS) >= LOG_EVERY_MS:
            if len(self._last_logged) > 100_000:
                self._last_logged.clear()
            self._last_logged[key] = now_ms
            who = f"device {device_id}" if device_id is not None else f"client {client_id!r}"
            log.warning("MQTT %s: %s", who, text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "connections": {
                "accepted": self.connections_accepted,
                "refused": dict(self.connections_refused),
                "disconnects": dict(self.disconnects),
            },
            "messages": {
                "received": sum(self.received.values()),
                "received_by_type": dict(self.received),
                "stored_by_type": dict(self.accepted),
                "rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(self.rejected),
                "ignored_stale_status": self.ignored_stale,
                "sent": self.sent,
                "errors_reported": self.errors_reported,
                "errors_not_reported": self.errors_suppressed,
                "bytes_received": self.bytes_received,
                "points": self.points,
                "last_message_time": None
                if self.last_message_ms is None
                else format_ts(self.last_message_ms),
            },
            "throughput": {
                "messages_per_second": self.messages_rate.per_second(),
                "points_per_second": self.points_rate.per_second(),
            },
            "subscriptions": {"refused": self.subscriptions_refused},
        }
