"""The scene_render job over the real engines (the tiny SDXL on CPU, the real face scorer):
frames planned with their inherited seed, exact prompt and pipeline hash before anything
renders; rendered with exactly that prompt and seed under the project's prefix; the consistency
gate marks a frame whose character no scorer finds ``needs_review`` with its full report, and
passes one whose checks all pass; a re-render keeps its seed unless asked (the diff recorded),
at most five times; a scene with an unlocked asset is refused before anything is written."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from pypdf import PdfReader

from deployments.renderer import RendererConfig, RendererEngine
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_IP_ADAPTER, TINY_MODEL
from serve_app.jobs.kinds import KINDS
from serve_app.jobs.kinds.scene_render import FrameRef, SceneRenderJob
from serve_app.jobs.kinds.storyboard_export import StoryboardExportJob
from serve_app.prints.output import SRGB
from serve_app.projects.models import AssetSpec, ProjectDraft
from serve_app.projects.rules import ProjectComposition
from serve_app.projects.storyboard_desk import StoryboardDesk
from serve_app.schemas import Frames, RenderJob
from serve_app.stories.assets import UnlockedAssets
from serve_app.stories.composition import frame_seed, regions_of, render_prompt
from serve_app.stories.exports import verify_sequence
from serve_app.stories.gate import GateConfig
from serve_app.stories.pipeline import RenderSettings, describe
from serve_app.stories.records import ScriptDraft
from serve_app.stories.results import FailedFrame
from tests.support import run
from tests.unit.test_job_worker import Jobs
from tests.unit.world import World

ME = "c1"
SCRIPT = """Title: Harbor

EXT. HARBOR - DAY

The boats rock gently.

EXT. HARBOR - NIGHT

NOVA
Marco?

MARCO
Here.
"""


def face() -> bytes:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        pixels = np.asarray(Image.open(f).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def harbor() -> bytes:
    """A plain picture of a harbor's colours: sky above, water below."""
    pixels = np.zeros((96, 128, 3), dtype=np.uint8)
    pixels[:48] = (150, 190, 230)
    pixels[48:] = (20, 60, 110)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def storyboard(
    jobs: Jobs, lock_marco: bool = True, harbor_image: bool = False, **project: Any
) -> tuple[str, list[str]]:
    """A project with Nova and Marco (a photograph as each one's front image), the harbor
    (with a wide image if ``harbor_image``), and the script compiled: its id and its scenes'
    ids."""
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    draft = ProjectDraft(name="Harbor", style_anchor_prompt="ink", **project)
    pid = run(catalog.create_project(ME, draft)).project_id
    for kind, name in (("character", "Nova"), ("character", "Marco"), ("environment", "Harbor")):
        spec = AssetSpec(asset_type=kind, name=name, canonical_prompt=f"{name.lower()} prompt")
        asset, _ = run(catalog.create_asset(ME, pid, spec, ["front"], None))
        key = f"proj/{pid}/asset/{asset.asset_id}/v1/front.png"
        if kind == "character" or harbor_image:
            objects.put(key, face() if kind == "character" else harbor())
            run(catalog.add_asset_image(ME, pid, asset.asset_id, 1, "front", key, {}))
        if name != "Marco" or lock_marco:
            run(catalog.lock_asset(ME, pid, asset.asset_id, 1))
    script = run(catalog.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    _, scenes = run(catalog.compile_script(ME, pid, script.script_id))
    return pid, [s.scene_id for s in scenes]


def rendered(jobs: Jobs, pid: str, scene_id: str, indexes: list[int], **gate: Any) -> Any:
    """Frames planned and rendered by one job: the job's answer."""
    catalog = jobs.replica.catalog
    planned = run(catalog.plan_frames(ME, pid, scene_id, indexes))
    refs = [FrameRef(frame_id=v.frame_id, render_version=v.render_version) for v in planned]
    spec = SceneRenderJob(soul_id=pid, scene_id=scene_id, frames=refs, gate=GateConfig(**gate))
    job_id = run(jobs.desk.submit(ME, spec)).job_id
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded", doc.error
    return KINDS["scene_render"].result(doc, jobs.replica.deliverer.objects, 60)


def test_a_frame_is_rendered_from_its_stored_plan_and_gated(world: World) -> None:
    jobs = Jobs(world, world.replica())
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    pid, (boats, talk) = storyboard(jobs)
    result = rendered(jobs, pid, boats, [0])
    (frame,) = result.frames
    assert frame.status == "passed" and frame.consistency_report["passed"]
    checks = {c["check"]: c for c in frame.consistency_report["checks"]}
    assert set(checks) == {"style", "prompt", "seed"}  # no cast: no identity check
    version = run(catalog.get_frame_version(ME, pid, frame.frame_id, 1))
    scene, registry, style = run(catalog.scene_assets(ME, pid, boats))
    assert version.prompt == render_prompt(scene.graph, registry, style)
    assert version.seed == frame_seed(pid, boats, 0) and frame.seed == version.seed.seed
    assert version.image_key == f"proj/{pid}/frames/{frame.frame_id}/v1.png"
    assert objects.get(version.image_key).startswith(b"\x89PNG")
    assert run(catalog.get_frame(ME, pid, frame.frame_id)).current_version == 1
    # two characters: each gets a mask of its own region in the stored pipeline
    two = rendered(jobs, pid, talk, [0])
    (gated,) = two.frames
    assert gated.status == "needs_review"
    report = gated.consistency_report
    identity = [c for c in report["checks"] if c["check"] == "identity"]
    assert [(c["name"], c["verdict"], c["passed"]) for c in identity] == [
        ("NOVA", "unscorable", False),
        ("MARCO", "unscorable", False),
    ]
    assert report["failed"] == [f"identity:{c['character']}" for c in identity]
    assert report["thresholds"]["face"] == pytest.approx(0.363)
    stored = run(catalog.get_frame_version(ME, pid, gated.frame_id, 1))
    scene, registry, style = run(catalog.scene_assets(ME, pid, talk))
    steps = describe(
        scene.graph,
        stored.prompt,
        stored.seed,
        registry,
        RenderSettings(base_model="tiny-sdxl"),
    )
    masks = [s for s in steps.steps if s.op == "mask"]
    assert len(masks) == 2 and len(regions_of(scene.graph)) == 2
    assert steps.pipeline_hash == stored.pipeline_hash
    events = [e.kind for e in run(catalog.project_events(ME, pid, "", 200))]
    assert events.count("frame.rendered") == 2
    lenient = rendered(jobs, pid, talk, [1], unscorable_passes=True)
    assert lenient.frames[0].status == "passed"


def recording(
    world: World, models_dir: Path, monkeypatch: pytest.MonkeyPatch, pipe: str
) -> tuple[Jobs, list[RenderJob], list[dict[str, Any]], RendererEngine]:
    """Jobs over a real tiny Renderer with the IP-Adapter that records the jobs it is handed and
    the keyword arguments of each call of its ``pipe`` pipeline (``base`` or ``img2img``); the
    Renderer's engine."""
    config = RendererConfig(steps=2, width=64, height=64, ip_adapter=TINY_IP_ADAPTER)
    engine = RendererEngine(ModelManager(models_dir), config, world.objects)
    handed: list[RenderJob] = []
    calls: list[dict[str, Any]] = []

    class Recording:
        def render(self, job: RenderJob) -> Frames:
            handed.append(job)
            return engine.render(job)

    pipeline = type(getattr(engine.pipelines, pipe)(TINY_MODEL))
    call = pipeline.__call__

    def captured(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(pipeline, "__call__", captured)
    return Jobs(world, world.replica(renderer=Recording())), handed, calls, engine


def test_each_character_is_conditioned_on_its_pinned_version_in_its_own_region(
    world: World, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, handed, calls, _ = recording(world, models_dir, monkeypatch, "base")
    catalog = jobs.replica.catalog
    pid, (boats, talk) = storyboard(jobs)
    rendered(jobs, pid, talk, [0])
    (job,) = handed
    scene, _, _ = run(catalog.scene_assets(ME, pid, talk))
    nova, marco = scene.graph.characters
    assert [(m.identity.soul_id, m.identity.version) for m in job.cast] == [
        (nova.asset_id, 1),
        (marco.asset_id, 1),
    ]
    assert [m.identity.reference_keys for m in job.cast] == [
        [f"proj/{pid}/asset/{c.asset_id}/v1/front.png"] for c in (nova, marco)
    ]
    boxes = [(r.left, r.top, r.right, r.bottom) for r in regions_of(scene.graph)]
    assert [m.box for m in job.cast] == boxes and boxes[0][2] <= boxes[1][0]
    (kwargs,) = calls
    (masks,) = kwargs["cross_attention_kwargs"]["ip_adapter_masks"]
    assert scene.graph.aspect == job.aspect == "16:9"  # the scene's shape, at 64²'s area
    assert tuple(masks.shape) == (1, 2, 48, 88)  # two masks, at the frame's render size
    assert (kwargs["width"], kwargs["height"]) == (88, 48)
    assert tuple(kwargs["ip_adapter_image_embeds"][0].shape[:2]) == (2, 2)
    left, right = masks[0, 0].nonzero()[:, 1], masks[0, 1].nonzero()[:, 1]
    assert left.max() < right.min()  # Nova on the left, Marco on the right, apart
    # A scene without a cast is rendered without masks.
    rendered(jobs, pid, boats, [0])
    assert handed[-1].cast == [] and "cross_attention_kwargs" not in calls[-1]
    # The harbor has no image: every frame starts from noise, as text-to-image.
    assert all(j.reference_key is None and j.reference_strength is None for j in handed)
    assert all("image" not in c and "strength" not in c for c in calls)


def test_a_scene_starts_from_its_environments_locked_image_at_the_projects_strength(
    world: World, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, handed, calls, _ = recording(world, models_dir, monkeypatch, "img2img")
    catalog = jobs.replica.catalog
    composition = ProjectComposition(environment_strength=0.35)
    pid, (_, talk) = storyboard(jobs, harbor_image=True, composition=composition)
    scene, registry, _ = run(catalog.scene_assets(ME, pid, talk))
    assert scene.graph.environment is not None
    image = f"proj/{pid}/asset/{scene.graph.environment.asset_id}/v1/front.png"
    two = rendered(jobs, pid, talk, [0])
    (job,) = handed
    assert (job.reference_key, job.reference_strength) == (image, 0.35)
    assert len(job.cast) == 2  # the characters keep their masks over the backdrop
    (kwargs,) = calls  # the img2img pipeline, from the harbor's picture, the masks beside it
    assert kwargs["strength"] == 0.35 and kwargs["image"][0].size == (88, 48)
    assert tuple(kwargs["cross_attention_kwargs"]["ip_adapter_masks"][0].shape) == (1, 2, 48, 88)
    # the stored frame version and its pipeline record the backdrop; the hash covers it
    stored = run(catalog.get_frame_version(ME, pid, two.frames[0].frame_id, 1))
    assert stored.backdrop is not None
    assert (stored.backdrop.image, stored.backdrop.strength) == (image, 0.35)
    settings = RenderSettings(base_model="tiny-sdxl", environment_strength=0.35)
    steps = describe(scene.graph, stored.prompt, stored.seed, registry, settings)
    assert steps.pipeline_hash == stored.pipeline_hash
    sample = next(s for s in steps.steps if s.op == "sample")
    start = next(s for s in steps.steps if s.op == "load_image")
    assert sample.params["denoise"] == 0.35 and start.params["image"] == image
    other = settings.model_copy(update={"environment_strength": 0.6})
    assert describe(scene.graph, stored.prompt, stored.seed, registry, other).pipeline_hash != (
        stored.pipeline_hash
    )
    assert jobs.replica.deliverer.objects.get(stored.image_key or "").startswith(b"\x89PNG")


def test_a_rerender_keeps_its_seed_unless_asked_and_stops_after_five(world: World) -> None:
    jobs = Jobs(world, world.replica())
    catalog = jobs.replica.catalog
    pid, (boats, _) = storyboard(jobs)
    first = run(catalog.plan_frames(ME, pid, boats, [0]))[0]
    again = run(catalog.plan_frames(ME, pid, boats, [0]))[0]
    assert again.render_version == 2 and again.seed == first.seed
    assert again.diff == {"from_version": 1}
    reseeded = run(catalog.plan_frames(ME, pid, boats, [0], True))[0]
    assert reseeded.seed.reseed == 1 and reseeded.seed.seed != first.seed.seed
    assert reseeded.diff["seed"] == {"from": first.seed.seed, "to": reseeded.seed.seed}
    for _ in range(3):
        run(catalog.plan_frames(ME, pid, boats, [0]))
    with pytest.raises(Exception, match="5 times"):
        run(catalog.plan_frames(ME, pid, boats, [0]))
    assert len(run(catalog.frame_versions(ME, pid, first.frame_id))) == 6


def test_a_scene_with_an_unlocked_asset_is_refused_before_anything_is_written(
    world: World,
) -> None:
    jobs = Jobs(world, world.replica())
    catalog = jobs.replica.catalog
    pid, (_, talk) = storyboard(jobs, lock_marco=False)
    with pytest.raises(UnlockedAssets, match="MARCO"):
        run(catalog.plan_frames(ME, pid, talk, [0]))
    assert run(catalog.store.project_frames(pid)) == []


def exported(jobs: Jobs, pid: str, file: str, per_page: int = 2) -> Any:
    spec = StoryboardExportJob(soul_id=pid, format=file, per_page=per_page)
    job_id = run(jobs.desk.submit(ME, spec)).job_id
    assert jobs.work_once()
    return jobs.doc(job_id)


def test_approved_frames_export_as_a_pdf_sheet_and_a_zip(world: World) -> None:
    jobs = Jobs(world, world.replica())
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    pid, (boats, talk) = storyboard(jobs)
    refused = exported(jobs, pid, "zip")
    assert refused.status == "failed" and "no approved frame" in refused.error.detail
    frames = [rendered(jobs, pid, scene, [0]).frames[0] for scene in (boats, talk)]
    for frame in frames:
        run(catalog.decide_frame(ME, pid, frame.frame_id, "approve", None, "fine"))
    run(catalog.reorder_timeline(ME, pid, [talk, boats]))
    doc = exported(jobs, pid, "pdf", per_page=1)
    assert doc.status == "succeeded", doc.error
    result = KINDS["storyboard_export"].result(doc, objects, 60)
    assert result is not None and result.frames == 2
    assert result.storage_key.startswith(f"proj/{pid}/exports/")
    assert result.storage_key.endswith("/storyboard.pdf") and ".pdf?" in result.url
    reader = PdfReader(io.BytesIO(objects.get(result.storage_key)))
    assert len(reader.pages) == 3  # the cover, then a frame a page
    text = [" ".join(page.extract_text().split()) for page in reader.pages]
    assert "NOVA" in text[0] and "MARCO" in text[0]  # the cast on the cover
    assert "Marco?" in text[1] and "The boats rock gently." in text[2]  # timeline order
    doc = exported(jobs, pid, "zip")
    result = KINDS["storyboard_export"].result(doc, objects, 60)
    assert result is not None and result.storage_key.endswith("/frames.zip")
    data = objects.get(result.storage_key)
    assert verify_sequence(data) == []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert [f["frame_id"] for f in manifest["frames"]] == [frames[1].frame_id, frames[0].frame_id]
    assert [f["seed"] for f in manifest["frames"]] == [frames[1].seed, frames[0].seed]
    kinds = [e.kind for e in run(catalog.project_events(ME, pid, "", 300))]
    assert kinds.count("export.made") == 2 and kinds.count("frame.exception_approved") == 1


class OutOfMemory:
    """A Renderer whose GPU runs out of memory on every render: a transient failure, retried
    until the job's last attempt."""

    def render(self, job: RenderJob) -> Frames:
        raise RuntimeError("CUDA out of memory")


def worked(jobs: Jobs, job_id: str) -> Any:
    """The job worked on until it ends (each retry leased once its short backoff is over)."""
    while not jobs.doc(job_id).finished:
        jobs.work_once()
    return jobs.doc(job_id)


def test_a_render_that_fails_for_good_leaves_its_version_failed_and_the_frame_as_it_was(
    world: World, models_dir: Path
) -> None:
    jobs = Jobs(world, world.replica())
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    desk = StoryboardDesk(jobs.catalog, jobs.desk)
    pid, (boats, _) = storyboard(jobs)
    first = run(desk.render(ME, pid, boats, 1)).job_id
    assert worked(jobs, first).status == "succeeded"
    (frame,) = [f.frame_id for f in SceneRenderJob.model_validate(jobs.doc(first).spec).frames]
    # A Renderer that refuses the 16:9 frame's size (88 px wide at 64²): a 422, for good.
    narrow = RendererConfig(steps=2, width=64, height=64, max_side=80)
    engine = RendererEngine(ModelManager(models_dir), narrow, world.objects)
    refusing = Jobs(world, world.replica(renderer=engine))
    refused = run(desk.rerender(ME, pid, first, [], False)).job_id
    doc = worked(refusing, refused)
    assert doc.status == "failed" and doc.attempts == 1
    version = run(catalog.get_frame_version(ME, pid, frame, 2))
    assert version.status == "failed" and "88" in (version.error or "")
    assert run(catalog.get_frame(ME, pid, frame)).current_version == 1  # still the first
    result = KINDS["scene_render"].result(doc, objects, 60)
    assert result is not None and isinstance(result.frames[0], FailedFrame)
    assert (result.frames[0].render_version, result.frames[0].error) == (2, version.error)
    # Out of memory on every attempt: failed once the last attempt fails, with its error.
    oom = Jobs(world, world.replica(renderer=OutOfMemory()))
    retried = run(desk.rerender(ME, pid, first, [], False)).job_id
    doc = worked(oom, retried)
    assert (doc.status, doc.attempts, doc.dead_letter) == ("failed", 3, True)
    version = run(catalog.get_frame_version(ME, pid, frame, 3))
    assert (version.status, version.error) == ("failed", "CUDA out of memory")
    # Cancelled while queued: settled when a worker concludes it.
    cancelled = run(desk.rerender(ME, pid, first, [], False)).job_id
    run(jobs.desk.cancel(ME, cancelled))
    assert jobs.work_once() and jobs.doc(cancelled).status == "cancelled"
    version = run(catalog.get_frame_version(ME, pid, frame, 4))
    assert (version.status, version.error) == ("failed", "the job ended cancelled")
    # None of the three used up the frame's allowance; the next render shows at last.
    again = run(desk.rerender(ME, pid, first, [], False)).job_id
    assert worked(jobs, again).status == "succeeded"
    assert run(catalog.get_frame(ME, pid, frame)).current_version == 5
    kinds = [e.kind for e in run(catalog.project_events(ME, pid, "", 300))]
    assert kinds.count("frame.failed") == 3


def test_a_print_ready_zip_holds_each_frames_print(world: World) -> None:
    """Through the print path (the tiny upscaler, finishing): each file at 2048 px on its long
    side at the frame's 16:9, 300 DPI, sRGB; the manifest says print_ready and matches."""
    jobs = Jobs(world, world.replica())
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    pid, (boats, _) = storyboard(jobs)
    frame = rendered(jobs, pid, boats, [0]).frames[0]
    run(catalog.decide_frame(ME, pid, frame.frame_id, "approve", None, ""))
    spec = StoryboardExportJob(soul_id=pid, format="zip", print_ready=True)
    job_id = run(jobs.desk.submit(ME, spec)).job_id
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded", doc.error
    result = KINDS["storyboard_export"].result(doc, objects, 60)
    assert result is not None and result.print_ready
    data = objects.get(result.storage_key)
    assert verify_sequence(data) == []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        (entry,) = manifest["frames"]
        image = archive.read(entry["file"])
    assert manifest["print_ready"] is True and entry["frame_id"] == frame.frame_id
    with Image.open(io.BytesIO(image)) as printed:
        assert (printed.format, printed.size, printed.mode) == ("PNG", (2048, 1117), "RGB")
        assert tuple(round(float(d)) for d in printed.info["dpi"]) == (300, 300)
        assert printed.info["icc_profile"] == SRGB
    assert image != objects.get(f"proj/{pid}/frames/{frame.frame_id}/v1.png")
