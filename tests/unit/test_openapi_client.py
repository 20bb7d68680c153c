"""A client generated from the OpenAPI document (openapi-python-client, as a user would run it)
covers every route, with its body and answer models; what it sends, the service accepts."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from pydantic import TypeAdapter

import deployments.ingress as ingress_module
from serve_app.api.protocol import StyleIn
from serve_app.jobs.kinds import JobSpec
from tests.generated_client import endpoint, generate_client, model

DOCUMENT = ingress_module.api.openapi()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, str]:
    return generate_client(DOCUMENT, tmp_path_factory.mktemp("client"), "soul_unit_client")


def test_the_generator_parses_every_route_and_schema(generated: tuple[ModuleType, str]) -> None:
    client, output = generated
    assert "Warning" not in output and "WARNING" not in output, output
    operations = sum(len(ops) for ops in DOCUMENT["paths"].values())
    api = Path(client.__file__).parent / "api"
    routes = [p for p in api.rglob("*.py") if p.name != "__init__.py"]
    assert len(routes) == operations


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("PackOfCues", {"cues": ["a cat", "a dog"]}),
        ("PackOfCount", {"cue": "a cat", "count": 3, "vary": "pose"}),
    ],
)
def test_both_ways_of_a_pack_are_models_whose_bodies_the_service_accepts(
    generated: tuple[ModuleType, str], name: str, fields: dict[str, object]
) -> None:
    client, _ = generated
    body = model(client, name)(kind="pack", soul_id="nova", user_id="u1", **fields).to_dict()
    assert TypeAdapter(JobSpec).validate_python(body).kind == "pack"
    submit = endpoint(client, "jobs", "submit_job_jobs_post")
    assert model(client, name) in submit.sync.__annotations__["body"].__args__  # type: ignore[attr-defined]


def test_styles_are_sent_and_read_as_models(generated: tuple[ModuleType, str]) -> None:
    client, _ = generated
    extra = model(client, "StyleInExtra").from_dict({"animation": "subtle", "knobs": {"a": [1]}})
    style = model(client, "StyleIn")(soul_id="nova", base_model_ref="tiny-sdxl", extra=extra)
    assert StyleIn.model_validate(style.to_dict()).extra == {
        "animation": "subtle",
        "knobs": {"a": [1]},
    }
    for name in ("get_style_style_soul_id_get", "list_styles_style_get"):
        assert "StyleProfile" in str(endpoint(client, "styles", name).sync.__annotations__)
