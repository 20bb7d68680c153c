"""The character_sheet job over the real engines (the tiny SDXL on CPU): every view by every
expression stored as the version's references, the same seed bank giving the same bytes."""

from __future__ import annotations

from typing import get_args, get_type_hints

import pytest

from serve_app.api.protocol import JobView
from serve_app.characters.identities import IdentityDescription, IdentityDraft
from serve_app.characters.verdicts import IdentityAnchors
from serve_app.errors import InvalidRequest
from serve_app.jobs.answers import job_answer
from serve_app.jobs.kinds import KINDS
from serve_app.jobs.kinds.character_sheet import CharacterSheetJob, sheet_grid
from serve_app.settings import MediaSettings
from tests.support import run
from tests.unit.test_job_worker import Jobs
from tests.unit.world import World

ADA = IdentityDraft(description=IdentityDescription(hair_colour="auburn"), seed_bank=[11, 22])


def sheet(jobs: Jobs, version: int) -> dict[str, bytes]:
    """The version's sheet, made by a job: (view-expression) -> PNG bytes."""
    job_id = run(jobs.desk.submit("c1", CharacterSheetJob(soul_id="nova", version=version))).job_id
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded", doc.error
    assert (doc.progress.done, doc.progress.total) == (len(sheet_grid()), len(sheet_grid()))
    result = KINDS["character_sheet"].result(doc, jobs.replica.deliverer.objects, 60)
    assert result is not None and all(v is not None for v in result.views)
    assert job_answer(jobs.replica.deliverer.objects, MediaSettings(), doc).result == result
    return {
        f"{v.view}-{v.expression}": jobs.replica.deliverer.objects.get(v.storage_key)
        for v in result.views
        if v is not None
    }


def test_a_sheet_is_every_view_stored_as_references_and_the_same_seeds_give_the_same_bytes(
    world: World,
) -> None:
    jobs = Jobs(world, world.replica())
    catalog = jobs.replica.catalog
    for draft in (ADA, ADA, ADA.model_copy(update={"seed_bank": [33]})):
        run(catalog.create_identity("nova", draft, "c1"))
    first = sheet(jobs, 1)
    assert len(first) == 6 and "three_quarter-smiling" in first
    references = run(catalog.get_identity("nova", 1)).references
    assert len(references) == 6 and all("/identity/1/reference/sheet-" in k for k in references)
    assert sheet(jobs, 2) == first  # same description, same seed bank: byte-identical
    other = sheet(jobs, 3)
    assert other["front-neutral"] != first["front-neutral"]
    assert len({other["front-neutral"], other["front-smiling"]}) == 2  # the words differ


def test_a_sheet_of_a_locked_version_is_refused_before_it_is_queued(world: World) -> None:
    jobs = Jobs(world, world.replica())
    made = run(jobs.replica.catalog.create_identity("nova", ADA, "c1"))
    run(jobs.replica.catalog.lock_identity("nova", 1, IdentityAnchors(), made.updated_at_ts, "c1"))
    with pytest.raises(InvalidRequest, match="locked"):
        run(jobs.desk.check(CharacterSheetJob(soul_id="nova", version=1)))


def test_every_kind_s_result_is_one_of_the_results_a_job_view_answers() -> None:
    answered = set(get_args(JobView.model_fields["result"].annotation))
    for kind in KINDS.values():
        returned = get_type_hints(type(kind).result)["return"]
        assert set(get_args(returned) or (returned,)) <= answered, kind.name
