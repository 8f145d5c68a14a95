"""What a load run reports, whichever generator produced it, and the small helpers every benchmark
module shares (progress lines, load average, ratios)."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def progress(tag: str) -> Callable[[str], None]:
    """A function printing ``[tag HH:MM:SS] message`` lines on stderr (stdout carries the JSON)."""

    def log(message: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def ratio_of(value: float, baseline: float) -> float:
    return round(value / baseline, 4) if baseline > 0 else 0.0


@dataclass(slots=True)
class LoadResult:
    tool: str
    requests: int  # responses received
    ok: int  # 2xx responses
    non_2xx: int
    socket_errors: int
    seconds: float
    points_per_request: int
    cpu_seconds: float  # CPU time the generator used
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p90, p99, max, mean
    extra: dict[str, object] = field(default_factory=dict)
    unmeasured_ok: int = 0  # 2xx answers outside the measured window (warm-up): stored all the same

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def points_per_s(self) -> float:
        return self.ok_per_s * self.points_per_request

    def summary(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "seconds": round(self.seconds, 3),
            "responses": self.requests,
            "ok_2xx": self.ok,
            **({"unmeasured_ok_2xx": self.unmeasured_ok} if self.unmeasured_ok else {}),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "generator_cpu_seconds": round(self.cpu_seconds, 3),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            **self.extra,
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100 * len(sorted_values))))
    return sorted_values[rank - 1]
