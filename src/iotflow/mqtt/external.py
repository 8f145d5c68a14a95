"""The external MQTT transport: IoTFlow as a privileged client of a real broker (``spec/mqtt.md``).

Devices talk to Mosquitto (or EMQX, ...) at ``IOTFLOW_MQTT_BROKER_URL``; IoTFlow connects with MQTT
3.1.1 (paho-mqtt 2, its network loop in one thread) and consumes device topics through a **shared
subscription** (group ``iotflow``), so that several IoTFlow processes split the load. (MQTT 5 cost
about half of the consumer's CPU again: paho builds a properties object for every message received.)
Every message goes through the same :class:`~iotflow.mqtt.handler.MessageHandler` as in embedded mode,
except the **fast path**: telemetry of a device whose key a handled message proved within ``TRUST_S``,
carrying that same key, is parsed as soon as the network thread hands it over, and everything handed
over together is stored in one submission to the ingest pipeline. Anything unusual (another topic, a
different key, a payload that does not parse, an expired trust) takes the general road, which refuses
and reports it exactly as before.

**Acknowledgement = stored.** The session is persistent (clean session off) and
the client acknowledges manually: the PUBACK of a QoS 1 message is sent only after the handler returned
(telemetry committed, status applied, acknowledgement recorded, or the message refused for good). A
crash before that loses nothing: the broker keeps the unacknowledged message in IoTFlow's session and
sends it again when IoTFlow reconnects with the same client id. A message received on an earlier
connection is never acknowledged on a later one (the broker has re-sent it, and its packet id may now
name another message).

**Bounded.** At most ``WINDOW`` messages are handled at once: the broker sends no more unacknowledged
QoS 1 messages than its ``max_inflight_messages`` per client, and the network thread waits for a free
slot before taking the next message (QoS 0 included), so a busy IoTFlow slows the broker's delivery to
it (the broker queues, within its ``max_queued_messages``) instead of growing a queue in memory.

**Authentication** is the broker's job for connections; IoTFlow cannot see who published a message,
so every device message must carry the ``api_key`` of the topic's device — the compatibility rule of
embedded mode — and messages of unknown or inactive devices are refused. With Mosquitto's dynamic
security (``IOTFLOW_MQTT_DYNSEC=true``, :mod:`iotflow.mqtt.dynsec`) IoTFlow also keeps one broker
client per device, sending the plugin's commands with :meth:`ExternalTransport.control`.

**Presence**: IoTFlow does not see device connections. A device counts as connected (commands are
published to it at once) while it has been heard within ``IOTFLOW_DEVICE_OFFLINE_AFTER`` and has not
said it went offline; when a device comes back, its pending commands are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from iotflow.cache.base import DeviceAuth
from iotflow.config import Settings, describe_url
from iotflow.errors import ConfigError, ServiceUnavailable
from iotflow.mqtt import topics
from iotflow.mqtt.clients import Client
from iotflow.mqtt.dynsec import RESPONSE_TOPIC
from iotflow.mqtt.handler import MessageHandler
from iotflow.mqtt.payloads import api_key_of, decode_json, telemetry_body
from iotflow.mqtt.stats import MqttStats
from iotflow.storage.timeseries.base import Point
from iotflow.telemetry.parse import Message
from iotflow.timeutil import format_ts, now_ms

if TYPE_CHECKING:
    from iotflow.runtime import Runtime

log = logging.getLogger("iotflow.mqtt")

SHARE_GROUP = "iotflow"
#: what IoTFlow consumes (not ``iotflow/devices/+/#``: that would bring back IoTFlow's own commands,
#: config and error reports, and "no local" cannot be used on shared subscriptions)
FILTERS = (
    "iotflow/devices/+/telemetry/#",
    "iotflow/devices/+/status/+",
    "iotflow/devices/+/commands/ack",
    "iotflow/lwt/devices/+",
)
_PUBACK = struct.Struct("!BBH")  # an MQTT PUBACK: type, remaining length 2, packet id
WINDOW = 256  # messages handled at once (QoS 1 is also bounded by the broker's in-flight limit)
KEEPALIVE_S = 60
CONNECT_WAIT_S = 10.0  # how long start() waits for the first CONNACK
RETRY_S = 1.0  # a message that could not be stored (ingest queue full) is tried again after this
STOP_DRAIN_S = 5.0
MAX_OUTGOING_QUEUE = 10_000
CONTROL_WAIT_S = 10.0  # how long control() waits for the broker's reply
CONTROL_PREFIX = "$CONTROL/"
#: how long a device whose key a message proved stays trusted for the fast path (then re-checked)
TRUST_S = 5.0
TOPIC_CACHE = 100_000
TOPIC_CACHE_LEN = 200  # longer topics are parsed each time instead of kept
_FATAL = ("Bad user name or password", "Not authorized", "Client identifier not valid", "Banned")


class BrokerUrl(NamedTuple):
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    client_id: str


def parse_broker_url(url: str) -> BrokerUrl:
    """``mqtt[s]://[user[:password]@]host[:port][?client_id=...]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ConfigError(
            f"IOTFLOW_MQTT_BROKER_URL {describe_url(url)!r} is not mqtt://[user:password@]host[:port]"
        )
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"IOTFLOW_MQTT_BROKER_URL {describe_url(url)!r}: bad port") from None
    query = parse_qs(parts.query)
    client_id = query.get("client_id", [f"iotflow-{socket.gethostname()}"])[0]
    return BrokerUrl(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        client_id=client_id,
    )


def _is_outgoing(topic: str) -> bool:
    """A topic IoTFlow publishes to devices (never handled as a device message)."""
    device_id = topics.device_of(topic)
    return device_id is not None and topics.may_receive(device_id, topic)


def _device_of(topic: str) -> int | None:
    parsed = topics.parse(topic)
    return parsed.device_id if parsed is not None else topics.device_of(topic)


Item = tuple[str, bytes, int, int, int]  # (topic, payload, qos, packet id, connection generation)


class _Ready(NamedTuple):
    """A telemetry message parsed on the fast path, waiting for its points' commit."""

    item: Item
    device: DeviceAuth
    messages: list[Message]


class ExternalTransport:
    mode = "external"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._url = parse_broker_url(settings.mqtt_broker_url or "")
        self.stats = MqttStats()
        self.handler = MessageHandler(settings, self.stats, self._publish)
        self._rt: Runtime | None = None
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = threading.BoundedSemaphore(WINDOW)
        self._in_flight = 0
        self._generation = 0  # one per broker connection: acknowledgements never cross connections
        self._connected = False
        self._first_connack: asyncio.Future[str] | None = None
        self._stopping = False
        self._devices: dict[int, Client] = {}  # device id → the Client its proven key is kept in
        self._trusted: dict[int, tuple[DeviceAuth, float]] = {}  # device id → (auth, trusted until)
        self._delivering: set[int] = set()  # devices whose pending commands are being published
        self._inbox: list[Item] = []  # messages the network thread handed over, not yet taken
        self._inbox_lock = threading.Lock()
        self._topics: dict[str, topics.DeviceTopic | None] = {}  # parsed topics of the fast path
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reconnects = 0
        self.not_acknowledged = 0  # handled on a connection that was gone before the PUBACK
        self.fast_path = 0  # telemetry messages stored by the fast path
        self._control_ids = itertools.count(1)
        self._control_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def bind(self, rt: Runtime) -> None:
        self._rt = rt
        self.handler.bind(rt)

    # ----- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._first_connack = loop.create_future()
        u = self._url
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=u.client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        if u.username is not None:
            client.username_pw_set(u.username, u.password)
        if u.tls:
            client.tls_set()
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(MAX_OUTGOING_QUEUE)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(u.host, u.port, keepalive=KEEPALIVE_S)
        self._client = client
        client.loop_start()
        try:
            problem = await asyncio.wait_for(asyncio.shield(self._first_connack), CONNECT_WAIT_S)
        except TimeoutError:
            log.warning("MQTT broker %s not reachable yet; IoTFlow keeps trying", describe_url(self._where()))
            return
        if problem:
            await self._halt()
            raise ConfigError(f"The MQTT broker {describe_url(self._where())} refused IoTFlow: {problem}")
        log.info("MQTT: consuming from %s as %r", describe_url(self._where()), u.client_id)

    def _where(self) -> str:
        return self._settings.mqtt_broker_url or ""

    async def stop(self) -> None:
        self._stopping = True
        if self._tasks:  # messages being stored: let them finish and be acknowledged
            await asyncio.wait(list(self._tasks), timeout=STOP_DRAIN_S)
        await self._halt()
        await self.handler.drain(STOP_DRAIN_S)

    async def _halt(self) -> None:
        self._stopping = True
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.disconnect()  # the session stays on the broker (clean session off)
        await asyncio.to_thread(client.loop_stop)
        self._connected = False

    # ----- paho callbacks (network thread) ---------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        first = self._first_connack
        if reason.is_failure:
            text = str(reason)
            log.warning("MQTT broker refused the connection: %s", text)
            if first is not None and self._loop is not None and any(f in text for f in _FATAL):
                self._loop.call_soon_threadsafe(_settle, first, text)
            return
        self._generation += 1
        self._connected = True
        if self._generation > 1:
            self.reconnects += 1
            log.info("MQTT: reconnected to the broker")
        client.subscribe([(f"$share/{SHARE_GROUP}/{f}", 1) for f in FILTERS])
        if self._settings.mqtt_dynsec:
            client.subscribe(RESPONSE_TOPIC, 0)  # replies to control()
        if first is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_settle, first, "")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected = False
        if not self._stopping:
            self.stats.disconnects["abnormal" if reason.is_failure else "clean"] += 1
            log.warning("MQTT: lost the broker connection (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.startswith(CONTROL_PREFIX):  # a reply of the broker's control API
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            if self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._control_reply, bytes(msg.payload))
            return
        # Wait for a free slot: this is the flow control (the broker holds further messages).
        while not self._slots.acquire(timeout=0.5):
            if self._stopping:
                return  # not acknowledged: the broker sends it again to the next connection
        loop = self._loop
        if loop is None or self._stopping:
            self._slots.release()
            return
        item = (msg.topic, bytes(msg.payload), msg.qos, msg.mid, self._generation)
        # One wake-up of the event loop per burst, not per message.
        with self._inbox_lock:
            self._inbox.append(item)
            first = len(self._inbox) == 1
        if first:
            try:
                loop.call_soon_threadsafe(self._take_inbox)
            except RuntimeError:  # the event loop is closed: nothing will be acknowledged
                self._slots.release()

    # ----- handling (event loop) -------------------------------------------------------------------

    def _take_inbox(self) -> None:
        """Everything the network thread handed over: telemetry of trusted devices is parsed here and
        stored in one batch; every other message takes the general road (:meth:`_handle`)."""
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
        ready: list[_Ready] = []
        now = now_ms()
        for item in items:
            try:
                parsed = self._fast_parse(item, now)
            except Exception:  # whatever it is, the general road refuses and reports it
                parsed = None
            if parsed is None:
                self._spawn_handling(item)
            else:
                ready.append(parsed)
        if ready:
            task = asyncio.ensure_future(self._store_ready(ready, now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _fast_parse(self, item: Item, now: int) -> _Ready | None:
        """A telemetry message of a device trusted a moment ago, with that device's key, parsed; None
        (or an exception, for a payload that does not decode or parse) for anything else: the general
        road handles it, refusals and their reports included."""
        topic, payload, _qos, _mid, _generation = item
        rt = self._rt
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = topics.parse(topic)
            if parsed is not None and len(topic) <= TOPIC_CACHE_LEN:  # only short, valid topics
                if len(self._topics) >= TOPIC_CACHE:
                    self._topics.clear()
                self._topics[topic] = parsed
        if rt is None or parsed is None or parsed.kind is not topics.Kind.TELEMETRY:
            return None
        trusted = self._trusted.get(parsed.device_id)
        client = self._devices.get(parsed.device_id)
        if trusted is None or client is None or client.revoked or trusted[1] < time.monotonic():
            return None
        if len(payload) > self._settings.mqtt_max_payload:
            return None
        body = decode_json(payload)  # raises for what does not decode: the caller sends it on
        key = api_key_of(body)
        known = client.keys.get(parsed.device_id)
        if key is None or known is None or not hmac.compare_digest(key.encode(), known.encode()):
            return None
        device = trusted[0]
        return _Ready(item, device, rt.telemetry.parse(device, telemetry_body(body), now))

    async def _store_ready(self, ready: list[_Ready], now: int) -> None:
        """Store the fast path's messages in one submission; acknowledge each once committed."""
        rt = self._rt
        assert rt is not None
        self._in_flight += len(ready)
        handed_over = False
        try:
            points: list[Point] = [p for r in ready for m in r.messages for p in m.points]
            try:
                await rt.telemetry.pipeline.submit(points)
            except ServiceUnavailable:
                # Ingest queue full: the general road retries each message and acknowledges it once stored.
                handed_over = True
                for r in ready:
                    self._spawn_handling(r.item)
                return
            self.fast_path += len(ready)
            seen: set[int] = set()
            size = 0
            pubacks: list[tuple[int, int]] = []
            for r in ready:
                _topic, payload, qos, mid, generation = r.item
                size += len(payload)
                device_id = r.device.id
                if device_id not in seen or any(m.metadata for m in r.messages):
                    was_connected = self.is_connected(device_id)
                    seen.add(device_id)
                    rt.telemetry.committed(r.device, r.messages, now)
                    if not was_connected:  # back (after status/offline or its last will)
                        self._deliver_when_back(device_id)
                if qos == 1:
                    pubacks.append((mid, generation))
                elif qos > 0:
                    self._ack(mid, qos, generation)
            self._puback_all(pubacks)
            self.stats.messages("telemetry", len(ready), size, now)
            self.stats.stored("telemetry", len(points), messages=len(ready))
            rt.metrics.telemetry_received("mqtt", len(points), messages=len(ready))
        finally:
            self._in_flight -= len(ready)
            if not handed_over:
                for _ in ready:
                    self._slots.release()

    def _spawn_handling(self, item: Item) -> None:
        task = asyncio.ensure_future(self._handle(*item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, topic: str, payload: bytes, qos: int, mid: int, generation: int) -> None:
        self._in_flight += 1
        try:
            if _is_outgoing(topic):
                ok = True
            else:
                ok = await self._process(topic, payload, qos)
            if ok and qos > 0:
                self._ack(mid, qos, generation)
        finally:
            self._in_flight -= 1
            self._slots.release()

    async def _process(self, topic: str, payload: bytes, qos: int) -> bool:
        device_id = _device_of(topic)
        client = self._devices.get(device_id) if device_id is not None else None
        if client is None:
            client = Client(f"broker:{device_id}", None, {})
            if device_id is not None:
                client.subscriptions.add(topics.errors_topic(device_id))  # refusals are reported
        was_connected = device_id is not None and self.is_connected(device_id)
        while True:
            ok = await self.handler.handle(client, topic, payload, qos)
            if ok or self._stopping:
                break
            await asyncio.sleep(RETRY_S)  # ingest queue full: keep the message, try again
        if ok and device_id is not None and client.keys:
            self._devices.setdefault(device_id, client)
            await self._trust(device_id, client)
            if not was_connected:
                self._deliver_when_back(device_id)
        return ok

    def _deliver_when_back(self, device_id: int) -> None:
        """Publish the device's pending commands if it just came back (once at a time)."""
        if self.is_connected(device_id) and device_id not in self._delivering:
            self._delivering.add(device_id)
            self.handler.spawn(self._deliver_pending(device_id))

    async def _trust(self, device_id: int, client: Client) -> None:
        """The device's key was proven by a handled message: its telemetry may take the fast path for
        ``TRUST_S`` (a rotated key, deactivation or deletion ends that at once: disconnect_device)."""
        rt, key = self._rt, client.keys.get(device_id)
        if rt is None or key is None or self._devices.get(device_id) is not client:
            return
        auth = await rt.devices.authenticate(key)
        if self._devices.get(device_id) is not client or client.revoked:
            return  # revoked while the key was being checked
        if auth is not None and auth.id == device_id and auth.status == "active":
            self._trusted[device_id] = (auth, time.monotonic() + TRUST_S)

    def _puback_all(self, acks: list[tuple[int, int]]) -> None:
        """PUBACK each (mid, generation) of a burst, all in one write to the broker.

        ``client.ack`` queues one 4-byte packet and wakes the network thread for each message (a
        write to paho's wake-up socket, a ``select`` return and a ``send`` every time). The PUBACKs of
        a burst go out as one stream of frames through the same queue instead, with one wake-up."""
        client = self._client
        queue = getattr(client, "_packet_queue", None)
        if len(acks) < 2 or queue is None:  # (paho without that method: one by one)
            for mid, generation in acks:
                self._ack(mid, 1, generation)
            return
        if client is None or not self._connected:
            self.not_acknowledged += len(acks)
            return
        current = [mid for mid, generation in acks if generation == self._generation]
        self.not_acknowledged += len(acks) - len(current)
        if current:
            frames = b"".join(_PUBACK.pack(PUBACK, 2, mid) for mid in current)
            queue(PUBACK, frames, current[-1], 1)

    def _ack(self, mid: int, qos: int, generation: int) -> None:
        client = self._client
        if client is None or generation != self._generation or not self._connected:
            self.not_acknowledged += 1  # the broker re-sent it on the new connection
            return
        client.ack(mid, qos)

    async def _deliver_pending(self, device_id: int) -> None:
        rt = self._rt
        try:
            if rt is not None:
                await rt.commands.deliver_pending(device_id)
        except Exception as exc:
            log.warning("delivering pending commands to device %s failed: %s", device_id, exc)
        finally:
            self._delivering.discard(device_id)

    # ----- the broker's control API ($CONTROL/...) ------------------------------------------------

    async def control(self, topic: str, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` to a broker control API (``$CONTROL/<feature>/v1``) and return its
        response to each, in order (``{"command", "error"?, "data"?}``). Raises ``ConnectionError``
        when the broker connection is down and ``TimeoutError`` when no reply comes within
        ``CONTROL_WAIT_S``."""
        client, loop = self._client, self._loop
        if client is None or loop is None or not self._connected:
            raise ConnectionError("IoTFlow is not connected to the MQTT broker")
        waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        batch = []
        for command in commands:
            correlation = f"{self._url.client_id}:{next(self._control_ids)}"
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._control_waiters[correlation] = future
            waiters.append((correlation, future))
            batch.append({**command, "correlationData": correlation})
        try:
            info = client.publish(topic, json.dumps({"commands": batch}), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"could not publish to {topic}: {info.rc}")
            async with asyncio.timeout(CONTROL_WAIT_S):
                return [await future for _, future in waiters]
        finally:
            for correlation, _ in waiters:
                self._control_waiters.pop(correlation, None)

    def _control_reply(self, payload: bytes) -> None:
        try:
            responses = json.loads(payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        for response in responses if isinstance(responses, list) else []:
            if not isinstance(response, dict):
                continue
            future = self._control_waiters.get(str(response.get("correlationData")))
            if future is not None and not future.done():
                future.set_result(response)

    # ----- the MqttTransport contract --------------------------------------------------------------

    def is_connected(self, device_id: int) -> bool:
        """Recently heard and not reported offline (IoTFlow cannot see the broker's connections)."""
        rt = self._rt
        if rt is None or not self._connected:
            return False
        return rt.presence.is_online(rt.presence.last_heard(device_id), now_ms(), device_id)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        return await self._publish(topic, payload, qos, retain)

    async def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """Hand the message to the broker connection; False when it is down or its queue is full."""
        client = self._client
        if client is None or not self._connected:
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self.stats.sent += 1
        return True

    async def recheck_device(self, device_id: int) -> None:
        client = self._devices.get(device_id)
        if client is not None and not await self.handler.still_valid(client):
            await self.disconnect_device(device_id)

    async def disconnect_device(self, device_id: int) -> None:
        """Forget the device's proven key; its next message must carry a valid one (the broker's
        connection of the device is the broker's business)."""
        self._trusted.pop(device_id, None)
        client = self._devices.pop(device_id, None)
        if client is not None:
            client.revoked = True
            client.ended_by = "kicked"
            await self.handler.disconnected(client, clean=False)

    def status(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "mode": "external",
            "connected": self._connected,
            "host": self._url.host,
            "port": self._url.port,
            "clients_connected": self.handler.devices_connected(),
            "subscriptions": len(FILTERS) if self._connected else 0,
            "messages": {
                "received": sum(stats.received.values()),
                "sent": stats.sent,
                "rejected": sum(stats.rejected.values()),
                "last_message_time": None
                if stats.last_message_ms is None
                else format_ts(stats.last_message_ms),
            },
        }

    def metrics(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out["connections"].update({"current": 1 if self._connected else 0, "devices": len(self._devices)})
        out["subscriptions"]["current"] = len(FILTERS) if self._connected else 0
        return {
            "mode": "external",
            "broker": {
                "url": describe_url(self._where()),
                "client_id": self._url.client_id,
                "connected": self._connected,
                "reconnects": self.reconnects,
                "shared_subscriptions": [f"$share/{SHARE_GROUP}/{f}" for f in FILTERS],
                "in_flight": self._in_flight,
                "window": WINDOW,
                "not_acknowledged": self.not_acknowledged,
                "fast_path": self.fast_path,
                "max_payload": self._settings.mqtt_max_payload,
            },
            **out,
        }


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)
