"""The identity routes' HTTP bodies (``routes/identities.py``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.protocol import VariantView
from serve_app.characters.identities import IdentityDescription, IdentityState
from serve_app.characters.report import VersionRate
from serve_app.characters.verdicts import Verdict
from serve_app.schemas import ReferenceUrl

MAX_UPLOADS = 8  # image files in one POST …/references


class UrlImage(BaseModel):
    """An image by URL (the reference fetcher: public hosts only, byte and pixel caps)."""

    model_config = ConfigDict(extra="forbid")

    url: ReferenceUrl = Field(
        max_length=2048,
        description="http(s)://host/... or gs://bucket/path of a PNG, JPEG, WebP or GIF image.",
    )


class IdentityReference(BaseModel):
    reference_id: str
    storage_key: str = Field(description="soul/<soul_id>/identity/<version>/reference/<id>.png")
    url: str = Field(description="Signed, short-lived URL of the stored PNG.")
    expires_at: int = Field(description="Epoch seconds after which the URL stops working.")


class IdentityView(BaseModel):
    """One identity version: its description, canonical prompt, seed bank, lineage, state and
    references (signed URLs)."""

    soul_id: str
    version: int
    state: IdentityState = Field(description="unlocked: editable; locked: frozen, anchored.")
    description: IdentityDescription
    prompt: str = Field(description="The canonical prompt the description becomes.")
    negative_prompt: str
    seed_bank: list[int]
    strength: float = Field(description="The IP-Adapter scale renders use.")
    parent: int | None = Field(description="The version this one changes (its lineage).")
    change_note: str
    references: list[IdentityReference]
    faces_in_references: int | None = Field(
        description="Locked: in how many references the judge found a face."
    )
    mine: bool = Field(description="Made by this API client (the only one that changes it).")
    created_at_ts: int
    updated_at_ts: int


class IdentityScore(BaseModel):
    """An image judged against a locked identity version."""

    soul_id: str
    version: int = Field(description="The locked version it was judged against.")
    verdict: Verdict


class IdentityReportView(BaseModel):
    """A soul's consistency report: per version, how its variants were judged (the rate is
    verified among scorable), and a page of flagged variants with signed URLs."""

    soul_id: str
    versions: list[VersionRate]
    flagged: list[VariantView]
    next_after: str | None = Field(description="Pass as after for the next page of flagged.")
