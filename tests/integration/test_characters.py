"""Characters over HTTP on the shared graph: an identity version made from uploaded photographs
(Grace Hopper, matplotlib's sample, and Eileen Collins, scikit-image's astronaut: both public
domain), locked, scoring photographs; a pack of 5 judged against it; bad uploads refused with
nothing written; another API key cannot change a version it did not make."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from shared_graph import OTHER_KEY, souls_of
from skimage import data as skimage_data
from soul_client import Graph

from serve_app.settings import Settings

pytestmark = pytest.mark.integration
NOVA, _ = souls_of("characters")
# The image fallback judges the tiny model's faceless renders with the tiny CLIP.
GRAPH_ARGS: dict[str, Any] = {"dedupe": {"clip_model": "tiny-clip"}}
FINISHED = {"succeeded", "partial", "failed", "cancelled"}
BASE = f"/souls/{NOVA}/identity"


def jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def hopper() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def files(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"photo{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]


def identity_objects(graph: Graph) -> list[str]:
    root = graph.data_dir / "objects" / "soul" / NOVA / "identity"
    return sorted(str(p) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def locked(graph: Graph) -> dict[str, Any]:
    """Version 1 of the soul: two photographs of Grace Hopper, locked."""
    made = graph.client.post(BASE, json={"description": {"hair_colour": "grey"}})
    assert made.status_code == 201, made.text
    version = made.json()["version"]
    crop = hopper()[20:500, 40:480]
    added = graph.client.post(
        f"{BASE}/{version}/references", files=files(jpeg(hopper()), jpeg(crop))
    )
    assert added.status_code == 200, added.text
    answer = graph.client.post(f"{BASE}/{version}/lock")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def score(graph: Graph, image: bytes) -> dict[str, Any]:
    answer = graph.client.post(f"{BASE}/score", files=files(image))
    assert answer.status_code == 200, answer.text
    verdict: dict[str, Any] = answer.json()["verdict"]
    return verdict


def test_a_version_made_of_photographs_scores_photographs(
    graph: Graph, locked: dict[str, Any]
) -> None:
    assert locked["state"] == "locked" and locked["faces_in_references"] == 2
    same = score(graph, jpeg(np.ascontiguousarray(hopper()[:, ::-1])))
    assert (same["verdict"], same["scorer"]) == ("verified", "face")
    assert score(graph, jpeg(skimage_data.astronaut()))["verdict"] == "off_model"
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    assert score(graph, jpeg(noise))["scorer"] != "face"  # no face: the image fallback's, or none
    shown = graph.client.get(f"{BASE}/{locked['version']}").json()
    assert len(shown["references"]) == 2
    assert graph.client.get(shown["references"][0]["url"]).status_code == 200


def test_a_pack_of_five_carries_verdicts_and_its_consistency_rate(
    graph: Graph, locked: dict[str, Any]
) -> None:
    spec = {
        "kind": "pack",
        "soul_id": NOVA,
        "user_id": "char-1",
        "cue": "a portrait",
        "count": 5,
        "vary": "pose",
    }
    accepted = graph.client.post("/jobs", json=spec)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 480
    while (doc := graph.client.get(f"/jobs/{accepted.json()['job_id']}").json())[
        "status"
    ] not in FINISHED:
        assert time.monotonic() < deadline, doc
        time.sleep(0.5)
    assert doc["status"] == "succeeded", doc
    items = doc["result"]["items"]
    assert len(items) == 5
    assert all(i["identity"]["version"] == locked["version"] for i in items)
    verdicts = [i["identity"]["verdict"] for i in items]
    scorable = [v for v in verdicts if v != "unscorable"]
    rate = doc["result"]["consistency_rate"]
    assert rate == (scorable.count("verified") / len(scorable) if scorable else None)
    report = graph.client.get(f"{BASE}/report", params={"version": locked["version"]}).json()
    assert sum(r["verified"] + r["off_model"] + r["unscorable"] for r in report["versions"]) >= 5


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (files(b"this is not an image"), 422),
        (files(bytes(Settings().references.reference_max_bytes + 1)), 413),
        ("bomb", 422),
        (files(b""), 422),
        (None, 422),
    ],
)
def test_bad_uploads_are_refused_and_write_nothing(graph: Graph, body: Any, status: int) -> None:
    made = graph.client.post(BASE, json={}).json()
    before = identity_objects(graph)
    if body == "bomb":
        out = io.BytesIO()
        Image.new("1", (20_000, 20_000)).save(out, format="PNG", optimize=True)
        body = files(out.getvalue())
    answer = graph.client.post(f"{BASE}/{made['version']}/references", files=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["request_id"]
    assert identity_objects(graph) == before
    assert graph.client.get(f"{BASE}/{made['version']}").json()["references"] == []


def test_another_key_cannot_change_a_version_it_did_not_make(graph: Graph) -> None:
    made = graph.client.post(BASE, json={}).json()
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    path = f"{BASE}/{made['version']}"
    assert graph.client.patch(path, json={"strength": 0.2}, headers=other).status_code == 403
    assert graph.client.post(f"{path}/lock", headers=other).status_code == 403
    seen = graph.client.get(path, headers=other).json()
    assert seen["mine"] is False and seen["strength"] == made["strength"]


def test_renders_use_the_latest_locked_version_or_a_pinned_one_and_hits_keep_the_face(
    graph: Graph, locked: dict[str, Any]
) -> None:
    """Last in the module: it locks a newer version. A cue's variant of one version is never a
    hit for a request that renders with another; a pin of a version that is not locked is a 422
    that writes nothing."""
    older = locked["version"]
    made = graph.client.post(BASE, json={"parent": older, "change_note": "another face"}).json()
    newer = made["version"]
    added = graph.client.post(
        f"{BASE}/{newer}/references", files=files(jpeg(skimage_data.astronaut()))
    )
    assert added.status_code == 200, added.text
    assert graph.client.post(f"{BASE}/{newer}/lock").status_code == 200

    def image(user_id: str, pin: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"soul_id": NOVA, "cue": "a lighthouse", "user_id": user_id}
        if pin is not None:
            params["identity_version"] = pin
        answer = graph.client.get("/image", params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    latest = image("pin-a")
    assert latest["identity"]["version"] == newer and latest["cache"] == "miss"
    pinned = image("pin-b", older)  # no variant of the older version yet: a render of it
    assert pinned["identity"]["version"] == older and pinned["cache"] == "miss"
    hit = image("pin-c")
    assert (hit["cache"], hit["variant_id"]) == ("hit", latest["variant_id"])
    pinned_hit = image("pin-c", older)
    assert (pinned_hit["cache"], pinned_hit["variant_id"]) == ("hit", pinned["variant_id"])

    unlocked = graph.client.post(BASE, json={}).json()["version"]
    for pin in (unlocked, unlocked + 1):
        refused = graph.client.get(
            "/image",
            params={"soul_id": NOVA, "cue": "a lighthouse", "user_id": "pin-d",
                    "identity_version": pin},
        )  # fmt: skip
        assert refused.status_code == 422 and "identity_version" in refused.json()["detail"]
    assert graph.rows("SELECT * FROM user_seen WHERE user_id LIKE ?", "%pin-d") == []
