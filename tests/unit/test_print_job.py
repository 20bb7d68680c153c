"""The ``print`` job without Ray, over the real engines (the world of test_delivery, its tiny
Upscaler): a print of exactly the asked size is stored beside the variant and listed with it,
the same request again reuses it, and what could never be printed is refused at submit."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from serve_app.errors import Gone, InvalidRequest, NotFound
from serve_app.jobs.kinds.prints import PrintJob
from serve_app.media.prints import prints_of
from tests.support import run
from tests.unit.test_job_worker import Jobs
from tests.unit.world import World


def variant_of(world: World, jobs: Jobs) -> str:
    delivery = run(jobs.replica.deliverer.image("nova", "a lighthouse", "c1/u1"))
    return delivery.variant.variant_id


def test_a_print_job_stores_the_print_beside_its_variant_and_reuses_it(world: World) -> None:
    jobs = Jobs(world, world.replica())
    variant_id = variant_of(world, jobs)
    spec = PrintJob(soul_id="nova", variant_id=variant_id, size="640x480", format="jpeg")
    job_id = jobs.submit(spec)  # type: ignore[arg-type]
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded", doc.error
    result = doc.outcome.items[0]
    assert result is not None and result["reused"] is False
    assert result["key"].endswith(".print.640x480.jpeg")
    with Image.open(io.BytesIO(world.objects.get(result["key"]))) as image:
        assert (image.format, image.size) == ("JPEG", (640, 480))
        assert tuple(round(float(d)) for d in image.info["dpi"]) == (300, 300)
    variant = run(jobs.replica.catalog.find_variant(variant_id))
    [listed] = prints_of(world.objects, 60, variant)
    assert (listed.size, listed.format, listed.fit) == ("640x480", "jpeg", "cover")

    again = jobs.submit(spec)  # type: ignore[arg-type]
    assert jobs.work_once()
    reused = jobs.doc(again).outcome.items[0]
    assert reused is not None and reused["reused"] is True and reused["key"] == result["key"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"size": "9000x9000"}, InvalidRequest),
        ({"size": "100x100"}, InvalidRequest),
        ({"chain": "nosuchchain"}, InvalidRequest),
        ({"variant_id": "01JAAAAAAAAAAAAAAAAAAAAAAA"}, NotFound),
    ],
)
def test_what_could_never_be_printed_is_refused_at_submit(
    world: World, change: dict[str, str], error: type[Exception]
) -> None:
    jobs = Jobs(world, world.replica())
    body = {"soul_id": "nova", "variant_id": variant_of(world, jobs), **change}
    with pytest.raises(error):
        run(jobs.desk.check(PrintJob.model_validate(body)))


def test_a_deleted_variant_is_gone_and_its_prints_with_it(world: World) -> None:
    jobs = Jobs(world, world.replica())
    variant_id = variant_of(world, jobs)
    job_id = jobs.submit(PrintJob(soul_id="nova", variant_id=variant_id, size="512x512"))  # type: ignore[arg-type]
    assert jobs.work_once() and jobs.doc(job_id).status == "succeeded"
    variant = run(jobs.replica.catalog.find_variant(variant_id))
    run(jobs.replica.catalog.delete_variant(variant_id))
    assert world.objects.list(variant.stem) == []
    with pytest.raises(Gone):
        run(jobs.desk.check(PrintJob(soul_id="nova", variant_id=variant_id)))
