"""Render lanes on a Renderer replica: refills (``RenderJob.background``) give way.

A replica renders one batch at a time. When a render that is not a refill arrives while a batch
of refills runs, it would wait for that batch to end: instead the batch stops at its next
denoising step (the same stop a cancelled render uses), its renders fail with ``Preempted``,
and the arrival renders next. While any other render is in the replica (arrived, not yet
``left``), a batch of refills gives way before its first step. A batch with any other render in
it runs to its end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from serve_app.errors import Preempted
from serve_app.schemas import RenderJob


class Stop(Protocol):
    def is_set(self) -> bool: ...


class Either:
    """Set when any of its stops is."""

    def __init__(self, *stops: Stop) -> None:
        self.stops = stops

    def is_set(self) -> bool:
        return any(stop.is_set() for stop in self.stops)


RenderBatch = Callable[[list[RenderJob], Any, Stop], list[Any]]  # (jobs, on_step, stop)


class RenderLanes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refilling: set[threading.Event] = set()  # one per running batch of refills
        self._others = 0  # renders in the replica that are not refills

    def arrived(self, job: RenderJob) -> None:
        """A render arrived at the replica: unless it is a refill, running refills give way."""
        if job.background:
            return
        with self._lock:
            self._others += 1
            for preempted in self._refilling:
                preempted.set()

    def left(self, job: RenderJob) -> None:
        """A render that ``arrived`` is done (rendered, failed or cancelled)."""
        if not job.background:
            with self._lock:
                self._others -= 1

    def run(
        self, render: RenderBatch, jobs: list[RenderJob], on_step: Any, left: Stop
    ) -> list[Any]:
        """``render(jobs, on_step, stop)``; a batch of refills also stops when another render
        arrives, and then what it did not finish fails with ``Preempted``."""
        if not all(job.background for job in jobs):
            return render(jobs, on_step, left)
        preempted = threading.Event()
        with self._lock:
            if self._others:  # another render waits for this replica: it goes first
                return [_gave_way(None) for _ in jobs]
            self._refilling.add(preempted)
        try:
            outcomes = render(jobs, on_step, Either(left, preempted))
        finally:
            with self._lock:
                self._refilling.discard(preempted)
        if not preempted.is_set() or left.is_set():
            return outcomes
        return [_gave_way(o) if isinstance(o, Exception) else o for o in outcomes]


def _gave_way(cause: Exception | None) -> Preempted:
    error = Preempted("a refill gave way to a user's render")
    error.__cause__ = cause
    return error
