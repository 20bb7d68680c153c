"""`soul bench faults`: what killed replicas, a dropped database and a header flood cost.

One graph on a scratch PostgreSQL database, two replicas of each box that a miss passes through
more than once (Ingress, Catalog, Renderer, Animator, Transcoder). First a flood of huge
requests: the peak memory (VmHWM) of the HTTP proxy and of the Ingress before and after. Then
one phase per fault, each under the same load (mostly misses on new cues, some hits), the fault
injected ``--fault-after`` seconds in: a SIGKILL of one replica of a deployment, or every
PostgreSQL backend of the service terminated three times a second apart. Each phase counts the
answers by status, the 5xx, the seconds from the fault to the first 200 of a request sent after
it, and how long /ready was not ready. At the end, what must always hold: no user got a variant
twice, every 200 names a variant row whose object exists, and no object is left without its row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serve_app.bench.common import BENCH_ARGS, CUE, SOUL, free_port, write_report

REPLICATED = ("Ingress", "Catalog", "Renderer", "Animator", "Transcoder")
FAULTS = (*REPLICATED, "postgres")
SWEEP = {"sweep_every_s": 5, "orphan_grace_s": 20}
FAULT_ARGS: dict[str, Any] = {
    **BENCH_ARGS,
    "replicas": dict.fromkeys(REPLICATED, 2),
    "catalog": SWEEP,  # orphans are removed within the bench's run
}
FLOOD_REQUESTS = 32  # of each kind, 8 at a time
FLOOD_HEADER_BYTES = 8 * 1024 * 1024
FLOOD_HEADERS = 10_000


@dataclass
class Phase:
    fault: str
    statuses: Counter[int] = field(default_factory=Counter)
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (user, variant_id)
    fault_at: float = 0.0
    first_ok_after_s: float | None = None
    not_ready_s: float = 0.0
    killed: str = ""  # the title of the replica killed: serving a call, or idle

    def summary(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "requests": sum(self.statuses.values()),
            "statuses": dict(sorted(self.statuses.items())),
            "5xx": sum(n for status, n in self.statuses.items() if status >= 500),
            "first_200_after_fault_s": self.first_ok_after_s,
            "not_ready_s": round(self.not_ready_s, 2),
            "killed": self.killed,
        }


def replica_titles(deployment: str) -> list[tuple[int, str]]:
    """A deployment's replica processes, found by the title Ray gives an actor's process:
    ``ray::ServeReplica:soul:Renderer``, then ``.handle_request…`` while it serves a call."""
    title = f"ray::ServeReplica:soul:{deployment}"
    return [(pid, t) for pid, t in process_titles() if t.split(".")[0] == title]


def replica_pids(deployment: str) -> list[int]:
    return [pid for pid, _ in replica_titles(deployment)]


def kill_busy_replica(deployment: str, wait_s: float = 10) -> str:
    """SIGKILL a replica while it serves a request (the first seen busy within ``wait_s``, else
    any); the title it had."""
    deadline = time.monotonic() + wait_s
    while not (busy := [r for r in replica_titles(deployment) if "handle_request" in r[1]]):
        if time.monotonic() > deadline:
            busy = replica_titles(deployment)
            break
        time.sleep(0.02)
    pid, title = busy[0]
    os.kill(pid, signal.SIGKILL)
    return title


def proxy_pids() -> list[int]:
    return [pid for pid, title in process_titles() if title.startswith("ray::ProxyActor")]


def process_titles() -> list[tuple[int, str]]:
    titles = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # it ended
            titles.append(
                (int(entry.name), cmdline.split(b"\0")[0].decode(errors="replace").strip())
            )
    return sorted(titles)


def memory_kib(pid: int) -> dict[str, int]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def flood(base: str) -> dict[str, Any]:
    """Huge requests to a cheap route: one 8 MiB header each, then 10,000 headers each."""
    watched = {"proxy": proxy_pids(), "ingress": replica_pids("Ingress")}
    before = {role: [memory_kib(p) for p in pids] for role, pids in watched.items()}
    big = {"x-flood": "a" * FLOOD_HEADER_BYTES}
    many = [(f"x-flood-{i}", "a") for i in range(FLOOD_HEADERS)]
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def send(headers: Any) -> None:
            async with gate:
                try:
                    statuses[(await client.get("/healthz", headers=headers)).status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1  # the connection was dropped

        t0 = time.perf_counter()
        await asyncio.gather(*(send(h) for h in [big] * FLOOD_REQUESTS + [many] * FLOOD_REQUESTS))
        wall = time.perf_counter() - t0
    after = {role: [memory_kib(p) for p in pids] for role, pids in watched.items()}
    peak_growth = {
        role: sum(a["VmHWM"] - b["VmHWM"] for a, b in zip(after[role], before[role], strict=True))
        // 1024
        for role in watched
    }
    return {
        "requests": 2 * FLOOD_REQUESTS,
        "statuses": dict(sorted(statuses.items())),
        "wall_s": round(wall, 2),
        "peak_rss_growth_mib": peak_growth,
        "before_kib": before,
        "after_kib": after,
    }


async def load(
    base: str, phase: Phase, n: int, concurrency: int, fault_after_s: float, pg: str
) -> None:
    """``n`` requests, three in four a miss on a new cue; the fault ``fault_after_s`` in."""
    run = time.time_ns()
    calls = [
        {"soul_id": SOUL, "cue": CUE, "user_id": f"{phase.fault}-hit-{run}-{i}"}
        if i % 4 == 3
        else {
            "soul_id": SOUL,
            "cue": f"fault {phase.fault} {run} thing {i}",
            "user_id": f"u{i % 5}",
        }
        for i in range(n)
    ]
    queue = list(reversed(calls))
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def worker() -> None:
            while queue:
                params = queue.pop()
                sent = time.perf_counter()
                try:
                    r = await client.get("/image", params=params)
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0  # the connection was dropped
                phase.statuses[status] += 1
                if status == 200:
                    phase.delivered.append((params["user_id"], r.json()["variant_id"]))
                    if phase.fault_at and sent > phase.fault_at and phase.first_ok_after_s is None:
                        phase.first_ok_after_s = round(time.perf_counter() - phase.fault_at, 2)

        async def watch_ready() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                try:
                    ready = (await client.get("/ready", timeout=5)).status_code == 200
                except httpx.HTTPError:
                    ready = False
                await asyncio.sleep(0.1)
                if not ready:
                    phase.not_ready_s += time.perf_counter() - t0

        async def inject() -> None:
            await asyncio.sleep(fault_after_s)
            phase.fault_at = time.perf_counter()
            phase.killed = await asyncio.to_thread(inject_fault, phase.fault, pg)

        watcher = asyncio.create_task(watch_ready())
        await asyncio.gather(inject(), *(worker() for _ in range(concurrency)))
        done.set()
        await watcher


def inject_fault(fault: str, pg: str) -> str:
    if fault != "postgres":
        return kill_busy_replica(fault)
    import psycopg

    for _ in range(3):
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        time.sleep(1)
    return ""


async def settled(base: str, timeout_s: float = 180) -> None:
    """Every replica back (Serve restarts a killed one) and the service ready."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        while time.monotonic() < deadline:
            back = all(len(replica_pids(name)) >= 2 for name in REPLICATED)
            try:
                if back and (await client.get("/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the graph did not recover from the last fault")


def invariants(phases: list[Phase], pg: str, objects_root: Path) -> dict[str, int]:
    rows = variant_rows(pg)
    delivered = [pair for phase in phases for pair in phase.delivered]
    return {
        "delivered": len(delivered),
        "delivered twice to a user": len(delivered) - len(set(delivered)),
        "delivered without a row": sum(vid not in rows for _, vid in delivered),
        "rows without their object": sum(not (objects_root / k).is_file() for k in rows.values()),
        "orphans (objects without a row)": orphans(pg, objects_root),
    }


def variant_rows(pg: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(pg) as conn:
        return dict(conn.execute("SELECT variant_id, storage_key FROM variant").fetchall())


def orphans(pg: str, objects_root: Path) -> int:
    """Variants whose objects are stored but that have no row."""
    from serve_app.catalog.sweeper import VARIANT_OBJECT

    keys = [str(p.relative_to(objects_root)) for p in objects_root.rglob("*") if p.is_file()]
    stems = {m["variant"] for key in keys if (m := VARIANT_OBJECT.fullmatch(key))}
    return len(stems - variant_rows(pg).keys())


def faults_main(ns: argparse.Namespace) -> dict[str, Any]:
    from serve_app.local import local_graph
    from serve_app.storage.postgres import scratch_database

    n = ns.requests or 24
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        with scratch_database(ns.postgres, "soul_bench") as pg:
            env = {"SOUL_DATABASE_URL": pg}
            with local_graph(
                data_dir, port=free_port(), args=FAULT_ARGS, env=env, quiet=True, num_cpus=6
            ) as base:
                flooded = asyncio.run(flood(base))
                asyncio.run(warm(base))
                phases = []
                for fault in FAULTS:
                    phase = Phase(fault)
                    asyncio.run(load(base, phase, n, ns.concurrency, ns.fault_after, pg))
                    asyncio.run(settled(base))
                    phases.append(phase)
                held = invariants(phases, pg, data_dir / "objects")
                time.sleep(SWEEP["orphan_grace_s"] + 2 * SWEEP["sweep_every_s"])
                held["orphans after a sweep past the grace"] = orphans(pg, data_dir / "objects")
    return {"flood": flooded, "phases": [p.summary() for p in phases], "invariants": held}


async def warm(base: str) -> None:
    """The hits' variant exists before the first phase, so hits are hits."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        params = {"soul_id": SOUL, "cue": CUE, "user_id": "warm"}
        (await client.get("/image", params=params)).raise_for_status()


def report_faults(ns: argparse.Namespace, result: dict[str, Any]) -> int:
    f = result["flood"]
    growth = f["peak_rss_growth_mib"]
    print(f"\nsoul bench faults: header flood ({f['requests']} requests, 8 at a time)")
    print(f"statuses {f['statuses']}  wall {f['wall_s']} s")
    print(f"peak RSS growth: proxy {growth['proxy']} MiB, ingress {growth['ingress']} MiB")
    print(f"\nfaults under load ({ns.requests or 24} requests, {ns.concurrency} at a time)")
    header = f"{'fault':<12}{'killed':>9}{'5xx':>5}{'first 200 after (s)':>22}{'not ready (s)':>15}"
    print(f"{header}  statuses")
    for p in result["phases"]:
        first = p["first_200_after_fault_s"]
        first_s = "-" if first is None else f"{first:.2f}"
        killed = "serving" if "handle_request" in p["killed"] else "idle" if p["killed"] else "-"
        print(
            f"{p['fault']:<12}{killed:>9}{p['5xx']:>5}{first_s:>22}{p['not_ready_s']:>15.2f}"
            f"  {p['statuses']}"
        )
    print("\ninvariants")
    for name, value in result["invariants"].items():
        print(f"{name:<34}{value:>6}")
    write_report(ns, {"scenario": "faults", **result})
    return 0


def run(ns: argparse.Namespace) -> int:
    return report_faults(ns, faults_main(ns))
