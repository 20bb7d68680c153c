"""`soul bench gpu --size tiny` runs the full-size benchmark's code on a CPU, so the command a
GPU machine runs cannot rot: every row is there and measured, and its JSON is written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serve_app.bench import BY_NAME


def test_the_gpu_bench_runs_every_row_on_the_tiny_architecture(tmp_path: Path) -> None:
    out = tmp_path / "bench-gpu.json"
    ns = argparse.Namespace(scenario="gpu", size="tiny", out=str(out))
    assert BY_NAME["gpu"].run(ns) == 0
    report = json.loads(out.read_text())
    rows = {row["row"]: row for row in report["rows"]}
    assert report["device"] == "cpu" and report["render"]["steps"] == 2
    for batch in (1, 2, 4):
        assert f"SDPA, batch {batch}" in rows
        assert f"SDPA + channels-last + fused QKV, batch {batch}" in rows
    assert any(name.startswith("IP-Adapter") for name in rows)
    assert any(name.startswith("AnimateDiff clip of 8 frames") for name in rows)
    assert any(name.startswith("torch.compile") for name in rows)
    assert rows["upscale x2 (RRDBNet, tiled) 64→128"]["seconds"] > 0
    assert all(row["seconds"] > 0 for row in report["rows"])
    assert rows["cold: build on the device + first image"]["build_seconds"] > 0
