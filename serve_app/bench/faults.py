"""`soul bench faults`: what a fault under load costs clients, one fault per run of the load.

A local graph (its catalog on a scratch database of ``--postgres``; two replicas of each box
that is killed) gets a steady load: ``--concurrency`` clients, each asking new cues (misses: a
render, an animation and an encode in flight) and a warm cue for new users (hits). A few
seconds in, one fault: a replica of the Renderer, Animator, Transcoder, Catalog or Ingress
SIGKILLed, or every PostgreSQL backend of the catalog terminated. Per fault: the answers by
status, the 5xx among them, the longest answer, and the seconds from the fault to the next 200.
Afterwards the catalog is checked: no variant row lacks its objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from serve_app.bench.common import BENCH_ARGS, CUE, SOUL, free_port

KILLED = ["Renderer", "Animator", "Transcoder", "Catalog", "Ingress"]
FAULT_AT_S = 6.0  # into each load run
LOAD_S = 25.0
# Two of each box that is killed, so a death leaves one replica to answer meanwhile.
FAULT_ARGS: dict[str, Any] = {**BENCH_ARGS, "replicas": {name: 2 for name in KILLED}}


def faults_main(ns: argparse.Namespace) -> int:
    from serve_app.local import local_graph
    from serve_app.storage.postgres import scratch_database

    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp,
        scratch_database(ns.postgres, "soul_faults") as pg_url,
    ):
        env = {"SOUL_TORCH_THREADS": "1", "SOUL_DATABASE_URL": pg_url}
        with local_graph(Path(tmp), port=free_port(), args=FAULT_ARGS, env=env, quiet=True) as base:
            for fault in [*KILLED, "postgres"]:
                rows.append(asyncio.run(under_load(base, fault, ns.concurrency, pg_url)))
                print_row(rows[-1])
                asyncio.run(until_healthy(base))
            invariants = check_invariants(Path(tmp), pg_url)
    print(f"after all faults: {invariants}")
    out = Path(ns.out or "bench-faults.json")
    out.write_text(json.dumps({"scenario": "faults", "rows": rows, "after": invariants}, indent=2))
    print(f"wrote {out}")
    return 0


async def under_load(base: str, fault: str, concurrency: int, pg_url: str) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    longest = 0.0
    faulted_at: float | None = None
    first_ok_after: float | None = None
    run = time.time_ns()
    stop = time.monotonic() + LOAD_S

    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def one(cue: str, user: str) -> None:
            nonlocal longest, first_ok_after
            t0 = time.monotonic()
            try:
                response = await client.get(
                    "/image", params={"soul_id": SOUL, "cue": cue, "user_id": user}
                )
                status = response.status_code
            except httpx.TransportError:
                status = 0  # no answer at all
            statuses[status] += 1
            longest = max(longest, time.monotonic() - t0)
            if status == 200 and faulted_at is not None and first_ok_after is None:
                first_ok_after = time.monotonic() - faulted_at

        async def client_loop(k: int) -> None:
            i = 0
            while time.monotonic() < stop:
                if i % 2:
                    await one(CUE, f"{fault}-{run}-{k}-{i}")  # a hit (after the first)
                else:
                    await one(f"{CUE} number {run % 10_000} {k} {i}", f"u{k}")  # a miss
                i += 1

        async def inject() -> None:
            nonlocal faulted_at
            await asyncio.sleep(FAULT_AT_S)
            faulted_at = time.monotonic()
            await asyncio.to_thread(cause, fault, pg_url)

        await asyncio.gather(inject(), *(client_loop(k) for k in range(concurrency)))
    five_xx = sum(n for status, n in statuses.items() if status >= 500 or status == 0)
    return {
        "fault": fault,
        "answers": dict(sorted(statuses.items())),
        "five_xx": five_xx,
        "longest_s": round(longest, 2),
        "first_200_after_s": None if first_ok_after is None else round(first_ok_after, 2),
    }


def cause(fault: str, pg_url: str) -> None:
    if fault == "postgres":
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        return
    from ray.util.state import list_actors

    [victim, *_] = list_actors(
        filters=[("class_name", "=", f"ServeReplica:soul:{fault}"), ("state", "=", "ALIVE")]
    )
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)


async def until_healthy(base: str, timeout_s: float = 120) -> None:
    """Until a hit answers again and every replacement replica has started."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                params = {"soul_id": SOUL, "cue": CUE, "user_id": f"probe-{time.time_ns()}"}
                if (await client.get("/image", params=params)).status_code == 200:
                    await asyncio.sleep(10)  # Serve replaces the killed replica meanwhile
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(1)
    raise RuntimeError("the graph did not recover within two minutes")


def check_invariants(data_dir: Path, database_url: str) -> dict[str, int]:
    """A user given one variant twice cannot be stored (seen's primary key); what a fault could
    leave is a variant row without its objects, or objects without a row (swept after a grace)."""
    import psycopg

    from serve_app.settings import Settings
    from serve_app.storage.objects import open_object_store

    objects = open_object_store(Settings(data_dir=data_dir))
    keys = set(objects.list("soul/"))
    with psycopg.connect(database_url) as conn:
        stored = [r[0] for r in conn.execute("SELECT storage_key FROM variant").fetchall()]
    gifs = {k for k in keys if k.endswith(".gif")}
    return {
        "variants": len(stored),
        "rows_without_objects": sum(1 for key in stored if key not in keys),
        "gifs_without_rows": len(gifs - set(stored)),
    }


def print_row(row: dict[str, Any]) -> None:
    answers = ", ".join(f"{status or 'no answer'}: {n}" for status, n in row["answers"].items())
    print(
        f"{row['fault']:<11} 5xx {row['five_xx']:>3}   longest {row['longest_s']:>6.2f} s   "
        f"first 200 after {row['first_200_after_s']} s   ({answers})",
        flush=True,
    )
