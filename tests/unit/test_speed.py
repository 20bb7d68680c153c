"""Serve's speed switches (serve_app/local.py): the adopted parts are on wherever the node env
is made, the others off; under gRPC handle calls the pixels still travel by reference."""

from __future__ import annotations

from typing import Any

from serve_app.delivery import Handles
from serve_app.local import ADOPTED_PARTS, RAY_DEFAULTS, SPEED_MODES, SPEED_PARTS, node_env
from serve_app.settings import Settings


def test_node_env_turns_on_the_adopted_parts_and_leaves_the_rest_at_rays_defaults() -> None:
    env = node_env(Settings())
    for part, switches in SPEED_PARTS.items():
        on = switches.items() <= env.items()
        assert on == (part in ADOPTED_PARTS), part
    assert set(ADOPTED_PARTS) == {"grpc", "user-loop"}
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in env


def test_every_mode_sets_every_switch() -> None:
    assert SPEED_MODES["ray-defaults"] == RAY_DEFAULTS
    for mode, env in SPEED_MODES.items():
        assert set(RAY_DEFAULTS) <= set(env), mode
    optimized = SPEED_MODES["throughput-optimized"]
    assert all(s.items() <= optimized.items() for s in SPEED_PARTS.values())


class FakeHandle:
    def __init__(self, name: str, **options: Any) -> None:
        self.name, self.options_set = name, options

    def options(self, **options: Any) -> FakeHandle:
        return FakeHandle(self.name, **self.options_set, **options)


def test_the_pixels_handles_pass_by_reference_and_the_others_as_the_node_says() -> None:
    names = ["embedder", "catalog", "renderer", "animator", "dedupe", "transcoder", "upscaler"]
    handles = Handles(*(FakeHandle(n) for n in names)).by_reference()
    by_reference = {n for n in names if getattr(handles, n).options_set.get("_by_reference")}
    assert by_reference == {"renderer", "animator", "dedupe", "transcoder", "upscaler"}
    assert handles.catalog.options_set == {} and handles.embedder.options_set == {}
