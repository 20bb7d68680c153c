"""Schemathesis hooks for the fuzz run (loaded by ``schemathesis.toml``)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from typing import Any

import schemathesis

from serve_app.prompts import cue_tokens

VALID_KEY = re.compile(r"[\x21-\x7e]{1,160}")
STATUSES: Counter[int] = Counter()
KEY_REUSED = "Idempotency-Key: already used with different parameters"
REFUSED_BY_STATE_OR_CONFIG = (
    "chain: unknown chain",
    "format: Value error, background: remove needs png",
    "identity_version: soul ",  # a pin of a version the soul does not have
    "identity_version: version ",  # or has not locked
    "canonical_prompt: required (or, for a character, an identity)",
    "identity: only a character has one",
    "soul_id: only a character pins a soul's identity",
    "the script does not compile",  # the stored script's text, posted earlier
    "scene_ids: every scene of the project once",  # the scenes its scripts compiled to
)
NOT_AN_IMAGE = ("not a PNG, JPEG, WebP or GIF image", ": empty; send an image file")


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """An Idempotency-Key once per case, as a client uses it: the generator repeats small
    values ("0") across cases with different bodies, which the service rightly refuses (422:
    a key reused with other parameters). A key that is invalid stays as generated."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = f"{key}.{uuid.uuid4().hex}"


@schemathesis.hook
def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but the rules no JSON Schema states. A cue needs a word besides
    punctuation and stopwords (documented in its description): a schema-valid cue refused for
    that, and that alone, by the service's own normalizer, is not a failure. And an
    Idempotency-Key names one request: a generated key that still comes again with other
    parameters (``before_call`` did not make it unique) is rightly refused."""
    if failure.code != "ST202" or response.status_code != 422:
        return True
    if KEY_REUSED in response.json().get("detail", ""):
        return False
    detail = response.json().get("detail", "")
    cues = [(case.query or {}).get("cue"), *_body_cues(case.body)]
    stopwords_only = any(isinstance(cue, str) and not cue_tokens(cue) for cue in cues)
    if stopwords_only and "at least one word" in detail:
        return False
    return not _against_state_or_config(case, detail)


def _against_state_or_config(case: Any, detail: str) -> bool:
    """The rules a schema-valid request can break that depend on the path, the catalog, the
    configuration or the bytes of a file, each documented in its route or field: a version's
    parent is an earlier version that exists; a pinned identity_version is a locked version of
    the soul; a print's size lies within the configured
    bounds, its chain is one the configuration names, and a cut-out is a PNG; an uploaded file
    is an image; an asset pins a soul only as a character; a compile takes the script as
    stored; a reorder names the project's scenes."""
    body = case.body if isinstance(case.body, dict) else {}
    if detail.startswith("parent: a version's parent is an earlier version"):
        parent, version = body.get("parent"), (case.path_parameters or {}).get("version")
        return isinstance(parent, int | float) and parent >= int(version)
    if re.match(r"parent: soul '[^']*' has no identity version \d+$", detail):
        return True
    return (
        any(refusal in detail for refusal in NOT_AN_IMAGE)
        or detail.startswith(REFUSED_BY_STATE_OR_CONFIG)
        or (detail.startswith("size: ") and "beyond the bounds" in detail)
    )


def _body_cues(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        return []
    return [body.get("cue"), *(body.get("cues") or [])]


@schemathesis.hook
def after_call(ctx: Any, case: Any, response: Any) -> None:
    """Counts the statuses answered, into ``$SOUL_FUZZ_STATUSES`` (JSON) when set."""
    STATUSES[response.status_code] += 1
    if path := os.environ.get("SOUL_FUZZ_STATUSES"):
        with open(path, "w") as out:
            json.dump(dict(sorted(STATUSES.items())), out)
