"""The Upscaler's engine without Ray: Real-ESRGAN's key layouts load (bare and wrapped in
``params_ema``), factors are chosen by size, tiles add no seams, and ``.pth`` conversion never
unpickles anything but tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from deployments.upscaler import UpscalerConfig, UpscalerEngine
from serve_app.diffusion.sources import ModelManager, UnsafeModelFormat
from serve_app.upscale.archs import RRDBNet, SRVGGNetCompact
from serve_app.upscale.tiling import upscale_tiled
from serve_app.upscale.weights import build_tiny_upscalers, convert_pth, load_network

PIXELS = np.random.default_rng(0).integers(0, 256, (37, 51, 3), dtype=np.uint8)  # odd sides

# Keys Real-ESRGAN's published checkpoints hold (RealESRGAN_x4plus, realesr-general-x4v3).
RRDB_KEYS = {
    *("conv_first.weight", "body.0.rdb1.conv1.weight", "body.0.rdb3.conv5.bias"),
    *("conv_body.weight", "conv_up1.weight", "conv_up2.weight", "conv_hr.weight"),
    "conv_last.bias",
}
COMPACT_KEYS = {"body.0.weight", "body.1.weight", "body.2.weight", "body.4.bias"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("upscalers")
    build_tiny_upscalers(root)
    return root


def test_the_networks_carry_real_esrgans_state_dict_names() -> None:
    assert set(RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).state_dict()) >= RRDB_KEYS
    assert set(SRVGGNetCompact(num_feat=8, num_conv=2).state_dict()) >= COMPACT_KEYS


@pytest.mark.parametrize(
    ("network", "scale"),
    [
        (RRDBNet(scale=2, num_feat=8, num_block=2, num_grow_ch=4), 2),
        (RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4), 4),
        (SRVGGNetCompact(scale=4, num_feat=8, num_conv=3), 4),
        (SRVGGNetCompact(scale=2, num_feat=8, num_conv=1, prelu=False), 2),
    ],
)
@pytest.mark.parametrize("wrapper", ["", "params_ema."])
def test_saved_weights_load_bare_or_in_params_ema(
    tmp_path: Path, network: torch.nn.Module, scale: int, wrapper: str
) -> None:
    state = {f"{wrapper}{k}": v.contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    loaded = load_network(tmp_path / "w.safetensors")
    assert type(loaded) is type(network) and loaded.scale == scale
    x = torch.rand(1, 3, 12, 16)
    with torch.inference_mode():
        assert loaded(x).shape == (1, 3, 12 * scale, 16 * scale)
        assert torch.equal(loaded(x), network.eval()(x))


@pytest.mark.parametrize("tag", ["tiny-rrdb-x2", "tiny-rrdb-x4", "tiny-compact-x4"])
def test_a_tiled_upscale_equals_the_untiled_one(models: Path, tag: str) -> None:
    network = load_network(models / f"{tag}.safetensors")
    image = PIXELS[:36, :50]  # even: RRDBNet x2 folds 2x2 pixels
    [whole] = upscale_tiled(network, network.scale, [image], tile=64, overlap=0, batch=1)
    [tiled] = upscale_tiled(network, network.scale, [image], tile=16, overlap=12, batch=3)
    assert whole.shape == (36 * network.scale, 50 * network.scale, 3)
    assert np.abs(whole.astype(int) - tiled).max() <= 1


def test_tiles_without_overlap_show_their_seams(models: Path) -> None:
    """What the overlap is for: without it, the tiles' edges differ from the whole."""
    network = load_network(models / "tiny-rrdb-x4.safetensors")
    image = PIXELS[:32, :32]
    [whole] = upscale_tiled(network, 4, [image], tile=64, overlap=0, batch=1)
    [tiled] = upscale_tiled(network, 4, [image], tile=16, overlap=0, batch=1)
    assert np.abs(whole.astype(int) - tiled).max() > 1


def test_the_smallest_factor_that_reaches_the_size_answers(models: Path) -> None:
    engine = UpscalerEngine(
        ModelManager(models), UpscalerConfig(models=["tiny-rrdb-x2", "tiny-compact-x4"], tile=32)
    )
    assert engine.factors() == {"tiny-rrdb-x2": 2, "tiny-compact-x4": 4}
    two, four, most = engine.upscale([(PIXELS, 1.6), (PIXELS, 2.5), (PIXELS, 9.0)])
    assert (two.factor, two.model, two.pixels.shape) == (2, "tiny-rrdb-x2", (74, 102, 3))
    assert (four.factor, four.pixels.shape) == (4, (148, 204, 3))
    assert most.factor == 4  # none reaches 9: the largest, the caller resizes the rest


def test_a_pth_of_tensors_converts_to_safetensors(tmp_path: Path) -> None:
    network = SRVGGNetCompact(scale=4, num_feat=8, num_conv=2)
    torch.save({"params_ema": network.state_dict()}, tmp_path / "x4.pth")
    dest = convert_pth(tmp_path / "x4.pth", tmp_path / "x4.safetensors")
    assert set(load_file(str(dest))) == set(network.state_dict())
    assert load_network(dest).scale == 4


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_holding_code_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    evil = {"params_ema": {"conv_first.weight": torch.zeros(1)}, "x": Payload(tmp_path / "ran")}
    torch.save(evil, tmp_path / "evil.pth")
    with pytest.raises(UnsafeModelFormat, match="more than tensors"):
        convert_pth(tmp_path / "evil.pth", tmp_path / "evil.safetensors")
    assert not (tmp_path / "evil.safetensors").exists() and not (tmp_path / "ran").exists()


def test_a_pickle_is_never_a_model_ref(tmp_path: Path) -> None:
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=1).state_dict(), tmp_path / "x4.pth")
    with pytest.raises(UnsafeModelFormat):
        ModelManager(tmp_path).ensure(str(tmp_path / "x4.pth"))
