"""Single flight per key inside one replica, owned by no single request."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from serve_app.errors import Busy


class WorkInterrupted(Busy):
    """The shared work was cancelled (the replica is shutting down); the waiter may retry."""

    def __init__(self) -> None:
        super().__init__("the render for this cue was interrupted; retry", retry_after_s=1)


@dataclass
class _Flight:
    task: asyncio.Task[Any]
    users: dict[str, str]  # who waits -> the job item they wait for ("" for a request)


class Coalescer:
    """Concurrent misses on one key from different users share one piece of work.

    - A user never joins a flight twice: their second concurrent request needs a variant of its
      own, so it starts (or joins) another flight.
    - The work sees the flight's users as they stand: users join while it runs, and a user whose
      request is cancelled (the client left) is removed.
    - The work belongs to no request: it runs in an empty ``contextvars.Context``, so nothing
      that cancels a request by its context (Serve cancels every handle call a departed request
      made) reaches it, and it runs to its end even if every waiter left. Waiters are shielded.
    - Except for a cancelled job: when the last waiter to leave is a job item (``via``), the
      job was cancelled and nobody else wants the work, so the work is cancelled too (a render
      stops within a denoising step).
    - A waiter whose work was cancelled under it gets ``WorkInterrupted`` (a 503), never a bare
      ``CancelledError``.
    """

    def __init__(self) -> None:
        self._flights: dict[str, list[_Flight]] = {}
        self.joined = 0

    async def run(
        self,
        key: str,
        user_id: str,
        work: Callable[[dict[str, str]], Awaitable[Any]],
        via: str = "",
    ) -> tuple[Any, bool]:
        """The flight's result, and whether this caller led (started) it. ``work`` gets the
        flight's waiters: user -> the job item (``via``) they wait for, "" for a request."""
        flights = self._flights.setdefault(key, [])
        flight = next((f for f in flights if user_id not in f.users), None)
        led = flight is None
        if flight is None:
            users = {user_id: via}
            task = asyncio.get_running_loop().create_task(
                _awaited(work, users), context=contextvars.Context()
            )
            flight = _Flight(task, users)
            flights.append(flight)
            task.add_done_callback(partial(self._land, key, flight))
        else:
            self.joined += 1
            flight.users[user_id] = via
        try:
            return await asyncio.shield(flight.task), led
        except asyncio.CancelledError:
            flight.users.pop(user_id, None)
            if flight.task.cancelled() and not _being_cancelled():
                raise WorkInterrupted() from None
            if via and not flight.users:
                flight.task.cancel()
                self._land(key, flight, None)  # whoever comes next starts afresh
            raise

    def _land(self, key: str, flight: _Flight, _task: object) -> None:
        flights = self._flights.get(key, [])
        if flight in flights:
            flights.remove(flight)
        if not flights:
            self._flights.pop(key, None)

    def in_flight(self, key: str) -> int:
        return len(self._flights.get(key, []))


async def _awaited(work: Callable[[dict[str, str]], Awaitable[Any]], users: dict[str, str]) -> Any:
    """Call ``work`` inside the task, so even its first step runs in the task's own context."""
    return await work(users)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
