"""`soul bench rebuild --keys N...`: ``POST /admin/rebuild_prompt_key``'s job over a soul of N
keys on SQLite, in one process: the job's own code (``KeyRebuild``, the job book's fenced
writes, the catalog's rewrite and swap) with the real MiniLM embedder, while new cues keep
being resolved against the soul's index. Reports how long the rebuild took, keys per second,
and the new-cue latency before and during it (serving does not pause)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from serve_app.bench.common import summarize, write_report
from serve_app.bench.keys import DIM, SOUL, fill

CUES = 200


class InProcess:
    """``handle.method.remote(*args)`` over a plain engine in this process (a blocking method
    runs in a thread, as the deployments run it)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> SimpleNamespace:
        method = getattr(self.engine, name)

        async def call(*args: Any) -> Any:
            if inspect.iscoroutinefunction(method):
                return await method(*args)
            return await asyncio.to_thread(method, *args)

        return SimpleNamespace(remote=call)


async def new_cues(
    engine: Any, rng: np.random.Generator, name: str, until: Any = None
) -> list[float]:
    """Resolve new cues (random vectors) one after another: until ``until()``, or CUES."""
    latencies: list[float] = []
    while not (until() if until else len(latencies) >= CUES):
        t = time.perf_counter()
        await engine.resolve_similar(
            SOUL, f"bench {name}{len(latencies)}", rng.standard_normal(DIM).tolist()
        )
        latencies.append(time.perf_counter() - t)
        await asyncio.sleep(0.01)  # a cue every 10 ms: serving next to the job, not a flood
    return latencies


async def measure(dsn: str, n: int) -> dict[str, Any]:
    from deployments.catalog import CatalogEngine
    from deployments.embedder import EmbedderEngine
    from serve_app.jobs.book import Outcome, Progress
    from serve_app.jobs.kinds.rebuild_keys import KeyRebuild, RebuildKeysJob
    from serve_app.storage import open_store

    engine = CatalogEngine(open_store(dsn))
    await engine.store.open()
    embedder = SimpleNamespace(embed_many=EmbedderEngine().embed)  # the deployment's shape
    rebuild = KeyRebuild(InProcess(engine), InProcess(embedder))
    rng = np.random.default_rng(3)
    before = await new_cues(engine, rng, "before")
    spec = RebuildKeysJob(soul_id=SOUL)
    await engine.submit_job("bench", spec.model_dump(mode="json"), 1, 3, 10, 10)
    leased = await engine.lease_job("bench-worker", 3_600_000)
    assert leased is not None

    async def save(outcome: Outcome, progress: Progress) -> None:
        assert await engine.save_outcome(leased.lease, outcome, progress)

    t0 = time.perf_counter()
    job = asyncio.create_task(rebuild.run(leased.doc, spec, save))
    during = await new_cues(engine, rng, "during", job.done)
    outcome = await job
    rebuild_s = time.perf_counter() - t0
    await engine.close()
    result = outcome.items[0] or {}
    cue_before, cue_during = summarize("before", before, 1), summarize("during", during, 1)
    return {
        "keys": n,
        "rebuild_s": round(rebuild_s, 1),
        "keys_per_s": round(result["keys"] / rebuild_s),
        "reembedded": result["reembedded"],
        "index": result["index"],
        "new_key_p50_ms_before": cue_before["p50_ms"],
        "new_key_p50_ms_during": cue_during["p50_ms"],
        "new_key_max_ms_during": round(max(during) * 1000, 2) if during else None,
        "cues_during": len(during),
    }


def rebuild_main(ns: argparse.Namespace) -> int:
    rows = []
    for n in ns.keys:
        with tempfile.TemporaryDirectory(prefix="soul-bench-rebuild-") as tmp:
            dsn = f"sqlite:///{Path(tmp) / 'keys.db'}"
            asyncio.run(fill(dsn, n))
            rows.append(asyncio.run(measure(dsn, n)))
    print("\nsoul bench rebuild (SQLite, MiniLM on this machine's CPU)")
    print(f"{'keys':>8}{'rebuild s':>11}{'keys/s':>8}{'index':>13}"
          f"{'new p50 before':>16}{'new p50 during':>16}{'max during':>12}{'cues':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['keys']:>8}{r['rebuild_s']:>11.1f}{r['keys_per_s']:>8}{r['index']:>13}"
              f"{r['new_key_p50_ms_before']:>16.2f}{r['new_key_p50_ms_during']:>16.2f}"
              f"{r['new_key_max_ms_during'] or 0:>12.2f}{r['cues_during']:>6}")  # fmt: skip
    write_report(ns, {"scenario": "rebuild", "rows": rows})
    return 0
