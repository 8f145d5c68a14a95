"""Time parsing and formatting.

Internally every timestamp is an ``int`` number of milliseconds since the Unix
epoch (UTC). Timestamps leave the system as ISO 8601 strings in UTC with
millisecond precision and a ``Z`` suffix, e.g. ``2025-07-02T14:30:00.000Z``.

Everything here is pure (no I/O) and cheap: :func:`parse_timestamp` runs for
every telemetry message and :func:`format_ts` for every value read back.

Accepted absolute timestamp inputs (:func:`parse_timestamp`):

* ISO 8601 with an extended calendar date: ``YYYY-MM-DD``, optionally followed
  by ``T`` (or a space) and a time with optional offset, as understood by
  :meth:`datetime.datetime.fromisoformat`, e.g. ``2025-07-02T14:30:00.123Z``,
  ``2025-07-02 14:30:00.123456``, ``2025-07-02T14:30:00+05:30``. A missing
  offset means UTC; a date alone means midnight UTC; a lowercase ``z`` is
  accepted. Fractional seconds may have any number of digits and are truncated.
* ``MM/DD/YYYY HH:MM:SS[.f...]``, or ``DD/MM/YYYY HH:MM:SS[.f...]`` when the
  first field is greater than 12 (otherwise the first field is the month).
  These are read as UTC. A slash date without a time is rejected.
* A Unix epoch as ``int``/``float`` or as a string of digits with an optional
  leading ``-`` and optional decimal part. The unit is chosen by magnitude of
  the absolute value: seconds (< 1e11), milliseconds (< 1e14), microseconds
  (< 1e17), nanoseconds (>= 1e17). Sub-millisecond parts are floored, so a
  value maps to the millisecond that contains it (also for negative values).
  Digit strings are converted exactly; a float is read as the decimal it
  stands for (its shortest repr), so ``1751466600.123`` gives ``...123``.
* A :class:`datetime.datetime` (naive means UTC).

``bool``, NaN, infinities and instants outside
``0001-01-01T00:00:00.000Z`` .. ``9999-12-31T23:59:59.999Z`` are rejected.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "MAX_MS",
    "MIN_MS",
    "TimestampError",
    "WindowError",
    "format_ts",
    "format_window",
    "now_ms",
    "parse_time_bound",
    "parse_timestamp",
    "parse_window",
]

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS

#: Smallest representable timestamp: 0001-01-01T00:00:00.000Z.
MIN_MS: Final = -62_135_596_800_000
#: Largest representable timestamp: 9999-12-31T23:59:59.999Z.
MAX_MS: Final = 253_402_300_799_999

_MIN_WINDOW_MS: Final = SECOND_MS
_MAX_WINDOW_MS: Final = MAX_MS - MIN_MS

_UNIT_MS: Final[dict[str, int]] = {
    "s": SECOND_MS,
    "m": MINUTE_MS,
    "h": HOUR_MS,
    "d": DAY_MS,
    "w": WEEK_MS,
}
_WINDOW_UNITS: Final = (
    (WEEK_MS, "w"),
    (DAY_MS, "d"),
    (HOUR_MS, "h"),
    (MINUTE_MS, "m"),
    (SECOND_MS, "s"),
)

_EPOCH_NAIVE: Final = datetime(1970, 1, 1)  # naive values are UTC by contract
_EPOCH_AWARE: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

# Epoch magnitude class boundaries (on the absolute value).
_SECONDS_LIMIT: Final = 100_000_000_000  # 1e11
_MILLIS_LIMIT: Final = 100_000_000_000_000  # 1e14
_MICROS_LIMIT: Final = 100_000_000_000_000_000  # 1e17

# No timestamp is anywhere near this long; bounds the work done on hostile input.
_MAX_INPUT_LEN: Final = 128
_MAX_SHOWN_LEN: Final = 64

_EPOCH_RE: Final = re.compile(r"(-?)(\d+)(?:\.(\d+))?", re.ASCII)
_ISO_SEPARATORS: Final = frozenset("Tt ")
_SLASH_RE: Final = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?", re.ASCII)
_RELATIVE_RE: Final = re.compile(r"-(\d{1,15})([smhdw])", re.ASCII)
_WINDOW_RE: Final = re.compile(r"(\d{1,15})([smhdw])", re.ASCII)

_TS_FORMATS: Final = (
    "ISO 8601 (e.g. '2025-07-02T14:30:00.000Z', '2025-07-02T14:30:00+05:30', '2025-07-02'), "
    "'YYYY-MM-DD HH:MM:SS[.ffffff]', 'MM/DD/YYYY HH:MM:SS', 'DD/MM/YYYY HH:MM:SS', "
    "or a Unix epoch number in seconds, milliseconds, microseconds or nanoseconds"
)
_BOUND_FORMATS: Final = (
    "'now', a relative offset '-<N><unit>' with unit s, m, h, d or w (e.g. '-30m', '-24h', '-7d'), "
    "or an absolute timestamp: " + _TS_FORMATS
)
_WINDOW_FORMATS: Final = (
    "a positive integer followed by a unit s, m, h, d or w (e.g. '30s', '5m', '1h', '2d', '1w'), at least 1s"
)
_RANGE_TEXT: Final = "0001-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z"


class _FieldError(ValueError):
    """A ``ValueError`` that remembers which input field was at fault."""

    field: str
    message: str

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[_FieldError], tuple[str, str]]:
        return (type(self), (self.field, self.message))


class TimestampError(_FieldError):
    """A timestamp or time bound could not be parsed or is not acceptable.

    ``field`` names the offending input (e.g. ``"timestamp"``, ``"start_time"``).
    """


class WindowError(_FieldError):
    """An aggregation window could not be parsed or is out of range."""


def now_ms() -> int:
    """Current time as int milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- parsing


def _epoch_int_to_ms(n: int) -> int:
    a = -n if n < 0 else n
    if a < _SECONDS_LIMIT:
        return n * 1000
    if a < _MILLIS_LIMIT:
        return n
    if a < _MICROS_LIMIT:
        return n // 1000
    return n // 1_000_000


def _epoch_decimal_to_ms(negative: bool, int_digits: str, frac_digits: str | None) -> int:
    whole = int(int_digits)
    if not frac_digits:
        return _epoch_int_to_ms(-whole if negative else whole)
    scale: int = 10 ** len(frac_digits)
    num = whole * scale + int(frac_digits)
    if negative:
        num = -num
    # |value| < limit  <=>  integer part < limit, since the fraction is < 1.
    if whole < _SECONDS_LIMIT:
        return num * 1000 // scale
    if whole < _MILLIS_LIMIT:
        return num // scale
    if whole < _MICROS_LIMIT:
        return num // (scale * 1000)
    return num // (scale * 1_000_000)


def _epoch_float_to_ms(v: float) -> int | None:
    if not math.isfinite(v):
        return None
    if v.is_integer():
        # Every float of 2**53 or more is integral, so this covers all large values exactly.
        return _epoch_int_to_ms(int(v))
    a = -v if v < 0.0 else v
    if a < _SECONDS_LIMIT:
        # Binary floats cannot hold most decimal fractions (1751466600.123 is stored as
        # 1751466600.12299990...), so go by the decimal the float stands for: if a whole
        # number of milliseconds rounds to exactly this float, it is that millisecond
        # (int / int is correctly rounded). Otherwise floor the exact binary value, which
        # then lies in the same millisecond as the float's shortest decimal form.
        r = round(v * 1000.0)
        if r / 1000 == v:
            return r
        num, den = v.as_integer_ratio()
        return num * 1000 // den
    if a < _MILLIS_LIMIT:
        return math.floor(v)
    # Float floor division is exact (it does not round the quotient first).
    return int(v // 1000.0)


def _datetime_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        return (dt - _EPOCH_NAIVE) // _ONE_MS
    return (dt - _EPOCH_AWARE) // _ONE_MS


def _iso_to_ms(s: str) -> int | None:
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        if s[-1] != "z":
            return None
        try:
            dt = datetime.fromisoformat(s[:-1] + "Z")
        except ValueError:
            return None
    return _datetime_to_ms(dt)


def _str_to_ms(s: str) -> int | None:
    if len(s) > _MAX_INPUT_LEN:
        return None
    s = s.strip()
    n = len(s)
    if n >= 10 and s[4] == "-" and s[7] == "-" and (n == 10 or s[10] in _ISO_SEPARATORS):
        # ISO 8601 extended calendar date, optionally with a time and offset.
        # fromisoformat() validates the rest and truncates fractions to microseconds.
        return _iso_to_ms(s)
    m = _EPOCH_RE.fullmatch(s)
    if m is not None:
        # The length cap above keeps int() well inside its digit limit.
        return _epoch_decimal_to_ms(m[1] == "-", m[2], m[3])
    m = _SLASH_RE.fullmatch(s)
    if m is not None:
        first, second = int(m[1]), int(m[2])
        month, day = (second, first) if first > 12 else (first, second)
        frac = m[7]
        micros = int(frac[:6].ljust(6, "0")) if frac else 0
        try:
            dt = datetime(int(m[3]), month, day, int(m[4]), int(m[5]), int(m[6]), micros)
        except ValueError:
            return None
        return (dt - _EPOCH_NAIVE) // _ONE_MS
    return None


def _to_ms(value: object) -> int | None:
    """Convert any accepted absolute timestamp form to ms, or ``None`` if unrecognized.

    The result is not range-checked.
    """
    if isinstance(value, str):
        return _str_to_ms(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _epoch_int_to_ms(int(value))
    if isinstance(value, float):
        return _epoch_float_to_ms(float(value))
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is None:
            value = value.replace(tzinfo=None)
        return _datetime_to_ms(value)
    return None


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_SHOWN_LEN:
        text = text[: _MAX_SHOWN_LEN - 3] + "..."
    return text


def _invalid_timestamp(field: str, value: object) -> TimestampError:
    if isinstance(value, bool) or not isinstance(value, int | float | str | datetime):
        what = f"expected a string or number, got {type(value).__name__}"
    else:
        what = f"{_shown(value)} is not a recognized timestamp"
    return TimestampError(field, f"invalid timestamp in '{field}': {what}; accepted formats: {_TS_FORMATS}")


def _out_of_range(field: str, value: object) -> TimestampError:
    return TimestampError(
        field, f"timestamp in '{field}' is out of range: {_shown(value)} is outside {_RANGE_TEXT}"
    )


def parse_timestamp(value: object, *, field: str, now_ms: int, max_future_ms: int | None = 86_400_000) -> int:
    """Parse a device-supplied timestamp into int ms since the epoch (UTC).

    ``field`` names the input for error reporting. Values more than
    ``max_future_ms`` after ``now_ms`` are rejected; ``None`` disables the check.

    Raises :class:`TimestampError` for anything unparseable, out of range or
    too far in the future.
    """
    ms = _to_ms(value)
    if ms is None:
        raise _invalid_timestamp(field, value)
    if ms < MIN_MS or ms > MAX_MS:
        raise _out_of_range(field, value)
    if max_future_ms is not None and ms - now_ms > max_future_ms:
        raise TimestampError(
            field,
            f"timestamp in '{field}' is too far in the future: {format_ts(ms)} is more than "
            f"{max_future_ms} ms after the current time {_format_any(now_ms)}",
        )
    return ms


def parse_time_bound(value: str | None, *, field: str, now_ms: int, default: int) -> int:
    """Parse a query time bound (``start_time``/``end_time``) into int ms.

    ``None`` or an empty string gives ``default``; ``"now"`` gives ``now_ms``;
    ``-<N><unit>`` (unit ``s``, ``m``, ``h``, ``d``, ``w``; N a positive integer)
    is relative to ``now_ms``; anything else must be an absolute timestamp as
    accepted by :func:`parse_timestamp` (without the future-skew check). Note a
    bare negative number such as ``"-30"`` is an absolute epoch value, not an offset.

    Raises :class:`TimestampError` naming ``field`` when the value is unusable.
    """
    if value is None:
        return default
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return default
        if s.lower() == "now":
            return now_ms
        m = _RELATIVE_RE.fullmatch(s)
        if m is not None:
            amount = int(m[1])
            if amount == 0:
                raise TimestampError(
                    field,
                    f"invalid time bound in '{field}': {_shown(value)} has a zero offset; "
                    f"the amount must be a positive integer (use 'now' for the current time)",
                )
            ms = now_ms - amount * _UNIT_MS[m[2]]
            if ms < MIN_MS:
                raise _out_of_range(field, value)
            return ms
    ms_abs = _to_ms(value)
    if ms_abs is None:
        raise TimestampError(
            field, f"invalid time bound in '{field}': {_shown(value)}; accepted forms: {_BOUND_FORMATS}"
        )
    if ms_abs < MIN_MS or ms_abs > MAX_MS:
        raise _out_of_range(field, value)
    return ms_abs


def parse_window(value: str, *, field: str = "window") -> int:
    """Parse an aggregation window such as ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``, ``"1w"`` into ms.

    The window must be at least one second. Raises :class:`WindowError`.
    """
    m = _WINDOW_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise WindowError(field, f"invalid window in '{field}': {_shown(value)}; expected {_WINDOW_FORMATS}")
    ms = int(m[1]) * _UNIT_MS[m[2]]
    if ms < _MIN_WINDOW_MS:
        raise WindowError(
            field, f"invalid window in '{field}': {_shown(value)}; the window must be at least 1s"
        )
    if ms > _MAX_WINDOW_MS:
        raise WindowError(field, f"invalid window in '{field}': {_shown(value)} is too large")
    return ms


# --------------------------------------------------------------------------- formatting

# (epoch day, "YYYY-MM-DDT") for the most recently formatted day. Replaced as a whole tuple, so
# concurrent readers always see a consistent pair.
_last_day: tuple[int, str] = (0, "1970-01-01T")
_HOUR_MINUTE = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))  # by minute of the day
_SECOND = tuple(f"{s:02d}" for s in range(60))
_MILLI = tuple(f".{ms:03d}Z" for ms in range(1000))


def format_ts(ms: int) -> str:
    """Format int ms since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC).

    Exact to the millisecond, including negative values (before 1970).
    Raises ``ValueError`` outside ``MIN_MS`` .. ``MAX_MS``. Called once per record of every history
    answer, so only the date goes through ``datetime`` (once per day) and the time of day is put
    together from precomputed pieces (4x faster than formatting it).
    """
    global _last_day
    if ms < MIN_MS or ms > MAX_MS:
        raise ValueError(f"timestamp {ms} ms is outside the representable range {_RANGE_TEXT}")
    sec, milli = divmod(ms, 1000)
    day, rem = divmod(sec, 86_400)
    cached = _last_day
    if cached[0] != day:
        cached = (day, (_EPOCH_NAIVE + timedelta(days=day)).date().isoformat() + "T")
        _last_day = cached
    minute, second = divmod(rem, 60)
    return cached[1] + _HOUR_MINUTE[minute] + _SECOND[second] + _MILLI[milli]


def _format_any(ms: int) -> str:
    """Like :func:`format_ts` but never raises (for error messages)."""
    if MIN_MS <= ms <= MAX_MS:
        return format_ts(ms)
    return f"{ms} ms"


def format_window(ms: int) -> str:
    """Format a window length in ms using the largest unit that divides it exactly.

    ``3600000 -> "1h"``, ``90000 -> "90s"``, ``86400000 -> "1d"``, ``604800000 -> "1w"``.
    A length that is not a whole number of seconds is written as ``"<n>ms"``
    (which :func:`parse_window` does not accept). Raises ``ValueError`` for ms <= 0.
    """
    if ms <= 0:
        raise ValueError(f"window length must be positive, got {ms} ms")
    for unit_ms, suffix in _WINDOW_UNITS:
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{suffix}"
    return f"{ms}ms"
