"""Is there a hand in front of the face? MediaPipe's hand landmark model through LiteRT.

The model was made to run on a crop around one hand and to say, with its hand-presence
output, whether a hand is really there. Run on a square around the mouth, that score tells
a hand over the mouth (skin-coloured, so colour cannot) from a visible mouth. Used by the
face_occluded rule only when no other error has already rejected the photo.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import HAND_INPUT, HAND_THREADS
from .ingest import LoadedImage
from .modelfiles import model_path
from .nativelog import quiet_native_stderr

__all__ = ["HandFinder"]

HAND_MODEL = "hand_landmark_lite.tflite"


class HandFinder:
    """Loads the hand landmark model once; `presence(image, centre, side)` per photo."""

    def __init__(self) -> None:
        with quiet_native_stderr():
            from ai_edge_litert.interpreter import Interpreter

            self._net = Interpreter(model_path=model_path(HAND_MODEL), num_threads=HAND_THREADS)
            self._net.allocate_tensors()
            self._in = self._net.get_input_details()[0]["index"]
            self._presence = {o["name"]: o["index"] for o in self._net.get_output_details()}["Identity_1"]
            self._net.set_tensor(self._in, np.zeros((1, HAND_INPUT, HAND_INPUT, 3), np.float32))
            self._net.invoke()

    def close(self) -> None:
        """Release the interpreter; safe to call twice."""
        if hasattr(self, "_net"):
            with quiet_native_stderr():
                del self._net

    def presence(self, image: LoadedImage, centre_xy: tuple[float, float], side: float) -> float:
        """Hand-presence probability (0-1) in the square of `side` displayed pixels centred at
        `centre_xy` (black outside the photo)."""
        sx, sy = image.scale
        kx, ky = HAND_INPUT * sx / side, HAND_INPUT * sy / side  # working pixels -> model input
        cx, cy = centre_xy[0] / sx, centre_xy[1] / sy
        m = np.array([[kx, 0, HAND_INPUT / 2 - kx * cx], [0, ky, HAND_INPUT / 2 - ky * cy]])
        crop = cv2.warpAffine(image.pixels, m, (HAND_INPUT, HAND_INPUT), flags=cv2.INTER_AREA,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        self._net.set_tensor(self._in, (crop[:, :, ::-1].astype(np.float32) / 255.0)[None])
        self._net.invoke()
        return float(self._net.get_tensor(self._presence).reshape(-1)[0])
