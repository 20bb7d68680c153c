"""What delivery hands back, and to whom: a delivered variant, a selfie's shot, a tenant's user."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from serve_app.schemas import Variant


def tenant_user(client_id: str, user_id: str) -> str:
    """A user as the catalog knows them: scoped by the API client that names them, so two
    client apps that both have a user ``u1`` never share a seen history (a user id has no
    ``/``)."""
    return f"{client_id}/{user_id}"


class Delivery(BaseModel):
    """What was delivered, as kept for an Idempotency-Key replay (URLs are signed afresh)."""

    variant: Variant
    cache: Literal["hit", "miss"]


class Shot(Delivery):
    """A selfie: the variant, and the place it shows."""

    landmark_key: str
    angle: str
