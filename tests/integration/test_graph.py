"""The whole graph on a local Ray, over HTTP: seed 000's acceptance criteria and the error cases."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image, ImageSequence
from shared_graph import souls_of
from soul_client import Graph, tenant

from serve_app.settings import Settings
from serve_app.storage.local import MediaSigner
from tests.support import FakeCivitai, static_http

pytestmark = pytest.mark.integration
NOVA, VALENTINA = souls_of("graph")
ULID = "[0-9A-HJKMNP-TV-Z]{26}"
GIF_KEY = re.compile(rf"^soul/{NOVA}/key/[0-9a-f]{{40}}/variant/{ULID}\.gif$")
REFERENCE_KEY = re.compile(rf"^soul/{VALENTINA}/reference/{ULID}\.png$")


def test_seed_acceptance_unique_per_user_then_cache_hit(graph: Graph) -> None:
    first = graph.image(NOVA, "penguin", "u1")
    second = graph.image(NOVA, "penguin", "u1")
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    a, b = first.json(), second.json()
    assert a["variant_id"] != b["variant_id"]
    assert a["pk_id"] == b["pk_id"]
    assert a["cache"] == b["cache"] == "miss"

    other = graph.image(NOVA, "penguin", "u2").json()
    assert other["variant_id"] == a["variant_id"]
    assert other["cache"] == "hit"

    [row] = graph.rows(
        "SELECT storage_key, seed, phash FROM variant WHERE variant_id = ?", a["variant_id"]
    )
    assert GIF_KEY.match(row["storage_key"]), row["storage_key"]
    stem = row["storage_key"].removesuffix(".gif")
    assert {f"{stem}.gif", f"{stem}.png", f"{stem}.json"} <= set(graph.objects())
    sidecar = graph.sidecar(row["storage_key"])
    assert sidecar["seed"] == row["seed"] and sidecar["pk_id"] == a["pk_id"]
    assert {"steps", "sampler", "style_id", "prompt", "frame_count"} <= set(sidecar)
    seen = graph.rows("SELECT user_id FROM user_seen WHERE variant_id = ?", a["variant_id"])
    assert sorted(r["user_id"] for r in seen) == [tenant("u1"), tenant("u2")]


def test_delivered_url_is_a_browser_ready_gif(graph: Graph) -> None:
    answer = graph.image(NOVA, "lighthouse at dusk", "viewer").json()
    media = graph.client.get(
        answer["url"], headers={"Authorization": ""}
    )  # the URL is the credential
    assert media.status_code == 200
    assert media.headers["content-type"] == "image/gif"
    gif = Image.open(io.BytesIO(media.content))
    assert gif.format == "GIF" and gif.info["loop"] == 0
    assert gif.width == 128
    assert sum(1 for _ in ImageSequence.Iterator(gif)) == 6
    cover = graph.client.get(answer["cover_url"])
    assert cover.status_code == 200 and cover.headers["content-type"] == "image/png"
    thumbnail = graph.client.get(answer["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp"
    # the render is 64 px; the thumbnail is never larger than the render
    assert Image.open(io.BytesIO(thumbnail.content)).size == (64, 64)


def test_punctuation_and_stopwords_share_a_key_but_souls_do_not(graph: Graph) -> None:
    # Cues of its own (here and below): a test that renders a cue another test expects to
    # miss makes the outcome depend on the order the tests run in.
    bare = graph.image(NOVA, "walrus", "u3").json()
    loud = graph.image(NOVA, "A walrus!", "u4").json()
    assert loud["pk_id"] == bare["pk_id"]
    assert loud["cache"] == "hit"
    other_soul = graph.image(VALENTINA, "walrus", "u3").json()
    assert other_soul["pk_id"] != bare["pk_id"]
    assert other_soul["pk_id"].startswith(f"{VALENTINA}:")
    [row] = graph.rows(
        "SELECT storage_key FROM variant WHERE variant_id = ?", other_soul["variant_id"]
    )
    sidecar = graph.sidecar(row["storage_key"])  # valentina's style animates with AnimateDiff
    assert (sidecar["animation"], sidecar["motion_module"]) == ("animated", "tiny-motion")


def test_similar_cues_share_a_key_dissimilar_ones_do_not(graph: Graph) -> None:
    sleeping = graph.image(NOVA, "cat sleeping", "s1").json()
    sleeps = graph.image(NOVA, "cat sleeps", "s2").json()  # MiniLM cosine 0.97
    assert sleeps["pk_id"] == sleeping["pk_id"] and sleeps["cache"] == "hit"
    red = graph.image(NOVA, "red car", "s1").json()
    blue = graph.image(NOVA, "blue car", "s1").json()  # cosine 0.67
    assert red["pk_id"] != blue["pk_id"]


def test_twenty_requests_of_one_user_get_twenty_distinct_variants(graph: Graph) -> None:
    answers = [graph.image(NOVA, "kite", "collector").json() for _ in range(20)]
    ids = [a["variant_id"] for a in answers]
    assert len(set(ids)) == 20
    assert len({a["pk_id"] for a in answers}) == 1
    rows = graph.rows("SELECT variant_id FROM user_seen WHERE user_id = ?", tenant("collector"))
    assert sorted(r["variant_id"] for r in rows) == sorted(ids)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"soul_id": NOVA, "cue": "", "user_id": "u"}, "cue"),
        ({"soul_id": NOVA, "cue": "   ", "user_id": "u"}, "cue"),
        ({"soul_id": NOVA, "cue": "!!! the a", "user_id": "u"}, "cue"),
        ({"soul_id": NOVA, "cue": "x" * 201, "user_id": "u"}, "cue"),
        ({"soul_id": "Nova!", "cue": "penguin", "user_id": "u"}, "soul_id"),
        ({"soul_id": "n" * 65, "cue": "penguin", "user_id": "u"}, "soul_id"),
        ({"soul_id": NOVA, "cue": "penguin", "user_id": "has space"}, "user_id"),
        ({"soul_id": NOVA, "cue": "penguin", "user_id": "u" * 129}, "user_id"),
        ({"soul_id": NOVA, "cue": "penguin"}, "user_id"),
        ({"soul_id": NOVA, "cue": "pen\x00guin", "user_id": "u"}, "cue"),
        ({"soul_id": NOVA, "cue": "pen\x1bguin", "user_id": "u"}, "cue"),
        ({"soul_id": f"{NOVA}\x00", "cue": "penguin", "user_id": "u"}, "soul_id"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(graph: Graph, params: dict, field: str) -> None:
    before = graph.rows("SELECT count(*) AS n FROM prompt_key")[0]["n"]
    r = graph.client.get("/image", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.json()
    assert graph.rows("SELECT count(*) AS n FROM prompt_key")[0]["n"] == before


def test_undecodable_or_out_of_range_input_is_a_422_never_a_500(graph: Graph) -> None:
    invalid_utf8 = graph.client.get(f"/image?soul_id={NOVA}&user_id=u&cue=pen%FF%FEguin")
    assert invalid_utf8.status_code == 422 and "invalid UTF-8" in invalid_utf8.json()["detail"]
    long_key = graph.client.get(
        "/image",
        params={"soul_id": NOVA, "cue": "penguin", "user_id": "u"},
        headers={"Idempotency-Key": "k" * 201},
    )
    assert long_key.status_code == 422 and "idempotency-key" in long_key.json()["detail"].lower()
    media = graph.client.get("/media/x.gif", params={"exp": "9" * 400, "sig": "s"})
    assert media.status_code in (403, 422), media.text
    nova = graph.client.get(f"/style/{NOVA}").json()
    nova.pop("updated_at_ts")
    headers = {"Content-Type": "application/json"}
    for body in [
        json.dumps({**nova, "negatives": ["ok", "bad\u0000"]}).encode(),
        json.dumps({**nova, "palette": {"alpha": float("nan")}}).encode(),  # NaN, not JSON
        json.dumps({**nova, "palette": {"blob": "x" * 20_000}}).encode(),
        json.dumps(nova).encode().replace(b"tiny-sdxl", b"tiny-\xff-sdxl"),
    ]:
        r = graph.client.post("/style", content=body, headers=headers)
        assert r.status_code == 422, (r.status_code, r.text)
    assert graph.client.get(f"/style/{NOVA}").json()["base_model_ref"] == nova["base_model_ref"]


def test_unknown_soul_is_a_404(graph: Graph) -> None:
    r = graph.image("nobody", "penguin", "u1")
    assert r.status_code == 404 and "nobody" in r.json()["detail"]


def test_api_key_is_required(graph: Graph) -> None:
    params = {"soul_id": NOVA, "cue": "penguin", "user_id": "u1"}
    assert (
        graph.client.get("/image", params=params, headers={"Authorization": ""}).status_code == 401
    )
    wrong = {"Authorization": "Bearer not-the-key"}
    assert graph.client.get("/image", params=params, headers=wrong).status_code == 401
    assert graph.client.get("/style", headers=wrong).status_code == 401


def test_media_needs_a_valid_unexpired_signature(graph: Graph) -> None:
    answer = graph.image(NOVA, "otter", "u5").json()
    url = answer["url"]
    assert graph.client.get(url).status_code == 200
    forged = re.sub(r"sig=[^&]+", "sig=AAAA", url)
    assert graph.client.get(forged).status_code == 403
    other_object = url.replace(answer["variant_id"], "01" + "0" * 24)
    assert graph.client.get(other_object).status_code == 403

    key = re.search(r"/media/([^?]+)", url).group(1)  # type: ignore[union-attr]
    signer = MediaSigner(Settings(data_dir=graph.data_dir).media_key)
    past = int(time.time()) - 1
    expired = f"/media/{key}?exp={past}&sig={signer.signature(key, past)}"
    assert graph.client.get(expired).status_code == 403
    later = int(time.time()) + 60
    missing = key.replace(".gif", ".webm")
    r = graph.client.get(f"/media/{missing}?exp={later}&sig={signer.signature(missing, later)}")
    assert r.status_code == 404


def test_style_profiles_crud(graph: Graph) -> None:
    styles = graph.client.get("/style").json()
    assert {s["soul_id"] for s in styles} >= {NOVA, VALENTINA}
    nova = graph.client.get(f"/style/{NOVA}").json()
    assert nova["base_model_ref"] == "tiny-sdxl" and "pastel" in nova["style_tags"]

    assert graph.client.post("/style", json={**nova, "soul_id": "ghost"}).status_code == 404
    assert graph.client.post("/style", json={**nova, "base_model_ref": ""}).status_code == 422
    assert graph.client.post("/style", json={**nova, "surprise": 1}).status_code == 422
    animated = graph.client.post("/style", json={**nova, "extra": {"animation": "animated"}})
    assert animated.status_code == 422 and "needs a motion_module" in animated.text

    changed = graph.client.post("/style", json={**nova, "negatives": ["blurry", "text"]})
    assert changed.status_code == 200
    assert changed.json()["negatives"] == ["blurry", "text"]
    assert changed.json()["updated_at_ts"] > nova["updated_at_ts"]
    assert graph.client.get(f"/style/{NOVA}").json()["negatives"] == ["blurry", "text"]


def test_deleted_style_then_restored(graph: Graph) -> None:
    valentina = graph.client.get(f"/style/{VALENTINA}").json()
    assert graph.client.delete(f"/style/{VALENTINA}").status_code == 204
    try:
        assert graph.client.get(f"/style/{VALENTINA}").status_code == 404
        assert graph.client.delete(f"/style/{VALENTINA}").status_code == 404
        r = graph.image(VALENTINA, "rose", "u1")
        assert r.status_code == 409 and "POST /style" in r.json()["detail"]
    finally:
        assert graph.client.post("/style", json=valentina).status_code == 200
    assert graph.image(VALENTINA, "rose", "u1").status_code == 200


@pytest.mark.parametrize(
    ("base_model_ref", "status", "detail"),
    [
        ("missing-model", 409, "style cannot be rendered (model 'missing-model' not found"),
        ("broken-sdxl", 500, "internal error"),  # the render fails: weights gone
    ],
)
def test_render_failure_is_an_error_and_leaves_nothing_behind(
    graph: Graph, base_model_ref: str, status: int, detail: str
) -> None:
    broken_model = graph.data_dir / "models" / "broken-sdxl"
    if not broken_model.exists():
        shutil.copytree(graph.data_dir / "models" / "tiny-sdxl", broken_model)
        (broken_model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    valentina = graph.client.get(f"/style/{VALENTINA}").json()
    broken = {**valentina, "base_model_ref": base_model_ref}
    cue, user = f"umbrella {status}", f"victim-{status}"
    assert graph.client.post("/style", json=broken).status_code == 200
    try:
        objects_before = graph.objects(f"soul/{VALENTINA}/")
        r = graph.image(VALENTINA, cue, user)
        assert r.status_code == status and detail in r.json()["detail"], r.text
        if status == 500:
            assert r.json()["request_id"] == r.headers["x-request-id"]
        like = f"%{cue}%"
        assert graph.rows("SELECT * FROM variant WHERE meta_json LIKE ?", like) == []
        assert graph.rows("SELECT * FROM user_seen WHERE user_id = ?", tenant(user)) == []
        assert graph.objects(f"soul/{VALENTINA}/") == objects_before
    finally:
        assert graph.client.post("/style", json=valentina).status_code == 200
    assert graph.image(VALENTINA, cue, user).status_code == 200


def test_health_readiness_and_openapi(graph: Graph) -> None:
    assert graph.client.get("/healthz").json() == {"status": "ok"}
    ready = graph.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"catalog": "ok", "objects": "ok"}
    spec = graph.client.get("/openapi.json").json()
    assert {"/image", "/style", "/style/{soul_id}", "/healthz", "/ready"} <= set(spec["paths"])
    assert graph.client.get("/docs").status_code == 200


def test_other_formats_of_the_same_variant(graph: Graph) -> None:
    gif = graph.image(NOVA, "kite festival", "viewer")
    webp = graph.client.get(
        "/image",
        params={"soul_id": NOVA, "cue": "kite festival", "user_id": "viewer2", "format": "webp"},
    )
    assert webp.status_code == 200 and webp.json()["format"] == "webp"
    assert webp.json()["variant_id"] == gif.json()["variant_id"]  # a hit, in another format
    media = graph.client.get(webp.json()["url"])
    assert media.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(media.content)).n_frames == 6
    seen_before = graph.rows("SELECT count(*) AS n FROM user_seen")[0]["n"]
    mp4 = graph.client.get(
        "/image",
        params={"soul_id": NOVA, "cue": "kite festival", "user_id": "viewer3", "format": "mp4"},
    )
    assert mp4.status_code == 422 and "not enabled" in mp4.json()["detail"]
    assert graph.rows("SELECT count(*) AS n FROM user_seen")[0]["n"] == seen_before


def test_a_soul_style_with_a_civitai_lora(graph: Graph, civitai: FakeCivitai) -> None:
    lora = (graph.data_dir / "models" / "tiny-lora-ink.safetensors").read_bytes()
    ref = civitai.publish("201", lora, name="ink-noir.safetensors")
    original = graph.client.get(f"/style/{VALENTINA}").json()
    original.pop("updated_at_ts")
    try:
        r = graph.client.post("/style", json={**original, "lora_ids": [f"{ref}=0.7"]})
        assert r.status_code == 200, r.text
        image = graph.image(VALENTINA, "neon alley", "lora-fan")
        assert image.status_code == 200, image.text
        [row] = graph.rows(
            "SELECT storage_key FROM variant WHERE variant_id = ?", image.json()["variant_id"]
        )
        sidecar = graph.sidecar(row["storage_key"])
        assert sidecar["lora_ids"] == [f"{ref}=0.7"] and sidecar["style_id"]
        cached = graph.data_dir / "models" / "civitai" / "201" / "ink-noir.safetensors"
        assert cached.read_bytes() == lora

        unknown = graph.client.post("/style", json={**original, "lora_ids": ["civitai:99999"]})
        assert unknown.status_code == 422 and "no such model version" in unknown.json()["detail"]
        pickled = civitai.publish("202", b"pickle", name="x.ckpt", file_format="PickleTensor")
        refused = graph.client.post("/style", json={**original, "lora_ids": [pickled]})
        assert refused.status_code == 422 and "only safetensors" in refused.json()["detail"]
        assert graph.client.get(f"/style/{VALENTINA}").json()["lora_ids"] == [f"{ref}=0.7"]
    finally:
        assert graph.client.post("/style", json=original).status_code == 200


def test_reference_images_are_ingested_listed_and_condition_renders(graph: Graph) -> None:
    png = io.BytesIO()
    Image.new("RGB", (96, 48), "crimson").save(png, format="PNG")
    files = {"/face.png": png.getvalue(), "/page.html": b"<html>not an image</html>"}
    original = graph.client.get(f"/style/{VALENTINA}").json()
    original.pop("updated_at_ts")
    with static_http(files) as source:
        body = {"soul_id": VALENTINA, "url": f"{source}/face.png"}
        first = graph.client.post("/ingest/reference", json=body, headers={"Idempotency-Key": "r1"})
        assert first.status_code == 200, first.text
        ref = first.json()
        assert REFERENCE_KEY.match(ref["storage_key"]), ref
        assert (ref["width"], ref["height"], ref["soul_id"]) == (96, 48, VALENTINA)
        stored = graph.client.get(ref["url"], headers={"Authorization": ""})
        assert stored.headers["content-type"] == "image/png" and len(stored.content) == ref["bytes"]
        retry = graph.client.post("/ingest/reference", json=body, headers={"Idempotency-Key": "r1"})
        assert retry.json()["reference_id"] == ref["reference_id"]
        assert retry.headers["idempotent-replayed"] == "true"

        listed = graph.client.get(f"/ingest/reference/{VALENTINA}")
        assert [r["storage_key"] for r in listed.json()] == [ref["storage_key"]]
        assert graph.client.get(listed.json()[0]["url"]).status_code == 200

        html = graph.client.post("/ingest/reference", json={**body, "url": f"{source}/page.html"})
        assert html.status_code == 422 and "not a PNG" in html.json()["detail"], html.text
        gone = graph.client.post("/ingest/reference", json={**body, "url": f"{source}/gone.png"})
        assert gone.status_code == 502 and "answered 404" in gone.json()["detail"], gone.text
        ghost = graph.client.post("/ingest/reference", json={**body, "soul_id": "ghost"})
        assert ghost.status_code == 404
        assert graph.client.get("/ingest/reference/ghost").status_code == 404
        ftp = graph.client.post("/ingest/reference", json={**body, "url": "ftp://x/face.png"})
        assert ftp.status_code == 422 and "use http(s)://" in ftp.json()["detail"]
        assert graph.objects(f"soul/{VALENTINA}/reference/") == [ref["storage_key"]]

    bad = {**original, "extra": {**original["extra"], "reference_strength": 1.5}}
    assert graph.client.post("/style", json=bad).status_code == 422
    referenced = {**original, "extra": {**original["extra"], "reference_strength": 0.7}}
    assert graph.client.post("/style", json=referenced).status_code == 200
    try:
        image = graph.image(VALENTINA, "portrait by the sea", "ref-fan")
        assert image.status_code == 200, image.text
        [row] = graph.rows(
            "SELECT storage_key, meta_json FROM variant WHERE variant_id = ?",
            image.json()["variant_id"],
        )
        sidecar = graph.sidecar(row["storage_key"])
        assert sidecar["reference_key"] == ref["storage_key"]
        assert sidecar["reference_strength"] == 0.7
        assert json.loads(row["meta_json"])["reference_key"] == ref["storage_key"]
    finally:
        assert graph.client.post("/style", json=original).status_code == 200


# Selfies.


def selfie(graph: Graph, user: str, city: str = "paris", mood: str = "happy", **extra: str) -> Any:
    body = {"soul_id": NOVA, "city_key": city, "mood": mood, "user_id": user, **extra}
    return graph.client.post("/selfie", json=body)


def test_selfie_seed_acceptance_same_user_twice_gets_another_shot(graph: Graph) -> None:
    first, second = selfie(graph, "tourist"), selfie(graph, "tourist")
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    a, b = first.json(), second.json()
    assert (a["landmark_key"], a["angle"]) != (b["landmark_key"], b["angle"])
    assert a["variant_id"] != b["variant_id"]
    assert a["url"].split("?")[0].endswith(".gif") and a["cache"] == "miss"


def test_selfies_walk_every_landmark_before_a_repeat_from_a_new_angle(graph: Graph) -> None:
    cities = graph.client.get("/cities").json()
    paris = next(c for c in cities["cities"] if c["city_key"] == "paris")["landmarks"]
    shots = [selfie(graph, "walker", mood="calm").json() for _ in range(len(paris) + 1)]
    assert sorted(s["landmark_key"] for s in shots[: len(paris)]) == sorted(paris)
    repeat = shots[-1]
    first_visit = next(s for s in shots if s["landmark_key"] == repeat["landmark_key"])
    assert repeat["angle"] != first_visit["angle"]
    assert len({s["variant_id"] for s in shots}) == len(shots)
    rows = graph.rows("SELECT landmark_key FROM landmark_log WHERE user_id = ?", tenant("walker"))
    assert sorted(r["landmark_key"] for r in rows) == sorted(paris)


def test_another_user_gets_an_existing_shot_as_a_cache_hit(graph: Graph) -> None:
    first = selfie(graph, "early-bird", city="tokyo", mood="surprised").json()
    other = selfie(graph, "late-comer", city="tokyo", mood="surprised").json()
    assert (other["landmark_key"], other["angle"]) == (first["landmark_key"], first["angle"])
    assert other["cache"] == "hit" and other["variant_id"] == first["variant_id"]
    assert other["pk_id"] == first["pk_id"]


def test_concurrent_selfies_of_one_user_get_different_landmarks(graph: Graph) -> None:
    with ThreadPoolExecutor(2) as pool:
        responses = list(
            pool.map(lambda _: selfie(graph, "twin", city="new_york", mood="excited"), range(2))
        )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert responses[0].json()["landmark_key"] != responses[1].json()["landmark_key"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"soul_id": "nobody"}, 404, "unknown soul"),
        ({"city_key": "atlantis"}, 404, "known cities: paris, tokyo, new_york"),
        ({"mood": "grumpy"}, 422, "one of: happy, sad, surprised"),
        ({"mood": None}, 422, "mood"),
        ({"city_key": "Paris!"}, 422, "city_key"),
    ],
)
def test_selfie_errors(graph: Graph, body: dict[str, Any], status: int, detail: str) -> None:
    payload = {"soul_id": NOVA, "city_key": "paris", "mood": "happy", "user_id": "oops"}
    payload.update(body)
    payload = {k: v for k, v in payload.items() if v is not None}
    r = graph.client.post("/selfie", json=payload)
    assert r.status_code == status and detail in r.json()["detail"], r.text
    assert graph.rows("SELECT * FROM landmark_log WHERE user_id = ?", tenant("oops")) == []


def test_info_says_what_runs_without_a_secret(graph: Graph) -> None:
    info = graph.client.get("/info")
    assert info.status_code == 200, info.text
    body = info.json()
    boxes = {d["name"]: d for d in body["deployments"]}
    assert set(boxes) == {
        "Ingress", "Embedder", "Catalog", "Renderer", "Animator", "Dedupe", "Transcoder",
        "JobWorker", "Upscaler",
    }  # fmt: skip
    assert all(d["replicas"] >= 1 and d["status"] == "HEALTHY" for d in boxes.values()), boxes
    assert {"tiny-sdxl", "tiny-motion"} <= set(body["models"])
    assert body["formats"][0] == "gif"
    assert body["backends"] == {"catalog": "sqlite", "objects": "local", "embedded": True}
    assert graph.client.get("/info", headers={"Authorization": ""}).status_code == 401
