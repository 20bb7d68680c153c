"""The consistency gate's report, pure: what each check found about one rendered frame.

    identity  per character of the scene's cast: its own face in the frame (the frame's faces
              assigned to the cast, ``IdentityScorer.judge_cast``) against the anchors of the
              character's pinned version, or the image-embedding fallback (``Verdict``);
              ``verified`` passes, ``off_model`` fails, and ``unscorable`` fails too unless
              ``unscorable_passes`` (never silently: the report says why)
    style     the frame's image embedding against the project's style anchors (their mean),
              at or above ``style`` cosine; skipped (and so passed) when the project has no
              style-anchor images
    prompt    the stored prompt equals the one the scene compiles to now (no hidden mutation)
    seed      the stored seed is the one the inheritance rule gives

A frame passes when every check passes; otherwise it is ``needs_review`` with this report
(which check, which character, scores, thresholds).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.characters.verdicts import SFACE_COSINE, Verdict


class GateConfig(BaseModel):
    """The gate's thresholds."""

    model_config = ConfigDict(extra="forbid")

    face: float = Field(
        default=SFACE_COSINE, ge=-1.0, le=1.0, description="SFace cosine to a character's anchor."
    )
    image: float = Field(
        default=0.85, ge=-1.0, le=1.0, description="Image-embedding cosine (faceless characters)."
    )
    style: float = Field(
        default=0.8, ge=-1.0, le=1.0, description="Image-embedding cosine to the style anchors."
    )
    unscorable_passes: bool = Field(
        default=False, description="A character no scorer can judge passes (recorded as such)."
    )


class Check(BaseModel):
    check: Literal["identity", "style", "prompt", "seed"]
    passed: bool
    character: str | None = Field(default=None, description="The asset id, for identity.")
    name: str | None = None
    verdict: str | None = None
    score: float | None = None
    threshold: float | None = None
    detail: str = ""


def identity_check(asset_id: str, name: str, verdict: Verdict, config: GateConfig) -> Check:
    passed = verdict.verdict == "verified" or (
        verdict.verdict == "unscorable" and config.unscorable_passes
    )
    return Check(
        check="identity",
        passed=passed,
        character=asset_id,
        name=name,
        verdict=verdict.verdict,
        score=verdict.score,
        threshold=verdict.threshold,
        detail=verdict.reason or f"judged by {verdict.scorer}",
    )


def style_check(verdict: Verdict | None, config: GateConfig) -> Check:
    """``verdict``: the frame against the style anchors by image embedding (None: no anchors)."""
    if verdict is None:
        return Check(check="style", passed=True, detail="the project has no style anchors")
    return Check(
        check="style",
        passed=verdict.verdict == "verified",
        verdict=verdict.verdict,
        score=verdict.score,
        threshold=config.style,
        detail=verdict.reason or "image embedding against the project's style anchors",
    )


def report(checks: list[Check], config: GateConfig) -> dict[str, Any]:
    failed = [c.check + (f":{c.character}" if c.character else "") for c in checks if not c.passed]
    return {
        "passed": not failed,
        "failed": failed,
        "checks": [c.model_dump(exclude_none=True) for c in checks],
        "thresholds": config.model_dump(),
    }
