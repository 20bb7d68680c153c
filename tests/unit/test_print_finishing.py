"""Print versions without Ray: the chain's steps, background removal (GrabCut, and a tiny
U²-Net-interface ONNX graph), framing to exact sizes, and the file's rules (DPI, sRGB, mode,
byte limit with a re-encode)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from pydantic import ValidationError

from serve_app.prints.chain import (
    Brightness,
    Contrast,
    Levels,
    Palette,
    Saturation,
    Sharpen,
    hex_palette,
    run_chain,
)
from serve_app.prints.matte import OnnxMatte, grabcut_alpha
from serve_app.prints.output import SRGB, PrintTooLarge, encode, finish, frame
from serve_app.prints.spec import PrintOptions, PrintsConfig, load_prints, options_of

RNG = np.random.default_rng(0)


def figure(width: int = 160, height: int = 120) -> Image.Image:
    """A dark red figure on a plain pale blue background, with a little noise."""
    image = Image.new("RGB", (width, height), (190, 215, 240))
    ImageDraw.Draw(image).ellipse(
        (width * 0.3, height * 0.2, width * 0.7, height * 0.85), fill=(150, 30, 40)
    )
    noise = RNG.integers(-6, 7, (height, width, 3))
    return Image.fromarray((np.asarray(image, dtype=int) + noise).clip(0, 255).astype(np.uint8))


def dull() -> Image.Image:
    """Low contrast, a blue cast."""
    base = np.asarray(figure(), dtype=np.float32) * 0.4 + 60
    base[..., 2] += 30
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def spread(image: Image.Image) -> float:
    return float(np.asarray(image, dtype=np.float32).std())


def edges(image: Image.Image) -> float:
    """Mean absolute difference between neighbouring pixels."""
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(pixels, axis=1)).mean())


def saturation(image: Image.Image) -> float:
    return float(np.asarray(image.convert("HSV"))[..., 1].mean())


def test_levels_stretches_the_range_and_balances_the_cast() -> None:
    image = dull()
    means = np.asarray(image, dtype=np.float32).mean(axis=(0, 1))
    levelled = Levels(clip=0.005, balance=True).apply(image, [])
    pixels = np.asarray(levelled, dtype=np.float32)
    assert pixels.min() <= 5 and pixels.max() >= 250 and spread(levelled) > 2 * spread(image)
    balanced = pixels.mean(axis=(0, 1))
    assert np.ptp(balanced) < np.ptp(means) / 2  # the blue cast is mostly gone


def test_palette_moves_the_mean_colour_toward_the_palette() -> None:
    image, red = dull(), [(220, 40, 40)]
    moved = Palette(strength=0.5).apply(image, red)
    before = np.asarray(image, dtype=np.float32).mean(axis=(0, 1))
    after = np.asarray(moved, dtype=np.float32).mean(axis=(0, 1))
    assert np.linalg.norm(after - red[0]) < np.linalg.norm(before - red[0]) * 0.6
    assert Palette(strength=0.5).apply(image, []) is image  # a style without colours


def test_the_enhancers_and_the_unsharp_mask_each_change_what_they_should() -> None:
    image = figure()
    mean = float(np.asarray(image).mean())
    assert float(np.asarray(Brightness(factor=1.2).apply(image, [])).mean()) > mean + 5
    assert spread(Contrast(factor=1.3).apply(image, [])) > spread(image) * 1.2
    assert saturation(Saturation(factor=1.5).apply(image, [])) > saturation(image) * 1.2
    soft = image.filter(ImageFilter.GaussianBlur(1.5))
    sharp = Sharpen(radius=2, percent=150, threshold=0).apply(soft, [])
    assert edges(sharp) > edges(soft) * 1.3


def test_a_chain_runs_its_steps_in_order() -> None:
    steps = [Brightness(factor=1.5), Contrast(factor=0.5)]
    image = figure()
    chained = run_chain(image, list(steps), [])
    by_hand = Contrast(factor=0.5).apply(Brightness(factor=1.5).apply(image, []), [])
    assert np.array_equal(np.asarray(chained), np.asarray(by_hand))


def test_hex_palettes_are_read_and_junk_is_ignored() -> None:
    assert hex_palette({"colors": ["#f7c6d9", "nope", "#00FF0a"], "hint": "x"}) == [
        (247, 198, 217),
        (0, 255, 10),
    ]
    assert hex_palette({"hint": "pastel"}) == []


def corners_and_centre(alpha: Image.Image) -> tuple[list[int], int]:
    pixels = np.asarray(alpha)
    h, w = pixels.shape
    corners = [int(pixels[y, x]) for y in (0, h - 1) for x in (0, w - 1)]
    return corners, int(pixels[h // 2, w // 2])


def test_grabcut_removes_a_plain_background_from_a_figure() -> None:
    image = figure(640, 480)  # larger than GrabCut's working copy: its mask is scaled back
    alpha = grabcut_alpha(image)
    corners, centre = corners_and_centre(alpha)
    assert alpha.size == image.size and alpha.mode == "L"
    assert corners == [0, 0, 0, 0] and centre == 255


def tiny_matting_graph(path: Path, side: int = 320) -> Path:
    """An ONNX graph with U²-Net's interface: (1, 3, S, S) in, (1, 1, S, S) sigmoid out; its
    1x1 convolution is random, so the matte means nothing but has the real shapes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(RNG.normal(size=(1, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input.1", "w"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["1959"]),
        ],
        "tiny-u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("1959", TensorProto.FLOAT, [1, 1, side, side])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_an_onnx_matte_of_u2nets_interface_gives_a_full_range_alpha(tmp_path: Path) -> None:
    matte = OnnxMatte(tiny_matting_graph(tmp_path / "u2net.onnx"))
    assert (matte.input_name, matte.side) == ("input.1", 320)
    alpha = np.asarray(matte.alpha(figure(200, 100)))
    assert alpha.shape == (100, 200)
    corners, centre = corners_and_centre(Image.fromarray(alpha))
    # Stretched to the whole range: the figure and the background end at opposite ends.
    assert all(abs(centre - corner) > 200 for corner in corners)


def test_sizes_are_keywords_or_bounded_wxh_and_the_key_says_it_all() -> None:
    assert PrintOptions(size="portrait").pixels == (2048, 2048)
    assert PrintOptions(size="scene").pixels == (3000, 2000)
    assert PrintOptions(size="1200x900").pixels == (1200, 900)
    for size in ("poster", "12x", "x9", "1200*900"):
        with pytest.raises(ValidationError, match="size"):
            PrintOptions(size=size)
    with pytest.raises(ValidationError, match="format"):
        PrintOptions(background="remove", format="jpeg")
    with pytest.raises(ValidationError, match="format"):
        PrintOptions.model_validate({"format": "webp"})
    stem = "soul/nova/key/ab/variant/01J"
    plain, every = (
        PrintOptions(),
        PrintOptions(size="scene", fit="contain", background="remove", chain="ink"),
    )
    assert plain.key(stem) == f"{stem}.print.2048x2048.png"
    assert every.key(stem) == f"{stem}.print.3000x2000.contain.cutout.ink.png"
    assert options_of(every.key(stem)) == every.model_copy(update={"size": "3000x2000"})
    assert options_of(f"{stem}.gif") is None


def test_the_shipped_chains_load_and_each_soul_has_its_own() -> None:
    config = load_prints()
    assert config.chain_of("nova", None) == config.chains["pastel"]
    assert config.chain_of("someone-else", None) == config.chains["default"]
    assert config.chain_of("nova", "ink") == config.chains["ink"]


@pytest.mark.parametrize("fit", ["cover", "contain"])
@pytest.mark.parametrize("size", [(300, 300), (300, 200), (150, 260)])
def test_framing_gives_exactly_the_size(fit: str, size: tuple[int, int]) -> None:
    framed = frame(figure(160, 120), size, fit)
    assert framed.size == size
    if fit == "contain" and size == (150, 260):  # padded above and below, on white
        assert np.asarray(framed)[0, 75].tolist() == [255, 255, 255]


CONFIG = PrintsConfig(chains={"default": []}, max_bytes=5_000_000)


def read(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("options", "mode", "kind"),
    [
        (PrintOptions(size="400x300"), "RGB", "PNG"),
        (PrintOptions(size="400x300", format="jpeg"), "RGB", "JPEG"),
        (PrintOptions(size="400x300", background="remove"), "RGBA", "PNG"),
    ],
)
def test_a_print_has_its_size_mode_dpi_and_srgb_profile(
    options: PrintOptions, mode: str, kind: str
) -> None:
    data = finish(figure(), options, CONFIG, [Levels()], [], grabcut_alpha)
    image = read(data)
    assert (image.size, image.mode, image.format) == ((400, 300), mode, kind)
    assert tuple(round(float(d)) for d in image.info["dpi"]) == (300, 300)
    assert image.info["icc_profile"] == SRGB
    if mode == "RGBA":
        corners, centre = corners_and_centre(image.getchannel("A"))
        assert corners == [0, 0, 0, 0] and centre == 255


def noise(side: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_an_over_large_jpeg_is_written_again_at_a_lower_quality() -> None:
    options = PrintOptions(size="600x600", format="jpeg")
    first = len(encode(noise(600), options, PrintsConfig(chains={"default": []})))
    limit = PrintsConfig(chains={"default": []}, max_bytes=max(100_000, int(first * 0.7)))
    data = encode(noise(600), options, limit)
    assert len(data) <= limit.max_bytes < first


def test_an_over_large_png_is_compressed_harder_then_rounded_to_7_bits() -> None:
    options = PrintOptions(size="600x600")
    first = len(encode(noise(600), options, PrintsConfig(chains={"default": []})))
    limit = PrintsConfig(chains={"default": []}, max_bytes=int(first * 0.92))
    image = read(encode(noise(600), options, limit))
    assert image.mode == "RGB" and (np.asarray(image) % 2 == 0).all()  # 7 significant bits


def test_a_print_over_the_byte_limit_at_every_quality_fails_with_a_clear_error() -> None:
    limit = PrintsConfig(chains={"default": []}, max_bytes=100_000)
    with pytest.raises(PrintTooLarge, match=r"over the 0\.1 MB limit"):
        encode(noise(600), PrintOptions(size="600x600"), limit)


def test_a_staged_onnx_matte_is_a_model_ref_by_tag(tmp_path: Path) -> None:
    from serve_app.diffusion.sources import ModelManager

    staged = tiny_matting_graph(tmp_path / "u2netp.onnx")
    assert ModelManager(tmp_path).ensure("u2netp") == staged
