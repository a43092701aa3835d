"""What the pixels show of the mouth, the nose and the eyes (for the face_occluded rule).

The mesh model places lips and eyes even under a mask or behind sunglasses: its points say
where to look, never whether the part is visible. What is measured there:

- warmth: skin of every tone has a warm chroma (red-yellow in Lab), and so do lips. The
  warmth of a patch is its chroma projected on the person's own skin chroma, as a share of
  it: ~1 on skin and lips, ~0 on a white, grey, black or blue mask, negative on a coloured
  one. The reference is the warmest of several upper-face patches (forehead, brow, nose
  bridge, under the eyes), so a hat, a fringe or a mask's top edge does not become it.
- mouth contrast: grey-level spread inside the lip outline against the spread of the whole
  face. A visible mouth has the line between the lips, teeth, the lip border; a plain mask
  has none of them, whatever its colour.
- eye contrast: spread inside each eye outline (sclera against iris and lashes) relative
  to the skin's brightness; a covering flattens it. A dark lens may not (its reflections),
  but it also hides the skin just below the eye: neither warm nor bright there.

All are ratios of the face to itself, so skin tone and exposure cancel out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .faces import Mesh
from .ingest import LoadedImage

__all__ = ["Coverage", "measure_coverage"]

# Mesh indices (MediaPipe canonical face mesh).
#: Upper-face skin patches, candidates for the skin reference: forehead, brow centre, nose
#: bridge, under both eyes, both cheekbones.
_SKIN = (151, 108, 337, 9, 6, 168, 118, 347, 101, 330, 50, 280)
#: The nose below the bridge: tip, under the tip, the wings (a mask covers them).
_NOSE = (4, 1, 5, 45, 275, 44, 274)
#: Points on the lips, both outer and inner.
_LIPS = (0, 17, 37, 267, 84, 314, 40, 270, 91, 321, 13, 14)
#: The lips' outer outline, in order.
_LIP_OUTLINE = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
#: The eye outlines (the person's right eye is on the image's left).
_EYES = {"right_eye": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
         "left_eye": (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)}
#: The skin just below each eye, which a sunglass lens hides with the eye (the lens's
#: reflections can give the eye outline itself plenty of contrast).
_BELOW_EYES = {"right_eye": (228, 229, 230, 231, 22, 23, 24), "left_eye": (448, 449, 450, 451, 252, 253, 254)}
_ALL = tuple(dict.fromkeys(_SKIN + _NOSE + _LIPS + sum(_BELOW_EYES.values(), ())))
#: The skin reference is the median of this many warmest upper-face patches: a mask's top
#: edge, a hat or a fringe cover fewer than the others, and one rosy patch does not set it.
_SKIN_REF_COUNT = 4
#: Side (px) the face is brought down to before measuring: cost stays flat, and every ratio
#: below is measured at one scale whatever the photo's resolution.
MEASURE_SIDE = 160
#: Patch half-side as a share of the face size: large enough to average out skin texture and
#: JPEG noise, small enough to stay on one feature.
_PATCH = 0.03
#: Lab chroma below which the skin reference has no hue to compare with (a black-and-white
#: photo, a strong colour filter): the warmth cues are then not measured.
MIN_SKIN_CHROMA = 5.0


@dataclass(frozen=True)
class Coverage:
    """Measurements of the primary face; warmths are None when the colour cue is unusable."""

    nose_warmth: float | None
    lips_warmth: float | None
    mouth_contrast: float
    """Grey spread inside the lip outline / grey spread of the whole face."""
    eye_contrast: dict[str, float]
    """By "right_eye" / "left_eye" (the person's own sides): grey-level spread (90th - 10th
    percentile) inside the eye outline over the skin's brightness."""
    below_eye: dict[str, tuple[float | None, float]]
    """By eye: (warmth, lightness as a share of the skin's) of the skin just below it."""
    mouth_xy: tuple[float, float]
    """Centre of the mouth in displayed pixels (where a hand would be looked for)."""
    face_side: float
    """Size of the mesh (longer side of its bounding box) in displayed pixels."""


def measure_coverage(image: LoadedImage, mesh: Mesh) -> Coverage:
    """Measure the face's own pixels at the mesh's mouth, nose and eyes."""
    sx, sy = image.scale
    pts = mesh.points[:, :2] / (sx, sy)
    side = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))
    mouth = (pts[13] + pts[14]) / 2 * (sx, sy)
    # the face's bounding box only, at MEASURE_SIDE px: the cost does not grow with the face
    h, w = image.pixels.shape[:2]
    x0, y0 = np.clip(np.floor(pts.min(axis=0)).astype(int), 0, (w - 1, h - 1))
    x1, y1 = np.clip(np.ceil(pts.max(axis=0)).astype(int) + 1, (x0 + 1, y0 + 1), (w, h))
    k = min(1.0, MEASURE_SIDE / max(side, 1.0))
    crop = cv2.resize(image.pixels[y0:y1, x0:x1], None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    pts = (pts - (x0, y0)) * k
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).astype(np.float32)
    grey = lab[:, :, 0]
    r = max(2, int(round(_PATCH * side * k)))

    colours = dict(zip(_ALL, _patch_medians(lab, pts[list(_ALL)], r), strict=True))
    # skin of every tone has a red-yellow hue (a* > 0, b* > 0): a blue mask's edge or a printed
    # pattern is not taken for skin, however saturated
    skin_hued = [c for c in (colours[i] for i in _SKIN) if c[1] > 128.0 and c[2] > 128.0]
    warmest = sorted(skin_hued, key=_chroma)[-_SKIN_REF_COUNT:]
    ref = np.median(np.stack(warmest), axis=0) if warmest else np.median(np.stack([colours[i] for i in _SKIN]), axis=0)
    chroma = _chroma(ref) if warmest else 0.0
    usable = chroma >= MIN_SKIN_CHROMA

    def warmth(indices: tuple[int, ...]) -> float | None:
        return float(np.median([_warmth(colours[i], ref) for i in indices])) if usable else None

    def lightness(indices: tuple[int, ...]) -> float:
        return float(np.median([colours[i][0] for i in indices])) / max(float(ref[0]), 1.0)

    face_spread = _spread_in(grey, cv2.convexHull(pts.astype(np.int32)))
    lips_spread = _spread_in(grey, pts[list(_LIP_OUTLINE)].astype(np.int32))
    skin_l = float(ref[0])
    eyes = {}
    for name, outline in _EYES.items():
        values = _values_in(grey, pts[list(outline)].astype(np.int32))
        spread = float(np.percentile(values, 90) - np.percentile(values, 10)) if values.size >= 4 else 0.0
        eyes[name] = spread / max(skin_l, 1.0)
    return Coverage(nose_warmth=warmth(_NOSE), lips_warmth=warmth(_LIPS),
                    mouth_contrast=lips_spread / max(face_spread, 1.0), eye_contrast=eyes,
                    below_eye={name: (warmth(idx), lightness(idx)) for name, idx in _BELOW_EYES.items()},
                    mouth_xy=(float(mouth[0]), float(mouth[1])), face_side=side * max(sx, sy))


def _patch_medians(lab: np.ndarray, xy: np.ndarray, r: int) -> np.ndarray:
    """(n, 3) median Lab colours of the squares of half-side `r` at the points `xy` (a square
    reaching past the crop is moved inside it); one median over all squares at once."""
    h, w = lab.shape[:2]
    s = 2 * r + 1
    if h < s or w < s:
        return np.repeat(np.median(lab.reshape(-1, 3), axis=0)[None], len(xy), axis=0)
    x0 = np.clip(np.round(xy[:, 0]).astype(int) - r, 0, w - s)
    y0 = np.clip(np.round(xy[:, 1]).astype(int) - r, 0, h - s)
    squares = np.stack([lab[y:y + s, x:x + s] for x, y in zip(x0, y0, strict=True)])
    return np.median(squares.reshape(len(xy), -1, 3), axis=1)


def _chroma(lab: np.ndarray) -> float:
    return float(np.hypot(lab[1] - 128.0, lab[2] - 128.0))


def _warmth(lab: np.ndarray, ref: np.ndarray) -> float:
    """Chroma of `lab` projected on the reference's chroma, as a share of the reference's."""
    c = ref[1:] - 128.0
    return float((lab[1:] - 128.0) @ c / float(c @ c))


def _values_in(grey: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillPoly(mask, [polygon], 1)
    return grey[mask > 0]


def _spread_in(grey: np.ndarray, polygon: np.ndarray) -> float:
    values = _values_in(grey, polygon)
    return float(values.std()) if values.size >= 4 else 0.0
