"""A variant's print versions as answers: found by listing its stem (each key says its options),
their URLs signed now."""

from __future__ import annotations

from serve_app.api.protocol import PrintView
from serve_app.prints.spec import options_of
from serve_app.schemas import Variant
from serve_app.storage.objects import ObjectStore


def print_view(objects: ObjectStore, ttl_s: int, key: str) -> PrintView:
    options = options_of(key)
    if options is None:
        raise ValueError(f"{key!r} is not a print's key")
    signed = objects.signed_url(key, ttl_s)
    return PrintView(
        **options.model_dump(include={"size", "fit", "background", "format", "chain"}),
        url=signed.url,
        expires_at=signed.expires_at,
    )


def prints_of(objects: ObjectStore, ttl_s: int, variant: Variant) -> list[PrintView]:
    keys = objects.list(f"{variant.stem}.print.")
    return [print_view(objects, ttl_s, key) for key in keys if options_of(key) is not None]
