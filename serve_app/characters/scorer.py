"""The identity judge: a version's anchors from its references, and a verdict for any image.

    anchors:  each reference's best face (SFace, unit length) and its CLIP image embedding
              (with an image encoder); each anchor is their mean, made unit length again
    judge:    the image's best face against the face anchor (``verified`` at or above
              ``thresholds.face``, else ``off_model``); for a character whose references show
              no face, the image embedding against the image anchor (``thresholds.image``);
              otherwise ``unscorable``, with the reason: never a pass
    cast:     several characters in one image (a storyboard frame): its faces are assigned to
              the characters with a face anchor so that the summed similarity is highest, one
              face a character and one character a face (``linear_sum_assignment``), so two
              characters are never verified by the same face; a character left without a face
              is ``unscorable``, saying so; each faceless one is judged by image embedding

The image embedding is asked for only when the fallback judges, and the caller may hand in
the one it already has (Dedupe embeds every render once, for novelty and identity alike).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from serve_app.characters.faces import MODEL_NAMES, Face, FaceEmbedder, NoFace
from serve_app.characters.verdicts import IdentityAnchors, IdentityThresholds, Verdict
from serve_app.errors import UnusableSource

ImageEmbedding = Callable[[np.ndarray], np.ndarray]


def decoded(image: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, WebP, GIF) as (H, W, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            return np.asarray(opened.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnusableSource("image: not a decodable PNG, JPEG, WebP or GIF image") from exc


def mean_unit(vectors: list[np.ndarray]) -> list[float] | None:
    if not vectors:
        return None
    mean = np.mean(np.stack(vectors), axis=0)
    return [float(v) for v in mean / max(float(np.linalg.norm(mean)), 1e-12)]


class IdentityScorer:
    """Faces by YuNet + SFace; faceless characters by ``embed`` (a CLIP image encoder named
    ``image_model``), if there is one."""

    def __init__(
        self,
        faces: FaceEmbedder,
        embed: ImageEmbedding | None = None,
        image_model: str | None = None,
    ) -> None:
        self.faces = faces
        self.embed = embed
        self.image_model = image_model if embed is not None else None

    def anchors(self, references: list[np.ndarray]) -> IdentityAnchors:
        found = [self.faces.best_face(pixels) for pixels in references]
        face_vectors = [f.embedding for f in found if isinstance(f, Face)]
        image_vectors = [self.embed(p) for p in references] if self.embed is not None else []
        models = list(MODEL_NAMES) if face_vectors else []
        return IdentityAnchors(
            face_anchor=mean_unit(face_vectors),
            image_anchor=mean_unit(image_vectors),
            models=models + ([self.image_model] if self.image_model else []),
            reference_count=len(references),
            face_count=len(face_vectors),
        )

    def judge(
        self,
        pixels: np.ndarray,
        anchors: IdentityAnchors,
        thresholds: IdentityThresholds,
        embedding: np.ndarray | None = None,
    ) -> Verdict:
        """``pixels`` against ``anchors``; ``embedding``: its image embedding, if already made."""
        if anchors.face_anchor is not None:
            face = self.faces.best_face(pixels)
            if not isinstance(face, Face):
                return _no_face(face.reason)
            return _by_face(face, _similarity(face, anchors), thresholds)
        return self._by_image(pixels, anchors, thresholds, embedding)

    def judge_cast(
        self, pixels: np.ndarray, cast: list[IdentityAnchors], thresholds: IdentityThresholds
    ) -> list[Verdict]:
        """Each character of ``cast`` against its own face in ``pixels``, in cast order."""
        from scipy.optimize import linear_sum_assignment

        verdicts = {
            i: self._by_image(pixels, anchors, thresholds, None)
            for i, anchors in enumerate(cast)
            if anchors.face_anchor is None
        }
        by_face = [i for i, anchors in enumerate(cast) if anchors.face_anchor is not None]
        found: list[Face] | NoFace = self.faces.faces(pixels) if by_face else []
        if isinstance(found, NoFace):
            verdicts |= {i: _no_face(found.reason) for i in by_face}
            found = []
        scores = np.array([[_similarity(f, cast[i]) for i in by_face] for f in found])
        faces_of, characters = linear_sum_assignment(scores, maximize=True) if found else ((), ())
        for face, column in zip(faces_of, characters, strict=True):
            verdicts[by_face[column]] = _by_face(found[face], scores[face, column], thresholds)
        taken = f"the frame's {len(found)} face(s) went to other characters of the cast"
        return [verdicts.get(i) or _no_face(taken) for i in range(len(cast))]

    def _by_image(
        self,
        pixels: np.ndarray,
        anchors: IdentityAnchors,
        thresholds: IdentityThresholds,
        embedding: np.ndarray | None,
    ) -> Verdict:
        """The fallback for a character whose references show no face."""
        if anchors.image_anchor is None or self.embed is None:
            reason = "the references show no face and no image embedding anchors them"
            return Verdict(verdict="unscorable", reason=reason)
        if self.image_model not in anchors.models:
            reason = f"the image anchor was not made by {self.image_model}"
            return Verdict(verdict="unscorable", reason=reason)
        vector = self.embed(pixels) if embedding is None else embedding
        score = float(np.dot(vector, np.asarray(anchors.image_anchor, np.float32)))
        return Verdict(
            verdict="verified" if score >= thresholds.image else "off_model",
            score=score,
            threshold=thresholds.image,
            scorer="image",
            models=[self.image_model] if self.image_model else [],
            reason="the references show no face: judged by image embedding",
        )


def _similarity(face: Face, anchors: IdentityAnchors) -> float:
    return float(np.dot(face.embedding, np.asarray(anchors.face_anchor, np.float32)))


def _by_face(face: Face, score: float, thresholds: IdentityThresholds) -> Verdict:
    return Verdict(
        verdict="verified" if score >= thresholds.face else "off_model",
        score=float(score),
        threshold=thresholds.face,
        scorer="face",
        models=list(MODEL_NAMES),
        face_box=face.box,
    )


def _no_face(reason: str) -> Verdict:
    return Verdict(verdict="unscorable", models=list(MODEL_NAMES), reason=reason)
