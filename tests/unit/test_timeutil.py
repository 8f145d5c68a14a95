"""Tests for iotflow.timeutil."""

from __future__ import annotations

import calendar
import math
import pickle
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from iotflow.timeutil import (
    MAX_MS,
    MIN_MS,
    TimestampError,
    WindowError,
    format_ts,
    format_window,
    now_ms,
    parse_time_bound,
    parse_timestamp,
    parse_window,
)

# 2025-07-02T14:30:00.000Z
T0 = 1_751_466_600_000
# 2025-07-02T00:00:00.000Z
D0 = 1_751_414_400_000
HOUR = 3_600_000
MINUTE = 60_000
DAY = 86_400_000
WEEK = 7 * DAY
# A "now" far enough ahead that the default future-skew check never interferes.
FAR_NOW = 253_402_300_799_999


def utc_ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, ms: int = 0) -> int:
    """Independent reference conversion (calendar.timegm), for readability of expectations."""
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + ms


def parse(value: object, **kwargs: Any) -> int:
    kwargs.setdefault("field", "timestamp")
    kwargs.setdefault("now_ms", FAR_NOW)
    return parse_timestamp(value, **kwargs)


def test_reference_constants() -> None:
    assert utc_ms(2025, 7, 2, 14, 30) == T0
    assert utc_ms(2025, 7, 2) == D0
    assert utc_ms(1, 1, 1) == MIN_MS
    assert utc_ms(9999, 12, 31, 23, 59, 59, 999) == MAX_MS


# --------------------------------------------------------------------------- ISO 8601


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-07-02T14:30:00Z", T0),
        ("2025-07-02T14:30:00.000Z", T0),
        ("2025-07-02T14:30:00.1Z", T0 + 100),
        ("2025-07-02T14:30:00.12Z", T0 + 120),
        ("2025-07-02T14:30:00.123Z", T0 + 123),
        ("2025-07-02T14:30:00.1239Z", T0 + 123),
        ("2025-07-02T14:30:00.123999Z", T0 + 123),
        ("2025-07-02T14:30:00.123456789Z", T0 + 123),
        ("2025-07-02T14:30:00.999999999999Z", T0 + 999),
        ("2025-07-02T14:30:00.000999Z", T0),
        ("2025-07-02T14:30:00,5Z", T0 + 500),
        ("2025-07-02T14:30:00.5", T0 + 500),
        ("2025-07-02T14:30:00", T0),
        ("2025-07-02T14:30", T0),
        ("2025-07-02T14:30Z", T0),
        ("2025-07-02t14:30:00z", T0),
        ("2025-07-02T14:30:00.123z", T0 + 123),
        ("2025-07-02 14:30:00", T0),
        ("2025-07-02 14:30:00.123456", T0 + 123),
        ("2025-07-02 14:30:00.5", T0 + 500),
        ("2025-07-02 14:30:00Z", T0),
        ("  2025-07-02T14:30:00Z\n", T0),
        ("2025-07-02", D0),
        ("2024-02-29", utc_ms(2024, 2, 29)),
        ("2024-02-29T12:00:00Z", utc_ms(2024, 2, 29, 12)),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01", 0),
        ("1969-12-31T23:59:59.999Z", -1),
        ("1969-07-20T20:17:40Z", -14_182_940_000),
        ("2000-01-01T00:00:00.000Z", 946_684_800_000),
        ("0001-01-01T00:00:00Z", MIN_MS),
        ("9999-12-31T23:59:59.999Z", MAX_MS),
        ("9999-12-31T23:59:59.999999Z", MAX_MS),
    ],
)
def test_iso_utc_and_naive(value: str, expected: int) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-07-02T14:30:00+00:00", T0),
        ("2025-07-02T14:30:00-00:00", T0),
        ("2025-07-02T14:30:00+05:30", T0 - 5 * HOUR - 30 * MINUTE),
        ("2025-07-02T14:30:00+0530", T0 - 5 * HOUR - 30 * MINUTE),
        ("2025-07-02T14:30:00+05", T0 - 5 * HOUR),
        ("2025-07-02T14:30:00-04:00", T0 + 4 * HOUR),
        ("2025-07-02T14:30:00.250+02:00", T0 - 2 * HOUR + 250),
        ("2025-07-02T14:30:00.123456789-07:00", T0 + 7 * HOUR + 123),
        ("2025-07-02 14:30:00+01:00", T0 - HOUR),
        # Offsets that move the UTC instant onto another day.
        ("2025-07-03T00:00:00+14:00", utc_ms(2025, 7, 2, 10)),
        ("2025-07-01T23:00:00-12:00", utc_ms(2025, 7, 2, 11)),
        ("2025-01-01T00:30:00+01:00", utc_ms(2024, 12, 31, 23, 30)),
        ("1970-01-01T00:00:00+01:00", -HOUR),
    ],
)
def test_iso_with_offset_converts_to_utc(value: str, expected: int) -> None:
    assert parse(value) == expected


# --------------------------------------------------------------------------- slash dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # MM/DD/YYYY whenever the first field is <= 12.
        ("07/02/2025 14:30:00", T0),
        ("7/2/2025 14:30:00", T0),
        ("01/02/2025 03:04:05", utc_ms(2025, 1, 2, 3, 4, 5)),
        ("02/01/2025 03:04:05", utc_ms(2025, 2, 1, 3, 4, 5)),
        ("12/25/2025 08:15:30", utc_ms(2025, 12, 25, 8, 15, 30)),
        ("12/12/2025 00:00:00", utc_ms(2025, 12, 12)),
        ("01/13/2025 00:00:00", utc_ms(2025, 1, 13)),
        ("02/29/2024 23:59:59", utc_ms(2024, 2, 29, 23, 59, 59)),
        # DD/MM/YYYY only when the first field is > 12.
        ("13/01/2025 00:00:00", utc_ms(2025, 1, 13)),
        ("25/12/2025 08:15:30", utc_ms(2025, 12, 25, 8, 15, 30)),
        ("31/07/2025 14:30:00", utc_ms(2025, 7, 31, 14, 30)),
        ("29/02/2024 12:00:00", utc_ms(2024, 2, 29, 12)),
        # Optional fraction, truncated to milliseconds; single-digit hour.
        ("07/02/2025 14:30:00.123", T0 + 123),
        ("07/02/2025 14:30:00.123999", T0 + 123),
        ("07/02/2025 14:30:00.5", T0 + 500),
        ("07/02/2025 14:30:00.123456789", T0 + 123),
        ("07/02/2025 9:05:00", utc_ms(2025, 7, 2, 9, 5)),
        (" 07/02/2025 14:30:00 ", T0),
    ],
)
def test_slash_formats(value: str, expected: int) -> None:
    assert parse(value) == expected


def test_slash_ambiguous_date_is_month_first() -> None:
    # 03/04 is March 4th, never April 3rd.
    assert parse("03/04/2025 00:00:00") == utc_ms(2025, 3, 4)
    assert parse("04/03/2025 00:00:00") == utc_ms(2025, 4, 3)


@pytest.mark.parametrize(
    "value",
    [
        "12/31/2025",  # a slash date needs a time
        "31/12/2025",
        "13/13/2025 00:00:00",  # neither reading is valid
        "02/30/2025 00:00:00",
        "30/02/2025 00:00:00",
        "00/12/2025 00:00:00",
        "12/00/2025 00:00:00",
        "07/02/2025 24:00:00",
        "07/02/2025 14:60:00",
        "07/02/2025 14:30:61",
        "07/02/2025 14:30",  # seconds are required
        "07/02/25 14:30:00",  # four-digit year required
        "07-02-2025 14:30:00",
        "2025/07/02 14:30:00",
        "07/02/2025T14:30:00",
        "07/02/2025 14:30:00Z",
        "07/02/2025 14:30:00+02:00",
        "007/02/2025 14:30:00",
    ],
)
def test_slash_rejects(value: str) -> None:
    with pytest.raises(TimestampError) as exc_info:
        parse(value)
    assert exc_info.value.field == "timestamp"


# --------------------------------------------------------------------------- epoch numbers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # seconds (< 1e11)
        (1_751_466_600, T0),
        (1_751_466_600.0, T0),
        (1_751_466_600.123, T0 + 123),
        (1_751_466_600.5, T0 + 500),
        (1_751_466_600.1234567, T0 + 123),
        (1_751_466_600.9999, T0 + 999),
        (1_751_466_600.001, T0 + 1),
        (0, 0),
        (0.0, 0),
        (1, 1000),
        (0.001, 1),
        (0.0009, 0),
        (1e-05, 0),
        (99_999_999_999, 99_999_999_999_000),
        # Large float seconds whose decimal form is just below a millisecond boundary.
        (70_446_530_283.94398, 70_446_530_283_943),
        (37_052_276_547.08798, 37_052_276_547_087),
        (99_999_999_999.999, 99_999_999_999_999),
        # milliseconds (< 1e14)
        (100_000_000_000, 100_000_000_000),
        (T0 + 123, T0 + 123),
        (float(T0 + 123), T0 + 123),
        (1_751_466_600_123.9, T0 + 123),
        (99_999_999_999_999, 99_999_999_999_999),
        # microseconds (< 1e17)
        (100_000_000_000_000, 100_000_000_000),
        (1_751_466_600_123_456, T0 + 123),
        (1_751_466_600_123_999, T0 + 123),
        (1_751_466_600_123_456.5, T0 + 123),
        (float(1_751_466_600_123_000), T0 + 123),
        (99_999_999_999_999_999, 99_999_999_999_999),
        # nanoseconds (>= 1e17)
        (100_000_000_000_000_000, 100_000_000_000),
        (1_751_466_600_123_456_789, T0 + 123),
        (1_751_466_600_123_999_999, T0 + 123),
        (1.7514666001235e18, T0 + 123),
        (253_402_300_799_999_999_999, MAX_MS),
    ],
)
def test_epoch_numbers(value: object, expected: int) -> None:
    result = parse(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Negative values: the unit is chosen by magnitude, sub-ms parts are floored.
        (-1, -1000),
        (-1.5, -1500),
        (-0.001, -1),
        (-0.0005, -1),
        (-1e-05, -1),
        (-1_751_466_600, -T0),
        (-1_751_466_600.123, -T0 - 123),
        (-14_182_940, -14_182_940_000),
        (-50_000_000_000, -50_000_000_000_000),
        (-T0, -T0),  # milliseconds
        (-1_751_466_600_123_456, -T0 - 124),  # microseconds, floored
        (-1_751_466_600_123_000, -T0 - 123),
        (-1_751_466_600_123_000_000, -T0 - 123),  # nanoseconds
        (MIN_MS, MIN_MS),
    ],
)
def test_negative_epoch_numbers(value: object, expected: int) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1751466600", T0),
        ("1751466600.0", T0),
        ("1751466600.000", T0),
        ("1751466600.123", T0 + 123),
        ("1751466600.1239", T0 + 123),
        ("1751466600.123999999999999", T0 + 123),
        ("1751466600.5", T0 + 500),
        ("0001751466600", T0),
        ("1751466600123", T0 + 123),
        ("1751466600123.9", T0 + 123),
        ("1751466600123456", T0 + 123),
        ("1751466600123456.999", T0 + 123),
        ("1751466600123456789", T0 + 123),
        ("1751466600123456789.9", T0 + 123),
        ("0", 0),
        ("0.0009", 0),
        ("-0.0009", -1),
        ("-1", -1000),
        ("-1.0001", -1001),
        ("-1751466600", -T0),
        ("-1751466600.123", -T0 - 123),
        ("-1751466600123", -T0 - 123),
        ("99999999999", 99_999_999_999_000),
        ("100000000000", 100_000_000_000),
        ("99999999999999", 99_999_999_999_999),
        ("100000000000000", 100_000_000_000),
        ("99999999999999999", 99_999_999_999_999),
        ("100000000000000000", 100_000_000_000),
        (" 1751466600 ", T0),
    ],
)
def test_epoch_digit_strings(value: str, expected: int) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1751466600.",
        ".5",
        "+1751466600",
        "1.75e9",
        "1e9",
        "1_751_466_600",
        "0x10",
        "1,5",
        "1 751 466 600",
        "--1",
        "-",
        "1751466600s",
        "\u0661\u0662\u0663",  # non-ASCII digits
        "9" * 200,
    ],
)
def test_epoch_string_rejects(value: str) -> None:
    with pytest.raises(TimestampError):
        parse(value)


def test_float_seconds_match_decimal_text() -> None:
    # Every millisecond of a second parses to itself, despite binary rounding.
    for millis in range(1000):
        assert parse(float(f"1751466600.{millis:03d}")) == T0 + millis
        assert parse(f"1751466600.{millis:03d}") == T0 + millis


def test_epoch_equivalence_across_units() -> None:
    seconds = 1_751_466_600
    assert parse(seconds) == parse(seconds * 1000) == parse(seconds * 10**6) == parse(seconds * 10**9)


# --------------------------------------------------------------------------- other input types


def test_int_and_str_subclasses() -> None:
    class MyInt(int):
        pass

    class MyStr(str):
        pass

    result = parse(MyInt(1_751_466_600))
    assert result == T0
    assert type(result) is int
    assert parse(MyStr("2025-07-02T14:30:00Z")) == T0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2025, 7, 2, 14, 30, tzinfo=UTC), T0),
        (datetime(2025, 7, 2, 14, 30), T0),  # naive means UTC
        (datetime(2025, 7, 2, 16, 30, 0, 123999, tzinfo=timezone(timedelta(hours=2))), T0 + 123),
        (datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC), -1),
    ],
)
def test_datetime_objects(value: datetime, expected: int) -> None:
    assert parse(value) == expected


# --------------------------------------------------------------------------- rejection


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "now",
        "",
        "   ",
        "2025-13-45",
        "2025-13-01",
        "2025-02-30",
        "2025-00-10",
        "2025-07-02T25:00:00Z",
        "2025-07-02T24:00:00Z",
        "2025-07-02T14:60:00Z",
        "2025-07-02T14:30:60Z",
        "2025-07-02T14:30:00+25:00",
        "2025-07-02T14:30:00Zjunk",
        "2025-07-02T",
        "2025-07-02X14:30:00",
        "2025-7-2",
        "25-07-02",
        "20250702T143000Z",  # ISO basic format is not accepted
        "2025-W27-3",
        "T14:30:00",
        "14:30:00",
        "2025-07-02T14:30:00 UTC",
        "0000-01-01T00:00:00Z",
        "x" * 1000,
        "2025-07-02T14:30:00Z" + " " * 200,
    ],
)
def test_rejects_garbage_strings(value: str) -> None:
    with pytest.raises(TimestampError) as exc_info:
        parse(value, field="ts")
    err = exc_info.value
    assert err.field == "ts"
    assert "'ts'" in str(err)
    assert "ISO 8601" in str(err)
    assert "MM/DD/YYYY HH:MM:SS" in str(err)
    assert "epoch" in str(err)


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        [],
        {},
        [1_751_466_600],
        {"ts": 1_751_466_600},
        b"1751466600",
        Decimal("1751466600"),
        object(),
        math.nan,
        math.inf,
        -math.inf,
        float("nan"),
    ],
)
def test_rejects_non_timestamp_values(value: object) -> None:
    with pytest.raises(TimestampError) as exc_info:
        parse(value, field="readings[0].ts")
    err = exc_info.value
    assert isinstance(err, ValueError)
    assert err.field == "readings[0].ts"
    assert "'readings[0].ts'" in str(err)


def test_bool_message_names_type() -> None:
    with pytest.raises(TimestampError, match="got bool"):
        parse(True)


def test_long_values_are_abbreviated_in_message() -> None:
    with pytest.raises(TimestampError) as exc_info:
        parse("y" * 120)
    assert "y" * 70 not in str(exc_info.value)
    assert "..." in str(exc_info.value)


@pytest.mark.parametrize(
    "value",
    [
        10**30,  # nanoseconds far beyond year 9999
        1e30,
        1e300,
        253_402_300_800_000_000_000,  # 10000-01-01 in ns
        -99_999_999_999,  # seconds, year -1200
        -(10**20),
        "1000000000000000000000000000",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:00:00-05:00",
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_rejects_out_of_range(value: object) -> None:
    with pytest.raises(TimestampError, match="out of range") as exc_info:
        parse(value, field="timestamp")
    assert exc_info.value.field == "timestamp"


# --------------------------------------------------------------------------- future skew


@pytest.mark.parametrize(
    "value",
    [
        T0 + DAY,
        "2025-07-03T14:30:00Z",
        "2025-07-03T14:30:00.000Z",
        str((T0 + DAY) // 1000),
        T0 - 10 * 365 * DAY,
    ],
)
def test_future_skew_default_accepts_up_to_one_day(value: object) -> None:
    assert parse_timestamp(value, field="ts", now_ms=T0) <= T0 + DAY


@pytest.mark.parametrize(
    "value",
    [
        T0 + DAY + 1,
        (T0 + DAY) // 1000 + 1,
        "2025-07-03T14:30:00.001Z",
        "2025-07-04",
        "2099-01-01T00:00:00Z",
        "07/04/2025 00:00:00",
        "9999-12-31T23:59:59.999Z",
    ],
)
def test_future_skew_default_rejects(value: object) -> None:
    with pytest.raises(TimestampError, match="too far in the future") as exc_info:
        parse_timestamp(value, field="ts", now_ms=T0)
    assert exc_info.value.field == "ts"
    assert "'ts'" in str(exc_info.value)


def test_future_skew_custom_limit() -> None:
    assert parse_timestamp(T0, field="ts", now_ms=T0, max_future_ms=0) == T0
    assert parse_timestamp(T0 + 5000, field="ts", now_ms=T0, max_future_ms=5000) == T0 + 5000
    with pytest.raises(TimestampError, match="too far in the future"):
        parse_timestamp(T0 + 1, field="ts", now_ms=T0, max_future_ms=0)
    with pytest.raises(TimestampError, match="too far in the future"):
        parse_timestamp(T0 + 5001, field="ts", now_ms=T0, max_future_ms=5000)


@pytest.mark.parametrize(
    "value", ["2099-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", 99_999_999_999_999, T0 + DAY + 1]
)
def test_future_skew_disabled(value: object) -> None:
    assert parse_timestamp(value, field="ts", now_ms=T0, max_future_ms=None) > T0


def test_past_is_never_rejected() -> None:
    assert parse_timestamp("0001-01-01T00:00:00Z", field="ts", now_ms=T0) == MIN_MS
    assert parse_timestamp(0, field="ts", now_ms=T0) == 0


# --------------------------------------------------------------------------- errors


def test_error_classes() -> None:
    err = TimestampError("start_time", "bad start")
    assert isinstance(err, ValueError)
    assert err.field == "start_time"
    assert str(err) == "bad start"
    werr = WindowError("window", "bad window")
    assert isinstance(werr, ValueError)
    assert not isinstance(werr, TimestampError)
    assert werr.field == "window"
    assert str(werr) == "bad window"


@pytest.mark.parametrize("err", [TimestampError("ts", "bad ts"), WindowError("window", "bad window")])
def test_errors_pickle(err: TimestampError | WindowError) -> None:
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert copy.field == err.field
    assert str(copy) == str(err)


# --------------------------------------------------------------------------- query time bounds

NOW = T0 + 123


def bound(value: str | None, default: int = -42, field: str = "start_time") -> int:
    return parse_time_bound(value, field=field, now_ms=NOW, default=default)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, -42),
        ("", -42),
        ("   ", -42),
        ("now", NOW),
        ("NOW", NOW),
        (" now ", NOW),
        ("-1s", NOW - 1000),
        ("-30s", NOW - 30_000),
        ("-30m", NOW - 30 * MINUTE),
        ("-90m", NOW - 90 * MINUTE),
        ("-24h", NOW - 24 * HOUR),
        ("-1d", NOW - DAY),
        ("-7d", NOW - 7 * DAY),
        ("-2w", NOW - 2 * WEEK),
        (" -5m ", NOW - 5 * MINUTE),
        ("-0030m", NOW - 30 * MINUTE),
        # Absolute forms.
        ("2025-07-02T14:30:00.000Z", T0),
        ("2025-07-02T14:30:00+05:30", T0 - 5 * HOUR - 30 * MINUTE),
        ("2025-07-02", D0),
        ("2025-07-02 14:30:00", T0),
        ("07/02/2025 14:30:00", T0),
        ("25/12/2025 08:15:30", utc_ms(2025, 12, 25, 8, 15, 30)),
        ("1751466600", T0),
        ("1751466600123", T0 + 123),
        ("1751466600.5", T0 + 500),
        # No future-skew check for query bounds.
        ("2099-01-01T00:00:00Z", utc_ms(2099, 1, 1)),
        ("9999-12-31T23:59:59.999Z", MAX_MS),
        # A bare negative number is an absolute epoch value, not an offset.
        ("-30", -30_000),
    ],
)
def test_time_bound(value: str | None, expected: int) -> None:
    assert bound(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "-5x",
        "-m",
        "-",
        "+30m",
        "30m",
        "-1.5h",
        "- 30m",
        "-30 m",
        "-30M",
        "-30mm",
        "-30min",
        "-1y",
        "yesterday",
        "last week",
        "now-1h",
        "2025-13-45",
        "12/31/2025",
    ],
)
def test_time_bound_rejects(value: str) -> None:
    with pytest.raises(TimestampError) as exc_info:
        bound(value, field="end_time")
    err = exc_info.value
    assert err.field == "end_time"
    message = str(err)
    assert "'end_time'" in message
    assert "'now'" in message
    assert "-30m" in message
    assert "ISO 8601" in message


def test_time_bound_zero_offset_rejected() -> None:
    with pytest.raises(TimestampError, match="positive integer") as exc_info:
        bound("-0m")
    assert exc_info.value.field == "start_time"


@pytest.mark.parametrize("value", ["-999999999999999w", "-99999999999", "0000-01-01"])
def test_time_bound_out_of_range(value: str) -> None:
    with pytest.raises(TimestampError) as exc_info:
        bound(value)
    assert exc_info.value.field == "start_time"


def test_time_bound_default_is_returned_unchanged() -> None:
    assert parse_time_bound(None, field="start_time", now_ms=NOW, default=0) == 0
    assert parse_time_bound("", field="end_time", now_ms=NOW, default=NOW) == NOW


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", 1000),
        ("30s", 30_000),
        ("90s", 90_000),
        ("1000s", 1_000_000),
        ("1m", MINUTE),
        ("5m", 5 * MINUTE),
        ("1h", HOUR),
        ("24h", DAY),
        ("2d", 2 * DAY),
        ("1w", WEEK),
        ("52w", 52 * WEEK),
        (" 5m ", 5 * MINUTE),
        ("015m", 15 * MINUTE),
    ],
)
def test_parse_window(value: str, expected: int) -> None:
    assert parse_window(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "0s",
        "0m",
        "",
        " ",
        "1",
        "h",
        "1.5h",
        "-1h",
        "+1h",
        "1H",
        "1 h",
        "1ms",
        "500ms",
        "1y",
        "1mo",
        "abc",
        "1h30m",
        "999999999999999w",
        "\u0661h",
    ],
)
def test_parse_window_rejects(value: str) -> None:
    with pytest.raises(WindowError) as exc_info:
        parse_window(value)
    err = exc_info.value
    assert isinstance(err, ValueError)
    assert err.field == "window"
    assert "'window'" in str(err)


@pytest.mark.parametrize("value", [None, 3600, 1.5, b"1h"])
def test_parse_window_rejects_non_strings(value: Any) -> None:
    with pytest.raises(WindowError):
        parse_window(value)


def test_parse_window_custom_field_and_minimum_message() -> None:
    with pytest.raises(WindowError, match="at least 1s") as exc_info:
        parse_window("0s", field="interval")
    assert exc_info.value.field == "interval"
    assert "'interval'" in str(exc_info.value)


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (1000, "1s"),
        (30_000, "30s"),
        (90_000, "90s"),
        (MINUTE, "1m"),
        (5 * MINUTE, "5m"),
        (90 * MINUTE, "90m"),
        (HOUR, "1h"),
        (36 * HOUR, "36h"),
        (DAY, "1d"),
        (2 * DAY, "2d"),
        (8 * DAY, "8d"),
        (WEEK, "1w"),
        (2 * WEEK, "2w"),
        (1500, "1500ms"),
        (1, "1ms"),
    ],
)
def test_format_window(ms: int, expected: str) -> None:
    assert format_window(ms) == expected


@pytest.mark.parametrize("ms", [0, -1, -HOUR])
def test_format_window_rejects_non_positive(ms: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        format_window(ms)


@pytest.mark.parametrize("ms", [1000, 59_000, MINUTE, 61_000, HOUR, 25 * HOUR, DAY, 6 * DAY, WEEK, 3 * WEEK])
def test_window_round_trip(ms: int) -> None:
    assert parse_window(format_window(ms)) == ms


# --------------------------------------------------------------------------- format_ts


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (T0, "2025-07-02T14:30:00.000Z"),
        (T0 + 1, "2025-07-02T14:30:00.001Z"),
        (T0 + 123, "2025-07-02T14:30:00.123Z"),
        (T0 + 999, "2025-07-02T14:30:00.999Z"),
        (T0 + 1000, "2025-07-02T14:30:01.000Z"),
        (D0, "2025-07-02T00:00:00.000Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-999, "1969-12-31T23:59:59.001Z"),
        (-1000, "1969-12-31T23:59:59.000Z"),
        (-1001, "1969-12-31T23:59:58.999Z"),
        (-14_182_940_000, "1969-07-20T20:17:40.000Z"),
        (-T0 - 123, "1914-07-02T09:29:59.877Z"),
        (946_684_800_000, "2000-01-01T00:00:00.000Z"),
        (utc_ms(2024, 2, 29, 23, 59, 59, 999), "2024-02-29T23:59:59.999Z"),
        (MIN_MS, "0001-01-01T00:00:00.000Z"),
        (MIN_MS + 1, "0001-01-01T00:00:00.001Z"),
        (utc_ms(999, 1, 1), "0999-01-01T00:00:00.000Z"),
        (MAX_MS, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_ts(ms: int, expected: str) -> None:
    assert format_ts(ms) == expected


@pytest.mark.parametrize("ms", [MIN_MS - 1, MAX_MS + 1, 10**20, -(10**20)])
def test_format_ts_out_of_range(ms: int) -> None:
    with pytest.raises(ValueError, match="range"):
        format_ts(ms)


def test_format_ts_same_second_and_alternating_seconds() -> None:
    # Exercises the per-second cache: same second, new second, and back again.
    assert format_ts(T0 + 5) == "2025-07-02T14:30:00.005Z"
    assert format_ts(T0 + 6) == "2025-07-02T14:30:00.006Z"
    assert format_ts(T0 + 1006) == "2025-07-02T14:30:01.006Z"
    assert format_ts(T0 + 7) == "2025-07-02T14:30:00.007Z"
    assert format_ts(-1) == "1969-12-31T23:59:59.999Z"
    assert format_ts(-1000) == "1969-12-31T23:59:59.000Z"
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"


ROUND_TRIP_MS = [
    0,
    1,
    -1,
    999,
    -999,
    1000,
    -1000,
    T0,
    T0 + 1,
    T0 + 999,
    -T0 - 1,
    D0 - 1,
    MIN_MS,
    MIN_MS + 999,
    MAX_MS,
    MAX_MS - 999,
    utc_ms(2024, 2, 29, 12, 0, 0, 500),
    utc_ms(1900, 3, 1, 0, 0, 0, 1),
    *range(T0 - 5000, T0 + 5000, 777),
    *range(-5000, 5000, 333),
]


@pytest.mark.parametrize("ms", ROUND_TRIP_MS)
def test_format_parse_round_trip(ms: int) -> None:
    text = format_ts(ms)
    assert len(text) == 24
    assert text.endswith("Z")
    assert parse(text) == ms
    assert parse_time_bound(text, field="start_time", now_ms=0, default=0) == ms
    assert datetime.fromisoformat(text) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


@pytest.mark.parametrize("ms", [100_000_000_000, T0 + 123, -T0 - 123, 99_999_999_999_999, MIN_MS])
def test_epoch_ms_string_round_trip(ms: int) -> None:
    # Only magnitudes in [1e11, 1e14) are read as milliseconds.
    assert parse(str(ms)) == ms
    assert parse(ms) == ms


# --------------------------------------------------------------------------- now_ms


def test_now_ms() -> None:
    before = time.time_ns() // 1_000_000
    value = now_ms()
    after = time.time_ns() // 1_000_000
    assert type(value) is int
    assert before <= value <= after


def test_now_ms_formats_and_parses() -> None:
    value = now_ms()
    assert parse_timestamp(format_ts(value), field="ts", now_ms=value) == value
