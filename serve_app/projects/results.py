"""What an ``asset_generate`` or a ``portrait`` job made, as its answer's ``result``."""

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


DISPLAY = "1024x1024"  # a portrait's display version's label: its size at SDXL's 1024²


class PortraitImage(BaseModel):
    storage_key: str
    url: str = Field(description="Signed, short-lived URL.")
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")
    width: int
    height: int


class PortraitResult(BaseModel):
    """What a ``portrait`` job made."""

    project_id: str
    asset_id: str
    version: int
    label: str = Field(default=DISPLAY, description="The display version's nominal size.")
    display: PortraitImage = Field(description="The portrait at the Renderer's size, square.")
    thumbnail: PortraitImage
    print: PortraitImage = Field(description="2048x2048 PNG at the print path's DPI (300).")
    dpi: int
