"""The portrait job over the real engines (the tiny SDXL and the tiny Upscaler on CPU): a
character version's front image as the square display version with a thumbnail, and a print of
exactly 2048x2048 at 300 DPI through the print path, all under the project's prefix; refused
for another client's project (404), a non-character and a version without a front image (409)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from serve_app.errors import Conflict, NotFound
from serve_app.jobs.kinds import KINDS
from serve_app.jobs.kinds.asset_generate import AssetGenerateJob
from serve_app.jobs.kinds.portrait import portrait_job
from serve_app.projects.models import AssetSpec, AssetVersion, ProjectDraft
from serve_app.projects.results import PortraitResult
from tests.support import run
from tests.unit.test_job_worker import Jobs
from tests.unit.world import World

ME = "c1"
NOVA = AssetSpec(
    asset_type="character", name="Nova", canonical_prompt="a penguin pilot", roles=["front"]
)
LAMP = AssetSpec(asset_type="prop", name="Lamp", canonical_prompt="a brass lamp", roles=["front"])


def made(jobs: Jobs, spec: AssetSpec, generated: bool = True) -> AssetVersion:
    """A new asset of ``spec`` in a new project of ME, its front image rendered when asked."""
    catalog = jobs.replica.catalog
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    _, version = run(catalog.create_asset(ME, pid, spec, spec.roles or [], None))
    if generated:
        job = AssetGenerateJob(
            soul_id=pid,
            asset_id=version.asset_id,
            asset_type=spec.asset_type,
            version=1,
            roles=version.roles,
        )
        run(jobs.desk.submit(ME, job))
        assert jobs.work_once()
    return run(catalog.get_asset_version(ME, pid, version.asset_id, 1))


def test_a_portrait_is_the_front_image_for_display_and_a_2048_print_at_300_dpi(
    world: World,
) -> None:
    jobs = Jobs(world, world.replica())
    version = made(jobs, NOVA)
    pid, aid = version.project_id, version.asset_id
    spec = run(portrait_job(jobs.catalog, ME, pid, aid, None))  # the latest version
    assert (spec.version, spec.front_key) == (1, version.images["front"])
    job_id = run(jobs.desk.submit(ME, spec)).job_id
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded", doc.error
    result = KINDS["portrait"].result(doc, world.objects, 60)
    assert isinstance(result, PortraitResult)
    assert (result.label, result.dpi) == ("1024x1024", 300)
    prefix = f"proj/{pid}/asset/{aid}/v1/portrait"
    assert result.display.storage_key == f"{prefix}.png"
    assert result.thumbnail.storage_key == f"{prefix}.thumb.png"
    assert result.print.storage_key == f"{prefix}.print.2048x2048.png"
    assert all(i.url and i.expires_at for i in (result.display, result.thumbnail, result.print))
    front = Image.open(io.BytesIO(world.objects.get(version.images["front"])))
    with Image.open(io.BytesIO(world.objects.get(result.display.storage_key))) as display:
        assert display.size == (result.display.width, result.display.height) == front.size
    with Image.open(io.BytesIO(world.objects.get(result.thumbnail.storage_key))) as thumbnail:
        assert thumbnail.size == (64, 64)  # 256 px at most, never enlarged
    with Image.open(io.BytesIO(world.objects.get(result.print.storage_key))) as printed:
        assert (printed.format, printed.size, printed.mode) == ("PNG", (2048, 2048), "RGB")
        assert tuple(round(float(d)) for d in printed.info["dpi"]) == (300, 300)
        assert "icc_profile" in printed.info
    # The version's record is left as it was: a portrait is derived from its front image,
    # and kept as the version's derived images (display and print, each with the thumbnail).
    catalog = jobs.replica.catalog
    after = run(catalog.get_asset_version(ME, pid, aid, 1))
    assert after.images == version.images
    derived = run(catalog.derived_images(ME, pid, aid, 1))
    assert [(d.role, d.storage_key, d.thumbnail_key, d.width, d.dpi) for d in derived] == [
        ("portrait", result.display.storage_key, result.thumbnail.storage_key, 64, None),
        ("portrait_print", result.print.storage_key, result.thumbnail.storage_key, 2048, 300),
    ]
    listed = run(catalog.project_images(ME, pid, "portrait", aid, None))
    assert [i["storage_key"] for i in listed] == [d.storage_key for d in derived]
    # A repeated portrait job, of the version once locked, duplicates nothing.
    locked = run(catalog.lock_asset(ME, pid, aid, 1))
    again = run(jobs.desk.submit(ME, run(portrait_job(jobs.catalog, ME, pid, aid, 1)))).job_id
    assert jobs.work_once() and jobs.doc(again).status == "succeeded", jobs.doc(again).error
    assert run(catalog.derived_images(ME, pid, aid, None)) == derived
    assert run(catalog.project_images(ME, pid, "portrait", aid, None)) == listed
    assert run(catalog.get_asset_version(ME, pid, aid, 1)) == locked
    events = [e.kind for e in run(catalog.project_events(ME, pid, "", 100))]
    assert events.count("version.derived") == 1


def test_a_portrait_needs_a_character_with_a_front_image_of_this_client(world: World) -> None:
    jobs = Jobs(world, world.replica())
    nova = made(jobs, NOVA)
    with pytest.raises(NotFound):  # another client's project: not found, as one that isn't
        run(portrait_job(jobs.catalog, "c2", nova.project_id, nova.asset_id, None))
    with pytest.raises(NotFound):
        run(portrait_job(jobs.catalog, ME, nova.project_id, nova.asset_id, 2))
    lamp = made(jobs, LAMP)
    with pytest.raises(Conflict, match="is of type prop: only a character"):
        run(portrait_job(jobs.catalog, ME, lamp.project_id, lamp.asset_id, 1))
    bare = made(jobs, NOVA, generated=False)
    with pytest.raises(Conflict, match="has no front image yet"):
        run(portrait_job(jobs.catalog, ME, bare.project_id, bare.asset_id, 1))
