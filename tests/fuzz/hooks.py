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
    """The rules a schema-valid body can break that depend on the path or the service's
    configuration, each documented in its field's description: a version's parent is an
    earlier version than the one in the path; a print's size lies within the configured bounds
    and its chain is one the configuration names."""
    body = case.body if isinstance(case.body, dict) else {}
    if detail.startswith("parent: a version's parent is an earlier version"):
        parent, version = body.get("parent"), (case.path_parameters or {}).get("version")
        return isinstance(parent, int) and parent >= int(version)
    return detail.startswith("chain: unknown chain") or (
        detail.startswith("size: ") and "beyond the bounds" in detail
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
