"""Single flight per key inside one ingress replica."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any


@dataclass
class _Flight:
    task: asyncio.Task[Any]
    users: set[str]


class Coalescer:
    """Concurrent misses on one key from different users share one piece of work.

    A user never joins a flight twice: their second concurrent request needs a variant of its
    own, so it starts (or joins) another flight. The work sees the flight's users as they stand
    (users may join while it runs). Waiters are shielded: a cancelled request does not cancel
    work others wait on.
    """

    def __init__(self) -> None:
        self._flights: dict[str, list[_Flight]] = {}
        self.joined = 0

    async def run(self, key: str, user_id: str, work: Callable[[set[str]], Awaitable[Any]]) -> Any:
        flights = self._flights.setdefault(key, [])
        flight = next((f for f in flights if user_id not in f.users), None)
        if flight is None:
            users = {user_id}
            flight = _Flight(asyncio.ensure_future(work(users)), users)
            flights.append(flight)
            flight.task.add_done_callback(partial(self._land, key, flight))
        else:
            self.joined += 1
            flight.users.add(user_id)
        return await asyncio.shield(flight.task)

    def _land(self, key: str, flight: _Flight, _task: object) -> None:
        flights = self._flights.get(key, [])
        if flight in flights:
            flights.remove(flight)
        if not flights:
            self._flights.pop(key, None)

    def in_flight(self, key: str) -> int:
        return len(self._flights.get(key, []))
