"""Value encoding and chunk naming for the SQLite time-series store.

A point is stored as ``(s, ts, t, v)``: ``v`` holds the value in its natural SQLite type and ``t`` is
NULL for that natural case (float → REAL, int → INTEGER, str → TEXT). Only the types SQLite cannot
tell apart get a small code in ``t``: a bool is stored as INTEGER 0/1 with ``t = T_BOOL`` and a JSON
object/array as compact TEXT with ``t = T_JSON``. A NULL costs no bytes in the record body.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from typing import Any

from iotflow.storage.timeseries.base import Value

T_BOOL = 1
T_JSON = 2

BIT_FLOAT = 1
BIT_INT = 2
BIT_BOOL = 4
BIT_STRING = 8
BIT_JSON = 16
_TYPE_NAMES: tuple[tuple[int, str], ...] = (
    (BIT_BOOL, "bool"),
    (BIT_FLOAT, "float"),
    (BIT_INT, "int"),
    (BIT_JSON, "json"),
    (BIT_STRING, "string"),
)

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

Encoded = tuple[int | None, Any, int]  # (t code, stored value, type bit)


def encode(value: object) -> Encoded:
    """Encode a value for storage; raises ValueError for what cannot be stored faithfully."""
    tp = type(value)
    if tp is float:
        return None, _finite(value), BIT_FLOAT  # type: ignore[arg-type]
    if tp is int:
        return None, _int64(value), BIT_INT  # type: ignore[arg-type]
    if tp is str:
        return None, value, BIT_STRING
    if tp is bool:
        return T_BOOL, 1 if value else 0, BIT_BOOL
    if tp is dict or tp is list:
        return T_JSON, _json(value), BIT_JSON
    # Subclasses (IntEnum, str enums, ...): bool must be checked before int.
    if isinstance(value, bool):
        return T_BOOL, 1 if value else 0, BIT_BOOL
    if isinstance(value, int):
        return None, _int64(int(value)), BIT_INT
    if isinstance(value, float):
        return None, _finite(float(value)), BIT_FLOAT
    if isinstance(value, str):
        return None, str(value), BIT_STRING
    if isinstance(value, dict | list):
        return T_JSON, _json(value), BIT_JSON
    raise ValueError(f"unsupported value type: {tp.__name__}")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"non-finite float cannot be stored: {value!r}")
    return value + 0.0  # -0.0 is stored as 0.0 (reads pass REALs through text, which drops the sign)


def _int64(value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"integer out of 64-bit range: {value}")
    return value


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def decode(t: int | None, v: Any) -> Value:
    """The inverse of :func:`encode`."""
    if t is None:
        return v  # type: ignore[no-any-return]
    if t == T_BOOL:
        return bool(v)
    if t == T_JSON:
        return json.loads(v)  # type: ignore[no-any-return]
    raise ValueError(f"unknown stored type code: {t}")


def type_names(mask: int) -> list[str]:
    """The sorted type names of a type bitmask."""
    return [name for bit, name in _TYPE_NAMES if mask & bit]


def table(chunk: int) -> str:
    """The table name of a chunk number (``ts_12``, ``ts_m5`` for -5)."""
    return f"ts_{chunk}" if chunk >= 0 else f"ts_m{-chunk}"


def parse_table(name: str) -> int | None:
    """The chunk number of a table name, or None if it is not a chunk table."""
    if not name.startswith("ts_"):
        return None
    rest = name[3:]
    negative = rest.startswith("m")
    digits = rest[1:] if negative else rest
    if not digits.isdigit():
        return None
    return -int(digits) if negative else int(digits)


def chunks_between(chunks: Sequence[int], lo_ts: int, hi_ts: int, chunk_ms: int) -> Sequence[int]:
    """The existing chunks (``chunks`` is sorted) that may hold timestamps in ``[lo_ts, hi_ts]``."""
    if lo_ts > hi_ts:
        return ()
    lo = bisect.bisect_left(chunks, lo_ts // chunk_ms)
    hi = bisect.bisect_right(chunks, hi_ts // chunk_ms)
    return chunks[lo:hi]
