"""A client generated from the running service's /openapi.json, as a user makes one, asks for an
image and submits a pack job, and reads typed answers."""

from __future__ import annotations

import time
from types import ModuleType

import httpx
import pytest
from shared_graph import souls_of
from soul_client import API_KEY, Graph

from tests.generated_client import endpoint, generate_client, model

pytestmark = pytest.mark.integration
FINISHED = {"succeeded", "partial", "failed", "cancelled"}
NOVA, _ = souls_of("client")


@pytest.fixture(scope="module")
def client_package(graph: Graph, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    document = graph.client.get("/openapi.json").json()
    package, output = generate_client(document, tmp_path_factory.mktemp("gen"), "soul_live_client")
    assert "Warning" not in output and "WARNING" not in output, output
    return package


@pytest.fixture(scope="module")
def api(graph: Graph, client_package: ModuleType) -> object:
    return client_package.AuthenticatedClient(
        base_url=graph.base_url, token=API_KEY, timeout=httpx.Timeout(300)
    )


def test_get_image_through_the_generated_client(client_package: ModuleType, api: object) -> None:
    image = endpoint(client_package, "images", "image_image_get")
    answer = image.sync(client=api, soul_id=NOVA, cue="a kite over dunes", user_id="gen-1")
    assert isinstance(answer, model(client_package, "ImageResponse")), answer
    assert (str(answer.cache), str(answer.format_)) == ("miss", "gif") and answer.url


def test_post_a_pack_job_through_the_generated_client(
    client_package: ModuleType, api: object
) -> None:
    pack = model(client_package, "PackOfCount")(
        kind="pack", soul_id=NOVA, user_id="gen-2", cue="a lantern", count=2, vary="pose"
    )
    accepted = endpoint(client_package, "jobs", "submit_job_jobs_post").sync(client=api, body=pack)
    assert isinstance(accepted, model(client_package, "JobAccepted")), accepted
    get_job = endpoint(client_package, "jobs", "get_job_jobs_job_id_get")
    deadline = time.monotonic() + 240
    while str((view := get_job.sync(client=api, job_id=accepted.job_id)).status) not in FINISHED:
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
    assert str(view.status) == "succeeded" and view.progress.done == 2
