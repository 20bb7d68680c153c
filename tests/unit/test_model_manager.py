"""The model manager against a fake CivitAI on 127.0.0.1: verified, atomic, cached downloads of
safetensors only, and clear errors for everything else. No Ray."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from deployments.renderer import RendererConfig, RendererEngine
from serve_app.diffusion.sources import (
    ChecksumMismatch,
    ModelManager,
    ModelNotFound,
    ModelSourceUnavailable,
    ModelTooLarge,
    UnsafeModelFormat,
)
from serve_app.diffusion.tiny import TINY_LORAS, TINY_MODEL, build_tiny_models
from serve_app.schemas import RenderJob
from tests.support import FakeCivitai

PASTEL = next(iter(TINY_LORAS))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    build_tiny_models(root)
    return root


@pytest.fixture
def civitai() -> Iterator[FakeCivitai]:
    fake = FakeCivitai()
    yield fake
    fake.close()


@pytest.fixture
def manager(tmp_path: Path, civitai: FakeCivitai) -> ModelManager:
    return ModelManager(
        tmp_path / "models", civitai_url=civitai.url, civitai_token=FakeCivitai.TOKEN
    )


def cache_files(manager: ModelManager) -> list[str]:
    root = manager.models_dir / "civitai"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_download_is_verified_cached_and_reused(
    manager: ModelManager, civitai: FakeCivitai, tiny: Path
) -> None:
    lora = (tiny / f"{PASTEL}.safetensors").read_bytes()
    ref = civitai.publish("101", lora, name="pastel-style.safetensors")
    path = manager.ensure(ref)
    assert path == manager.models_dir / "civitai" / "101" / "pastel-style.safetensors"
    assert path.read_bytes() == lora
    assert cache_files(manager) == ["101/pastel-style.safetensors", "101/version.json"]
    asked = list(civitai.requests)
    assert asked == ["/api/v1/model-versions/101", "/api/download/models/101", "/cdn/101"]
    civitai.close()  # the cache answers from now on, with CivitAI gone
    assert manager.ensure(ref) == path
    manager.check_remote(ref)


def test_tampered_download_is_refused_and_deleted(
    manager: ModelManager, civitai: FakeCivitai, tiny: Path
) -> None:
    lora = (tiny / f"{PASTEL}.safetensors").read_bytes()
    ref = civitai.publish("102", lora, sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="does not match"):
        manager.ensure(ref)
    assert cache_files(manager) == []  # nothing half-downloaded or unverified stays


def test_pickle_checkpoints_are_refused_by_metadata_or_by_content(
    manager: ModelManager, civitai: FakeCivitai
) -> None:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    pickled = buffer.getvalue()
    ref = civitai.publish("103", pickled, name="model.ckpt", file_format="PickleTensor")
    with pytest.raises(UnsafeModelFormat, match="only safetensors"):
        manager.ensure(ref)
    with pytest.raises(UnsafeModelFormat):
        manager.check_remote(ref)
    # Metadata that lies: "SafeTensor", right checksum, pickle bytes.
    ref = civitai.publish("104", pickle.dumps({"a": 1}), name="model.safetensors")
    with pytest.raises(UnsafeModelFormat, match="not a safetensors file"):
        manager.ensure(ref)
    assert cache_files(manager) == []
    assert not [r for r in civitai.requests if r == "/cdn/103"]  # never even downloaded


def test_unknown_version_unauthorized_unreachable_and_oversized(
    manager: ModelManager, civitai: FakeCivitai, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFound, match="no such model version") as unknown:
        manager.check_remote("civitai:999")
    assert unknown.value.status_code == 422
    anonymous = ModelManager(tmp_path / "m", civitai_url=civitai.url)
    with pytest.raises(ModelSourceUnavailable, match="401") as refused:
        anonymous.check_remote(civitai.publish("105", b"x"))
    assert refused.value.status_code == 502
    dead = ModelManager(tmp_path / "m", civitai_url="http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(ModelSourceUnavailable, match="unreachable"):
        dead.ensure("civitai:105")
    small = ModelManager(
        tmp_path / "m", civitai_url=civitai.url, civitai_token=FakeCivitai.TOKEN, max_bytes=1024
    )
    with pytest.raises(ModelTooLarge) as large:
        small.ensure(civitai.publish("106", b"x" * 4096, size_kb=4))
    assert large.value.status_code == 413
    with pytest.raises(ModelTooLarge, match="exceeds"):  # metadata that understates the size
        small.ensure(civitai.publish("107", b"x" * 4096, size_kb=0.5))
    assert list((tmp_path / "m" / "civitai" / "107").iterdir()) == []  # the part file went


def test_a_civitai_lora_renders_like_the_same_file_loaded_locally(
    civitai: FakeCivitai, tiny: Path, tmp_path: Path
) -> None:
    ref = civitai.publish("108", (tiny / f"{PASTEL}.safetensors").read_bytes())
    models = tmp_path / "models"
    models.mkdir()
    (models / TINY_MODEL).symlink_to(tiny / TINY_MODEL)
    (models / f"{PASTEL}.safetensors").symlink_to(tiny / f"{PASTEL}.safetensors")
    manager = ModelManager(models, civitai_url=civitai.url, civitai_token=FakeCivitai.TOKEN)
    engine = RendererEngine(manager, RendererConfig(steps=2, width=64, height=64))

    def render(lora_ids: list[str]) -> np.ndarray:
        job = RenderJob(
            style_id="s",
            base_model_ref=TINY_MODEL,
            lora_ids=lora_ids,
            prompt="penguin",
            negative_prompt="",
            seed=5,
        )
        return engine.render(job).pixels

    assert np.array_equal(render([ref]), render([PASTEL]))
    assert not np.array_equal(render([ref]), render([]))


def test_a_missing_tag_does_not_tell_where_the_models_folder_is(manager: ModelManager) -> None:
    with pytest.raises(ModelNotFound) as missing:
        manager.local("no-such-model")
    assert "in the models folder" in str(missing.value)
    assert str(manager.models_dir) not in str(missing.value)
