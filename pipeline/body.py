"""Where the hips are, for the 3:4 (half-body) check: BlazePose landmarks through LiteRT.

The Tasks PoseLandmarker refuses the legacy model (no normalisation metadata), so the
landmark model runs directly on a region of interest derived from the face (DESIGN): a
square of ROI_FACES face sides, centred ROI_DROP_FACES face sides below the face centre,
black outside the image. Only used when the ratio is 3:4.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import POSE_INPUT
from .faces import Face
from .ingest import LoadedImage
from .modelfiles import model_path
from .nativelog import quiet_native_stderr

__all__ = ["Hips", "BodyFinder"]

POSE_MODEL = "pose_landmark_full.tflite"
#: ROI side and centre drop in face sides. BlazePose expects its ROI centred on the hips and
#: wide enough for the whole body; the hips of an upright adult lie ~4 F below the face centre.
#: A tighter ROI nearer the face (7 F, 2.2 F down) pulls the predicted hips towards its centre:
#: on data34's passes they landed 0.9-1.7 F above the labelled hips, with this one within 0.16 F.
ROI_FACES, ROI_DROP_FACES = 12.0, 4.0
_LEFT_HIP, _RIGHT_HIP = 23, 24


@dataclass(frozen=True)
class Hips:
    """The two hip joints the pose model found."""

    points: tuple[tuple[float, float], tuple[float, float]]
    """(x, y) of the left and right hip in displayed-image pixels (may lie outside it)."""
    visibility: float
    """The lower of the two hips' visibility scores, 0-1."""
    person: float
    """The model's person-presence score, 0-1."""


class BodyFinder:
    """Loads the pose landmark model once; `hips(image, face)` per photo. The ROI geometry
    can be changed for experiments (bench/hips.py compares DESIGN's first guess)."""

    def __init__(self, roi_faces: float = ROI_FACES, roi_drop_faces: float = ROI_DROP_FACES) -> None:
        self._roi_faces, self._roi_drop_faces = roi_faces, roi_drop_faces
        with quiet_native_stderr():
            from ai_edge_litert.interpreter import Interpreter

            self._net = Interpreter(model_path=model_path(POSE_MODEL), num_threads=1)
            self._net.allocate_tensors()
            self._in = self._net.get_input_details()[0]["index"]
            outs = {o["name"]: o["index"] for o in self._net.get_output_details()}
            self._landmarks, self._person = outs["Identity"], outs["Identity_1"]
            self._net.set_tensor(self._in, np.zeros((1, POSE_INPUT, POSE_INPUT, 3), np.float32))
            self._net.invoke()

    def close(self) -> None:
        """Release the interpreter; safe to call twice."""
        if hasattr(self, "_net"):
            with quiet_native_stderr():
                del self._net

    def hips(self, image: LoadedImage, face: Face) -> Hips:
        """Hip joints of the person whose face is `face`."""
        sx, sy = image.scale
        x1, y1, x2, y2 = face.xyxy
        side = max(x2 - x1, y2 - y1) / sx
        cx, cy = (x1 + x2) / 2 / sx, (y1 + y2) / 2 / sy + self._roi_drop_faces * side
        roi = self._roi_faces * side
        k = POSE_INPUT / roi
        m = np.array([[k, 0, POSE_INPUT / 2 - k * cx], [0, k, POSE_INPUT / 2 - k * cy]])
        crop = cv2.warpAffine(image.pixels, m, (POSE_INPUT, POSE_INPUT), flags=cv2.INTER_AREA,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        self._net.set_tensor(self._in, (crop[:, :, ::-1].astype(np.float32) / 255.0)[None])
        self._net.invoke()
        lm = self._net.get_tensor(self._landmarks).reshape(39, 5)
        person = float(1.0 / (1.0 + np.exp(-self._net.get_tensor(self._person).reshape(-1)[0])))
        pts = []
        for i in (_LEFT_HIP, _RIGHT_HIP):
            x = (lm[i, 0] - m[0, 2]) / k * sx
            y = (lm[i, 1] - m[1, 2]) / k * sy
            pts.append((float(x), float(y)))
        vis = float(1.0 / (1.0 + np.exp(-min(lm[_LEFT_HIP, 3], lm[_RIGHT_HIP, 3]))))
        return Hips(points=(pts[0], pts[1]), visibility=vis, person=person)
