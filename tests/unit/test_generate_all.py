"""The generate_all job over the real engines (the tiny SDXL on CPU): a project's missing
portrait, then a frame of every scene, at most five renders at a time (counted at the
Renderer), one scene with an unlocked asset failing alone (the job ends partial), progress item
by item; a cancel stops it between renders."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deployments.dedupe import DedupeConfig, DedupeEngine
from deployments.renderer import RendererConfig, RendererEngine
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_CLIP
from serve_app.jobs.kinds import KINDS
from serve_app.projects.models import AssetSpec, ProjectDraft
from serve_app.projects.storyboard_desk import StoryboardDesk
from serve_app.schemas import Frames, RenderJob
from serve_app.stories.records import ScriptDraft
from tests.support import run
from tests.unit.test_job_worker import Jobs
from tests.unit.test_scene_render import ME, face
from tests.unit.world import World

SCENES = "".join(f"EXT. HARBOR - DAY {i}\n\nThe tide, hour {i}.\n\n" for i in range(6))
SCRIPT = SCENES + "EXT. HARBOR - NIGHT\n\nKID\nWho's there?\n"


class Counted:
    """The Renderer, counting the renders in flight (each held a moment so they overlap)."""

    def __init__(self, renderer: object) -> None:
        self.renderer = renderer
        self.lock = threading.Lock()
        self.now = self.peak = self.total = 0

    def render(self, job: RenderJob) -> Frames:
        with self.lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(0.3)
            return self.renderer.render(job)  # type: ignore[attr-defined, no-any-return]
        finally:
            with self.lock:
                self.now -= 1


def test_generate_all_renders_five_at_a_time_and_ends_partial(
    world: World, models_dir: Path
) -> None:
    config = RendererConfig(steps=2, width=64, height=64)  # reads the harbor's image: objects
    counted = Counted(RendererEngine(ModelManager(models_dir), config, world.objects))
    # Dedupe embeds each frame: the gate judges its drift from the harbor's image by the tiny
    # CLIP (cosines near 0.8 for any two pictures, above the default 0.6)
    dedupe = DedupeEngine(DedupeConfig(clip_model=TINY_CLIP), ModelManager(models_dir))
    jobs = Jobs(world, world.replica(renderer=counted, dedupe=dedupe))
    catalog, objects = jobs.replica.catalog, jobs.replica.deliverer.objects
    pid = run(catalog.create_project(ME, ProjectDraft(name="Tides"))).project_id
    harbor = AssetSpec(asset_type="environment", name="Harbor", canonical_prompt="a harbor")
    env, _ = run(catalog.create_asset(ME, pid, harbor, ["wide"], None))
    key = f"proj/{pid}/asset/{env.asset_id}/v1/wide.png"
    objects.put(key, face())
    run(catalog.add_asset_image(ME, pid, env.asset_id, 1, "wide", key, {}))
    run(catalog.lock_asset(ME, pid, env.asset_id, 1))
    kid = AssetSpec(asset_type="character", name="Kid", canonical_prompt="a small kid", seed=1)
    kid_asset, _ = run(catalog.create_asset(ME, pid, kid, ["front", "profile"], None))
    script = run(catalog.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    _, scenes = run(catalog.compile_script(ME, pid, script.script_id))
    assert len(scenes) == 7
    accepted = run(StoryboardDesk(jobs.catalog, jobs.desk).generate_all(ME, pid))
    assert jobs.work_once()
    doc = jobs.doc(accepted.job_id)
    assert doc.status == "partial", doc.error
    assert (doc.progress.done, doc.progress.total) == (8, 8)
    assert counted.total == 7 and counted.peak == 5  # 1 portrait, then 6 of 7 scenes
    result = KINDS["generate_all"].result(doc, objects, 60)
    assert result is not None
    assert [i.status for i in result.items] == ["made"] * 7 + ["failed"]
    assert result.items[0].item == f"portrait:{kid_asset.asset_id}"
    assert "KID" in (result.items[-1].error or "")
    version = run(catalog.get_asset_version(ME, pid, kid_asset.asset_id, 1))
    assert list(version.images) == ["front"]
    assert {i.frame_status for i in result.items[1:7]} == {"passed"}


def test_a_cancelled_generate_all_stops_between_renders(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(world.renderer)
    replica = world.replica(renderer=counted)
    jobs = Jobs(world, replica, watch_s=0.05)
    catalog = replica.catalog
    pid = run(catalog.create_project(ME, ProjectDraft(name="Stop"))).project_id
    for n in range(12):
        spec = AssetSpec(asset_type="character", name=f"C{n}", canonical_prompt="a kid", seed=n)
        run(catalog.create_asset(ME, pid, spec, ["front"], None))
    accepted = run(StoryboardDesk(jobs.catalog, jobs.desk).generate_all(ME, pid))
    original = catalog.cancel_requested

    async def after_the_first_renders(lease: Any) -> bool:
        return counted.total >= 1 or bool(await original(lease))

    monkeypatch.setattr(catalog, "cancel_requested", after_the_first_renders)
    assert jobs.work_once()
    doc = jobs.doc(accepted.job_id)
    assert doc.status == "cancelled"
    assert counted.total <= 5 < doc.progress.total  # the first wave at most, of 12


class FailsOnce:
    """The Renderer, whose GPU runs out of memory on its second render only (transient)."""

    def __init__(self, renderer: object) -> None:
        self.renderer = renderer
        self.calls = 0
        self.lock = threading.Lock()

    def render(self, job: RenderJob) -> Frames:
        with self.lock:
            self.calls += 1
            second = self.calls == 2
        if second:
            raise RuntimeError("CUDA out of memory")
        return self.renderer.render(job)  # type: ignore[attr-defined, no-any-return]


def test_a_retried_generate_all_renders_the_versions_it_planned_not_new_ones(
    world: World,
) -> None:
    jobs = Jobs(world, world.replica(renderer=FailsOnce(world.renderer)))
    catalog = jobs.replica.catalog
    pid = run(catalog.create_project(ME, ProjectDraft(name="Again"))).project_id
    harbor = AssetSpec(asset_type="environment", name="Harbor", canonical_prompt="a harbor")
    env, _ = run(catalog.create_asset(ME, pid, harbor, ["wide"], None))
    run(catalog.lock_asset(ME, pid, env.asset_id, 1))
    three = "".join(f"EXT. HARBOR - DAY {i}\n\nThe tide, hour {i}.\n\n" for i in range(3))
    script = run(catalog.create_script(ME, pid, ScriptDraft(raw_text=three)))
    _, scenes = run(catalog.compile_script(ME, pid, script.script_id))
    accepted = run(StoryboardDesk(jobs.catalog, jobs.desk).generate_all(ME, pid))
    assert accepted.estimated_s is not None and accepted.estimated_s >= 3 * 25  # by stages
    assert jobs.work_once()
    doc = jobs.doc(accepted.job_id)
    assert doc.status == "queued" and doc.error is not None  # to be retried
    assert "out of memory" in doc.error.detail
    while not jobs.doc(accepted.job_id).finished:
        jobs.work_once()
    doc = jobs.doc(accepted.job_id)
    assert (doc.status, doc.attempts) == ("succeeded", 2)
    for scene in scenes:
        frame = run(catalog.get_frame(ME, pid, f"frm_{scene.scene_id[4:]}_00"))
        versions = run(catalog.frame_versions(ME, pid, frame.frame_id))
        assert [(v.render_version, v.status) for v in versions] == [(1, "passed")]
        assert versions[0].planned_by == accepted.job_id and frame.current_version == 1
