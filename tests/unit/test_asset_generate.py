"""The asset_generate job over the real engines (the tiny SDXL on CPU): a version's images by
role under the project's prefix, the same spec and seeds giving the same bytes, the generation
logged, a locked version refusing new images."""

from __future__ import annotations

from serve_app.jobs.kinds import KINDS
from serve_app.jobs.kinds.asset_generate import AssetGenerateJob, asset_render, default_roles
from serve_app.projects.models import AssetSpec, AssetVersion, ProjectDraft
from tests.support import run
from tests.unit.test_job_worker import Jobs
from tests.unit.world import World

ME = "c1"
LAMP = AssetSpec(asset_type="prop", name="Lamp", canonical_prompt="a brass lamp", seed_bank=[5, 6])


def generate(jobs: Jobs, version: AssetVersion, asset_type: str = "prop") -> dict[str, bytes]:
    """The version's images, made by a job: role -> PNG bytes."""
    spec = AssetGenerateJob(
        soul_id=version.project_id,
        asset_id=version.asset_id,
        asset_type=asset_type,
        version=version.version,
        roles=version.roles,
    )
    job_id = run(jobs.desk.submit(ME, spec)).job_id
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded", doc.error
    result = KINDS["asset_generate"].result(doc, jobs.replica.deliverer.objects, 60)
    assert result is not None and all(i is not None for i in result.images)
    return {i.role: jobs.replica.deliverer.objects.get(i.storage_key) for i in result.images if i}


def test_the_same_spec_and_seeds_give_the_same_images_under_the_projects_prefix(
    world: World,
) -> None:
    jobs = Jobs(world, world.replica())
    catalog = jobs.replica.catalog
    project = run(catalog.create_project(ME, ProjectDraft(name="P", style_anchor_prompt="ink")))
    pid = project.project_id
    roles = default_roles("prop")
    versions = [
        run(catalog.create_asset(ME, pid, spec, roles, None))[1]
        for spec in (LAMP, LAMP, LAMP.model_copy(update={"seed_bank": [7]}))
    ]
    first = generate(jobs, versions[0])
    assert list(first) == ["front", "three_quarter", "detail"]
    assert generate(jobs, versions[1]) == first  # another asset, same spec and seeds
    other = generate(jobs, versions[2])
    assert other["front"] != first["front"]
    stored = run(catalog.get_asset_version(ME, pid, versions[0].asset_id, 1))
    assert stored.images == {
        role: f"proj/{pid}/asset/{versions[0].asset_id}/v1/{role}.png" for role in roles
    }
    render = asset_render(project, stored, "prop", "detail")
    assert render.seed == 5 and "a brass lamp" in render.prompt and "ink" in render.prompt
    generated = [
        e for e in run(catalog.project_events(ME, pid, "", 100)) if e.kind == "asset.generated"
    ]
    assert len(generated) == 9
    assert {k: generated[0].payload[k] for k in ("role", "seed")} == {"role": "front", "seed": 5}


def test_a_version_locked_before_its_images_refuses_them(world: World) -> None:
    jobs = Jobs(world, world.replica())
    catalog = jobs.replica.catalog
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    _, version = run(catalog.create_asset(ME, pid, LAMP, ["front"], None))
    run(catalog.lock_asset(ME, pid, version.asset_id, 1))
    spec = AssetGenerateJob(
        soul_id=pid, asset_id=version.asset_id, asset_type="prop", version=1, roles=["front"]
    )
    job_id = run(jobs.desk.submit(ME, spec)).job_id
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "failed" and doc.error is not None and "locked" in doc.error.detail
    assert run(catalog.get_asset_version(ME, pid, version.asset_id, 1)).images == {}
    assert jobs.replica.deliverer.objects.list(f"proj/{pid}/") == []
