"""What IoTFlow does with each MQTT connection, subscription and device message (``spec/mqtt.md``).

The broker side (:mod:`iotflow.mqtt.embedded`) only moves bytes; every decision is made here:

- **connect**: username = device id, password = API key (``DeviceService.authenticate``, cached) →
  :class:`Client`; bad credentials → :class:`Refused` "bad user name or password", an inactive device →
  "not authorized". Anonymous clients only with ``IOTFLOW_MQTT_ALLOW_ANONYMOUS=true``: each of their
  messages must carry the ``api_key`` of the topic's device, and they may subscribe only after one valid
  message for that device on the same connection.
- **publish**: the topic must be the client's own device's; the key is checked again on every message
  (a rotated key or a deactivated device stops at once); then telemetry goes through
  ``TelemetryService.ingest`` (the same parsing and pipeline as HTTP; it returns after the commit),
  status/heartbeat/last-will through :class:`~iotflow.devices.presence.Presence`, acknowledgements to
  ``rt.commands.handle_ack``. A refused message is counted by reason, logged once per device per minute
  and reported on ``iotflow/devices/{id}/errors`` (QoS 0, at most ``ERRORS_PER_SECOND`` per device).
- **subscribe**: only the device's own ``commands/...``, ``config`` and ``errors``; a subscription that
  brings commands triggers ``rt.commands.deliver_pending``.
- **disconnect**: a clean DISCONNECT marks the device offline at once; an abnormal end publishes the
  client's last will, which IoTFlow handles as a message of that client (``status/offline`` or
  ``lwt/devices/{id}`` → offline at once). A device with another live connection stays online.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from iotflow.cache.base import DeviceAuth
from iotflow.config import Settings
from iotflow.errors import BadRequest, InvalidTimestamp, IoTFlowError, NotFound, ServiceUnavailable
from iotflow.mqtt import topics
from iotflow.mqtt.clients import (
    BAD_CREDENTIALS,
    NOT_AUTHORIZED,
    Client,
    Refused,
    device_id_of_username,
)
from iotflow.mqtt.payloads import (
    Rejected,
    api_key_of,
    decode_json,
    status_change,
    telemetry_body,
)
from iotflow.mqtt.stats import MqttStats
from iotflow.telemetry.service import Ingested
from iotflow.timeutil import format_ts, now_ms

if TYPE_CHECKING:
    from iotflow.runtime import Runtime

log = logging.getLogger("iotflow.mqtt")

QOS0_BACKLOG_MAX = 10_000  # QoS 0 messages of one connection waiting; more are refused (overloaded)
QOS0_BACKLOG_BYTES = 8 * 1024 * 1024  # and at most this many payload bytes
QOS0_CONCURRENCY = 256  # QoS 0 messages of one connection handled at once (they share commits)
OVERLOAD_RETRY_S = 30.0  # how long a QoS 1 message waits for room in a full ingest queue
ERRORS_PER_SECOND = 10  # error reports published per device per second
RUNTIME_WAIT_S = 30.0
DRAIN_ON_DISCONNECT_S = 5.0  # how long an ended connection's QoS 0 backlog may delay its last will

Publish = Callable[[str, bytes, int, bool], Awaitable[bool]]


class MessageHandler:
    def __init__(self, settings: Settings, stats: MqttStats, publish: Publish) -> None:
        self._settings = settings
        self.stats = stats
        self._publish = publish
        self._max_payload = settings.mqtt_max_payload
        self._max_future_ms = settings.max_future_skew * 1000
        self._rt: Runtime | None = None
        self._ready = asyncio.Event()
        self._live: dict[int, set[Client]] = {}  # device id → its connections
        self._tasks: set[asyncio.Task[Any]] = set()
        self._error_budget: dict[int, list[int]] = {}  # device id → [second, reports in it]

    # ----- wiring ----------------------------------------------------------------------------------

    def bind(self, rt: Runtime) -> None:
        self._rt = rt
        self._ready.set()

    async def _runtime(self) -> Runtime:
        if self._rt is None:
            await asyncio.wait_for(self._ready.wait(), RUNTIME_WAIT_S)
        assert self._rt is not None
        return self._rt

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, seconds: float) -> None:
        """Wait (at most ``seconds``) for messages still being processed."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=seconds)

    # ----- connections -----------------------------------------------------------------------------

    async def authenticate(
        self,
        *,
        client_id: str,
        username: str | None,
        password: str | None,
        will: tuple[str, bytes, int] | None,
    ) -> Client:
        """The client of a CONNECT, or :class:`Refused` with the CONNACK code to answer."""
        try:
            return await self._authenticate(client_id, username, password, will)
        except Refused as refused:
            self.stats.connections_refused[refused.reason] += 1
            raise

    async def _authenticate(
        self, client_id: str, username: str | None, password: str | None, will: tuple[str, bytes, int] | None
    ) -> Client:
        if not username:
            if password:
                raise Refused(BAD_CREDENTIALS, "bad_credentials")
            if not self._settings.mqtt_allow_anonymous:
                raise Refused(NOT_AUTHORIZED, "anonymous_not_allowed")
            return Client(client_id, None, {}, will)
        device_id = device_id_of_username(username)
        if device_id is None or not password:
            raise Refused(BAD_CREDENTIALS, "bad_credentials")
        try:
            rt = await self._runtime()
            auth = await rt.devices.authenticate(password)
        except Exception as exc:
            log.warning("MQTT authentication of client %r failed: %s", client_id, exc)
            raise Refused(NOT_AUTHORIZED, "unavailable") from None
        if auth is None or auth.id != device_id:
            raise Refused(BAD_CREDENTIALS, "bad_credentials")
        if auth.status != "active":
            raise Refused(NOT_AUTHORIZED, "inactive")
        return Client(client_id, auth, {auth.id: password}, will)

    def connected(self, client: Client) -> None:
        self.stats.connections_accepted += 1
        for device_id in client.device_ids():
            self._live.setdefault(device_id, set()).add(client)
        if client.device is not None and self._rt is not None:
            self._rt.presence.seen(client.device.id, now_ms())
        for topic_filter in client.subscriptions:  # a persistent session brings its subscriptions
            self._maybe_deliver(client, topic_filter)

    async def disconnected(self, client: Client, *, clean: bool) -> None:
        """The connection ended: process the last will (abnormal end), mark offline (clean end)."""
        if client.closed:
            return
        how = client.ended_by or ("clean" if clean else "abnormal")
        self.stats.disconnects[how] += 1
        if client.draining and client.drained is not None:  # QoS 0 messages sent before the end first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.drained.wait(), DRAIN_ON_DISCONNECT_S)
        if not clean and client.will is not None and not client.revoked:
            topic, payload, qos = client.will
            await self.handle(client, topic, payload, qos, will=True)
        client.closed = True
        now = now_ms()
        for device_id in client.device_ids():
            others = self._live.get(device_id)
            if others is not None:
                others.discard(client)
                if not others:
                    del self._live[device_id]
            if (clean or client.revoked) and not self._live.get(device_id) and self._rt is not None:
                self._rt.presence.mark_offline(device_id, now, reason="disconnect" if clean else "revoked")

    def clients_of(self, device_id: int) -> list[Client]:
        return [c for c in self._live.get(device_id, ()) if not c.closed]

    def devices_connected(self) -> int:
        return len(self._live)

    def subscribed(self, device_id: int, topic: str) -> bool:
        """Whether a live connection of the device subscribes to a filter matching ``topic``."""
        return any(topics.matches(f, topic) for c in self.clients_of(device_id) for f in c.subscriptions)

    def is_connected(self, device_id: int) -> bool:
        """Connected and subscribed to (some of) its commands: a command published now arrives."""
        return any(
            topics.is_commands_filter(device_id, f)
            for c in self.clients_of(device_id)
            for f in c.subscriptions
        )

    def disconnect_device(self, device_id: int) -> int:
        clients = self.clients_of(device_id)
        for client in clients:
            client.revoked = True
            client.close("kicked")
        return len(clients)

    # ----- subscriptions ---------------------------------------------------------------------------

    async def still_valid(self, client: Client) -> bool:
        """Whether the connection's keys still name active devices; if not, the connection is closed."""
        if client.revoked or client.closed:
            return False
        rt = await self._runtime()
        for device_id, key in list(client.keys.items()):
            auth = await rt.devices.authenticate(key)  # cached
            if auth is None or auth.id != device_id or auth.status != "active":
                client.revoked = True
                client.close("kicked")
                return False
        return True

    async def may_subscribe(self, client: Client, topic_filter: str) -> bool:
        if client.device is not None:
            ok = topics.may_subscribe(client.device.id, topic_filter)
        else:  # anonymous: commands and config of a device proven on this connection
            ok = any(topics.may_subscribe(d, topic_filter, errors=False) for d in client.keys)
        ok = ok and await self.still_valid(client)
        if not ok:
            self.stats.subscriptions_refused += 1
            ids = client.device_ids()
            self.stats.log_once(
                ids[0] if ids else None,
                client.client_id,
                f"subscription to {topic_filter!r} refused",
                now_ms(),
            )
        return ok

    async def may_receive(self, client: Client, topic: str) -> bool:
        return any(topics.may_receive(d, topic) for d in client.device_ids()) and await self.still_valid(
            client
        )

    async def deliverable(self, device_id: int, topic: str) -> bool:
        """Whether a live, still valid connection of the device subscribes to ``topic``."""
        found = False
        for client in self.clients_of(device_id):
            if any(topics.matches(f, topic) for f in client.subscriptions) and await self.still_valid(client):
                found = True
        return found

    def on_subscribed(self, client: Client, topic_filter: str) -> None:
        client.subscriptions.add(topic_filter)
        self._maybe_deliver(client, topic_filter)

    def on_unsubscribed(self, client: Client, topic_filter: str) -> None:
        client.subscriptions.discard(topic_filter)

    def _maybe_deliver(self, client: Client, topic_filter: str) -> None:
        for device_id in client.device_ids():
            if topics.is_commands_filter(device_id, topic_filter):
                self.spawn(self._deliver_pending(device_id))

    async def _deliver_pending(self, device_id: int) -> None:
        rt = await self._runtime()
        try:
            await rt.commands.deliver_pending(device_id)
        except Exception as exc:
            log.warning("delivering pending commands to device %s failed: %s", device_id, exc)

    # ----- messages --------------------------------------------------------------------------------

    def handle_soon(self, client: Client, topic: str, payload: bytes) -> None:
        """A QoS 0 message: queued on its connection and handled by that connection's drain task.

        Handling runs up to ``QOS0_CONCURRENCY`` messages at once, so that they share commits. A
        connection whose backlog is full gets its further messages refused (``overloaded``): amqtt
        cannot stop reading a connection, and one flooding client must not take everyone's memory.
        """
        backlog = client.backlog
        if backlog is None:
            backlog = client.backlog = deque()
        if len(backlog) >= QOS0_BACKLOG_MAX or client.backlog_bytes > QOS0_BACKLOG_BYTES:
            now = now_ms()
            self.stats.message("overflow", len(payload), now)
            ids = client.device_ids()
            self._reject(
                client,
                ids[0] if ids else None,
                topic,
                Rejected("overloaded", "Too many messages", "Too many QoS 0 messages waiting; slow down"),
                now,
            )
            return
        backlog.append((topic, payload))
        client.backlog_bytes += len(payload)
        if not client.draining:
            client.draining = True
            client.drained = asyncio.Event()
            self.spawn(self._drain_backlog(client, backlog, client.drained))

    async def _drain_backlog(
        self, client: Client, backlog: deque[tuple[str, bytes]], drained: asyncio.Event
    ) -> None:
        try:
            while backlog:
                batch: list[Awaitable[bool]] = []
                while backlog and len(batch) < QOS0_CONCURRENCY:
                    topic, payload = backlog.popleft()
                    client.backlog_bytes -= len(payload)
                    batch.append(self.handle(client, topic, payload, 0))
                await asyncio.gather(*batch)
        finally:
            client.draining = False
            drained.set()

    async def handle(
        self, client: Client, topic: str, payload: bytes, qos: int, *, will: bool = False
    ) -> bool:
        """Process one message. True: it may be acknowledged (stored, or refused for good).

        False only for a QoS 1/2 message that could not be stored for now (ingest queue full for
        ``OVERLOAD_RETRY_S``): the caller must not acknowledge it, so the device sends it again.
        """
        now = now_ms()
        parsed = topics.parse(topic)
        kind = _kind(parsed)
        self.stats.message(kind, len(payload), now)
        if client.device is not None:
            report_to: int | None = client.device.id
        else:
            report_to = parsed.device_id if parsed is not None else topics.device_of(topic)
        try:
            points = await self._dispatch(client, parsed, topic, payload, qos, now, will)
        except Rejected as rejected:
            self._reject(client, report_to, topic, rejected, now, telemetry=kind == "telemetry")
            return not (rejected.reason == "unavailable" and qos > 0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("MQTT message on %s from client %r failed: %s", topic, client.client_id, exc)
            self._reject(
                client, report_to, topic, Rejected("error", "Internal error", "The message failed"), now
            )
            return True
        self.stats.stored(kind, points)
        return True

    async def _dispatch(
        self,
        client: Client,
        parsed: topics.DeviceTopic | None,
        topic: str,
        payload: bytes,
        qos: int,
        now: int,
        will: bool,
    ) -> int:
        if len(payload) > self._max_payload:
            raise Rejected(
                "too_large",
                "Payload too large",
                f"The payload has {len(payload)} bytes; the limit is {self._max_payload} "
                "(IOTFLOW_MQTT_MAX_PAYLOAD)",
            )
        if parsed is None:
            other = topics.device_of(topic)
            if other is not None and other not in client.device_ids() and client.device is not None:
                raise _wrong_device(topic)
            raise Rejected(
                "unknown_topic",
                "Unknown topic",
                f"{topic!r} is not an IoTFlow device topic: publish telemetry, status/... or "
                "commands/ack under iotflow/devices/<id>/",
            )
        rt = await self._runtime()
        body: Any = _UNDECODED
        if client.device is not None:
            if parsed.device_id != client.device.id:
                raise _wrong_device(topic)
            device = await self._check_key(rt, client)
        else:
            body = decode_json(payload)
            device = await self._check_anonymous(rt, client, parsed.device_id, body)

        if parsed.kind is topics.Kind.TELEMETRY:
            body = decode_json(payload) if body is _UNDECODED else body
            result = await self._ingest(rt, client, device, telemetry_body(body), qos)
            rt.metrics.telemetry_received("mqtt", result.points)
            return result.points
        if parsed.kind is topics.Kind.LWT:
            self._went_offline(rt, client, device.id, now, "last_will", will)
            return 0
        if parsed.kind is topics.Kind.ACK:
            body = decode_json(payload) if body is _UNDECODED else body
            await self._ack(rt, device.id, body)
            rt.presence.seen(device.id, now)
            return 0
        if parsed.detail == "heartbeat":
            rt.presence.seen(device.id, now)
            return 0
        if body is _UNDECODED:
            try:
                body = decode_json(payload)
            except Rejected:
                body = None  # plain text ("online") is fine for status topics
        change = status_change(parsed.detail, payload, body, now_ms=now, max_future_ms=self._max_future_ms)
        await self._status(rt, client, device.id, change.online, change.ts_ms, now, will)
        return 0

    async def _check_key(self, rt: Runtime, client: Client) -> DeviceAuth:
        """Re-check the connection's key on each message (cached): a rotated key, a deleted or
        deactivated device end the connection at once, even before ``disconnect_device`` is called."""
        assert client.device is not None
        auth = await rt.devices.authenticate(client.keys[client.device.id])
        if auth is None or auth.id != client.device.id:
            client.revoked = True
            client.close("kicked")
            raise Rejected(
                "auth", "Invalid API key", "The API key was rotated or the device deleted; reconnect"
            )
        if auth.status != "active":
            client.revoked = True
            client.close("kicked")
            raise Rejected("inactive", "Device inactive", f"Device is currently {auth.status}")
        return auth

    async def _check_anonymous(self, rt: Runtime, client: Client, device_id: int, body: Any) -> DeviceAuth:
        key = api_key_of(body)
        if key is None:
            raise Rejected(
                "auth",
                "API key required",
                'Anonymous clients put the device\'s "api_key" in every message (or connect with '
                "username = device id, password = API key)",
            )
        auth = await rt.devices.authenticate(key)
        if auth is None or auth.id != device_id:
            raise Rejected("auth", "Invalid API key", f"The api_key is not the key of device {device_id}")
        if auth.status != "active":
            raise Rejected("inactive", "Device inactive", f"Device is currently {auth.status}")
        if client.keys.get(device_id) != key:
            client.keys[device_id] = key
            self._live.setdefault(device_id, set()).add(client)
        return auth

    async def _ingest(self, rt: Runtime, client: Client, device: DeviceAuth, body: Any, qos: int) -> Ingested:
        deadline = time.monotonic() + OVERLOAD_RETRY_S
        while True:
            try:
                return await rt.telemetry.ingest(device, body)
            except ServiceUnavailable as exc:
                if qos == 0 or client.closed or time.monotonic() >= deadline:
                    raise Rejected("unavailable", exc.title, exc.message) from None
                retry = exc.extra.get("retry_after", 1)
                await asyncio.sleep(min(float(retry), 1.0))
            except InvalidTimestamp as exc:
                raise Rejected("bad_timestamp", exc.title, exc.message) from None
            except BadRequest as exc:
                reason = "no_readings" if exc.title == "Telemetry data is required" else "bad_payload"
                raise Rejected(reason, exc.title, exc.message) from None

    async def _ack(self, rt: Runtime, device_id: int, body: Any) -> None:
        if not isinstance(body, dict):
            raise Rejected("bad_payload", "Invalid command acknowledgement", "The payload must be an object")
        try:
            await rt.commands.handle_ack(device_id, {k: v for k, v in body.items() if k != "api_key"})
        except NotFound as exc:
            raise Rejected("unknown_command", exc.title, exc.message) from None
        except IoTFlowError as exc:
            raise Rejected("bad_payload", exc.title, exc.message) from None

    async def _status(
        self, rt: Runtime, client: Client, device_id: int, online: bool, ts: int | None, now: int, will: bool
    ) -> None:
        if ts is not None:
            # A retained status replayed later must not rewrite history.
            heard = rt.presence.last_heard(device_id)
            cached = await rt.presence.last_seen(device_id, None)
            newest = max(t for t in (heard, cached, -1) if t is not None)
            if ts < newest or (online and now - ts > rt.presence.offline_after_ms):
                self.stats.ignored_stale += 1
                return
        if online:
            rt.presence.seen(device_id, now if ts is None else ts)
        else:
            reason = "last_will" if will else "status"
            self._went_offline(rt, client, device_id, now if ts is None else ts, reason, will)

    def _went_offline(
        self, rt: Runtime, client: Client, device_id: int, ts: int, reason: str, will: bool
    ) -> None:
        if will and any(c is not client for c in self.clients_of(device_id)):
            return  # the last will of an old connection; the device is connected again
        rt.presence.mark_offline(device_id, ts, reason=reason)

    # ----- refusals --------------------------------------------------------------------------------

    def _reject(
        self,
        client: Client,
        device_id: int | None,
        topic: str,
        rejected: Rejected,
        now: int,
        *,
        telemetry: bool = False,
    ) -> None:
        self.stats.reject(
            rejected.reason,
            device_id,
            client.client_id,
            f"{rejected.title}: {rejected.message} (topic {topic!r})",
            now,
        )
        if telemetry and self._rt is not None:
            self._rt.metrics.telemetry_rejected_reason("mqtt", rejected.reason)
        if device_id is not None:
            self._report(device_id, topic, rejected, now)

    def _report(self, device_id: int, topic: str, rejected: Rejected, now: int) -> None:
        """Publish the refusal on the device's error topic, when someone listens (rate limited)."""
        errors = topics.errors_topic(device_id)
        if not self.subscribed(device_id, errors):
            return
        second = now // 1000
        budget = self._error_budget.setdefault(device_id, [second, 0])
        if budget[0] != second:
            budget[0], budget[1] = second, 0
            if len(self._error_budget) > 100_000:
                self._error_budget.clear()
        if budget[1] >= ERRORS_PER_SECOND:
            self.stats.errors_suppressed += 1
            return
        budget[1] += 1
        body = {
            "error": rejected.title,
            "message": rejected.message,
            "topic": topic,
            "timestamp": format_ts(now),
        }
        self.stats.errors_reported += 1
        self.spawn(self._publish(errors, msgspec.json.encode(body), 0, False))


_UNDECODED = object()


def _kind(parsed: topics.DeviceTopic | None) -> str:
    if parsed is None:
        return "unknown"
    if parsed.kind is topics.Kind.STATUS:
        return "status" if parsed.detail in ("online", "offline") else parsed.detail
    return str(parsed.kind)


def _wrong_device(topic: str) -> Rejected:
    return Rejected(
        "wrong_device",
        "Forbidden: device mismatch",
        f"A device may publish only under iotflow/devices/<its id>/, not on {topic!r}",
    )
