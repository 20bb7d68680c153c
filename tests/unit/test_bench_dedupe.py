"""`soul bench dedupe` on a few renders: its table's cases and costs, written as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from serve_app.bench.dedupe import COPIES, dedupe_main


def test_the_dedupe_bench_reports_each_filter_on_renders_and_copies(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOUL_MODELS_DIR", str(models_dir))
    out = tmp_path / "bench.json"
    assert dedupe_main(argparse.Namespace(requests=3, out=str(out), scenario="dedupe")) == 0
    report = json.loads(out.read_text())
    cases = {row["case"]: row for row in report["cases"]}
    assert cases["distinct renders (must pass)"]["n"] == 3  # every pair of three renders
    assert len(cases) == 1 + len(COPIES) and all(row["n"] == 3 for row in list(cases.values())[1:])
    assert cases["jpeg q50 copies (should be caught)"]["clip_fires"] == 1.0
    assert set(report["ms_per_check"]) == {"phash", "phash + clip"}
    assert all(ms > 0 for ms in report["ms_per_check"].values())
