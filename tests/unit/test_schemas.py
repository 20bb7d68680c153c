"""Input that no backend could store is refused by the schemas (the API turns that into a 422)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from serve_app.app import AppArgs
from serve_app.schemas import (
    MAX_JSON_BYTES,
    REFERENCE_URL,
    WEB_URL,
    RenderJob,
    StyleProfile,
    safe_text,
)


@pytest.mark.parametrize("text", ["penguin", "café ☃", "tab\tand\nnewline", "emoji 🐧"])
def test_plain_text_passes(text: str) -> None:
    assert safe_text(text) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("nul\x00byte", "control character"),
        ("escape\x1b[0m", "control character"),
        ("delete\x7f", "control character"),
        ("broken \ufffd utf-8", "invalid UTF-8"),
        ("lone \ud800 surrogate", "invalid UTF-8"),
    ],
)
def test_unstorable_text_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        safe_text(text)


@pytest.mark.parametrize(
    ("fields", "where", "why"),
    [
        ({"negatives": ["ok", "bad\x00"]}, "negatives.1", "control character"),
        ({"base_model_ref": "model\x00"}, "base_model_ref", "control character"),
        ({"palette": {"alpha": float("nan")}}, "palette", "finite"),
        ({"extra": {"deep": [{"x": float("inf")}]}}, "extra", "finite"),
        ({"extra": {"key\x00": 1}}, "extra", "control character"),
        ({"palette": {"blob": "x" * MAX_JSON_BYTES}}, "palette", "larger than"),
        ({"negatives": ["\ud800"]}, "negatives.0", "invalid UTF-8"),
        ({"palette": {"hint": ["\udfff"]}}, "palette", "invalid UTF-8"),
        ({"extra": {"\ud83d": 1}}, "extra", "invalid UTF-8"),
        ({"extra": {"a": [{"b": [[1]]}]}}, "extra", "nested deeper than 4 levels"),
        ({"extra": {"a": {"b": {"c": {"d": {}}}}}}, "extra", "nested deeper than 4 levels"),
    ],
)
def test_style_refuses_what_a_store_cannot_hold(
    fields: dict[str, Any], where: str, why: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        StyleProfile.model_validate({"soul_id": "nova", "base_model_ref": "tiny-sdxl", **fields})
    [error] = caught.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == where
    assert why in error["msg"]


def test_style_keeps_json_nested_as_deep_as_its_schema_says() -> None:
    # The documented schema spells out the levels (no recursion, for client generators): the
    # top object, then SafeJson, SafeJson2, SafeJson1 and scalars.
    extra = {"a": [{"b": [1, "x", None]}], "c": {"d": {"e": True}}}
    assert StyleProfile(soul_id="nova", base_model_ref="m", extra=extra).extra == extra


def test_style_keeps_nested_json_that_is_fine() -> None:
    palette = {"colors": ["#fff", "#000"], "weights": [0.5, 1, None, True], "hint": "soft"}
    assert StyleProfile(soul_id="nova", base_model_ref="m", palette=palette).palette == palette


def test_replica_counts_name_real_deployments() -> None:
    assert AppArgs.model_validate({"replicas": {"Ingress": 2, "Catalog": 2}}).replicas == {
        "Ingress": 2,
        "Catalog": 2,
    }
    with pytest.raises(ValidationError, match="Ingress"):
        AppArgs.model_validate({"replicas": {"Ingres": 2}})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        AppArgs.model_validate({"replicas": {"Catalog": 0}})


@pytest.mark.parametrize("strength", [0.25, 1, 1.0, None])
def test_reference_strength_in_range_passes(strength: float | None) -> None:
    style = StyleProfile(
        soul_id="nova", base_model_ref="m", extra={"reference_strength": strength, "x": 1}
    )
    assert style.reference_strength == strength
    assert StyleProfile(soul_id="nova", base_model_ref="m").reference_strength is None


@pytest.mark.parametrize("strength", [0, -0.5, 1.01, "0.5", True, [0.5]])
def test_reference_strength_out_of_range_is_refused(strength: Any) -> None:
    with pytest.raises(
        ValidationError, match=r"extra.reference_strength: must be a number in \(0, 1\]"
    ):
        StyleProfile(soul_id="nova", base_model_ref="m", extra={"reference_strength": strength})


def test_render_job_reference_key_and_strength_go_together() -> None:
    job = {"style_id": "s", "base_model_ref": "m", "prompt": "p", "negative_prompt": "", "seed": 1}
    assert RenderJob.model_validate(job).reference_key is None
    RenderJob.model_validate({**job, "reference_key": "k.png", "reference_strength": 0.5})
    for extra in [{"reference_key": "k.png"}, {"reference_strength": 0.5}]:
        with pytest.raises(ValidationError, match="go together"):
            RenderJob.model_validate({**job, **extra})


@pytest.mark.parametrize(
    "fields",
    [
        {"base_model_ref": "/etc/passwd"},
        {"lora_ids": ["tiny-lora-ink", "/var/secret.safetensors=0.5"]},
        {"motion_module": "/opt/models/motion"},
    ],
)
def test_a_client_cannot_name_a_server_path_as_a_model(fields: dict[str, Any]) -> None:
    from serve_app.api.protocol import StyleIn

    style = {"soul_id": "nova", "base_model_ref": "tiny-sdxl", **fields}
    with pytest.raises(ValidationError, match="path on the server"):
        StyleIn.model_validate(style)
    assert StyleProfile.model_validate(style)  # a config file (souls.yaml) may


@pytest.mark.parametrize("char", ["\x85", "\x9f", "\xa0", "\u2028", "\ufeff", " ", "\x1c"])
def test_a_url_with_a_space_or_control_character_is_refused_by_schema_and_validation(
    char: str,
) -> None:
    """Python's ``\\s`` is not ECMA-262's: the URL patterns spell their classes out, so the
    schema a client validates against refuses exactly what the service refuses."""
    assert "\\s" not in REFERENCE_URL and "\\s" not in WEB_URL
    url = f"http://example.com/a{char}b"
    assert re.fullmatch(REFERENCE_URL, url) is None and re.fullmatch(WEB_URL, url) is None
    assert re.fullmatch(WEB_URL, "http://example.com/été?x=1#top")
