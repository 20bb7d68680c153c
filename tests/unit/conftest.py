"""Unit tests run without Ray (starting a cluster from one is a test failure), on tiny models
built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
import ray._private.worker

from serve_app.diffusion.tiny import build_tiny_models


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail("a unit test started Ray (ray.init); unit tests must run without it")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray._private.worker, "init", refuse)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL, its LoRAs and motion adapter, built from config and saved for real."""
    root = tmp_path_factory.mktemp("models")
    build_tiny_models(root)
    return root
