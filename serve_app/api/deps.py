"""Dependencies of the routes: the bearer API key, the Idempotency-Key header, the client scope
(``ClientScope``) and the user a request serves (``TenantUser``).

Every dependency is ``async def`` though none waits for anything: FastAPI runs a plain ``def``
one on a worker thread, a thread hop per dependency per request (the largest share of a cache
hit's time above Ray's own in a profile of ``soul bench hot``)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve_app.delivery import tenant_user
from serve_app.errors import Forbidden, InvalidRequest
from serve_app.schemas import UserId

_bearer = HTTPBearer(auto_error=False)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_api_key(request: Request, credentials: Credentials) -> None:
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return  # open: local development only
    if not _one_of(credentials, [*keys, *request.app.state.admin_keys]):
        raise HTTPException(
            401, "missing or invalid bearer API key", {"WWW-Authenticate": "Bearer"}
        )


async def require_admin_key(request: Request, credentials: Credentials) -> None:
    """The /admin routes: an admin key only (401 without one), and none at all while no admin
    key is set (403)."""
    keys: list[bytes] = request.app.state.admin_keys
    if not keys and credentials is not None:
        raise Forbidden("the admin routes are off: set SOUL_ADMIN_KEYS to use them")
    if not _one_of(credentials, keys):
        raise HTTPException(
            401, "missing or invalid bearer admin key", {"WWW-Authenticate": "Bearer"}
        )


def _one_of(credentials: HTTPAuthorizationCredentials | None, keys: list[bytes]) -> bool:
    given = (credentials.credentials if credentials else "").encode()
    return any(secrets.compare_digest(given, key) for key in keys)


Authorized = Depends(require_api_key)
AdminOnly = Depends(require_admin_key)
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
    return key_scope(credentials.strip() if scheme.lower() == "bearer" else "")


async def request_scope(request: Request) -> str:
    """``client_scope`` as a dependency."""
    return client_scope(request)


ClientScope = Annotated[str, Depends(request_scope)]


@dataclass(frozen=True)
class ScopedUser:
    """A user as their API client names them (``user_id``) and as the catalog knows them
    (``scoped``: two clients' users of the same name never share a history)."""

    user_id: str
    scoped: str


async def receiving_user(
    client_id: ClientScope, user_id: Annotated[UserId, Query(description="Who receives it.")]
) -> ScopedUser:
    """The user ``?user_id=`` names, scoped by the API client."""
    return ScopedUser(user_id, tenant_user(client_id, user_id))


TenantUser = Annotated[ScopedUser, Depends(receiving_user)]


def key_scope(key: str) -> str:
    """The client id of an API key ("open" without one)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "open"


async def unambiguous(request: Request) -> None:
    """Refuse what could be read two ways (every route): a query parameter or an
    Idempotency-Key given twice (which one would count?), and a JSON body not in UTF-8 (JSON
    parsers guess UTF-16 and UTF-32 from the bytes; the API speaks UTF-8 only)."""
    repeated = sorted({k for k in request.query_params if len(request.query_params.getlist(k)) > 1})
    if repeated:
        raise InvalidRequest(f"{repeated[0]}: given more than once; give it once")
    if len(request.headers.getlist("idempotency-key")) > 1:
        raise InvalidRequest("Idempotency-Key: given more than once; send one header")
    body = await request.body()
    if body and json.detect_encoding(body) != "utf-8":
        raise InvalidRequest("body: send JSON in UTF-8 (without a byte order mark)")
