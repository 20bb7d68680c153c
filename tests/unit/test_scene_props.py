"""A scene's props reach its frames through their locked images, not only the prompt: each prop
with an image is one more masked IP-Adapter image beside the cast, in its own region (over the
real tiny Renderer and IP-Adapter: what the pipeline is handed, not likeness); the stored frame
version and its pipeline record it. The consistency gate judges each environment and prop image
against the frame by the tiny CLIP's embeddings (the version's kept ones first), with
thresholds set so the tiny models decide."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from deployments.dedupe import DedupeConfig, DedupeEngine
from deployments.renderer import RendererConfig, RendererEngine
from serve_app.diffusion.image_embedding import unpacked
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_CLIP, TINY_IP_ADAPTER, TINY_MODEL
from serve_app.projects.image_search import frames_of
from serve_app.projects.models import AssetSpec, ProjectDraft
from serve_app.projects.rules import ProjectComposition
from serve_app.stories.composition import regions_of
from serve_app.stories.gate import drift
from serve_app.stories.pipeline import RenderSettings, describe
from serve_app.stories.records import ScriptDraft
from serve_app.stories.scenery import prop_layout
from tests.support import run
from tests.unit.test_job_worker import Jobs
from tests.unit.test_scene_render import ME, face, harbor, recording, rendered
from tests.unit.world import World

SCRIPT = """Title: Harbor

EXT. HARBOR - NIGHT

[[Props: Lantern]]
[[Nature: Sea Spray]]

NOVA
Marco?

MARCO
Here.
"""


def lantern() -> bytes:
    """A plain picture of a lantern's colours: a warm light on a dark ground."""
    pixels = np.full((64, 64, 3), (15, 15, 30), dtype=np.uint8)
    pixels[16:48, 20:44] = (250, 190, 60)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def spray() -> bytes:
    """A plain picture of sea spray: white over grey-green."""
    pixels = np.full((64, 64, 3), (90, 120, 110), dtype=np.uint8)
    pixels[::4] = (240, 245, 250)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def with_props(
    jobs: Jobs,
    composition: ProjectComposition,
    harbor_image: bool = False,
    spray_image: bool = False,
) -> Any:
    """A project with Nova and Marco (a photograph each), the harbor and the sea spray (each
    with an image if asked), a lantern with its front image, all locked, and the script
    compiled: the project's id, the scene's id and each asset's front image key by name."""
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    draft = ProjectDraft(name="Harbor", style_anchor_prompt="ink", composition=composition)
    pid = run(catalog.create_project(ME, draft)).project_id
    images = {"Nova": face(), "Marco": face(), "Lantern": lantern()}
    if harbor_image:
        images["Harbor"] = harbor()
    if spray_image:
        images["Sea Spray"] = spray()
    keys = {}
    for kind, name in (
        ("character", "Nova"),
        ("character", "Marco"),
        ("environment", "Harbor"),
        ("nature", "Sea Spray"),
        ("prop", "Lantern"),
    ):
        spec = AssetSpec(asset_type=kind, name=name, canonical_prompt=f"{name.lower()} prompt")
        asset, _ = run(catalog.create_asset(ME, pid, spec, ["front"], None))
        if name in images:
            keys[name] = f"proj/{pid}/asset/{asset.asset_id}/v1/front.png"
            objects.put(keys[name], images[name])
            run(catalog.add_asset_image(ME, pid, asset.asset_id, 1, "front", keys[name], {}))
        run(catalog.lock_asset(ME, pid, asset.asset_id, 1))
    script = run(catalog.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    _, (scene,) = run(catalog.compile_script(ME, pid, script.script_id))
    return pid, scene.scene_id, keys


def test_a_prop_is_conditioned_on_its_locked_image_in_its_own_region(
    world: World, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, handed, calls, engine = recording(world, models_dir, monkeypatch, "base")
    catalog = jobs.replica.catalog
    pid, talk, keys = with_props(jobs, ProjectComposition(prop_strength=0.45))
    scene, registry, _ = run(catalog.scene_assets(ME, pid, talk))
    (prop,) = scene.graph.props
    result = rendered(jobs, pid, talk, [0])
    (job,) = handed
    # the cast, then the prop: its version's front image at the project's prop strength
    assert [m.identity.soul_id for m in job.cast] == [
        *(c.asset_id for c in scene.graph.characters),
        prop.asset_id,
    ]
    member = job.cast[2]
    assert (member.identity.version, member.identity.reference_keys) == (1, [keys["Lantern"]])
    assert member.identity.strength == 0.45
    region = prop_layout(1, scene.graph.camera)[0]
    assert member.box == (region.left, region.top, region.right, region.bottom)
    cast = [(r.left, r.top, r.right, r.bottom) for r in regions_of(scene.graph)]
    assert [m.box for m in job.cast[:2]] == cast
    # the pipeline: one mask per character and per prop, at the frame's render size
    (kwargs,) = calls
    (masks,) = kwargs["cross_attention_kwargs"]["ip_adapter_masks"]
    assert tuple(masks.shape) == (1, 3, 48, 88)
    top = round(region.top * 48)
    assert not masks[0, 2, :top].any() and masks[0, 2, top:].all()  # the foreground band
    left, right = masks[0, 0].nonzero()[:, 1], masks[0, 1].nonzero()[:, 1]
    assert left.max() < right.min()  # the characters keep their own regions
    (embeds,) = kwargs["ip_adapter_image_embeds"]
    assert tuple(embeds.shape[:2]) == (2, 3)  # (unconditional + conditional, three images)
    # the prop's row is its locked image's embedding by the adapter's image encoder
    pipe = engine.pipelines.base(TINY_MODEL)
    with Image.open(io.BytesIO(lantern())) as image:
        pixels = pipe.feature_extractor(images=[image.convert("RGB")], return_tensors="pt")
    with torch.inference_mode():
        expected = pipe.image_encoder(pixels.pixel_values).image_embeds[0]
    np.testing.assert_allclose(embeds[1, 2].float().numpy(), expected.numpy(), atol=1e-5)
    assert not torch.allclose(embeds[1, 2].float(), embeds[1, 0].float())
    # the stored frame version and its pipeline record the prop; the hash covers it
    stored = run(catalog.get_frame_version(ME, pid, result.frames[0].frame_id, 1))
    (placement,) = stored.placements
    assert (placement.pin, placement.image, placement.strength) == (prop.pin, keys["Lantern"], 0.45)
    settings = RenderSettings(base_model="tiny-sdxl", prop_strength=0.45)
    steps = describe(scene.graph, stored.prompt, stored.seed, registry, settings)
    assert steps.pipeline_hash == stored.pipeline_hash
    masked = {s.id: s for s in steps.steps}
    assert masked["prop0"].params == {"pin": prop.pin, "image": keys["Lantern"], "weight": 0.45}
    other = settings.model_copy(update={"prop_strength": 0.5})
    assert describe(scene.graph, stored.prompt, stored.seed, registry, other).pipeline_hash != (
        stored.pipeline_hash
    )


def embedded(dedupe: DedupeEngine, png: bytes) -> bytes:
    """The tiny CLIP's packed embedding of an image, as Dedupe keeps it."""
    verdict = dedupe.check(frames_of(png), [])
    assert verdict.image_embed is not None and verdict.embed_model == TINY_CLIP
    return verdict.image_embed


def conditioned(world: World, models_dir: Path, dedupe: DedupeEngine | None = None) -> Jobs:
    """Jobs over a tiny Renderer with the IP-Adapter that reads the world's objects (the
    backdrop, the cast's and the props' images), and ``dedupe`` as the Dedupe box."""
    config = RendererConfig(steps=2, width=64, height=64, ip_adapter=TINY_IP_ADAPTER)
    renderer = RendererEngine(ModelManager(models_dir), config, world.objects)
    return Jobs(world, world.replica(renderer=renderer, dedupe=dedupe))


def test_the_gate_judges_each_environment_and_prop_image_against_the_frame(
    world: World, models_dir: Path
) -> None:
    dedupe = DedupeEngine(DedupeConfig(clip_model=TINY_CLIP), ModelManager(models_dir))
    jobs = conditioned(world, models_dir, dedupe)
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    pid, talk, _ = with_props(jobs, ProjectComposition(), harbor_image=True)
    scene, _, _ = run(catalog.scene_assets(ME, pid, talk))
    harbor_pin, (lantern_pin,) = scene.graph.environment, scene.graph.props
    assert harbor_pin is not None
    # The lantern's version keeps an embedding (asset_image_embed): the one the gate compares.
    # Kept as the negation of its image's, so only that row can give its score.
    kept = (-unpacked(embedded(dedupe, lantern()))).astype(np.float16).tobytes()
    run(catalog.add_asset_image_embed(ME, pid, lantern_pin.asset_id, 1, "front", TINY_CLIP, kept))
    lenient = {"scenery": -1.0, "prop": -1.0, "unscorable_passes": True}
    first = rendered(jobs, pid, talk, [0], **lenient).frames[0]
    assert first.status == "passed"
    checks = {c["asset"]: c for c in first.consistency_report["checks"] if c["check"] == "asset"}
    assert list(checks) == [harbor_pin.asset_id, lantern_pin.asset_id]
    env, prop = checks[harbor_pin.asset_id], checks[lantern_pin.asset_id]
    assert (env["asset_type"], env["threshold"]) == ("environment", -1.0)
    assert (prop["asset_type"], prop["name"], prop["threshold"]) == ("prop", "Lantern", -1.0)
    frame = embedded(dedupe, objects.get(f"proj/{pid}/frames/{first.frame_id}/v1.png"))
    # the harbor keeps none: its image is embedded now; the lantern's kept row decides
    assert env["score"] == pytest.approx(drift(frame, [embedded(dedupe, harbor())]), abs=1e-3)
    assert prop["score"] == pytest.approx(drift(frame, [kept]), abs=1e-3)
    assert prop["score"] == pytest.approx(-drift(frame, [embedded(dedupe, lantern())]), abs=1e-3)
    # The same frame again (the seed is kept), the scenery threshold just above the harbor's
    # score: the tiny models decide it drifted, and the frame is needs_review, saying which.
    strict = {**lenient, "scenery": env["score"] + 1e-3}
    assert strict["scenery"] <= 1.0
    again = rendered(jobs, pid, talk, [0], **strict).frames[0]
    assert again.render_version == 2 and again.status == "needs_review"
    report = again.consistency_report
    assert report["failed"] == [f"asset:{harbor_pin.asset_id}"]
    failed = next(c for c in report["checks"] if c.get("asset") == harbor_pin.asset_id)
    assert failed["verdict"] == "off_model" and failed["score"] == pytest.approx(env["score"])
    assert report["thresholds"]["scenery"] == strict["scenery"]


def test_without_an_image_model_an_assets_drift_is_unscorable_and_fails(
    world: World, models_dir: Path
) -> None:
    jobs = conditioned(world, models_dir)  # Dedupe without a CLIP model
    pid, talk, _ = with_props(jobs, ProjectComposition(), harbor_image=True)
    frame = rendered(jobs, pid, talk, [0], unscorable_passes=True).frames[0]
    assert frame.status == "needs_review"
    report = frame.consistency_report
    drifts = [c for c in report["checks"] if c["check"] == "asset"]
    assert [(c["name"], c["verdict"], c["passed"]) for c in drifts] == [
        ("HARBOR", "unscorable", False),  # as the script wrote it
        ("Lantern", "unscorable", False),
    ]
    assert "dedupe.clip_model" in drifts[0]["detail"]
    assert report["failed"] == [f"asset:{c['asset']}" for c in drifts]


def test_a_second_scenery_image_conditions_the_whole_frame_over_the_backdrop(
    world: World, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, handed, calls, _ = recording(world, models_dir, monkeypatch, "img2img")
    catalog = jobs.replica.catalog
    composition = ProjectComposition(environment_strength=0.4, scenery_strength=0.25)
    pid, talk, keys = with_props(jobs, composition, harbor_image=True, spray_image=True)
    scene, registry, _ = run(catalog.scene_assets(ME, pid, talk))
    (spray_pin,) = scene.graph.nature
    result = rendered(jobs, pid, talk, [0])
    (job,) = handed
    # the harbor is the start (img2img); the spray, the second image, is one more adapter image
    assert (job.reference_key, job.reference_strength) == (keys["Harbor"], 0.4)
    assert [m.identity.reference_keys[0] for m in job.cast[2:]] == [
        keys["Lantern"],
        keys["Sea Spray"],
    ]
    member = job.cast[3]
    assert (member.identity.soul_id, member.identity.strength) == (spray_pin.asset_id, 0.25)
    assert member.box == (0.0, 0.0, 1.0, 1.0)
    (kwargs,) = calls
    assert kwargs["strength"] == 0.4
    (masks,) = kwargs["cross_attention_kwargs"]["ip_adapter_masks"]
    assert tuple(masks.shape) == (1, 4, 48, 88) and masks[0, 3].all()  # over the whole frame
    stored = run(catalog.get_frame_version(ME, pid, result.frames[0].frame_id, 1))
    assert stored.backdrop is not None and stored.backdrop.image == keys["Harbor"]
    assert [p.role for p in stored.placements] == ["prop", "scenery"]
    settings = RenderSettings(
        base_model="tiny-sdxl", environment_strength=0.4, scenery_strength=0.25
    )
    steps = describe(scene.graph, stored.prompt, stored.seed, registry, settings)
    assert steps.pipeline_hash == stored.pipeline_hash
    scenery = next(s for s in steps.steps if s.id == "scenery0")
    assert scenery.params == {"pin": spray_pin.pin, "image": keys["Sea Spray"], "weight": 0.25}
