"""Unit tests for the Coalescer: single flight per key, never twice per user."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, KeysView
from typing import Any

import pytest

from serve_app.delivery.coalesce import Coalescer, WorkInterrupted


class Work:
    """Counted work that runs until released."""

    def __init__(self, result: Any = "gif", error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.result, self.error = result, error
        self.users: list[KeysView[str]] = []  # who waits, live, as each call sees them

    async def __call__(self, users: dict[str, str]) -> Any:
        self.calls += 1
        self.users.append(users.keys())
        n = self.calls
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return f"{self.result}-{n}"


async def result_of(co: Coalescer, key: str, user_id: str, work: Work) -> Any:
    result, _led = await co.run(key, user_id, work)
    return result


async def settle() -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_different_users_share_one_execution() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        waiters = [asyncio.create_task(result_of(co, "k", f"u{i}", work)) for i in range(8)]
        await settle()
        assert co.in_flight("k") == 1
        work.release.set()
        assert await asyncio.gather(*waiters) == ["gif-1"] * 8
        assert work.calls == 1
        assert co.joined == 7
        assert work.users == [{f"u{i}" for i in range(8)}]  # the work saw who joined
        assert co.in_flight("k") == 0

    run(test)


def test_same_user_twice_runs_twice() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        waiters = [asyncio.create_task(result_of(co, "k", "u1", work)) for _ in range(2)]
        await settle()
        assert co.in_flight("k") == 2
        work.release.set()
        assert sorted(await asyncio.gather(*waiters)) == ["gif-1", "gif-2"]
        assert work.calls == 2

    run(test)


def test_users_spread_over_flights_without_joining_one_twice() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        users = ["u1", "u1", "u2", "u2", "u3"]
        waiters = [asyncio.create_task(result_of(co, "k", u, work)) for u in users]
        await settle()
        work.release.set()
        results = await asyncio.gather(*waiters)
        assert work.calls == 2
        for user in ("u1", "u2"):
            mine = [r for u, r in zip(users, results, strict=True) if u == user]
            assert len(set(mine)) == 2  # a user never gets the same result twice

    run(test)


def test_different_keys_do_not_share() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        waiters = [asyncio.create_task(result_of(co, k, f"u-{k}", work)) for k in ("a", "b")]
        await settle()
        assert (co.in_flight("a"), co.in_flight("b")) == (1, 1)
        work.release.set()
        await asyncio.gather(*waiters)
        assert work.calls == 2

    run(test)


def test_after_completion_a_new_call_runs_again() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        work.release.set()
        assert await result_of(co, "k", "u1", work) == "gif-1"
        assert co.in_flight("k") == 0
        assert await result_of(co, "k", "u2", work) == "gif-2"
        assert work.calls == 2

    run(test)


def test_exception_reaches_every_waiter_and_clears_the_key() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work(error=RuntimeError("render failed"))
        waiters = [asyncio.create_task(result_of(co, "k", f"u{i}", work)) for i in range(3)]
        await settle()
        work.release.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and str(r) == "render failed" for r in results)
        assert work.calls == 1
        assert co.in_flight("k") == 0
        assert not co._flights  # no empty entry is left behind for the key
        work.error = None
        assert await result_of(co, "k", "u1", work) == "gif-2"  # a retry starts fresh work

    run(test)


def test_cancelling_one_waiter_does_not_cancel_the_work() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        first = asyncio.create_task(result_of(co, "k", "u1", work))
        second = asyncio.create_task(result_of(co, "k", "u2", work))
        await settle()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert co.in_flight("k") == 1
        work.release.set()
        assert await second == "gif-1"
        assert work.calls == 1

    run(test)


def test_in_flight_of_unknown_key_is_zero() -> None:
    assert Coalescer().in_flight("nothing") == 0


def test_the_coalescer_says_who_led() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        leader = asyncio.create_task(co.run("k", "u1", work))
        await settle()
        follower = asyncio.create_task(co.run("k", "u2", work))
        await settle()
        work.release.set()
        assert await leader == ("gif-1", True)
        assert await follower == ("gif-1", False)

    run(test)


REQUEST = contextvars.ContextVar("request", default="none")  # as Serve's request context


def test_the_work_runs_in_no_request_context() -> None:
    """Serve cancels a departed request's handle calls by the request context they were made
    in: the shared work must not carry the leader's."""

    async def test() -> None:
        co, seen = Coalescer(), []

        async def work(users: dict[str, str]) -> str:
            seen.append(REQUEST.get())
            return "gif"

        async def request(request_id: str, user_id: str) -> Any:
            REQUEST.set(request_id)
            return await result_of(co, "k", user_id, work)

        assert await asyncio.create_task(request("leader", "u1")) == "gif"
        assert seen == ["none"]

    run(test)


def test_the_leader_leaving_neither_cancels_the_work_nor_fails_the_others() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        leader = asyncio.create_task(co.run("k", "u1", work))
        others = [asyncio.create_task(result_of(co, "k", u, work)) for u in ("u2", "u3")]
        await settle()
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert work.users == [{"u2", "u3"}]  # the work no longer counts the one who left
        work.release.set()
        assert await asyncio.gather(*others) == ["gif-1", "gif-1"]
        assert work.calls == 1

    run(test)


def test_the_work_runs_to_its_end_when_everyone_left() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        waiters = [asyncio.create_task(co.run("k", u, work)) for u in ("u1", "u2")]
        await settle()
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert co.in_flight("k") == 1 and work.users == [set()]
        work.release.set()
        await settle()
        assert co.in_flight("k") == 0  # it finished (its result is the work's to keep)

    run(test)


def test_waiters_of_cancelled_work_get_a_retryable_error() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        waiter = asyncio.create_task(co.run("k", "u1", work))
        await settle()
        co._flights["k"][0].task.cancel()  # as at replica shutdown
        with pytest.raises(WorkInterrupted) as caught:
            await waiter
        assert caught.value.status_code == 503 and caught.value.retry_after_s == 1

    run(test)


def test_a_cancelled_job_that_waited_alone_cancels_the_work() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        job = asyncio.create_task(co.run("k", "u1", work, via="c/j/0"))
        await settle()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        await settle()
        assert work.calls == 1 and co.in_flight("k") == 0  # stopped, and out of the way
        nxt = asyncio.create_task(result_of(co, "k", "u1", work))
        await settle()
        work.release.set()
        assert await nxt == "gif-2"  # the next caller got work of its own

    run(test)


def test_a_cancelled_job_leaves_the_work_to_the_requests_still_waiting() -> None:
    async def test() -> None:
        co, work = Coalescer(), Work()
        request = asyncio.create_task(result_of(co, "k", "u1", work))
        job = asyncio.create_task(co.run("k", "u2", work, via="c/j/0"))
        await settle()
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        work.release.set()
        assert await request == "gif-1" and work.calls == 1

    run(test)
