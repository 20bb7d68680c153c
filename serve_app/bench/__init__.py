"""`soul bench <scenario>`: side-by-side measurements, one module per scenario.

``SCENARIOS`` is the one list of them: `soul bench`'s choices and help and `make bench-<name>`
come from it. Each names its entry point by import path (``module:function``, taking the parsed
arguments and returning the exit status), imported only when that scenario runs: a scenario
pulls in what it measures (torch, PostgreSQL, Ray), and no module here imports them all.
``common`` holds what the scenarios share; ``floor`` the no-op graph `hot` compares with.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import import_module

from serve_app.local import SPEED_MODES


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str
    entry: str  # "module:function"

    def run(self, ns: argparse.Namespace) -> int:
        module, _, function = self.entry.partition(":")
        return int(getattr(import_module(module), function)(ns))


SCENARIOS = (
    Scenario(
        "hot",
        "cache hits over HTTP vs a no-op graph of our shape, per Serve speed mode, and in-process",
        "serve_app.bench.hot:run",
    ),
    Scenario(
        "miss",
        "a full miss over HTTP vs the boxes' engines in-process, stage by stage",
        "serve_app.bench.miss:run",
    ),
    Scenario(
        "catalog",
        "PostgreSQL vs SQLite, in-process and over HTTP",
        "serve_app.bench.catalog:run",
    ),
    Scenario(
        "render",
        "LoRA hot-swap vs reload, style switches, encode formats",
        "serve_app.bench.render:render_main",
    ),
    Scenario(
        "jobs",
        "queue overhead vs a direct call, queue jobs/s, high vs normal waits under a flood",
        "serve_app.bench.jobs:jobs_main",
    ),
    Scenario(
        "faults",
        "replicas killed and the database dropped under load, a header flood",
        "serve_app.bench.faults:run",
    ),
    Scenario(
        "matching",
        "embedded text, threshold and contrast check on labelled cue pairs",
        "serve_app.bench.matching:matching_main",
    ),
    Scenario(
        "keys",
        "a soul's key index at --keys keys, exact vs approximate, SQLite and PostgreSQL",
        "serve_app.bench.keys:keys_main",
    ),
    Scenario(
        "probes",
        "the approximate index at --keys keys: recall and lookup time by lists probed",
        "serve_app.bench.keys:probes_main",
    ),
    Scenario(
        "rebuild",
        "the key rebuild job over --keys keys while new cues are served",
        "serve_app.bench.rebuild:rebuild_main",
    ),
    Scenario(
        "batch",
        "renders/s of one Renderer by concurrency, batched vs unbatched",
        "serve_app.bench.batch:batch_main",
    ),
    Scenario(
        "gpu", "full-size SDXL, AnimateDiff, IP-Adapter on a GPU", "serve_app.bench.gpu:gpu_main"
    ),
    Scenario(
        "dedupe",
        "how often pHash and CLIP fire on distinct renders and on copies, ms per check",
        "serve_app.bench.dedupe:dedupe_main",
    ),
    Scenario("zipf", "a Zipf workload, the reserve off vs on", "serve_app.bench.zipf:zipf_main"),
    Scenario(
        "upscale",
        "the Upscaler's tiny networks: MPx/s vs Lanczos, tiled vs untiled memory, print stages",
        "serve_app.bench.upscale:upscale_main",
    ),
    Scenario(
        "identity",
        "render cost with vs without identity conditioning, scorer ms, accuracy, gate renders",
        "serve_app.bench.identity:identity_main",
    ),
    Scenario(
        "storyboard",
        "a storyboard's PDF and zip exports",
        "serve_app.bench.storyboard:storyboard_main",
    ),
    Scenario(
        "projects",
        "asset generation ms per image on the tiny model, search ms at --keys assets",
        "serve_app.bench.projects:projects_main",
    ),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`soul bench`'s arguments: the scenario, from ``SCENARIOS``, and the options they read."""
    p.add_argument(
        "scenario",
        choices=list(BY_NAME),
        help="; ".join(f"{s.name}: {s.help}" for s in SCENARIOS),
    )
    p.add_argument("--requests", type=int, default=None, help="measured requests per side")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients (hot)")
    p.add_argument(
        "--modes",
        nargs="+",
        choices=list(SPEED_MODES),
        default=["ray-defaults", "soul", "throughput-optimized"],
        help="hot: Serve speed modes, each on a local Ray of its own (serve_app/local.py: "
        "soul is the default; every part of throughput-optimized can run alone)",
    )
    p.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="catalog, faults: PostgreSQL server to use (a scratch database is created and "
        "dropped)",
    )
    p.add_argument(
        "--fault-after",
        type=float,
        default=3.0,
        help="faults: seconds into each phase's load at which the fault is injected",
    )
    p.add_argument(
        "--keys",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="keys, probes, rebuild: keys in the soul (a row per count, and per index and "
        "backend, or per probe)",
    )
    p.add_argument(
        "--idle-s",
        type=float,
        default=0,
        help="jobs: also count the Catalog's calls while a graph of 2 Catalog and 2 JobWorker "
        "replicas sits idle this long (per minute, by method), then time hit jobs on it",
    )
    p.add_argument("--profile", default=None, help="hot: py-spy our replicas into this folder")
    p.add_argument("--size", choices=["full", "tiny"], default="full", help="gpu: model size")
    p.add_argument("--out", default=None, help="JSON file (default: bench-<scenario>.json)")


def main(ns: argparse.Namespace) -> int:
    return BY_NAME[ns.scenario].run(ns)


__all__ = ["SCENARIOS", "Scenario", "add_arguments", "main"]
