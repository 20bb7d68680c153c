"""Images derived from an asset version's images (a character's portrait for display and for
print): images *of* that version, kept beside it rather than in it.

    key       ``(project_id, asset_id, version, role)``: one image a role, so the job that
              derives them again writes the same rows (a repeat adds nothing)
    version   the version's record (its spec, its rendered images by role) is not changed, so
              a locked version gets derived images and stays immutable
    thumbnail each image names a small version of itself (``thumbnail_key``) for lists
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.projects.models import AssetId, ProjectId

DerivedRole = Literal["portrait", "portrait_print"]
PORTRAIT_ROLES: tuple[DerivedRole, ...] = ("portrait", "portrait_print")


class DerivedImage(BaseModel):
    """One image derived from a version's images."""

    project_id: ProjectId
    asset_id: AssetId
    version: int = Field(ge=1)
    role: DerivedRole = Field(
        description="portrait: the display version; portrait_print: the 2048x2048 print."
    )
    storage_key: str
    thumbnail_key: str = Field(description="Its thumbnail (256 px at most a side).")
    width: int
    height: int
    label: str = Field(description="Its nominal size (1024x1024 for display, 2048x2048).")
    dpi: int | None = Field(default=None, description="A print's DPI.")
    job_id: str = Field(default="", description="The job that made it.")
    created_at_ts: int = 0

    def same_image(self, other: DerivedImage) -> bool:
        """The same image at the same keys (what a repeated job writes)."""
        moment = {"job_id", "created_at_ts"}
        return self.model_dump(exclude=moment) == other.model_dump(exclude=moment)
