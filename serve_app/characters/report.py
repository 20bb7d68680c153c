"""A soul's consistency report: per identity version, how its variants were judged, and the
flagged ones (delivered although no render of them was verified), a page at a time.

The verdicts are the variants' own (``meta["identity"]``, an ``IdentityStamp``, and
``meta["identity_flagged"]``, written by the consistency gate when the variant was made), read
by a primary-key range scan of the soul's variants: a report costs one scan of the soul's
variants since ``since``, never a join.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from serve_app.characters.verdicts import IdentityStamp
from serve_app.schemas import Variant


class VersionRate(BaseModel):
    version: int
    verified: int = 0
    off_model: int = 0
    unscorable: int = 0
    flagged: int = Field(default=0, description="Delivered although none of its renders passed.")
    consistency_rate: float | None = Field(
        default=None, description="verified ÷ scorable (verified + off_model); None: none scorable."
    )


class ConsistencyReport(BaseModel):
    soul_id: str
    versions: list[VersionRate] = Field(description="Per identity version, oldest first.")
    flagged: list[Variant] = Field(description="A page of flagged variants, oldest first.")
    next_after: str | None = Field(description="The flagged page's cursor: pass it as after.")


def stamp_of(variant: Variant) -> IdentityStamp | None:
    stamp = variant.meta.get("identity")
    return IdentityStamp.model_validate(stamp) if stamp else None


def consistency_report(
    soul_id: str, variants: list[Variant], version: int | None, after: str, limit: int
) -> ConsistencyReport:
    """``variants``: the soul's, oldest first; those of ``version`` only, when given."""
    counts: dict[int, Counter[str]] = {}
    flagged = []
    for variant in variants:
        stamp = stamp_of(variant)
        if stamp is None or (version is not None and stamp.version != version):
            continue
        tally = counts.setdefault(stamp.version, Counter())
        tally[stamp.verdict] += 1
        if variant.meta.get("identity_flagged"):
            tally["flagged"] += 1
            if variant.variant_id > after:
                flagged.append(variant)
    rates = []
    for number, tally in sorted(counts.items()):
        scorable = tally["verified"] + tally["off_model"]
        rates.append(
            VersionRate(
                version=number,
                verified=tally["verified"],
                off_model=tally["off_model"],
                unscorable=tally["unscorable"],
                flagged=tally["flagged"],
                consistency_rate=tally["verified"] / scorable if scorable else None,
            )
        )
    page = flagged[:limit]
    more = len(flagged) > limit
    return ConsistencyReport(
        soul_id=soul_id,
        versions=rates,
        flagged=page,
        next_after=page[-1].variant_id if more else None,
    )
