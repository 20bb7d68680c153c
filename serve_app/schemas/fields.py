"""Field types the API checks and every record shares: ids, safe text and JSON, URLs,
model refs, formats."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    TypeAdapter,
)
from pydantic_core import core_schema
from typing_extensions import TypeAliasType

SoulId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]


def _spelled_iso(value: Any) -> Any:
    """A day as YYYY-MM-DD only (pydantic would also read a number as a Unix time)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("a day is spelled YYYY-MM-DD")
    return value


Day = Annotated[dt.date, BeforeValidator(_spelled_iso)]
MediaFormat = Literal["gif", "webp", "mp4"]
Animation = Literal["subtle", "animated", "video"]
MAX_CUE_CHARS = 200
MAX_JSON_BYTES = 16_384
MAX_JSON_DEPTH = 4  # levels of objects and lists in free-form JSON, the top object included

# NUL and other control characters break storage (PostgreSQL refuses NUL in text); U+FFFD is what
# invalid UTF-8 in a URL decodes to, and a lone surrogate (a JSON "\ud800") has no UTF-8 at all:
# SQLite would store it and fail every later read. All are refused at the edge with a 422.
_UNSAFE_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd\ud800-\udfff]")


def safe_text(value: str) -> str:
    if found := _UNSAFE_CHARS.search(value):
        char = found.group()
        unicode = char == "\ufffd" or "\ud800" <= char <= "\udfff"
        what = "invalid UTF-8" if unicode else f"control character {char!r}"
        raise ValueError(f"contains {what}; send plain UTF-8 text")
    return value


def safe_json(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form JSON that every backend can store: safe text, finite numbers, bounded size and
    nesting."""

    def check(node: Any, depth: int) -> None:
        if isinstance(node, str):
            safe_text(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(node, dict | list) and depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels of objects and lists")
        elif isinstance(node, dict):
            for k, v in node.items():
                check(k, depth)
                check(v, depth + 1)
        elif isinstance(node, list):
            for item in node:
                check(item, depth + 1)

    check(value, 1)
    if len(json.dumps(value)) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES} bytes as JSON")
    return value


@dataclass(frozen=True, eq=False)  # hashed by identity: a schema dict is not hashable
class Documented:
    """Adds ``schema`` to a type's JSON schema (OpenAPI) without changing how it validates:
    the schema says what a validator enforces, so clients generated from it send valid data."""

    schema: dict[str, Any]

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        return {**handler(core), **self.schema}


@dataclass(frozen=True)
class DocumentedAs:
    """Documents a type with the JSON schema of ``shape`` (validation stays the type's own)."""

    shape: Any

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        return handler(TypeAdapter(self.shape).core_schema)


# Lone surrogates are left out of the documented pattern: they are no Unicode characters, so
# no regex engine outside Python (a client's JSON Schema validator) can name them.
SAFE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]*$"
SAFE_TEXT = Documented({"pattern": SAFE_PATTERN})
SAFE_KEYS = Documented({"propertyNames": {"pattern": SAFE_PATTERN}})
# What ``safe_json`` lets through, as a schema: safe text, keys included, a value of the top
# object holding at most MAX_JSON_DEPTH - 1 more levels of objects and lists. Spelled out level
# by level rather than recursive, so a client generator can follow it, and exactly as deep as
# ``safe_json`` allows.
SafeScalar = Annotated[str, SAFE_TEXT] | int | float | bool | None
SafeJson1 = TypeAliasType(
    "SafeJson1", SafeScalar | list[SafeScalar] | Annotated[dict[str, SafeScalar], SAFE_KEYS]
)
SafeJson2 = TypeAliasType(
    "SafeJson2", SafeScalar | list[SafeJson1] | Annotated[dict[str, SafeJson1], SAFE_KEYS]
)
SafeJson = TypeAliasType(
    "SafeJson", SafeScalar | list[SafeJson2] | Annotated[dict[str, SafeJson2], SAFE_KEYS]
)
Text = Annotated[str, AfterValidator(safe_text), SAFE_TEXT]
# URLs the service calls out to (references, webhooks): an ASCII host name, an optional port,
# then anything but spaces and control characters. No user:password@ (secrets would end up in
# logs), no IP literal in brackets. One pattern that the schema shows and validation enforces,
# so its classes are spelled out: `\s` means other characters in Python (U+0085, U+001C-1F)
# than in a client's JSON Schema validator (ECMA-262).
_SPACES = r"\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_LABEL = r"[A-Za-z0-9-]{1,63}"
_HOST = rf"(?:{_LABEL}\.)*{_LABEL}\.?"
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_REST = rf"(?:[/?#][^\x00-\x20\x7f-\x9f{_SPACES}\ufffd]*)?"  # no C0/C1 control, no space
WEB_URL = rf"^https?://{_HOST}{_PORT}{_REST}$"
REFERENCE_URL = rf"^(?:https?://{_HOST}{_PORT}|gs://[a-z0-9_.-]{{1,222}}){_REST}$"


@dataclass(frozen=True)
class Matching:
    """Text that matches ``pattern`` (shown in the schema); else the error is ``advice``, which
    says what to send (a bare regex in an error helps no one)."""

    pattern: str
    advice: str

    def check(self, value: str) -> str:
        if not re.fullmatch(self.pattern, safe_text(value)):
            raise ValueError(self.advice)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        return {**handler(core), "pattern": self.pattern}


NO_CREDENTIALS = "with no spaces or user:password@"
WebUrl = Annotated[str, Matching(WEB_URL, f"use http(s)://host[:port]/path, {NO_CREDENTIALS}")]
ReferenceUrl = Annotated[
    str,
    Matching(
        REFERENCE_URL, f"use http(s)://host[:port]/path or gs://bucket/path, {NO_CREDENTIALS}"
    ),
]

# Model refs: a CivitAI model version or a tag (under the models folder), what a client may
# name; or an absolute path on the server, for the config files an operator writes.
CLIENT_REF = r"civitai:\d{1,12}|[A-Za-z0-9][A-Za-z0-9._@-]{0,199}"
SERVER_PATH = r"/[^=\x00-\x1f\x7f\ufffd]{1,300}"  # safe text, as a schema can say it
LORA_WEIGHT = r"(=-?(\d{1,2}(\.\d{1,4})?|\.\d{1,4}))?"
_REF_SHAPE = "civitai:<model version id>, or a tag (letters, digits and . _ @ -; up to 200)"
ModelRef = Annotated[str, Matching(f"^({CLIENT_REF}|{SERVER_PATH})$", f"use {_REF_SHAPE}")]
LoraId = Annotated[
    str,
    Matching(
        f"^({CLIENT_REF}|{SERVER_PATH}){LORA_WEIGHT}$",
        f'use <ref> or "<ref>=<weight>", a ref being {_REF_SHAPE}',
    ),
]
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(safe_json),
    DocumentedAs(dict[str, SafeJson]),
    SAFE_KEYS,
]
