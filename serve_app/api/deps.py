"""Dependencies of the routes: the bearer API key, the Idempotency-Key header, client scope."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False)


def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return  # open: local development only
    given = (credentials.credentials if credentials else "").encode()
    if not any(secrets.compare_digest(given, key) for key in keys):
        raise HTTPException(
            401, "missing or invalid bearer API key", {"WWW-Authenticate": "Bearer"}
        )


Authorized = Depends(require_api_key)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes the request safe to retry: the first response is replayed.",
    ),
]


def client_scope(request: Request) -> str:
    """The API client a request comes from (its jobs and Idempotency-Keys are its own): a hash
    of its bearer key, however the scheme is spelled, never the key itself."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    key = credentials.strip() if scheme.lower() == "bearer" else ""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "open"
