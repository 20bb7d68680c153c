"""The consistency gate's report, pure: what each check found about one rendered frame.

    identity  per character of the scene's cast: its own face in the frame (the frame's faces
              assigned to the cast, ``IdentityScorer.judge_cast``) against the anchors of the
              character's pinned version, or the image-embedding fallback (``Verdict``);
              ``verified`` passes, ``off_model`` fails, and ``unscorable`` fails too unless
              ``unscorable_passes`` (never silently: the report says why)
    style     the frame's image embedding against the project's style anchors (their mean),
              at or above ``style`` cosine; skipped (and so passed) when the project has no
              style-anchor images
    asset     per environment, nature and prop of the scene whose pinned version has a locked
              image: the frame's image embedding against the version's (the mean of its
              images' embeddings by the same model, kept in ``asset_image_embed``; computed
              from its image when none is kept), at or above ``scenery`` cosine
              (environment, nature) or ``prop``; fails as style drift does: only a score at
              or above the threshold passes, and without an image model the check is
              ``unscorable``, saying so; an asset without an image has no check (its
              canonical prompt alone carries it)
    prompt    the stored prompt equals the one the scene compiles to now (no hidden mutation)
    seed      the stored seed is the one the inheritance rule gives

A frame passes when every check passes; otherwise it is ``needs_review`` with this report
(which check, which character or asset, scores, thresholds).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve_app.characters.verdicts import SFACE_COSINE, Verdict
from serve_app.diffusion.image_embedding import unpacked
from serve_app.stories.graph import AssetPin


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
    scenery: float = Field(
        default=0.6,
        ge=-1.0,
        le=1.0,
        description="Image-embedding cosine of the frame to each environment or nature asset's "
        "locked images at or above which the frame has not drifted from it.",
    )
    prop: float = Field(
        default=0.5,
        ge=-1.0,
        le=1.0,
        description="Image-embedding cosine of the frame to each prop's locked images at or "
        "above which the frame has not drifted from it (a prop fills less of the frame).",
    )
    unscorable_passes: bool = Field(
        default=False, description="A character no scorer can judge passes (recorded as such)."
    )


class Check(BaseModel):
    check: Literal["identity", "style", "asset", "prompt", "seed"]
    passed: bool
    character: str | None = Field(default=None, description="The asset id, for identity.")
    asset: str | None = Field(default=None, description="The asset id, for asset drift.")
    asset_type: str | None = Field(default=None, description="environment, nature or prop.")
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


def drift(frame: bytes, images: list[bytes]) -> float:
    """The cosine of a frame's image embedding to the mean of an asset version's images'
    (packed embeddings by one model, as Dedupe makes them)."""
    vector = unit(unpacked(frame))
    anchor = unit(np.mean(np.stack([unit(unpacked(image)) for image in images]), axis=0))
    return float(np.dot(vector, anchor))


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def asset_check(pin: AssetPin, judged: tuple[str, float] | None, config: GateConfig) -> Check:
    """An environment, nature or prop of the scene against the frame (``judged``: the image
    model and the drift cosine; None: no image model to judge by)."""
    threshold = config.prop if pin.asset_type == "prop" else config.scenery
    if judged is None:
        score, verdict = None, "unscorable"
        detail = "no image model embeds the frame (dedupe.clip_model)"
    else:
        model, score = judged
        verdict = "verified" if score >= threshold else "off_model"
        detail = f"image embedding by {model} against {pin.pin}'s locked images"
    return Check(
        check="asset",
        passed=verdict == "verified",
        asset=pin.asset_id,
        asset_type=pin.asset_type,
        name=pin.name,
        verdict=verdict,
        score=score,
        threshold=threshold,
        detail=detail,
    )


def report(checks: list[Check], config: GateConfig) -> dict[str, Any]:
    failed = [
        c.check + (f":{who}" if (who := c.character or c.asset) else "")
        for c in checks
        if not c.passed
    ]
    return {
        "passed": not failed,
        "failed": failed,
        "checks": [c.model_dump(exclude_none=True) for c in checks],
        "thresholds": config.model_dump(),
    }
