"""The FastAPI app as create_api() makes it, with a stand-in route: what every route refuses
before it runs, answered through the one error table."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.api.app import create_api
from serve_app.api.deps import AdminOnly, Authorized


@pytest.fixture(scope="module")
def client() -> TestClient:
    api = create_api()

    @api.post("/echo")
    async def echo(body: dict[str, Any], cue: str = "") -> dict[str, Any]:
        return {"cue": cue, **body}

    @api.get("/fails")
    async def fails(how: str) -> None:
        from ray.exceptions import ActorDiedError
        from ray.serve.exceptions import RayServeException

        if how == "replica-died":  # what a call to a SIGKILLed Catalog replica raises
            raise RayServeException("an upstream actor died") from ActorDiedError()
        raise RuntimeError("a bug")

    return TestClient(api, raise_server_exceptions=False)


def test_one_of_each_passes(client: TestClient) -> None:
    ok = client.post("/echo?cue=cat", json={"a": 1}, headers={"Idempotency-Key": "k"})
    assert ok.status_code == 200 and ok.json() == {"cue": "cat", "a": 1}


@pytest.mark.parametrize(
    ("request_args", "named"),
    [
        ({"url": "/echo?cue=cat&cue=dog", "json": {}}, "cue"),
        ({"url": "/echo", "json": {}, "headers": [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]}, "Idempotency-Key"),  # noqa: E501
        ({"url": "/echo", "content": '{"a": 1}'.encode("utf-16"),
          "headers": {"Content-Type": "application/json"}}, "UTF-8"),
        ({"url": "/echo", "content": '{"a": 1}'.encode("utf-16-le"),
          "headers": {"Content-Type": "application/json"}}, "UTF-8"),
        ({"url": "/echo", "content": '{"a": 1}'.encode("utf-8-sig"),
          "headers": {"Content-Type": "application/json"}}, "UTF-8"),
    ],
)  # fmt: skip
def test_what_reads_two_ways_is_a_422_naming_it(
    client: TestClient, request_args: dict[str, Any], named: str
) -> None:
    response = client.post(**request_args)
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"] and "request_id" in response.json()


def test_options_and_405_name_every_method_a_path_takes() -> None:
    import deployments.ingress as ingress

    routes = TestClient(ingress.api)  # routing only: no route handler runs
    options = routes.options("/style/nova")
    assert options.status_code == 204 and options.headers["allow"] == "DELETE, GET, OPTIONS"
    assert routes.options("/jobs").headers["allow"] == "GET, OPTIONS, POST"
    wrong = routes.put("/style/nova")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE, GET"
    for method in ("get", "put", "options"):
        nothing = routes.request(method, "/no/such/route")
        assert nothing.status_code == 404 and "request_id" in nothing.json()


def test_a_replica_dying_under_a_request_is_a_503_to_retry_and_a_bug_a_500(
    client: TestClient,
) -> None:
    died = client.get("/fails?how=replica-died")
    assert died.status_code == 503 and died.headers["retry-after"] == "1"
    assert died.json()["detail"].startswith("a replica serving this request died")
    bug = client.get("/fails?how=bug")
    assert bug.status_code == 500 and bug.json()["detail"].startswith("internal error")
    assert "request_id" in died.json() and "request_id" in bug.json()


def test_admin_routes_take_admin_keys_only_and_are_off_without_them() -> None:
    api = create_api()

    @api.post("/admin/thing", dependencies=[AdminOnly])
    async def admin_thing() -> dict[str, str]:
        return {"ok": "admin"}

    @api.get("/thing", dependencies=[Authorized])
    async def thing() -> dict[str, str]:
        return {"ok": "client"}

    client = TestClient(api, raise_server_exceptions=False)
    off = client.post("/admin/thing", headers={"Authorization": "Bearer anything"})
    assert off.status_code == 403 and "SOUL_ADMIN_KEYS" in off.json()["detail"]
    assert client.post("/admin/thing").status_code == 401  # no key at all: authenticate first
    api.state.api_keys, api.state.admin_keys = [b"client-key"], [b"admin-key"]

    def as_(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    assert client.post("/admin/thing", headers=as_("admin-key")).json() == {"ok": "admin"}
    for key in ("client-key", "admin-key-2", ""):
        refused = client.post("/admin/thing", headers=as_(key))
        assert refused.status_code == 401 and refused.json()["detail"].endswith("admin key")
    assert client.get("/thing", headers=as_("admin-key")).json() == {"ok": "client"}
    assert client.get("/thing", headers=as_("client-key")).json() == {"ok": "client"}
    assert client.get("/thing", headers=as_("admin-key-2")).status_code == 401
