"""The body of ``assets:search``: what narrows a search of a project's assets (type, tags,
taxonomy) and what ranks it (text), a page at a time; the project desk runs it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serve_app.projects.models import AssetType, Int, Tag
from serve_app.projects.taxonomy import Taxonomy
from serve_app.schemas import Text


class AssetQuery(BaseModel):
    """The body of ``assets:search``: every field narrows, ``text`` ranks."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[Text, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Ranks by meaning against each asset's canonical prompt."
    )
    asset_type: AssetType | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=16, description="All of them.")
    taxonomy: Taxonomy = Field(
        default_factory=dict,
        description="Every entry: an asset's latest version has each key with its value.",
    )
    offset: Int = Field(default=0, ge=0, le=100_000)
    limit: Int = Field(default=20, ge=1, le=100)
