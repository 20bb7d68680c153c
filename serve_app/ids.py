"""Identifiers and the one clock every LWW write uses."""

from __future__ import annotations

import time

from ulid import ULID


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_ulid() -> str:
    """Time-ordered: sorting variant ids sorts variants oldest first."""
    return str(ULID())
