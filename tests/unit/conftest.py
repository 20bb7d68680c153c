"""Unit tests run without Ray (starting a cluster from one is a test failure), on tiny models
built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import ray._private.worker

from deployments.animator import AnimatorConfig, AnimatorEngine
from deployments.embedder import EmbedderEngine
from deployments.renderer import RendererConfig, RendererEngine
from deployments.upscaler import UpscalerEngine
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import build_tiny_models
from tests.unit.handles import LocalHandle, OneText
from tests.unit.world import World


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


@pytest.fixture(scope="module")
def renderer(models_dir: Path) -> RendererEngine:
    return RendererEngine(ModelManager(models_dir), RendererConfig(steps=2, width=64, height=64))


@pytest.fixture(scope="module")
def animator(models_dir: Path) -> AnimatorEngine:
    return AnimatorEngine(ModelManager(models_dir), AnimatorConfig(frames=6, steps=2, strength=0.5))


@pytest.fixture(scope="module")
def embedder() -> LocalHandle:
    return LocalHandle(OneText(EmbedderEngine()))


@pytest.fixture(scope="module")
def upscaler(models_dir: Path) -> UpscalerEngine:
    return UpscalerEngine(ModelManager(models_dir))


@pytest.fixture
def world(
    tmp_path: Path,
    renderer: RendererEngine,
    animator: AnimatorEngine,
    embedder: Any,
    upscaler: UpscalerEngine,
) -> Iterator[World]:
    w = World(tmp_path, renderer, animator, embedder, upscaler)
    yield w
    w.close()
