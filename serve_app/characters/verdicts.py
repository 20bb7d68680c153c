"""What judging a render's identity speaks in: anchors, thresholds, verdicts, conditioning.

Where the judge runs: in **Dedupe**, which already embeds every render with its CLIP model to
judge novelty. One call judges novelty and identity (``Dedupe.check(frames, known, identity)``),
so the image-embedding fallback reuses that one embedding: one image embedding per render, not
two, and no extra hop (a separate box would add a round trip per render and a second copy of the
CLIP model). The handle methods the API calls on ``handles.dedupe``:

    identity_anchors(images: list[bytes]) -> IdentityAnchors
        the anchors of a version's references (encoded images), computed at lock time
    judge_identity(image: bytes, anchors: IdentityAnchors, thresholds: IdentityThresholds)
        -> Verdict: any image against a version (the score route)
    check(frames, known, identity: IdentityJudging | None) -> DedupeVerdict
        a render: novelty, and with ``identity`` its ``DedupeVerdict.identity`` verdict

The rules (``serve_app.characters.scorer``): the best face (YuNet) is embedded (SFace) and its
cosine to the face anchor decides (``verified`` at or above ``thresholds.face``, else
``off_model``); without a face in the image or in the references, the image embedding's cosine
to the image anchor decides against ``thresholds.image``; when neither applies the verdict is
``unscorable``, never a pass.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VerdictName = Literal["verified", "off_model", "unscorable"]
Scorer = Literal["face", "image"]

# SFace's own calibrated cosine threshold (OpenCV's face recognition sample: same person at or
# above 0.363 on LFW).
SFACE_COSINE = 0.363


class Verdict(BaseModel):
    """Whether an image shows a character: what the identity scorer found."""

    verdict: VerdictName = Field(
        description="verified: the character; off_model: scorable and someone else; "
        "unscorable: neither a face nor an image embedding could judge it (never a pass)."
    )
    score: float | None = Field(
        default=None, description="Cosine similarity to the anchor the scorer compared with."
    )
    threshold: float | None = Field(
        default=None, description="The cosine at or above which the scorer verifies."
    )
    scorer: Scorer | None = Field(
        default=None, description="face: YuNet + SFace; image: the CLIP image-embedding fallback."
    )
    models: list[str] = Field(
        default_factory=list, description="The models that judged (detector, recognizer, CLIP)."
    )
    face_box: list[int] | None = Field(
        default=None, description="The judged face as [x, y, width, height] pixels, if any."
    )
    reason: str | None = Field(
        default=None, description="Why the image is unscorable or judged by the fallback."
    )


class IdentityAnchors(BaseModel):
    """A locked version's anchors: the mean of its references' unit embeddings, re-normalized."""

    face_anchor: list[float] | None = Field(
        default=None, description="Mean SFace embedding of the references' faces (None: no face)."
    )
    image_anchor: list[float] | None = Field(
        default=None, description="Mean CLIP image embedding of the references (None: no model)."
    )
    models: list[str] = Field(
        default_factory=list, description="The models the anchors were computed with."
    )
    reference_count: int = Field(default=0, ge=0, description="References the anchors came from.")
    face_count: int = Field(default=0, ge=0, description="References in which a face was found.")


class IdentityThresholds(BaseModel):
    """The consistency gate's knobs (``ingress.identity``, ``worker.identity``)."""

    model_config = ConfigDict(extra="forbid")

    face: float = Field(
        default=SFACE_COSINE,
        ge=-1.0,
        le=1.0,
        description="SFace cosine to the face anchor at or above which a face is the character "
        "(0.363: SFace's calibrated threshold).",
    )
    image: float = Field(
        default=0.85,
        ge=-1.0,
        le=1.0,
        description="CLIP image-embedding cosine to the image anchor at or above which a "
        "faceless image is the character (the fallback for stylised souls).",
    )
    attempts: int = Field(
        default=3,
        ge=1,
        le=16,
        description="Renders tried per new variant of a soul with an identity before the best "
        "is delivered and flagged.",
    )


class IdentityConditioning(BaseModel):
    """What the Renderer and the Animator condition a render on (``RenderJob.identity``)."""

    soul_id: str
    version: int = Field(ge=1, description="The locked identity version.")
    reference_keys: list[str] = Field(
        min_length=1, description="Object keys of the version's reference images."
    )
    strength: float = Field(ge=0.0, le=1.0, description="The IP-Adapter scale.")

    def embeds_key(self, adapter: str) -> str:
        """Where the version's image embedding for IP-Adapter ``adapter`` (a model ref's name)
        is cached in the object store."""
        return f"soul/{self.soul_id}/identity/{self.version}/ip_adapter/{adapter}.npy"


class RegionIdentity(BaseModel):
    """An identity that conditions one region of the frame only (``RenderJob.cast``): the
    IP-Adapter's attention to it is masked to ``box``."""

    identity: IdentityConditioning
    box: tuple[float, float, float, float] = Field(
        description="The region as fractions of the frame: left, top, right, bottom."
    )

    @model_validator(mode="after")
    def _a_box_in_the_frame(self) -> RegionIdentity:
        left, top, right, bottom = self.box
        if not (0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0):
            raise ValueError("a box needs 0 <= left < right <= 1 and 0 <= top < bottom <= 1")
        return self


class IdentityJudging(BaseModel):
    """What judging a render against a version needs: sent with ``Dedupe.check``."""

    anchors: IdentityAnchors
    thresholds: IdentityThresholds


class IdentityStamp(BaseModel):
    """The verdict every answer carries: ``identity: {version, verdict, score}``."""

    version: int
    verdict: VerdictName
    score: float | None = None


class IdentityUse(BaseModel):
    """The identity a new variant is made with (``Order.identity``): the soul's latest locked
    version, or the one a request pinned."""

    version: int = Field(ge=1)
    anchors: IdentityAnchors
    conditioning: IdentityConditioning
