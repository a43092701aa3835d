"""face_bbox and ext_bbox: pure functions over integer pixel boxes [x1, y1, x2, y2].

The ext_bbox rules (DESIGN, calibrated on the dev set), with F the face box side made square
and (cx, cy) its centre:

* 1:1: side 2.5 F centred at (cx, cy - 0.15 F), the one published emo-detect example.
* 3:4: width 3.4 F, height 4/3 of it, horizontally centred, face top at 12 % of the height.

At the border the box is first shifted inside the image, then shrunk, never below a floor
(in face sides) and never so far that it stops containing the face box. Nothing is ever
filled outside the image.
"""

from __future__ import annotations

import math

from .boxes import XYXY
from .config import RATIOS

__all__ = ["face_box", "crop_box", "boxes_for_upload", "EXT_SCALE_11", "EXT_WIDTH_34"]

#: 1:1 side in face sides and upward shift of the centre in face sides (emo-detect sample A).
EXT_SCALE_11, EXT_SHIFT_UP_11 = 2.5, 0.15
#: 3:4 width in face sides and the face top's place as a share of the height (DESIGN).
EXT_WIDTH_34, FACE_TOP_34 = 3.4, 0.12


def face_box(xyxy: tuple[float, float, float, float], size_wh: tuple[int, int]) -> XYXY:
    """Detector box rounded to integers and clipped to the image, at least 1 px each way."""
    w, h = size_wh
    x1 = min(max(0, math.floor(xyxy[0])), w - 1)
    y1 = min(max(0, math.floor(xyxy[1])), h - 1)
    x2 = max(min(w, math.ceil(xyxy[2])), x1 + 1)
    y2 = max(min(h, math.ceil(xyxy[3])), y1 + 1)
    return (x1, y1, x2, y2)


def _place(want: float, size: int, lo_face: int, hi_face: int, limit: int) -> int | None:
    """Origin of a span of `size` near `want` that stays in [0, limit] and covers the face."""
    lo = max(0, hi_face - size)
    hi = min(lo_face, limit - size)
    if lo > hi:
        return None
    return int(min(max(round(want), lo), hi))


def crop_box(face_xyxy: tuple[float, float, float, float], size_wh: tuple[int, int],
             ratio: str = "1:1", *, floor: float = 1.5) -> XYXY | None:
    """The ext_bbox for a face, exactly `ratio`, inside the image and containing the face box.

    `face_xyxy` is the detector box in displayed pixels (it may reach past the border);
    `floor` is the smallest width allowed, in face sides. Returns None when no box of at
    least that width fits: the face is too large or too close to the edges.
    """
    if ratio not in RATIOS:
        raise ValueError(f"ratio: expected one of {sorted(RATIOS)}, got {ratio!r}")
    rw, rh = RATIOS[ratio]
    img_w, img_h = size_wh
    x1, y1, x2, y2 = face_xyxy
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if ratio == "1:1":
        want_w = EXT_SCALE_11 * side
    else:
        want_w = EXT_WIDTH_34 * side
    # sizes are (rw * k, rh * k) so the ratio is exact in integers
    k = min(round(want_w / rw), img_w // rw, img_h // rh)
    if k < 1 or rw * k < floor * side:
        return None
    bw, bh = rw * k, rh * k
    if ratio == "1:1":
        want_x, want_y = cx - bw / 2, cy - EXT_SHIFT_UP_11 * side - bh / 2
    else:
        want_x, want_y = cx - bw / 2, cy - side / 2 - FACE_TOP_34 * bh
    fx1, fy1, fx2, fy2 = face_box(face_xyxy, size_wh)
    ox = _place(want_x, bw, fx1, fx2, img_w)
    oy = _place(want_y, bh, fy1, fy2, img_h)
    if ox is None or oy is None:
        return None
    return (ox, oy, ox + bw, oy + bh)


def boxes_for_upload(face_bbox: XYXY, ext_bbox: XYXY, scale: float, upload_wh: tuple[int, int],
                     ratio: str) -> tuple[XYXY, XYXY] | None:
    """The boxes in the pixels of an upload form downscaled by `scale` (1.0: unchanged).

    The face box scales; the ext box is made again on it (scaling would break the exact
    ratio in integers), allowed down to the face itself since the check already passed.
    """
    if scale == 1.0:
        return face_bbox, ext_bbox
    face = face_box(tuple(v * scale for v in face_bbox), upload_wh)
    ext = crop_box(face, upload_wh, ratio, floor=1.0)
    return None if ext is None else (face, ext)
