"""Composition: the prompt comes from structured fields and pinned assets only; seeds are
inherited; a two-character scene gets one mask per character at the frame's pixel size; the
pipeline description is versioned, hashed and exports to ComfyUI's API format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serve_app.errors import Conflict
from serve_app.stories.comfy import to_comfy
from serve_app.stories.compiler import compile_script
from serve_app.stories.composition import (
    Backdrop,
    PinnedAsset,
    RenderPrompt,
    SeedPlan,
    backdrop,
    blockers,
    follows_inheritance,
    frame_seed,
    latent_size,
    layout,
    masks,
    pixel_box,
    prompt_matches,
    regions_of,
    render_prompt,
)
from serve_app.stories.graph import SDXL_SIZES, Camera, Region, SceneNode
from serve_app.stories.pipeline import (
    PIPELINE_VERSION,
    PipelineDescription,
    RenderSettings,
    describe,
)
from serve_app.stories.scenery import PROP_DEPTH, WHOLE_FRAME, prop_layout
from tests.unit.storyboard_assets import STYLE, directory, registry

DATA = Path(__file__).resolve().parents[1] / "data" / "storyboards"
SETTINGS = RenderSettings(base_model="tiny-sdxl", steps=4)


def scenes(name: str = "lighthouse.fountain") -> list[SceneNode]:
    return compile_script("P1", (DATA / name).read_text(encoding="utf-8"), directory()).scenes


def test_the_prompt_is_the_structured_fields_and_canonical_prompts_in_order() -> None:
    cliff = scenes()[0]
    prompt = render_prompt(cliff, registry(), STYLE)
    assert prompt.prompt == (
        "cinematic storyboard, ink and wash, wide shot, low angle, exterior, dusk, "
        "grassy cliff above the sea, white lighthouse, sea spray, "
        "woman in her 30s, dark curly hair, oilskin coat, older man, grey beard, wool sweater, "
        "brass storm lantern, "
        "Wind tears across the grass. Nova climbs the last steps, a lantern in hand., "
        "tense mood, golden hour backlight lighting"
    )
    assert prompt.negative_prompt == "text, watermark, blurry"
    # dialogue and notes never reach it
    assert "Marco!" not in prompt.prompt and "lighthouse as the lamp" not in prompt.prompt


def test_the_gate_sees_a_mutated_prompt() -> None:
    cliff = scenes()[0]
    prompt = render_prompt(cliff, registry(), STYLE)
    assert prompt_matches(prompt, cliff, registry(), STYLE)
    mutated = RenderPrompt(
        prompt=prompt.prompt + ", smiling", negative_prompt=prompt.negative_prompt
    )
    assert not prompt_matches(mutated, cliff, registry(), STYLE)
    assert mutated.prompt_hash != prompt.prompt_hash


def test_composition_refuses_unlocked_or_unknown_pins() -> None:
    cliff, lamp_room, _ = scenes()
    assert blockers(cliff, registry()) == []
    assert [(b.kind, b.asset_id) for b in blockers(lamp_room, registry())] == [
        ("unlocked_asset", "CHAR_KEEPER")
    ]
    no_lamp = {pin: a for pin, a in registry().items() if not pin.startswith("ENV_LIGHTHOUSE")}
    assert [(b.kind, b.pin) for b in blockers(lamp_room, no_lamp)][1:] == [
        ("unknown_pin", "ENV_LIGHTHOUSE@v2")
    ]
    with pytest.raises(Conflict, match="Old Keeper"):
        render_prompt(lamp_room, registry(), STYLE)
    cliff = scenes()[0]
    partial = {pin: asset for pin, asset in registry().items() if pin != "PROP_LANTERN@v4"}
    with pytest.raises(Conflict, match="PROP_LANTERN@v4"):
        render_prompt(cliff, partial, STYLE)


def test_seeds_are_inherited_and_checkable() -> None:
    first = frame_seed("P1", "S01", 0)
    assert first == frame_seed("P1", "S01", 0)  # a re-render is reproducible
    others = {frame_seed("P1", "S01", 1).seed, frame_seed("P1", "S02", 0).seed}
    others |= {frame_seed("P2", "S01", 0).seed, frame_seed("P1", "S01", 0, reseed=1).seed}
    assert first.seed not in others and len(others) == 4
    assert 0 <= first.seed < 2**31
    assert follows_inheritance(first)
    assert not follows_inheritance(SeedPlan(**{**first.model_dump(), "seed": first.seed + 1}))
    assert follows_inheritance(SeedPlan.model_validate(json.loads(first.model_dump_json())))


def test_a_two_character_scene_gets_one_mask_per_character() -> None:
    cliff = scenes()[0]  # NOVA, MARCO; 16:9; wide shot, low angle
    regions = regions_of(cliff)
    assert len(regions) == 2
    size = cliff.size
    assert size == SDXL_SIZES["16:9"] == (1344, 768)
    drawn = [np.asarray(mask) for mask in masks(regions, size)]
    for mask in drawn:
        assert mask.shape == (768, 1344) and set(np.unique(mask)) == {0, 255}
    nova, marco = (mask > 0 for mask in drawn)
    assert not (nova & marco).any()  # regions never overlap
    # cast order is left to right
    assert np.nonzero(nova)[1].max() < np.nonzero(marco)[1].min()
    assert latent_size(size) == (168, 96)


def test_the_layout_follows_the_camera() -> None:
    wide = layout(2, Camera(shot_size="wide"))
    close = layout(2, Camera(shot_size="close-up"))
    assert wide[0].right - wide[0].left < close[0].right - close[0].left
    assert wide[0].top > close[0].top == 0.0
    low = layout(1, Camera(shot_size="wide", angle="low"))
    high = layout(1, Camera(shot_size="wide", angle="high"))
    assert low[0].top < wide[0].top < high[0].top
    assert layout(0, Camera()) == []
    assert layout(1, Camera(shot_size="close-up"))[0].model_dump() == {
        "left": 0.0, "top": 0.0, "right": 1.0, "bottom": 1.0,
    }  # fmt: skip


def test_explicit_regions_win_over_the_layout() -> None:
    pier = scenes("harbor_story.yaml")[2]
    assert regions_of(pier) == pier.regions
    size = pier.size
    assert size == SDXL_SIZES["4:3"]
    left = np.asarray(masks(regions_of(pier), size)[0]) > 0
    assert left[:, : int(0.4 * size[0])].all(axis=1).sum() == size[1] - round(0.1 * size[1])


def describe_cliff(frame_index: int = 0) -> tuple[SceneNode, PipelineDescription]:
    cliff = scenes()[0]
    prompt = render_prompt(cliff, registry(), STYLE)
    seed = frame_seed("P1", cliff.scene_id, frame_index)
    return cliff, describe(cliff, prompt, seed, registry(), SETTINGS)


def test_the_pipeline_is_versioned_hashed_and_holds_one_masked_adapter_per_character() -> None:
    _, pipeline = describe_cliff()
    assert pipeline.pipeline_version == PIPELINE_VERSION
    ops = [step.op for step in pipeline.steps]
    assert ops == [
        "load_model", "encode", "encode", "mask", "ip_adapter", "mask", "ip_adapter",
        "load_image", "encode_image", "sample", "decode", "save",
    ]  # fmt: skip
    adapters = [step for step in pipeline.steps if step.op == "ip_adapter"]
    assert [a.params["pin"] for a in adapters] == ["CHAR_NOVA@v3", "CHAR_MARCO@v1"]
    assert [a.inputs["mask"] for a in adapters] == ["mask0.mask", "mask1.mask"]
    # the environment's image is the frame's start (img2img) at the settings' strength
    start = next(step for step in pipeline.steps if step.op == "load_image")
    assert start.params["pin"] == "ENV_CLIFF@v1"
    assert start.params["image"] == "proj/P1/assets/ENV_CLIFF/v1/front.png"
    sample = next(step for step in pipeline.steps if step.op == "sample")
    assert sample.params["seed"] == frame_seed("P1", "S01", 0).seed
    assert sample.params["denoise"] == SETTINGS.environment_strength == 0.6
    assert sample.inputs["model"] == "ip1.model"  # the adapters chain
    assert sample.inputs["latent"] == "latent.latent"
    # the hash: stable, read back, and different for a different frame
    again = PipelineDescription.model_validate(json.loads(pipeline.model_dump_json()))
    assert again.pipeline_hash == pipeline.pipeline_hash
    assert describe_cliff(1)[1].pipeline_hash != pipeline.pipeline_hash
    cliff = scenes()[0]
    softer = SETTINGS.model_copy(update={"environment_strength": 0.35})
    prompt, seed = render_prompt(cliff, registry(), STYLE), frame_seed("P1", cliff.scene_id, 0)
    assert describe(cliff, prompt, seed, registry(), softer).pipeline_hash != pipeline.pipeline_hash


def test_a_scene_without_an_environment_image_starts_from_noise_and_nature_stands_in() -> None:
    cliff = scenes()[0]
    prompt, seed = render_prompt(cliff, registry(), STYLE), frame_seed("P1", cliff.scene_id, 0)
    bare = {pin: a.model_copy(update={"reference": None}) if pin.startswith("ENV_") else a
            for pin, a in registry().items()}  # fmt: skip
    assert backdrop(cliff, bare, 0.6) is None
    steps = describe(cliff, prompt, seed, bare, SETTINGS).steps
    assert [s.op for s in steps if s.op in ("empty_latent", "load_image")] == ["empty_latent"]
    assert "denoise" not in next(s for s in steps if s.op == "sample").params
    spray = {pin: a.model_copy(update={"reference": f"{pin}.png"}) if pin.startswith("NAT_")
             else a for pin, a in bare.items()}  # fmt: skip
    found = backdrop(cliff, spray, 0.5)  # the cliff's sea spray
    assert found == Backdrop(pin="NAT_SPRAY@v1", image="NAT_SPRAY@v1.png", strength=0.5)


def test_the_comfy_export_is_an_api_prompt_whose_links_resolve() -> None:
    cliff, pipeline = describe_cliff()
    prompt = to_comfy(pipeline)
    json.dumps(prompt)  # plain JSON
    for node_id, node in prompt.items():
        assert set(node) == {"class_type", "inputs", "_meta"}, node_id
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in prompt and isinstance(value[1], int)
    classes = [node["class_type"] for node in prompt.values()]
    assert classes.count("IPAdapterAdvanced") == 2 and classes.count("MaskComposite") == 2
    assert classes.count("IPAdapterUnifiedLoader") == 1
    sampler = prompt["sample"]["inputs"]
    assert sampler["seed"] == frame_seed("P1", "S01", 0).seed
    assert sampler["denoise"] == 0.6 and sampler["latent_image"] == ["latent", 0]
    assert prompt["latent"]["class_type"] == "VAEEncode"
    assert prompt["latent"]["inputs"] == {"pixels": ["backdrop", 0], "vae": ["model", 2]}
    assert prompt["backdrop"]["inputs"]["width"] == 1344 and prompt["backdrop_file"]["inputs"] == {
        "image": "proj/P1/assets/ENV_CLIFF/v1/front.png"
    }
    masked = [n for n in prompt.values() if n["class_type"] == "IPAdapterAdvanced"]
    assert ["attn_mask" in n["inputs"] for n in masked] == [True, True]
    box = prompt["mask0_box"]["inputs"]
    composite = prompt["mask0"]["inputs"]
    regions = regions_of(cliff)
    assert composite["x"] == round(regions[0].left * 1344)
    assert box["width"] == round(regions[0].right * 1344) - composite["x"]


def test_the_masks_are_what_diffusers_ip_adapter_mask_processor_takes() -> None:
    """Masks at the frame's pixel size go through diffusers' own processor unchanged in shape:
    one per character, each character's face image in the same order (``ip_adapter_image`` =
    ``[[face, ...]]``, ``cross_attention_kwargs={"ip_adapter_masks": [stacked]}``)."""
    from diffusers.image_processor import IPAdapterMaskProcessor

    cliff = scenes()[0]
    width, height = cliff.size
    drawn = masks(regions_of(cliff), cliff.size)
    processed = IPAdapterMaskProcessor().preprocess(drawn, height=height, width=width)
    assert tuple(processed.shape) == (2, 1, height, width)
    stacked = processed.reshape(1, 2, height, width)  # one adapter, two images (the cast)
    for index, mask in enumerate(drawn):
        expected = np.asarray(mask) > 0
        assert ((stacked[0, index].numpy() > 0.5) == expected).all()


def with_images(*prefixes: str) -> dict[str, PinnedAsset]:
    """The registry with a locked image for every asset whose id starts with one of
    ``prefixes`` as well."""
    return {
        pin: a.model_copy(update={"reference": f"{pin}.png"}) if pin.startswith(prefixes) else a
        for pin, a in registry().items()
    }


def test_props_are_laid_out_in_the_foreground_as_the_cast_is() -> None:
    wide = prop_layout(2, Camera(shot_size="wide"))
    assert [r.top for r in wide] == [1.0 - PROP_DEPTH] * 2 and all(r.bottom == 1.0 for r in wide)
    assert wide[0].right <= wide[1].left  # left to right, apart, in equal slots
    assert wide[0].right - wide[0].left == pytest.approx(0.7 * 0.5)  # the shot's width
    cast = layout(2, Camera(shot_size="wide"))
    assert [(r.left, r.right) for r in wide] == [(r.left, r.right) for r in cast]
    assert prop_layout(1, Camera(shot_size="close-up")) == [
        Region(left=0.0, top=0.6, right=1.0, bottom=1.0)
    ]
    assert prop_layout(0, Camera()) == []


def test_a_props_image_is_one_more_masked_adapter_and_further_scenery_covers_the_frame() -> None:
    cliff = scenes()[0]
    prompt, seed = render_prompt(cliff, registry(), STYLE), frame_seed("P1", cliff.scene_id, 0)
    assert SETTINGS.placements(cliff, registry()) == []  # the lantern has no image yet
    assets = with_images("PROP_", "NAT_")
    settings = SETTINGS.model_copy(update={"prop_strength": 0.45, "scenery_strength": 0.2})
    lantern, spray = settings.placements(cliff, assets)
    assert (lantern.pin, lantern.image, lantern.strength) == (
        "PROP_LANTERN@v4",
        "PROP_LANTERN@v4.png",
        0.45,
    )
    assert lantern.region == prop_layout(1, cliff.camera)[0]
    # the cliff's image is the backdrop; the sea spray's conditions the whole frame
    assert (spray.pin, spray.region, spray.strength) == ("NAT_SPRAY@v1", WHOLE_FRAME, 0.2)
    pipeline = describe(cliff, prompt, seed, assets, settings)
    ops = [(step.id, step.op) for step in pipeline.steps][3:9]
    assert ops == [
        ("mask0", "mask"), ("ip0", "ip_adapter"), ("mask1", "mask"), ("ip1", "ip_adapter"),
        ("prop_mask0", "mask"), ("prop0", "ip_adapter"),
    ]  # fmt: skip
    steps = {step.id: step for step in pipeline.steps}
    assert steps["prop0"].params == {
        "pin": "PROP_LANTERN@v4",
        "image": "PROP_LANTERN@v4.png",
        "weight": 0.45,
    }
    assert steps["prop0"].inputs == {"model": "ip1.model", "mask": "prop_mask0.mask"}
    width, height = cliff.size
    assert steps["prop_mask0"].params["box"] == list(pixel_box(lantern.region, (width, height)))
    assert steps["scenery0"].inputs["model"] == "prop0.model"
    assert steps["scenery_mask0"].params["box"] == [0, 0, width, height]
    assert steps["sample"].inputs["model"] == "scenery0.model"
    assert steps["backdrop"].params["pin"] == "ENV_CLIFF@v1"
    # the hash covers the prop's image and strength
    plain = describe(cliff, prompt, seed, registry(), SETTINGS).pipeline_hash
    weaker = settings.model_copy(update={"prop_strength": 0.3})
    assert (
        len(
            {
                plain,
                pipeline.pipeline_hash,
                describe(cliff, prompt, seed, assets, weaker).pipeline_hash,
            }
        )
        == 3
    )
    comfy = to_comfy(pipeline)
    assert [n["class_type"] for n in comfy.values()].count("IPAdapterAdvanced") == 4
    # as the Renderer takes a cast member: the prop's image, at its strength, in its box
    member = lantern.conditioning()
    assert (member.identity.soul_id, member.identity.version) == ("PROP_LANTERN", 4)
    assert member.identity.reference_keys == ["PROP_LANTERN@v4.png"] and member.box[1] == 0.6
