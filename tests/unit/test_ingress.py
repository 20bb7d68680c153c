"""The ingress class as Serve deploys it (no Ray cluster needed)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Any

import httpx
import pytest

import deployments.ingress as ingress_module
from serve_app.api.openapi import with_formats
from serve_app.api.routes import ROUTERS
from serve_app.schemas import REFERENCE_URL


def names_used(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):  # lambdas and nested functions
            yield from names_used(const)


def test_every_module_name_the_ingress_uses_is_visible_to_its_methods() -> None:
    # @serve.ingress copies the class when it is defined; a module-level helper defined below
    # the class would be a NameError at request time, and only on the path that calls it.
    deployed = ingress_module.Ingress.func_or_class
    ours = [k for k in deployed.__mro__ if k.__module__ == ingress_module.__name__]
    module_names = set(vars(ingress_module))
    methods = [(n, m) for k in ours for n, m in vars(k).items() if inspect.isfunction(m)]
    # The route handlers live in the route families' modules (serve_app/api/routes/).
    methods += [(r.name, r.endpoint) for router in ROUTERS for r in router.routes]
    assert len(methods) > 10  # the route handlers and helpers, wherever Serve put them
    missing = {
        f"{name}: {used}"
        for name, member in methods
        for used in names_used(member.__code__)
        if used in module_names and used not in member.__globals__
    }
    assert not missing


def test_every_error_a_route_documents_has_the_one_error_body() -> None:
    spec = ingress_module.api.openapi()
    documented = {
        (path, method): set(op["responses"])
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    for (path, method), codes in documented.items():
        for code in codes - {"200", "201", "202", "204"}:
            content = spec["paths"][path][method]["responses"][code]["content"]
            assert content["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }, (path, method, code)
    assert all("422" in codes for codes in documented.values())  # a repeated parameter
    assert "503" in documented[("/ready", "get")]
    assert {"202", "401", "404", "409", "422", "429", "503"} <= documented[("/jobs", "post")]
    rebuild = documented[("/admin/rebuild_prompt_key", "post")]
    assert {"202", "401", "403", "404", "409", "422", "429", "503"} <= rebuild
    for path in ("/jobs/{job_id}", "/jobs/{job_id}/events"):
        assert {"401", "404", "422"} <= documented[(path, "get")]
    assert {"401", "404", "422"} <= documented[("/jobs/{job_id}/cancel", "post")]
    assert (
        "text/event-stream"
        in spec["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    )
    submit = spec["paths"]["/jobs"]["post"]["responses"]  # JSON (202), or events when asked
    assert "text/event-stream" in submit["200"]["content"]
    assert "application/json" in submit["202"]["content"]


def test_a_client_is_its_key_however_the_scheme_is_spelled() -> None:
    from starlette.requests import Request

    from serve_app.api.deps import client_scope

    def scope(authorization: str | None) -> str:
        headers = [(b"authorization", authorization.encode())] if authorization else []
        return client_scope(Request({"type": "http", "headers": headers}))

    assert scope("Bearer K") == scope("bearer K") == scope("BEARER  K ")
    assert scope("Bearer K") != scope("Bearer L") and "K" not in scope("Bearer K")
    assert scope(None) == scope("Basic Zm9v") == "open"


def test_the_schema_says_what_the_service_enforces() -> None:
    spec = ingress_module.api.openapi()
    image = {p["name"]: p for p in spec["paths"]["/image"]["get"]["parameters"]}
    assert "\\x00" in image["cue"]["schema"]["pattern"]  # no control characters
    assert "stopwords" in image["cue"]["description"]
    assert "transcoder.formats" in image["format"]["description"]
    url = spec["components"]["schemas"]["ReferenceRequest"]["properties"]["url"]
    assert url["pattern"] == REFERENCE_URL  # a scheme and a host name, no credentials
    style = spec["components"]["schemas"]["StyleIn"]["properties"]
    assert style["base_model_ref"]["pattern"].startswith("^(civitai:")
    assert style["extra"]["propertyNames"]["pattern"] == image["cue"]["schema"]["pattern"]
    nested = spec["components"]["schemas"][
        style["extra"]["additionalProperties"]["$ref"].split("/")[-1]
    ]
    assert {"type": "string", "pattern": image["cue"]["schema"]["pattern"]} in nested["anyOf"]
    pack = spec["components"]["schemas"]["PackJob"]
    assert [way["required"] for way in pack["oneOf"]] == [["cues"], ["cue", "count"]]


@pytest.mark.parametrize(("formats", "enum"), [([], ["gif"]), (["mp4"], ["gif", "mp4"])])
def test_the_openapi_document_names_only_the_formats_encoded_here(
    formats: list[str], enum: list[str]
) -> None:
    document = {"paths": {"/image": {"parameters": [{"schema": {"enum": ["gif", "webp", "mp4"]}}]}}}
    narrowed = with_formats(document, formats)
    assert narrowed["paths"]["/image"]["parameters"][0]["schema"]["enum"] == enum
    assert document["paths"]["/image"]["parameters"][0]["schema"]["enum"] == ["gif", "webp", "mp4"]


def test_serve_binds_a_handle_in_place_of_each_application_in_the_handles_record() -> None:
    # What `serve.run` does to the graph before it deploys it, with stand-ins for the handles.
    from ray.serve._private.build_app import build_app as build_serve_app

    from serve_app.app import build_app
    from serve_app.delivery import Handles

    built = build_serve_app(
        build_app({}), name="soul", make_deployment_handle=lambda d, _: f"handle of {d.name}"
    )
    deployed = {d.name: d for d in built.deployments}
    boxes = ["Embedder", "Catalog", "Renderer", "Animator", "Dedupe", "Transcoder", "Upscaler"]
    for name in ("Ingress", "JobWorker"):
        handles = deployed[name].init_args[0]
        assert isinstance(handles, Handles)
        assert list(vars(handles).values()) == [f"handle of {box}" for box in boxes]
    assert deployed["Ingress"].init_args[-1] == "handle of JobWorker"
    assert set(deployed) == {*boxes, "Ingress", "JobWorker"}


def test_the_app_an_ingress_replica_serves_reaches_its_services_and_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Ingress as Serve constructs it on a replica, over a real catalog engine (no Ray).
    from deployments.catalog import CatalogEngine
    from serve_app.catalog.souls import load_souls
    from serve_app.delivery import Handles
    from serve_app.settings import Settings
    from serve_app.storage import open_object_store
    from serve_app.storage.sqlite import SQLiteStore
    from tests.support import run
    from tests.unit.handles import LocalHandle

    monkeypatch.setenv("SOUL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SOUL_API_KEYS", json.dumps(["client-key"]))
    engine = CatalogEngine(
        SQLiteStore(tmp_path / "catalog.db"), objects=open_object_store(Settings())
    )
    run(engine.start(load_souls("config/souls.yaml")))
    catalog = LocalHandle(engine)
    unused = LocalHandle(None)  # no route here renders, animates, dedupes or encodes
    handles = Handles(unused, catalog, unused, unused, unused, unused, unused)
    replica = ingress_module.Ingress.func_or_class.__wrapped__(handles)
    served = replica.__serve_build_asgi_app__()
    transport = httpx.ASGITransport(app=served)
    key = {"Authorization": "Bearer client-key"}

    async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://soul") as client:
            return await client.request(method, url, **kwargs)

    try:
        assert run(call("GET", "/style")).status_code == 401
        assert run(call("GET", "/ready")).json()["checks"] == {"catalog": "ok", "objects": "ok"}
        assert "paris" in {
            c["city_key"] for c in run(call("GET", "/cities", headers=key)).json()["cities"]
        }
        nova = run(call("GET", "/style/nova", headers=key)).json()
        once = {**key, "Idempotency-Key": "k1"}
        first = run(call("POST", "/style", json={**nova, "style_tags": ["ink"]}, headers=once))
        again = run(call("POST", "/style", json={**nova, "style_tags": ["ink"]}, headers=once))
        assert first.json() == again.json() and first.json()["style_tags"] == ["ink"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert run(call("DELETE", "/style/nova", headers=key)).status_code == 204
        assert run(call("GET", "/style/nova", headers=key)).status_code == 404
        assert run(call("GET", "/keys?soul_id=nova", headers=key)).json() == {
            "keys": [],
            "next_after": None,
        }
    finally:
        run(engine.close())
