"""What every job shares, whatever its kind (``jobs/kinds/``): its priority lane, the fields
every spec has, and the items it delivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.schemas import MAX_CUE_CHARS, SoulId, Text, WebUrl

Priority = Literal["normal", "high"]
Cue = Annotated[Text, Field(min_length=1, max_length=MAX_CUE_CHARS)]
LANES: dict[Priority, int] = {"high": 0, "normal": 1}  # leased in this order
RESERVE_LANE = 2  # refills (the "reserve" kind), leased after every user's job
RESERVE_CLIENT = "~reserve"  # the tenant refills are queued under (no API key's id)
ALL_LANES = (*LANES.values(), RESERVE_LANE)


class JobBase(BaseModel):
    """The fields of every job's spec; each kind narrows ``kind`` to its own name."""

    model_config = ConfigDict(extra="forbid")

    priority: Priority = Field(default="normal", description="high jobs are leased first.")
    webhook_url: WebUrl | None = Field(
        default=None,
        max_length=2048,
        description="Receives the job document (POST, signed) when the job ends; public "
        "http(s) hosts only.",
    )
    kind: str
    soul_id: SoulId


@dataclass(frozen=True)
class Item:
    """One delivery of a job: an image of ``cue``, or a selfie (``cue`` empty)."""

    index: int
    cue: str = ""
