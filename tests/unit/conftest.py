"""Unit tests run without Ray: starting a cluster from one is a test failure."""

from __future__ import annotations

from typing import Any

import pytest
import ray
import ray._private.worker


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail("a unit test started Ray (ray.init); unit tests must run without it")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray._private.worker, "init", refuse)
