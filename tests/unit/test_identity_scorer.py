"""The identity scorer on real photographs: Grace Hopper (matplotlib's sample data, public
domain) and Eileen Collins (scikit-image's ``astronaut``, public domain, NASA)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from skimage import data as skimage_data

from serve_app.characters import faces
from serve_app.characters.faces import FaceEmbedder, FaceModelsUnusable, bundled_model
from serve_app.characters.scorer import IdentityScorer, decoded
from serve_app.characters.verdicts import IdentityAnchors, IdentityThresholds
from serve_app.errors import UnusableSource

THRESHOLDS = IdentityThresholds()


def hopper() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def jpeg(pixels: np.ndarray, quality: int = 30) -> np.ndarray:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return decoded(out.getvalue())


def grey(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(pixels).convert("L"))[..., None], 3, axis=2)


AUGMENTED = {
    "mirror": lambda p: np.ascontiguousarray(p[:, ::-1]),
    "crop": lambda p: np.ascontiguousarray(p[40:460, 60:460]),
    "grey": grey,
    "jpeg": jpeg,
    "darker": lambda p: (p * 0.5).astype(np.uint8),
}


@pytest.fixture(scope="module")
def scorer() -> IdentityScorer:
    return IdentityScorer(FaceEmbedder())


@pytest.fixture(scope="module")
def anchors(scorer: IdentityScorer) -> IdentityAnchors:
    return scorer.anchors([hopper()])


@pytest.mark.parametrize("change", sorted(AUGMENTED))
def test_the_same_person_changed_is_verified(
    scorer: IdentityScorer, anchors: IdentityAnchors, change: str
) -> None:
    verdict = scorer.judge(AUGMENTED[change](hopper()), anchors, THRESHOLDS)
    assert verdict.verdict == "verified", verdict
    assert verdict.scorer == "face" and verdict.threshold == pytest.approx(0.363)
    assert verdict.score is not None and verdict.score >= 0.363
    assert verdict.face_box is not None and len(verdict.face_box) == 4
    assert "sface-2021dec-int8bq" in verdict.models


def test_another_person_is_off_model(scorer: IdentityScorer, anchors: IdentityAnchors) -> None:
    verdict = scorer.judge(skimage_data.astronaut(), anchors, THRESHOLDS)
    assert verdict.verdict == "off_model", verdict
    assert verdict.score is not None and verdict.score < 0.363


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two photographs in one frame, at the same height."""
    height = min(left.shape[0], right.shape[0])
    resized = [
        np.asarray(Image.fromarray(p).resize((p.shape[1] * height // p.shape[0], height)))
        for p in (left, right)
    ]
    return np.ascontiguousarray(np.concatenate(resized, axis=1))


def test_each_character_of_a_cast_is_judged_on_its_own_face(scorer: IdentityScorer) -> None:
    """Hopper and Collins in one frame: each verified on her own face, whatever the cast order,
    and the face boxes say which one (Hopper's is the left)."""
    frame = side_by_side(hopper(), skimage_data.astronaut())
    grace, eileen = scorer.anchors([hopper()]), scorer.anchors([skimage_data.astronaut()])
    for cast in ([grace, eileen], [eileen, grace]):
        verdicts = scorer.judge_cast(frame, cast, THRESHOLDS)
        assert [v.verdict for v in verdicts] == ["verified", "verified"], verdicts
    left, right = scorer.judge_cast(frame, [grace, eileen], THRESHOLDS)
    assert left.face_box is not None and right.face_box is not None
    assert left.face_box[0] < right.face_box[0]


def test_two_characters_never_share_one_face(scorer: IdentityScorer) -> None:
    """Two characters anchored on Hopper: one gets her face; the other is left with Collins's
    (off model) or, in a frame of Hopper alone, with no face at all (unscorable, saying so)."""
    grace = scorer.anchors([hopper()])
    both = scorer.judge_cast(
        side_by_side(hopper(), skimage_data.astronaut()), [grace, grace], THRESHOLDS
    )
    assert sorted(v.verdict for v in both) == ["off_model", "verified"], both
    alone = scorer.judge_cast(hopper(), [grace, grace], THRESHOLDS)
    assert sorted(v.verdict for v in alone) == ["unscorable", "verified"], alone
    [left_out] = [v for v in alone if v.verdict == "unscorable"]
    assert left_out.reason is not None and "other characters" in left_out.reason


def test_a_cast_in_a_faceless_frame_is_unscorable(scorer: IdentityScorer) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    grace = scorer.anchors([hopper()])
    verdicts = scorer.judge_cast(noise, [grace, grace], THRESHOLDS)
    assert [(v.verdict, v.reason) for v in verdicts] == [
        ("unscorable", "no face found in the image")
    ] * 2


def test_noise_is_unscorable_never_a_pass(scorer: IdentityScorer, anchors: IdentityAnchors) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    verdict = scorer.judge(noise, anchors, THRESHOLDS)
    assert verdict.verdict == "unscorable" and verdict.score is None
    assert verdict.reason == "no face found in the image"


def test_an_image_too_small_for_the_detector_says_so(
    scorer: IdentityScorer, anchors: IdentityAnchors
) -> None:
    small = np.asarray(Image.fromarray(hopper()).resize((24, 30)))
    verdict = scorer.judge(small, anchors, THRESHOLDS)
    assert verdict.verdict == "unscorable"
    assert (
        verdict.reason is not None and "too small" in verdict.reason and "24x30" in verdict.reason
    )


def test_anchors_are_the_mean_of_unit_face_embeddings(scorer: IdentityScorer) -> None:
    both = scorer.anchors([hopper(), skimage_data.astronaut()])
    assert both.reference_count == 2 and both.face_count == 2
    assert both.face_anchor is not None
    assert np.linalg.norm(both.face_anchor) == pytest.approx(1.0, abs=1e-5)
    assert both.image_anchor is None  # no image encoder: faces only


def test_references_without_a_face_and_no_image_model_leave_it_unscorable(
    scorer: IdentityScorer,
) -> None:
    flat = np.full((128, 128, 3), 200, np.uint8)
    faceless = scorer.anchors([flat])
    assert faceless.face_anchor is None and faceless.face_count == 0
    verdict = scorer.judge(hopper(), faceless, THRESHOLDS)
    assert verdict.verdict == "unscorable" and "no face" in (verdict.reason or "")


def test_the_threshold_is_configurable(scorer: IdentityScorer, anchors: IdentityAnchors) -> None:
    strict = IdentityThresholds(face=0.999)
    assert scorer.judge(AUGMENTED["darker"](hopper()), anchors, strict).verdict == "off_model"


def test_model_files_are_checked_against_their_published_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert bundled_model(faces.YUNET).is_file()
    monkeypatch.setitem(faces.MODEL_SHA256, faces.YUNET, "0" * 64)  # another file than published
    with pytest.raises(FaceModelsUnusable, match="is not the published one"):
        bundled_model(faces.YUNET)


def test_bytes_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(UnusableSource):
        decoded(b"not an image")
