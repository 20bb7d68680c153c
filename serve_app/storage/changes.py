"""Job changes, pushed from the catalog's writes to the replicas that wait for them.

Each Ingress replica keeps one ``ChangeFeed``: one listener for every event stream it serves,
each stream waiting on an ``asyncio.Event`` set when a change notice names its job
(``client_id/job_id``). Each Catalog replica keeps one too, for its waiting leases
(``catalog/job_leases.py``): they wait on ``QUEUE``, the notice that a queue row was added,
released or removed, so a job queued through any replica wakes a worker waiting on any other.
A notice says only *that* something changed; the waiter reads it itself, so notices that
coalesce, repeat or arrive late lose nothing.

    PostgreSQL   triggers on ``job`` (every row written) and ``job_queue`` (a row added,
                 released or removed) run ``pg_notify``, whoever wrote it; each feed holds one
                 ``LISTEN`` connection (``storage/postgres.py``)
    SQLite       the embedded store lives on one machine: each feed binds a UDP port on the
                 loopback and names it by a file in ``<catalog>.listeners/`` (``<pid>-<port>``);
                 the store, after each such write, sends its name to every port listed there,
                 and drops the files of processes that are gone

While no job changes, nothing is read and nothing is sent. A feed that lost its listener (the
database restarted) tells every waiter to read once it listens again; a stream also reads its
job after ``events_keepalive_s`` without a notice, and a waiting lease returns after its bound
(``worker.lease_wait_s``), so a lost notice costs at most that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path

CHANNEL = "soul_job"  # the PostgreSQL notification channel
QUEUE = "queue"  # the notice that the job queue changed (a job's name always has a "/")


def job_ref(client_id: str, job_id: str) -> str:
    """A job's name in change notices."""
    return f"{client_id}/{job_id}"


class ChangeFeed(ABC):
    """Streams wait here for their job to change; the listener starts with the first stream."""

    ready_timeout_s = 5.0  # the longest a first stream waits for the listener to listen

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def watch(self, ref: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the job ``ref`` names changes, from now on: read the job after
        entering, so a change between the read and the wait is not missed."""
        if self._listener is None or self._listener.done():
            self._ready.clear()
            self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):  # not listening yet: the stream's timer reads
            await asyncio.wait_for(self._ready.wait(), self.ready_timeout_s)
        changed = asyncio.Event()
        self._waiting.setdefault(ref, set()).add(changed)
        try:
            yield changed
        finally:
            waiting = self._waiting[ref]
            waiting.discard(changed)
            if not waiting:
                del self._waiting[ref]

    def changed(self, ref: str) -> None:
        for event in self._waiting.get(ref, ()):
            event.set()

    def listening(self) -> None:
        """The listener listens (again): notices sent while it did not are lost, so every
        stream reads its job."""
        self._ready.set()
        for waiting in self._waiting.values():
            for event in waiting:
                event.set()

    @abstractmethod
    async def _listen(self) -> None:
        """Listen until cancelled: ``listening()`` once (again) listening, ``changed(ref)`` per
        notice."""

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None


def listeners_dir(database: Path) -> Path:
    """Where the feeds of an SQLite catalog name their ports."""
    return database.with_name(f"{database.name}.listeners")


class DatagramFeed(ChangeFeed):
    """The embedded catalog's feed: one UDP port on the loopback, named in ``listeners_dir``."""

    def __init__(self, database: Path) -> None:
        super().__init__()
        self.folder = listeners_dir(database)

    async def _listen(self) -> None:
        feed = self

        class Notices(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
                feed.changed(data.decode(errors="replace"))

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Notices, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        name = self.folder / f"{os.getpid()}-{port}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            name.touch()
            self.listening()
            await asyncio.Event().wait()  # until cancelled
        finally:
            name.unlink(missing_ok=True)
            transport.close()


class DatagramNotices:
    """The SQLite store's side: tell every listening feed that a job changed."""

    def __init__(self, database: Path) -> None:
        self.folder = listeners_dir(database)
        self.sock: socket.socket | None = None  # opened when someone first listens

    def send(self, ref: str) -> None:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return  # nobody listens
        if self.sock is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
        payload = ref.encode()
        for name in names:
            pid, _, port = name.partition("-")
            if not _alive(int(pid)):
                (self.folder / name).unlink(missing_ok=True)
                continue
            with contextlib.suppress(OSError):  # a full buffer: that stream's timer reads
                self.sock.sendto(payload, ("127.0.0.1", int(port)))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
