"""What an ``asset_generate`` job made, as its answer's ``result``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AssetImage(BaseModel):
    """One image of an asset version."""

    role: str
    seed: int
    storage_key: str = Field(description="proj/<project_id>/asset/<asset_id>/v<n>/<role>.png")
    url: str = Field(description="Signed, short-lived URL of the PNG.")
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")


class AssetResult(BaseModel):
    """What an ``asset_generate`` job made."""

    project_id: str
    asset_id: str
    version: int
    images: list[AssetImage | None] = Field(description="Role by role; null: not (yet) made.")
