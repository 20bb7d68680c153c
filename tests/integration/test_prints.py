"""Print versions over HTTP on the shared graph: a print job through the Upscaler gives files
of exactly the asked size at 300 DPI, the same request again is served from the stored print,
the variant lists its prints, and bad requests are refused before anything is written."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image
from shared_graph import ADMIN_KEY, souls_of
from soul_client import Graph

pytestmark = pytest.mark.integration

NOVA, _ = souls_of("prints")
FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def variant_id(graph: Graph) -> str:
    response = graph.image(NOVA, "a lighthouse at dusk", "printer")
    assert response.status_code == 200, response.text
    found: str = response.json()["variant_id"]
    return found


def printed(graph: Graph, variant_id: str, **body: Any) -> dict[str, Any]:
    """POST the print, wait for its job; the finished job."""
    response = graph.client.post(f"/variants/{variant_id}/print", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 240
    while True:
        doc: dict[str, Any] = graph.client.get(f"/jobs/{job_id}").json()
        if doc["status"] in FINISHED or time.monotonic() > deadline:
            assert doc["status"] == "succeeded", doc["error"]
            assert doc["kind"] == "print"
            return doc
        time.sleep(0.3)


def fetched(graph: Graph, url: str) -> tuple[Image.Image, int]:
    response = graph.client.get(url)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image, len(response.content)


def test_a_portrait_png_and_a_scene_jpeg_at_300_dpi(graph: Graph, variant_id: str) -> None:
    portrait = printed(graph, variant_id, size="portrait")["result"]
    [made] = portrait["prints"]
    assert (made["size"], made["fit"], made["format"]) == ("2048x2048", "cover", "png")
    assert portrait["reused"] is False
    image, size = fetched(graph, made["url"])
    assert (image.format, image.size, image.mode) == ("PNG", (2048, 2048), "RGB")
    assert tuple(round(float(d)) for d in image.info["dpi"]) == (300, 300)
    assert size <= 5_000_000

    scene = printed(graph, variant_id, size="scene", format="jpeg", fit="contain")["result"]
    image, _ = fetched(graph, scene["prints"][0]["url"])
    assert (image.format, image.size) == ("JPEG", (3000, 2000))
    assert tuple(round(float(d)) for d in image.info["dpi"]) == (300, 300)

    again = printed(graph, variant_id, size="portrait")["result"]
    assert again["reused"] is True
    listed = graph.client.get(f"/variants/{variant_id}").json()["prints"]
    assert {(p["size"], p["format"]) for p in listed} == {
        ("2048x2048", "png"),
        ("3000x2000", "jpeg"),
    }


def test_a_cut_out_portrait_is_rgba(graph: Graph, variant_id: str) -> None:
    result = printed(graph, variant_id, size="512x512", background="remove")["result"]
    image, _ = fetched(graph, result["prints"][0]["url"])
    assert (image.mode, image.size) == ("RGBA", (512, 512))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"size": "poster"}, "size"),
        ({"size": "9000x9000"}, "size"),
        ({"format": "webp"}, "format"),
        ({"background": "remove", "format": "jpeg"}, "format"),
        ({"chain": "nosuchchain"}, "chain"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(
    graph: Graph, variant_id: str, body: dict[str, Any], field: str
) -> None:
    jobs_before = graph.rows("SELECT count(*) AS n FROM job")[0]["n"]
    response = graph.client.post(f"/variants/{variant_id}/print", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text and response.json()["request_id"]
    assert graph.rows("SELECT count(*) AS n FROM job")[0]["n"] == jobs_before


def test_unknown_and_deleted_variants_are_404_and_410(graph: Graph) -> None:
    unknown = graph.client.post("/variants/01JAAAAAAAAAAAAAAAAAAAAAAA/print", json={})
    assert unknown.status_code == 404, unknown.text
    response = graph.image(NOVA, "a kite over dunes", "printer")
    doomed = response.json()["variant_id"]
    admin = httpx.Client(base_url=graph.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    with admin:
        assert admin.delete(f"/variants/{doomed}").status_code == 204
    gone = graph.client.post(f"/variants/{doomed}/print", json={})
    assert gone.status_code == 410, gone.text
