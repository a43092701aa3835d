"""Faces in a photo: MediaPipe detection, a 468-point mesh on the primary face, head pose.

This is the one module that imports mediapipe; `_to_face` is the one place a MediaPipe
result becomes our `Face`. The mesh model runs through LiteRT (the Tasks FaceLandmarker
scatters points when fed the legacy model, see DESIGN). All coordinates are pixels of the
full-size image as displayed.
"""

from __future__ import annotations

import atexit
import math
import threading
import weakref
from dataclasses import dataclass, field

import cv2
import numpy as np

from .boxes import covered, iou
from .config import DETECTOR_MIN_SCORE, LANDMARK_CROP_SCALE, LANDMARK_INPUT
from .ingest import LoadedImage
from .modelfiles import model_path
from .nativelog import quiet_native_stderr

__all__ = ["Face", "Mesh", "HeadPose", "FaceFinder", "head_pose", "primary_index"]

DETECTOR_MODEL = "face_detection_full_range_sparse.tflite"
MESH_MODEL = "face_landmark.tflite"
#: Margin around the photo for the second detection pass, as a share of its long side.
DETECT_PADDING = 0.25
#: Two detections from different passes are the same face from this overlap (IoU).
SAME_FACE_IOU = 0.3
#: A weaker detection with this share of its box inside a stronger one is a second, shifted
#: box of the same face (the detector gives some for faces in profile), not another face.
SAME_FACE_COVER = 0.5

# Mesh indices (MediaPipe canonical face mesh).
MESH_RIGHT_EYE_OUTER, MESH_LEFT_EYE_OUTER = 33, 263
MESH_FOREHEAD, MESH_CHIN = 10, 152
#: On a frontal face the mesh's forehead-chin line leans about 8 degrees (median over the
#: dev-set passes); subtracted so that 0 pitch means looking straight ahead.
_MESH_PITCH_OFFSET = 8.0


@dataclass(frozen=True)
class Face:
    """One detected face."""

    xyxy: tuple[float, float, float, float]
    """Detector box [x1, y1, x2, y2] in displayed-image pixels (may reach past the border)."""
    score: float
    """Detector confidence in [0, 1]."""
    keypoints: tuple[tuple[float, float], ...]
    """Six (x, y) pixels: right eye, left eye, nose tip, mouth, right ear, left ear (the
    person's right is on the image's left)."""

    @property
    def side(self) -> float:
        """Side of the box made square, in pixels."""
        return max(self.xyxy[2] - self.xyxy[0], self.xyxy[3] - self.xyxy[1])


@dataclass(frozen=True)
class Mesh:
    """468 face-mesh points on the primary face."""

    points: np.ndarray = field(repr=False)
    """(468, 3) float: x, y in displayed-image pixels, z relative depth in the same unit."""
    presence: float
    """The mesh model's face-presence probability."""


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees; 0 / 0 / 0 is frontal and upright."""

    yaw: float
    """Turn left/right, positive towards the image's right."""
    pitch: float
    """Nod, positive when looking up."""
    roll: float
    """In-plane tilt, positive clockwise on screen."""


class FaceFinder:
    """Loads the detector and the mesh model once; `close()` or use as a context manager."""

    def __init__(self) -> None:
        detector_file, mesh_file = model_path(DETECTOR_MODEL), model_path(MESH_MODEL)  # verify first
        with quiet_native_stderr():
            import mediapipe as mp
            from ai_edge_litert.interpreter import Interpreter
            from mediapipe.tasks.python import BaseOptions, vision

            self._mp = mp
            options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=detector_file),
                running_mode=vision.RunningMode.IMAGE,
                min_detection_confidence=DETECTOR_MIN_SCORE)
            self._detector = vision.FaceDetector.create_from_options(options)
            self._mesh = Interpreter(model_path=mesh_file, num_threads=1)
            self._mesh.allocate_tensors()
            self._mesh_in = self._mesh.get_input_details()[0]["index"]
            outs = {o["name"]: o["index"] for o in self._mesh.get_output_details()}
            self._mesh_points, self._mesh_presence = outs["conv2d_21"], outs["conv2d_31"]
            self._detect_raw(np.zeros((480, 640, 3), np.uint8))  # first-call set-up, hidden
            self._mesh.set_tensor(self._mesh_in, np.zeros((1, LANDMARK_INPUT, LANDMARK_INPUT, 3), np.float32))
            self._mesh.invoke()
        self._closed = False
        _close_at_exit(self)

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe task and the interpreter; safe to call twice."""
        if not getattr(self, "_closed", True):
            with quiet_native_stderr():  # the runtimes log their teardown on fd 2
                self._detector.close()
                del self._mesh
            self._closed = True

    def _detect_raw(self, bgr: np.ndarray) -> list:
        rgb = _aligned_like(bgr)
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=rgb)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        # the runtime warns on fd 2 whenever its internal tensor happens to be unaligned
        with quiet_native_stderr():
            return list(self._detector.detect(image).detections)

    def detect(self, image: LoadedImage) -> list[Face]:
        """Every face scoring at least the detector floor, best score first, without the
        extra boxes the detector sometimes puts on a face it already boxed.

        Runs twice: on the photo, and on the photo inside a black margin of DETECT_PADDING
        (the close-up fix of FaceFusion and insightface users). The padded pass finds faces
        that fill the frame or run past the border and reports their boxes unclipped; the
        plain pass keeps small faces sharp. Matching detections are merged.
        """
        h, w = image.pixels.shape[:2]
        plain = [_to_face(d, (w, h), (0, 0), image.scale) for d in self._detect_raw(image.pixels)]
        pad = int(DETECT_PADDING * max(h, w))
        framed = cv2.copyMakeBorder(image.pixels, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        padded = [_to_face(d, (w + 2 * pad, h + 2 * pad), (pad, pad), image.scale)
                  for d in self._detect_raw(framed)]
        merged = list(padded)
        for face in plain:
            match = next((i for i, other in enumerate(merged) if iou(face.xyxy, other.xyxy) >= SAME_FACE_IOU), None)
            if match is None:
                merged.append(face)
            else:
                # the padded box only where it runs past the border (the plain one is clipped
                # there); inside, the plain pass sees the face larger and boxes it tighter
                wide = merged[match]
                inside = wide.xyxy[0] >= 0 and wide.xyxy[1] >= 0 and wide.xyxy[2] <= image.info.width \
                    and wide.xyxy[3] <= image.info.height
                best = face if inside else wide
                merged[match] = Face(best.xyxy, max(face.score, wide.score), best.keypoints)
        faces: list[Face] = []
        for face in sorted(merged, key=lambda f: -f.score):
            if all(covered(face.xyxy, stronger.xyxy) < SAME_FACE_COVER for stronger in faces):
                faces.append(face)
        return faces

    def score_turned(self, image: LoadedImage, face: Face) -> float:
        """The detector's score for `face` with the photo turned by 180 degrees (0.0 when it
        is not found so). The detector was trained on upright faces, while the mesh fits an
        upside-down face as if it were upright: comparing scores tells which way is up."""
        h, w = image.pixels.shape[:2]
        width, height = image.info.width, image.info.height
        best = 0.0
        for detection in self._detect_raw(cv2.rotate(image.pixels, cv2.ROTATE_180)):
            turned = _to_face(detection, (w, h), (0, 0), image.scale)
            x1, y1, x2, y2 = turned.xyxy
            if iou((width - x2, height - y2, width - x1, height - y1), face.xyxy) >= SAME_FACE_IOU:
                best = max(best, turned.score)
        return best

    def mesh(self, image: LoadedImage, face: Face) -> Mesh:
        """Run the mesh model on a crop of `face`, rotated so the eyes are level."""
        sx, sy = image.scale
        kp = np.array(face.keypoints[:2]) / (sx, sy)
        x1, y1, x2, y2 = np.array(face.xyxy) / (sx, sy, sx, sy)
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        side = LANDMARK_CROP_SCALE * max(x2 - x1, y2 - y1)
        angle = math.degrees(math.atan2(kp[1][1] - kp[0][1], kp[1][0] - kp[0][0]))
        m = cv2.getRotationMatrix2D(centre, angle, LANDMARK_INPUT / side)
        m[:, 2] += (LANDMARK_INPUT / 2 - centre[0], LANDMARK_INPUT / 2 - centre[1])
        crop = cv2.warpAffine(image.pixels, m, (LANDMARK_INPUT, LANDMARK_INPUT), flags=cv2.INTER_LINEAR)
        tensor = (crop[:, :, ::-1].astype(np.float32) / 255.0)[None]
        self._mesh.set_tensor(self._mesh_in, tensor)
        self._mesh.invoke()
        pts = self._mesh.get_tensor(self._mesh_points).reshape(468, 3).astype(np.float64)
        logit = float(self._mesh.get_tensor(self._mesh_presence).reshape(-1)[0])
        inv = cv2.invertAffineTransform(m)
        xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
        z = pts[:, 2] * (side / LANDMARK_INPUT)
        full = np.column_stack([xy[:, 0] * sx, xy[:, 1] * sy, z * (sx + sy) / 2])
        return Mesh(points=full, presence=1.0 / (1.0 + math.exp(-logit)))


def _close_at_exit(finder: FaceFinder) -> None:
    """Close a finder left open at exit, before thread pools stop.

    MediaPipe closes its task through a thread pool; plain atexit hooks run after pools are
    shut down, and the task's __del__ then prints a traceback. threading's own exit hooks run
    first (concurrent.futures uses them); plain atexit where they do not exist.
    """
    ref = weakref.ref(finder)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    register = getattr(threading, "_register_atexit", None)
    (register or atexit.register)(close)


def _aligned_like(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """An empty array shaped like `array` whose data starts on an `alignment`-byte boundary
    (LiteRT copies, and warns on stderr, when an input tensor is not aligned)."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)


def _to_face(detection, size_wh: tuple[int, int], offset: tuple[int, int],
             scale: tuple[float, float]) -> Face:
    """The one conversion from a MediaPipe detection to our Face.

    `size_wh` is the detector input's size, `offset` where the working copy sits in it, and
    `scale` maps working pixels to displayed pixels.
    """
    sx, sy = scale
    ox, oy = offset
    b = detection.bounding_box
    xyxy = ((b.origin_x - ox) * sx, (b.origin_y - oy) * sy,
            (b.origin_x + b.width - ox) * sx, (b.origin_y + b.height - oy) * sy)
    kps = tuple(((k.x * size_wh[0] - ox) * sx, (k.y * size_wh[1] - oy) * sy) for k in detection.keypoints)
    return Face(xyxy=xyxy, score=float(detection.categories[0].score), keypoints=kps)


def primary_index(faces: list[Face], width: int, height: int) -> int:
    """Index of the main subject: largest face with a penalty for distance from the centre
    (the insightface ranking: area - 2 x squared distance to the image centre)."""
    def rank(f: Face) -> float:
        x1, y1, x2, y2 = f.xyxy
        dx, dy = (x1 + x2 - width) / 2, (y1 + y2 - height) / 2
        return (x2 - x1) * (y2 - y1) - 2.0 * (dx * dx + dy * dy)
    return max(range(len(faces)), key=lambda i: rank(faces[i]))


def head_pose(mesh: Mesh) -> HeadPose:
    """Yaw, pitch and roll from the mesh's own 3-D axes (eye line and forehead-chin line)."""
    p = mesh.points
    ex = p[MESH_LEFT_EYE_OUTER] - p[MESH_RIGHT_EYE_OUTER]
    down = p[MESH_CHIN] - p[MESH_FOREHEAD]
    ex = ex / np.linalg.norm(ex)
    ez = np.cross(ex, down)
    ez = ez / np.linalg.norm(ez)
    ey = np.cross(ez, ex)
    roll = math.degrees(math.atan2(ex[1], ex[0]))
    # yaw and pitch from the depth parts of the eye line and of the face's vertical axis
    yaw = math.degrees(math.asin(float(np.clip(-ex[2], -1, 1))))
    pitch = -math.degrees(math.asin(float(np.clip(ey[2], -1, 1)))) + _MESH_PITCH_OFFSET
    return HeadPose(yaw=round(yaw, 1), pitch=round(pitch, 1), roll=round(roll, 1))
