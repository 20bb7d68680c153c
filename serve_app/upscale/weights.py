"""Upscaler weights: a safetensors file in Real-ESRGAN's key layout, the network rebuilt from the
shapes of its tensors (which architecture, how wide, how deep, what scale).

    load:     ``load_network`` reads safetensors only (the model manager has refused anything
              else); a ``params_ema``/``params`` prefix, as Real-ESRGAN's checkpoints wrap their
              weights, is unwrapped; every key must fit the network exactly (``strict``)
    convert:  ``convert_pth`` is the one place that ever unpickles, with
              ``torch.load(weights_only=True)``: a pickle that holds anything but tensors (and
              plain containers of them) is refused, and nothing is written
    tiny:     ``build_tiny_upscalers`` saves random networks of both architectures, at test size
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from serve_app.diffusion.sources import UnsafeModelFormat
from serve_app.upscale.archs import RRDBNet, SRVGGNetCompact

WRAPPERS = ("params_ema", "params")  # Real-ESRGAN's checkpoints keep the EMA weights first
TINY_UPSCALERS = {
    "tiny-rrdb-x2": ("rrdb", 2),
    "tiny-rrdb-x4": ("rrdb", 4),
    "tiny-compact-x4": ("compact", 4),
}
_BLOCK = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")
_LAYER = re.compile(r"^body\.(\d+)\.weight$")


def unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's own keys: ``params_ema.conv_first.weight`` → ``conv_first.weight``."""
    for wrapper in WRAPPERS:
        prefix = f"{wrapper}."
        inner = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if inner:
            return inner
    return state


def network_for(state: dict[str, torch.Tensor]) -> nn.Module:
    """The network these weights belong to, built from their shapes (not yet loaded)."""
    if "conv_first.weight" in state:
        first = state["conv_first.weight"]
        folded = {3: 4, 12: 2, 48: 1}.get(int(first.shape[1]))
        if folded is None:
            raise UnsafeModelFormat(f"conv_first takes {first.shape[1]} channels: not RRDBNet's")
        blocks = [int(m.group(1)) for k in state if (m := _BLOCK.match(k))]
        return RRDBNet(
            scale=folded,
            num_feat=int(first.shape[0]),
            num_block=max(blocks) + 1 if blocks else 0,
            num_grow_ch=int(state["body.0.rdb1.conv1.weight"].shape[0]) if blocks else 32,
        )
    layers = {int(m.group(1)): v for k, v in state.items() if (m := _LAYER.match(k))}
    convs = sorted(i for i, v in layers.items() if v.dim() == 4)
    if not convs or convs[0] != 0:
        raise UnsafeModelFormat("neither RRDBNet's nor SRVGGNetCompact's state-dict keys")
    out_channels = int(layers[convs[-1]].shape[0])
    scale = round((out_channels / 3) ** 0.5)
    return SRVGGNetCompact(
        scale=scale,
        num_feat=int(layers[0].shape[0]),
        num_conv=len(convs) - 2,
        prelu=1 in layers,
    )


def load_network(path: Path) -> nn.Module:
    """The network of a safetensors file, its weights loaded, in eval mode."""
    state = unwrapped(load_file(str(path)))
    network = network_for(state)
    network.load_state_dict(state, strict=True)
    return network.eval().requires_grad_(False)


def convert_pth(source: Path, dest: Path) -> Path:
    """A ``.pth`` checkpoint's tensors as safetensors (``params_ema`` kept as the weights)."""
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFormat(
            f"{source.name}: refused, it holds more than tensors ({str(exc).splitlines()[0]})"
        ) from exc
    state = _tensors(loaded)
    network_for(unwrapped(state))  # refuse what is no upscaler before writing anything
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in unwrapped(state).items()}, str(dest))
    return dest


def _tensors(loaded: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """A nested dict of tensors, flattened to dotted keys."""
    if isinstance(loaded, torch.Tensor):
        return {prefix.removesuffix("."): loaded}
    if not isinstance(loaded, dict):
        raise UnsafeModelFormat(f"expected a state dict, found {type(loaded).__name__}")
    flat: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        flat |= _tensors(value, f"{prefix}{key}.")
    return flat


def tiny_network(arch: str, scale: int, seed: int = 0) -> nn.Module:
    """A random network of ``arch`` at test size (a few thousand weights)."""
    torch.manual_seed(seed)
    if arch == "rrdb":
        return RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    return SRVGGNetCompact(scale=scale, num_feat=8, num_conv=2)


def build_tiny_upscalers(models_dir: Path) -> list[Path]:
    """``<tag>.safetensors`` of each tiny upscaler, wrapped in ``params_ema`` as Real-ESRGAN
    publishes them (idempotent)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, (tag, (arch, scale)) in enumerate(TINY_UPSCALERS.items()):
        path = models_dir / f"{tag}.safetensors"
        if not path.is_file():
            state = tiny_network(arch, scale, seed).state_dict()
            tmp = path.with_suffix(".tmp")
            save_file({f"params_ema.{k}": v.contiguous() for k, v in state.items()}, str(tmp))
            tmp.rename(path)
        paths.append(path)
    return paths
