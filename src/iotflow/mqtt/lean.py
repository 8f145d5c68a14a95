"""Lighter per-connection objects for amqtt's broker (amqtt 0.12), so that an idle device costs little.

amqtt gives every connection a ``transitions`` state machine (about 15 KB and 0.3 ms to build, most of
an idle connection's memory), four ``asyncio.Queue``\\ s (about 3 KB each), and four waiter tasks that
wait on those queues for the whole life of the connection. IoTFlow needs none of that:

- :class:`SessionState` stands in for the state machine: the same three states, the same triggers
  (``connect``, ``disconnect``) and the same callbacks (the session's connect and disconnect times,
  which the session-expiry monitor reads). :class:`LeanSession` uses it; :func:`install` makes
  amqtt's CONNECT handling build ``LeanSession``\\ s. It is a faithful drop-in, so any amqtt broker in
  the process keeps working.
- :class:`LazyQueue` replaces the session's message queues until a message is actually queued (a
  persistent session that receives commands while offline). Device messages never wait in a queue:
  the embedded transport handles them in ``put`` (see :mod:`iotflow.mqtt.embedded`).
- :class:`LeanHandler` handles SUBSCRIBE and UNSUBSCRIBE where they are read, one at a time and in
  order, instead of queueing them for a task of the broker; its disconnect future exists from the
  start, so a DISCONNECT read before the connection is fully set up is not missed; and its ``stop``
  does not wait for ever on a reader that missed its cancellation (see :meth:`LeanHandler.stop`).

The broker side (one task per connection that waits for the end of the connection) is
:class:`iotflow.mqtt.embedded._Broker`. These classes rely on amqtt internals, hence the pinned amqtt
version; the MQTT tests cover subscriptions, take-over, persistent sessions, keep-alive and last wills.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol import broker_handler
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler, Subscription, UnSubscription
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.session import Session

log = logging.getLogger("iotflow.mqtt")

CONNECTED = "connected"
DISCONNECTED = "disconnected"
READER_CANCEL_RETRY_S = 0.1  # how long a stopping handler waits for its reader before cancelling it again


class SessionState:
    """A session's state: ``new`` → ``connected`` ⇄ ``disconnected`` (what amqtt's state machine did)."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def connect(self) -> None:
        if self.state == CONNECTED:  # amqtt catches this and takes the connection over
            raise ValueError("session already connected")
        self.state = CONNECTED
        self._session._on_enter_connected()

    def disconnect(self) -> None:
        self.state = DISCONNECTED
        self._session._on_enter_disconnected()

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == CONNECTED

    def is_disconnected(self) -> bool:
        return self.state == DISCONNECTED


class LazyQueue:
    """The part of ``asyncio.Queue`` amqtt uses on a session, with the queue made on the first put."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] | None = None

    def _real(self) -> asyncio.Queue[Any]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    def qsize(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def empty(self) -> bool:
        return self._queue is None or self._queue.empty()

    async def put(self, item: Any) -> None:
        await self._real().put(item)

    def put_nowait(self, item: Any) -> None:
        self._real().put_nowait(item)

    async def get(self) -> Any:
        return await self._real().get()

    def get_nowait(self) -> Any:
        if self._queue is None:
            raise asyncio.QueueEmpty
        return self._queue.get_nowait()


class LeanSession(Session):  # type: ignore[misc]
    """amqtt's session with :class:`SessionState` and :class:`LazyQueue`\\ s."""

    def __init__(self) -> None:
        super().__init__()
        self.retained_messages = LazyQueue()
        self.delivered_message_queue = LazyQueue()

    def _init_states(self) -> None:
        self.transitions = SessionState(self)


def install() -> None:
    """Make amqtt's CONNECT handling create :class:`LeanSession`\\ s (idempotent)."""
    if broker_handler.Session is not LeanSession:
        if broker_handler.Session is not Session:
            raise RuntimeError("amqtt's session class was replaced by something else")
        broker_handler.Session = LeanSession


SubscriptionCallback = Callable[["LeanHandler", Subscription], Awaitable[None]]
UnsubscriptionCallback = Callable[["LeanHandler", UnSubscription], Awaitable[None]]


class LeanHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's broker-side protocol handler without its queues: (un)subscriptions go to callbacks."""

    def __init__(
        self,
        plugins_manager: Any,
        on_subscribe: SubscriptionCallback,
        on_unsubscribe: UnsubscriptionCallback,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        ProtocolHandler.__init__(self, plugins_manager, None, loop)  # not BrokerProtocolHandler's queues
        self._on_subscribe = on_subscribe
        self._on_unsubscribe = on_unsubscribe
        self._in_order = asyncio.Lock()  # (un)subscriptions are answered in the order they came
        self.disconnected: asyncio.Future[DisconnectPacket | None] = self._loop.create_future()
        self._disconnect_waiter = self.disconnected

    async def start(self) -> None:
        await ProtocolHandler.start(self)
        self._reader_ready = _ALWAYS_SET  # only set again by the reader from now on

    async def stop(self) -> None:
        """amqtt's ``stop``, after making sure the reader task has ended.

        amqtt cancels the reader task once and then waits for it to end. But the reader waits for each
        packet with ``asyncio.wait_for`` (the keep-alive time-out), which before Python 3.12 swallows a
        cancellation that comes just after a packet arrived: the reader then reads on, and amqtt's
        ``stop`` waited for ever (a connection taking over a live session never got its CONNACK). So
        the reader is cancelled again until it has ended.
        """
        reader = self._reader_task
        if reader is not None and reader is not asyncio.current_task():
            while not reader.done() and not self._reader_stopped.is_set():
                reader.cancel()
                await asyncio.wait([reader], timeout=READER_CANCEL_RETRY_S)
        await ProtocolHandler.stop(self)
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    async def handle_disconnect(self, disconnect: DisconnectPacket | None) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(disconnect)

    async def handle_subscribe(self, subscribe: SubscribePacket) -> None:
        header, payload = subscribe.variable_header, subscribe.payload
        if header is None or payload is None:
            return
        await self._in_turn(self._on_subscribe, Subscription(header.packet_id, payload.topics))

    async def handle_unsubscribe(self, unsubscribe: UnsubscribePacket) -> None:
        header, payload = unsubscribe.variable_header, unsubscribe.payload
        if header is None or payload is None:
            return
        await self._in_turn(self._on_unsubscribe, UnSubscription(header.packet_id, payload.topics))

    async def _in_turn(self, callback: Callable[[LeanHandler, Any], Awaitable[None]], request: Any) -> None:
        async with self._in_order:
            try:
                await callback(self, request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # as amqtt did: a failed (un)subscription ends the connection
                client_id = self.session.client_id if self.session is not None else None
                log.warning("MQTT client %r: (un)subscription failed: %r", client_id, exc)
                await self.handle_connection_closed()


class _AlwaysSet:
    """An event that is always set (what the reader loop sets on every packet once it is running)."""

    __slots__ = ()

    def set(self) -> None:
        return None

    def is_set(self) -> bool:
        return True

    async def wait(self) -> bool:
        return True


_ALWAYS_SET: Any = _AlwaysSet()
