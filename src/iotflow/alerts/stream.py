"""Fan-out of alert changes to live subscribers (the SSE stream) and in-process observers.

Each subscriber has a bounded queue. Publishing never waits: a subscriber whose queue is full is
dropped (its stream ends; an EventSource client reconnects by itself), so a slow client can never
hold up the ingest pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from iotflow.alerts.schemas import AlertRecord, alert_dict

log = logging.getLogger(__name__)

Observer = Callable[[str, dict[str, Any]], None]

CONNECTED = b": connected\n\n"
PING = b": ping\n\n"
DROPPED = b": dropped (the client did not keep up); reconnect\n\n"


def sse_message(event: str, data: dict[str, Any]) -> bytes:
    # json.dumps escapes every newline inside strings, so the data is always one line.
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class Subscriber:
    __slots__ = ("queue", "see_all", "user_id")

    def __init__(self, *, user_id: int | None, see_all: bool, max_queue: int) -> None:
        self.user_id = user_id
        self.see_all = see_all
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(max_queue)

    def end(self, last: bytes | None = None) -> None:
        """End the stream: drop what is queued, then an optional last comment and the end marker."""
        while not self.queue.empty():
            self.queue.get_nowait()
        if last is not None:
            self.queue.put_nowait(last)
        self.queue.put_nowait(None)


class AlertHub:
    def __init__(self, *, max_queue: int = 256, ping_s: float = 15.0) -> None:
        self._subscribers: set[Subscriber] = set()
        self._observers: list[Observer] = []
        self._max_queue = max(2, max_queue)
        self._ping_s = ping_s
        self.dropped = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def add_observer(self, observer: Observer) -> None:
        """``observer(change, alert_dict)`` is called for every change (e.g. an MQTT publisher)."""
        self._observers.append(observer)

    def publish(self, change: str, alert: AlertRecord) -> None:
        data = {**alert_dict(alert), "change": change}
        message: bytes | None = None
        for sub in list(self._subscribers):
            if not sub.see_all and (sub.user_id is None or sub.user_id != alert.user_id):
                continue
            if message is None:
                message = sse_message("alert", data)
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(sub)
                self.dropped += 1
                sub.end(DROPPED)
        for observer in self._observers:
            try:
                observer(change, data)
            except Exception as exc:
                log.warning("alert observer %r failed: %s", observer, exc)

    async def stream(self, *, user_id: int | None, see_all: bool) -> AsyncIterator[bytes]:
        """The SSE body for one client: a ``connected`` comment once subscribed, then ``event: alert``
        messages, and a ``ping`` comment after every ``ping_s`` seconds of silence."""
        sub = Subscriber(user_id=user_id, see_all=see_all, max_queue=self._max_queue)
        self._subscribers.add(sub)
        try:
            yield CONNECTED
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), self._ping_s)
                except TimeoutError:
                    yield PING
                    continue
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """End every stream (shutdown)."""
        for sub in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.end()
        self._subscribers.clear()
