"""An asset version's taxonomy (seed 002's ``taxonomy``): a small mapping of names to values
that classifies it (``{"species": "fox", "role": "sidekick", "era": "1920s"}``), kept with the
version, copied to the next one unless changed, and matched exactly by a search.

    key     a lowercase name: ``[a-z][a-z0-9_]{0,31}``
    value   1 to 64 characters, no comma and no control character (so a query string can carry
            ``key:value`` pairs comma-separated)
    size    at most ``MAX_ENTRIES`` entries
    match   an asset matches a taxonomy filter when its latest version has every key of the
            filter with the filter's value (an empty filter matches every asset)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError, WithJsonSchema

from serve_app.errors import InvalidRequest
from serve_app.schemas import Text

MAX_ENTRIES = 16
KEY = r"[a-z][a-z0-9_]{0,31}"
VALUE = r"[^,\x00-\x1f\x7f\ufffd]{1,64}"
TaxonomyKey = Annotated[str, StringConstraints(pattern=rf"^{KEY}$")]
# The schema states the value's own pattern (Text's would stand in it otherwise), and that a key
# outside the key pattern is no taxonomy: a generated client or a fuzzer sends what it says.
TaxonomyValue = Annotated[
    Text,
    StringConstraints(pattern=rf"^{VALUE}$"),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64, "pattern": rf"^{VALUE}$"}),
]
Taxonomy = Annotated[
    dict[TaxonomyKey, TaxonomyValue],
    Field(
        max_length=MAX_ENTRIES,
        json_schema_extra={"additionalProperties": False},
        description=f"At most {MAX_ENTRIES} entries: a key of 1 to 32 characters "
        "(a-z first, then a-z, 0-9, _) to a value of 1 to 64 characters without commas or "
        "control characters, e.g. {species: fox, era: 1920s}.",
    ),
]
# The same filter as a query string: ``key:value`` pairs, comma-separated.
QUERY_PATTERN = rf"^({KEY}:{VALUE}(,{KEY}:{VALUE}){{0,{MAX_ENTRIES - 1}}})?$"
_CHECK: TypeAdapter[dict[str, str]] = TypeAdapter(Taxonomy)


def matches(taxonomy: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Every key of ``wanted`` is in ``taxonomy`` with ``wanted``'s value."""
    return all(taxonomy.get(key) == value for key, value in wanted.items())


def taxonomy_of(text: str) -> dict[str, str]:
    """The ``key:value,key:value`` query form as a checked taxonomy (422 naming it)."""
    pairs = [p.partition(":") for p in text.split(",") if p]
    if any(not sep for _, sep, _ in pairs):
        raise InvalidRequest("taxonomy: each pair is key:value")
    given = {key: value for key, _, value in pairs}
    if len(given) != len(pairs):
        raise InvalidRequest("taxonomy: a key is given twice")
    try:
        return _CHECK.validate_python(given)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InvalidRequest(
            f"taxonomy.{where}: {error['msg']}" if where else f"taxonomy: {error['msg']}"
        ) from exc
