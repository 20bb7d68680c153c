"""`soul bench zipf`: a Zipf-shaped workload with the reserve off and on, side by side in one run.

Many users ask for a few dozen subjects; both the subject and the user of a request are drawn
with Zipf weights (s = 1.1), so a few subjects are hot and a few users ask for them again and
again: exactly the users who have seen every variant and wait for a render. The same request
sequence runs twice, each time on a fresh local graph (the tiny model on the CPU): the reserve
off, then on. Concurrent clients pause ``THINK_S`` between their requests, as people do.

Per side: p50/p95/p99 latency (and the hits' p95), the share answered from cache, renders
(variants made, refills included) per delivery against the floor (each cue needs as many
variants as its most demanding user asked for), refills made and those never delivered by the
end, and duplicates (a variant sent twice to one user: must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from serve_app.bench.common import SOUL, free_port, write_report

SUBJECTS = [
    "fox", "penguin", "owl", "dragon", "robot", "lighthouse", "cactus", "whale", "astronaut",
    "teapot", "bicycle", "volcano", "octopus", "castle", "giraffe", "umbrella", "snowman",
    "balloon", "tiger", "violin", "mushroom", "rocket", "kite", "turtle", "lantern", "piano",
    "cupcake", "dinosaur", "sailboat", "hedgehog",
]  # fmt: skip
ZIPF_S = 1.1
THINK_S = 0.3
GRAPH_ARGS: dict[str, Any] = {  # the tiny model, lighter than the other benches: two graphs run
    "renderer": {"steps": 6, "width": 64, "height": 64},
    "animator": {"frames": 6, "steps": 4, "strength": 0.3},
}
RESERVE = {"enabled": True, "depth": 2, "max_keys": 12, "hot_per_min": 1.5, "refills_per_min": 60,
           "max_running": 1, "every_s": 1.0, "half_life_s": 60}  # fmt: skip


def workload(n: int, users: int, seed: int = 11) -> list[tuple[str, str]]:
    """``n`` (subject, user) requests, both drawn with Zipf weights."""
    rng = random.Random(seed)
    cue_w = [1 / (i + 1) ** ZIPF_S for i in range(len(SUBJECTS))]
    user_w = [1 / (i + 1) ** ZIPF_S for i in range(users)]
    return [
        (rng.choices(SUBJECTS, cue_w)[0], f"zipf-user-{rng.choices(range(users), user_w)[0]}")
        for _ in range(n)
    ]


def floor_renders(requests: list[tuple[str, str]]) -> int:
    """Each cue needs as many variants as its most demanding user asks for."""
    per_cue: dict[str, Counter[str]] = {}
    for cue, user in requests:
        per_cue.setdefault(cue, Counter())[user] += 1
    return sum(max(users.values()) for users in per_cue.values())


async def drive(base: str, requests: list[tuple[str, str]], clients: int) -> list[dict[str, Any]]:
    """The requests in order, ``clients`` at a time, each client pausing between its own."""
    queue, answers = list(reversed(requests)), []
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:

        async def client() -> None:
            while queue:
                cue, user = queue.pop()
                t0 = time.perf_counter()
                r = await http.get("/image", params={"soul_id": SOUL, "cue": cue, "user_id": user})
                r.raise_for_status()
                body = r.json()
                answers.append({"user": user, "cue": cue, "cache": body["cache"],
                                "variant_id": body["variant_id"],
                                "s": time.perf_counter() - t0})  # fmt: skip
                await asyncio.sleep(THINK_S)

        await asyncio.gather(*(client() for _ in range(clients)))
    return answers


def catalog_counts(db: Path) -> dict[str, int]:
    """Variants made (refills among them), refills never delivered, refills preempted, keys
    refilled."""
    reserve = "meta_json LIKE '%\"reserve\": true%'"
    queries = {
        "variants": "SELECT count(*) FROM variant",
        "refills": f"SELECT count(*) FROM variant WHERE {reserve}",
        "wasted": f"SELECT count(*) FROM variant v WHERE {reserve} AND NOT EXISTS "
        "(SELECT 1 FROM user_seen s WHERE s.variant_id = v.variant_id)",
        "preempted": "SELECT count(*) FROM job WHERE kind = 'reserve' AND status = 'cancelled'",
        "keys_refilled": f"SELECT count(DISTINCT pk_id) FROM variant WHERE {reserve}",
    }
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {name: int(conn.execute(sql).fetchone()[0]) for name, sql in queries.items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def side(name: str, reserve: bool, requests: list[tuple[str, str]], clients: int) -> dict[str, Any]:
    from serve_app.local import local_graph

    args = {**GRAPH_ARGS, "catalog": {"reserve": {**RESERVE, "enabled": reserve}}}
    with tempfile.TemporaryDirectory(prefix="soul-bench-zipf-") as tmp:
        data_dir = Path(tmp)
        with local_graph(data_dir, port=free_port(), args=args, quiet=True) as base:
            warm = [("warm-up " + s, "warm-up-user") for s in ("lamp", "chair")]
            asyncio.run(drive(base, warm, 1))  # pipelines loaded: not measured, not counted
            t0 = time.perf_counter()
            answers = asyncio.run(drive(base, requests, clients))
            wall_s = time.perf_counter() - t0
            counts = catalog_counts(data_dir / "catalog.db")
    latencies = [a["s"] for a in answers]
    hits = [a["s"] for a in answers if a["cache"] == "hit"]
    sent = Counter((a["user"], a["variant_id"]) for a in answers)
    renders = counts["variants"] - len(warm)
    floor = floor_renders(requests)
    return {
        "side": name,
        "n": len(answers),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": pct(latencies, 0.95),
        "p99_ms": pct(latencies, 0.99),
        "hit_p95_ms": pct(hits, 0.95) if hits else None,
        "cache_share": round(len(hits) / len(answers), 3),
        "renders": renders,
        "floor": floor,
        "renders_per_delivery": round(renders / len(answers), 3),
        "floor_per_delivery": round(floor / len(answers), 3),
        "renders_over_floor": round(renders / floor, 3),
        "refills": counts["refills"],
        "refills_wasted": counts["wasted"],
        "refills_preempted": counts["preempted"],
        "keys_refilled": counts["keys_refilled"],
        "duplicates": sum(n - 1 for n in sent.values() if n > 1),
        "wall_s": round(wall_s, 1),
    }


def print_zipf(rows: list[dict[str, Any]]) -> None:
    cols = [("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
            ("hit_p95_ms", "hit p95"), ("cache_share", "cache"), ("renders", "renders"),
            ("floor", "floor"), ("renders_over_floor", "/floor"), ("refills", "refills"),
            ("refills_wasted", "wasted"), ("refills_preempted", "preempt"),
            ("duplicates", "dups")]  # fmt: skip
    print("\nsoul bench zipf")
    print(f"{'side':<14}{'n':>5}" + "".join(f"{title:>9}" for _, title in cols))
    for r in rows:
        print(f"{r['side']:<14}{r['n']:>5}" + "".join(f"{r[c]!s:>9}" for c, _ in cols))


def zipf_main(ns: argparse.Namespace) -> int:
    n, users = ns.requests or 120, 40
    requests = workload(n, users)
    rows = [
        side("reserve off", False, requests, ns.concurrency),
        side("reserve on", True, requests, ns.concurrency),
    ]
    on = rows[1]
    targets = {
        "p95 / hit p95 (reserve on), target <= 3": round(on["p95_ms"] / (on["hit_p95_ms"] or 1), 2),
        "renders / (1.10 x floor + depth x keys refilled) (reserve on), target <= 1": round(
            on["renders"] / (1.10 * on["floor"] + RESERVE["depth"] * on["keys_refilled"]), 3
        ),
    }
    first_asks = len({cue for cue, _ in requests})  # a miss no reserve can foresee
    print_zipf(rows)
    print(f"first asks of a cue (misses nothing can avoid): {first_asks} of {n}")
    for name, value in targets.items():
        print(f"{name}: {value}")
    config = {"requests": n, "first_asks": first_asks, "users": users,
              "subjects": len(SUBJECTS), "zipf_s": ZIPF_S, "clients": ns.concurrency,
              "think_s": THINK_S, "graph": GRAPH_ARGS, "reserve": RESERVE}  # fmt: skip
    write_report(ns, {"scenario": "zipf", "rows": rows, "targets": targets, "config": config})
    return 0
