"""`soul bench miss` adds up a miss's stages on both sides from what ``metrics.observe`` keeps
(values tapped in this process, the lines replicas log at DEBUG) and splits the graph's remainder
by the replicas' own timing of their calls."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from serve_app.bench.miss import CALLS, HOPS, STAGES, logged_ms, replica_torch_threads, stages_ms
from serve_app.metrics import observe, tapped, timed
from serve_app.settings import Settings


def test_a_tap_keeps_what_is_observed_while_it_is_open() -> None:
    observe("soul_render_ms", 1.0, source="text")
    with tapped() as outer:
        observe("soul_render_ms", 2.0, source="text")
        with tapped() as inner, timed("soul_store_ms", backend="local"):
            pass
    observe("soul_render_ms", 3.0, source="text")
    assert outer["soul_render_ms"] == [2.0] and len(outer["soul_store_ms"]) == 1
    assert list(inner) == ["soul_store_ms"]


def test_each_observed_value_is_logged_as_it_is_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="ray.serve"):
        observe("soul_animate_ms", 1234.5678, mode="subtle")
    [record] = [r for r in caplog.records if r.levelno == logging.DEBUG]
    fields = record.ray_serve_extra_fields  # type: ignore[attr-defined]
    assert fields == {"metric": "soul_animate_ms", "value": 1234.5678}


def test_what_no_stage_took_is_the_remainder_and_in_process_it_is_all_in_the_engines() -> None:
    sums = {"soul_render_ms": 600.0, "soul_animate_ms": 1000.0, "soul_transcode_ms": 200.0}
    breakdown = stages_ms(sums, [1.0, 1.2])  # two misses: 1100 ms each on average
    assert breakdown["render"] == 300.0 and breakdown["dedupe (pHash)"] == 0.0
    assert breakdown["remainder"] == 1100.0 - 300.0 - 500.0 - 100.0
    assert breakdown["remainder: boxes, outside stages"] == breakdown["remainder"]
    assert breakdown["remainder: catalog calls"] == breakdown[f"remainder: {HOPS}"] == 0.0
    assert breakdown["total (mean)"] == 1100.0
    assert list(breakdown) == [
        *STAGES,
        "remainder",
        *(f"remainder: {part}" for part in CALLS),
        f"remainder: {HOPS}",
        "total (mean)",
    ]


def test_over_http_the_remainder_is_split_by_the_replicas_timing_of_their_calls() -> None:
    sums = {
        "soul_render_ms": 600.0,
        "Renderer.render": 640.0,  # 40 ms of it outside the render stage
        "Catalog.lookup": 10.0,
        "Catalog.put_variant": 6.0,
        "Embedder.embed": 30.0,
    }
    breakdown = stages_ms(sums, [1.0])
    assert breakdown["remainder"] == 400.0
    assert breakdown["remainder: catalog calls"] == 16.0
    assert breakdown["remainder: embedding"] == 30.0
    assert breakdown["remainder: boxes, outside stages"] == 40.0
    assert breakdown[f"remainder: {HOPS}"] == 400.0 - 16.0 - 30.0 - 40.0


def test_the_graph_side_adds_up_the_stage_and_call_lines_of_every_replica(tmp_path: Path) -> None:
    def line(metric: str, value: float) -> str:
        return json.dumps({"levelname": "DEBUG", "metric": metric, "value": value})

    def call(deployment: str, method: str, ms: float) -> str:
        message = f"CALL {method} OK {ms}ms"
        return json.dumps({"message": message, "deployment": f"soul_{deployment}"})

    (tmp_path / "replica_soul_Renderer_a.log").write_text(
        "\n".join(
            [
                line("soul_render_ms", 10.0),
                line("soul_render_ms", 5.0),
                "not json",
                call("Renderer", "render", 16.5),
            ]
        )
    )
    (tmp_path / "replica_soul_Catalog_b.log").write_text(
        "\n".join([call("Catalog", "lookup", 2.5), call("Catalog", "lease_job", 9.0)])
    )
    (tmp_path / "replica_soul_Transcoder_c.log").write_text(
        "\n".join([line("soul_store_ms", 2.0), line("soul_gif_bytes", 9e5)])
    )
    sums = logged_ms(tmp_path, stored=1)
    assert sums["soul_render_ms"] == 15.0 and sums["soul_store_ms"] == 2.0
    assert sums["Renderer.render"] == 16.5 and sums["Catalog.lookup"] == 2.5
    assert "soul_gif_bytes" not in sums and "Catalog.lease_job" not in sums  # not a miss's
    with pytest.raises(AssertionError, match="1 stored variants logged, 2 expected"):
        logged_ms(tmp_path, stored=2, timeout_s=0)


def test_the_floor_runs_torch_on_as_many_threads_as_a_replica() -> None:
    from deployments.animator import Animator
    from deployments.renderer import Renderer

    assert replica_torch_threads(Settings(), Renderer) == 1  # Ray's OMP_NUM_THREADS at 0.5 CPU
    assert replica_torch_threads(Settings(), Animator) == 1
    assert replica_torch_threads(Settings(torch_threads=2), Renderer) == 2
