"""The OpenAPI document as this deployment answers: media formats narrowed to those its
Transcoder encodes (``transcoder.formats``), so a client generated from it never asks for one
that is refused."""

from __future__ import annotations

from typing import Any, get_args

from serve_app.schemas import MediaFormat

ALL_FORMATS = list(get_args(MediaFormat))


def with_formats(document: dict[str, Any], formats: list[str]) -> dict[str, Any]:
    """A copy of ``document`` whose every enum of all media formats lists only ``formats``."""
    enabled = [f for f in ALL_FORMATS if f == "gif" or f in formats]

    def narrow(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("enum") == ALL_FORMATS:
                return {**node, "enum": enabled}
            return {key: narrow(value) for key, value in node.items()}
        if isinstance(node, list):
            return [narrow(item) for item in node]
        return node

    narrowed: dict[str, Any] = narrow(document)
    return narrowed
