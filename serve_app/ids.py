"""Identifiers and the one clock every LWW write uses."""

from __future__ import annotations

import time

from ulid import ULID


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_ulid() -> str:
    """Time-ordered: sorting variant ids sorts variants oldest first."""
    return str(ULID())


def first_ulid_of(ms: int) -> str:
    """The smallest ULID of millisecond ``ms``: a bound for a range of time-ordered ids."""
    return str(ULID.from_bytes(max(ms, 0).to_bytes(6, "big") + bytes(10)))


def ulid_ms(ulid: str) -> int:
    return ULID.from_str(ulid).milliseconds
