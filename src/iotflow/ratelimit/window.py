"""Moving-window counters: the storage behind the rate limits.

A *moving window* allows ``amount`` hits in any ``window`` seconds: a hit is refused while the
``amount``-th most recent accepted hit is younger than ``window``. Two implementations of one
:class:`Window` protocol:

- :class:`MemoryWindow` (default): in-process, a log of accepted hit times per key; one hit costs
  about a microsecond and nothing runs in the background.
- :class:`LimitsWindow`: any storage of the ``limits`` library with moving-window support — the way to
  share limits between workers through Redis (``limits.aio.storage.RedisStorage``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple, Protocol

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MovingWindowSupport, Storage
from limits.aio.strategies import MovingWindowRateLimiter


class WindowState(NamedTuple):
    allowed: bool
    remaining: int  # hits left in the window after this one
    reset_at: float  # epoch seconds when the oldest hit in the window leaves it (a slot frees)


class Window(Protocol):
    async def hit(self, key: str, amount: int, window: int) -> WindowState:
        """Count one hit of ``key`` unless ``amount`` hits happened in the last ``window`` seconds."""


class MemoryWindow:
    """Exact moving window kept in this process: per key, the times of the last ``amount`` hits."""

    SWEEP_EVERY = 60.0

    def __init__(self) -> None:
        self._log: dict[str, deque[float]] = {}
        self._longest = 0
        self._next_sweep = time.time() + self.SWEEP_EVERY

    async def hit(self, key: str, amount: int, window: int) -> WindowState:
        now = time.time()
        if now >= self._next_sweep:
            self._sweep(now)
        log = self._log.get(key)
        if log is None:
            log = self._log[key] = deque(maxlen=amount)
            self._longest = max(self._longest, window)
        horizon = now - window
        while log and log[0] <= horizon:
            log.popleft()
        if len(log) >= amount:
            return WindowState(False, 0, log[0] + window)
        log.append(now)
        return WindowState(True, amount - len(log), log[0] + window)

    def _sweep(self, now: float) -> None:
        """Forget keys idle for longer than any window (bounded memory for one-off clients)."""
        horizon = now - self._longest
        idle = [key for key, log in self._log.items() if not log or log[-1] <= horizon]
        for key in idle:
            del self._log[key]
        self._next_sweep = now + self.SWEEP_EVERY

    def __len__(self) -> int:
        return len(self._log)


class LimitsWindow:
    """A moving window on a ``limits`` storage (for example Redis, shared by every worker)."""

    def __init__(self, storage: Storage) -> None:
        if not isinstance(storage, MovingWindowSupport):
            raise TypeError(f"{type(storage).__name__} has no moving-window support")
        self._limiter = MovingWindowRateLimiter(storage)
        self._items: dict[tuple[int, int], RateLimitItem] = {}

    async def hit(self, key: str, amount: int, window: int) -> WindowState:
        item = self._items.get((amount, window))
        if item is None:
            item = self._items[(amount, window)] = RateLimitItemPerSecond(amount, window)
        allowed = await self._limiter.hit(item, key)
        stats = await self._limiter.get_window_stats(item, key)
        return WindowState(allowed, max(0, stats.remaining), stats.reset_time)
