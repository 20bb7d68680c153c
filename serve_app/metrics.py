"""Soul Serve's own metrics, recorded through ``ray.serve.metrics``.

Each node's metrics agent exports them to Prometheus as ``ray_<name>`` (counters also as
``ray_<name>_total``), and the Ray dashboard charts them. Serve adds the ``deployment``,
``replica`` and ``application`` tags itself. Outside a Ray worker, recording does nothing, so the
engines record directly and still run bare in unit tests.

Ray exports a histogram's sum from its buckets (each value counted at its bucket's midpoint), so
``observe`` also logs each value as it is at DEBUG, under the request id Serve gives the line:
``soul bench miss`` adds up a miss's stages from those lines, and its in-process side from what
``tapped`` keeps.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

from ray.serve.metrics import Counter, Gauge, Histogram

# Milliseconds: a hot catalog write (~1 ms) up to a slow GPU render (minutes).
MS_BUCKETS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
              120_000, 300_000]  # fmt: skip
BYTES_BUCKETS = [2**k for k in range(12, 26)]  # 4 KiB … 32 MiB

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Metric:
    kind: Literal["counter", "histogram", "gauge"]
    description: str
    tags: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


METRICS: dict[str, Metric] = {
    "soul_cache_requests": Metric(
        "counter",
        "Deliveries by route (/image, /selfie, /jobs: each job item) and cache result: hit (an "
        "existing variant) or miss (rendered for it).",
        ("route", "soul_id", "result"),
    ),
    "soul_coalesced_requests": Metric(
        "counter",
        "Misses served by a render they did not start: one they joined on this replica "
        "(scope=replica), or one made meanwhile, usually by another replica (scope=cluster).",
        ("scope",),
    ),
    "soul_claim_races": Metric(
        "counter", "Claims lost to a concurrent request of the same user (it tries the next)."
    ),
    "soul_dedupe_rejects": Metric(
        "counter",
        "Renders rejected as too close to a sibling variant, by the filter that found it: "
        "phash (Hamming distance), else clip (image embedding distance).",
        ("filter",),
    ),
    "soul_render_ms": Metric(
        "histogram",
        "Text-to-image (or img2img) time of a pipeline call: a batch of renders of one style.",
        ("source",),
        tuple(MS_BUCKETS),
    ),
    "soul_animate_ms": Metric(
        "histogram", "Animation time of one rendered image.", ("mode",), tuple(MS_BUCKETS)
    ),
    "soul_dedupe_ms": Metric(
        "histogram",
        "Dedupe check time of one render, by filter: phash, or clip (embedding it and comparing).",
        ("filter",),
        tuple(MS_BUCKETS),
    ),
    "soul_transcode_ms": Metric(
        "histogram", "Encoding time of one variant in every enabled format.", (), tuple(MS_BUCKETS)
    ),
    "soul_store_ms": Metric(
        "histogram",
        "Object store write time of one variant's objects.",
        ("backend",),
        tuple(MS_BUCKETS),
    ),
    "soul_gif_bytes": Metric("histogram", "Size of each GIF written.", (), tuple(BYTES_BUCKETS)),
    "soul_swept_rows": Metric(
        "counter", "Expired rows deleted by the catalog's sweeper, by table.", ("table",)
    ),
    "soul_key_index_keys": Metric(
        "gauge",
        "Prompt keys in a soul's index on this Catalog replica, by kind of index (exact, or "
        "approximate past catalog.index.approximate_from).",
        ("soul_id", "index"),
    ),
    "soul_cost_usd": Metric(
        "counter",
        "Dollars of new variants by soul and stage (render, animate, encode): each stage's "
        "seconds at its deployment's catalog.cost.usd_per_second.",
        ("soul_id", "stage"),
    ),
    "soul_cost_today_usd": Metric(
        "gauge", "Spend of the UTC day, all souls, as the catalog last summed it.", ()
    ),
    "soul_cost_budget_warning": Metric(
        "gauge",
        "1 once the day's spend reached catalog.cost.warn_at of catalog.cost.daily_budget_usd, "
        "else 0 (always 0 without a budget).",
        (),
    ),
    "soul_identity_score": Metric(
        "histogram",
        "Cosine of each delivered variant of a soul with a locked identity to its anchor, by "
        "scorer (face: SFace; image: the CLIP fallback).",
        ("scorer",),
        (0.05, 0.1, 0.2, 0.3, 0.363, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0),
    ),
    "soul_identity_verdicts": Metric(
        "counter",
        "Delivered variants of souls with a locked identity by verdict (verified, off_model, "
        "unscorable) and flagged (true: no render of it was verified).",
        ("soul_id", "verdict", "flagged"),
    ),
    "soul_jobs": Metric(
        "counter",
        "Jobs ended, by kind and terminal status (succeeded, partial, failed, cancelled).",
        ("kind", "status"),
    ),
    "soul_job_retries": Metric(
        "counter", "Job attempts that failed transiently and were queued again.", ("kind",)
    ),
    "soul_job_dead_letters": Metric(
        "counter", "Jobs failed after their last attempt (GET /jobs?status=failed).", ("kind",)
    ),
    "soul_job_queue_depth": Metric(
        "gauge",
        "Jobs waiting to be leased, by priority (as the catalog last saw them).",
        ("priority",),
    ),
    "soul_job_wait_ms": Metric(
        "histogram", "Time from submit to a worker starting the job.", ("kind",), tuple(MS_BUCKETS)
    ),
    "soul_job_run_ms": Metric(
        "histogram", "Time from a job's start to its end.", ("kind",), tuple(MS_BUCKETS)
    ),
    "soul_reserve_depth": Metric(
        "gauge",
        "Variants of a hot key its most demanding recent user has not had (catalog.reserve "
        "keeps it at depth), as the last plan saw it.",
        ("pk_id",),
    ),
    "soul_reserve_refills": Metric(
        "counter", "Variants made by refills of the reserve, claimed by no one yet.", ("soul_id",)
    ),
    "soul_reserve_preempted": Metric(
        "counter",
        "Refills stopped at a denoising step to give way to a user's render.",
        ("soul_id",),
    ),
    "soul_reserve_hits": Metric(
        "counter", "Claims of a variant a refill made: hits served from the reserve.", ("soul_id",)
    ),
    "soul_reserve_budget_stops": Metric(
        "counter",
        "Plans and refills skipped because today's spend reached the budget's warning level.",
    ),
}


@functools.cache
def _recorder(name: str) -> Counter | Histogram | Gauge:
    """Made on first use, inside the replica, so Serve can attach its tags."""
    spec = METRICS[name]
    tag_keys = cast("tuple[str]", spec.tags)  # Ray annotates any tuple of names as a 1-tuple
    if spec.kind == "counter":
        return Counter(name, description=spec.description, tag_keys=tag_keys)
    if spec.kind == "gauge":
        return Gauge(name, description=spec.description, tag_keys=tag_keys)
    return Histogram(
        name, description=spec.description, boundaries=list(spec.buckets), tag_keys=tag_keys
    )


def count(name: str, value: float = 1, **tags: str) -> None:
    counter = _recorder(name)
    assert isinstance(counter, Counter), f"{name} is not a counter"
    if value > 0:
        counter.inc(value, tags=tags)


def observe(name: str, value: float, **tags: str) -> None:
    histogram = _recorder(name)
    assert isinstance(histogram, Histogram), f"{name} is not a histogram"
    histogram.observe(value, tags=tags)
    fields = {"metric": name, "value": value}  # Serve writes them as fields of the line
    log.debug("%s %s", name, value, extra={"ray_serve_extra_fields": fields})
    for values in _taps:
        values[name].append(value)


def gauge(name: str, value: float, **tags: str) -> None:
    recorder = _recorder(name)
    assert isinstance(recorder, Gauge), f"{name} is not a gauge"
    recorder.set(value, tags=tags)


_taps: list[defaultdict[str, list[float]]] = []


@contextmanager
def tapped() -> Iterator[dict[str, list[float]]]:
    """Also keep every histogram value this process observes in the block, by metric name."""
    values: defaultdict[str, list[float]] = defaultdict(list)
    _taps.append(values)
    try:
        yield values
    finally:
        _taps.remove(values)


@contextmanager
def timed(name: str, **tags: str) -> Iterator[None]:
    """Observe the block's wall time in milliseconds (only when it completes)."""
    start = time.perf_counter()
    yield
    observe(name, (time.perf_counter() - start) * 1000, **tags)
