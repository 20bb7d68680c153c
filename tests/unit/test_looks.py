"""A soul's look without Ray: styles go through the real catalog engine on SQLite."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from deployments.catalog import CatalogEngine
from serve_app.catalog.souls import load_souls
from serve_app.diffusion.sources import ModelManager
from serve_app.errors import UnknownSoul
from serve_app.looks import Looks
from serve_app.schemas import StyleProfile
from serve_app.settings import Settings
from serve_app.storage.local import LocalObjectStore, MediaSigner
from serve_app.storage.sqlite import SQLiteStore
from tests.support import run
from tests.unit.handles import LocalHandle


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_a_style_for_an_unknown_soul_is_a_404_before_any_model_ref_is_looked_up(
    tmp_path: Path,
) -> None:
    catalog = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(catalog.start(load_souls("config/souls.yaml")))
    civitai = f"http://127.0.0.1:{closed_port()}"  # any lookup would fail: a 502
    models = ModelManager(tmp_path / "models", civitai_url=civitai, timeout_s=1)
    objects = LocalObjectStore(str(tmp_path / "objects"), MediaSigner(b"k" * 32))
    looks = Looks(LocalHandle(catalog), objects, models, Settings(data_dir=tmp_path))
    style = StyleProfile(soul_id="ghost", base_model_ref="tiny-sdxl", lora_ids=["civitai:1"])
    with pytest.raises(UnknownSoul):
        run(looks.put_style(style))
    run(catalog.close())
