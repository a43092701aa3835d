"""face_bbox and ext_bbox: pure functions over integer pixel boxes [x1, y1, x2, y2].

The box rules (DESIGN, calibrated on the dev set), with F the face box side made square and
(cx, cy) its centre:

* face: our detector's box mapped to the service's face box: each side scaled by `scale`
  about the centre, the centre moved by (dx, dy) face sides (default: unchanged).
* 1:1: side 2.5 F centred at (cx, cy - 0.15 F), the published emo-detect examples.
* 3:4: width 3.4 F, height 4/3 of it, horizontally centred, face top at 12 % of the height.

At the border the box is first shifted inside the image, then shrunk, never below a floor
(in face sides) and never so far that it stops containing the face box. Nothing is ever
filled outside the image.

Every parameter can be overridden by a geometry file (`emo-prep calibrate` fits one to the
service's own answers), in exactly this JSON shape; a section or key left out keeps the
default:

    {"face": {"scale": 1.0, "dx": 0.0, "dy": 0.0}, "1:1": {"scale": 2.5, "shift_up": 0.15},
     "3:4": {"width": 3.4, "face_top": 0.12}}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .boxes import XYXY
from .config import ENV_GEOMETRY, RATIOS
from .errors import GeometryError

__all__ = ["face_box", "service_face", "crop_box", "boxes_for_upload", "Geometry", "DEFAULT_GEOMETRY",
           "load_geometry", "resolve_geometry", "EXT_SCALE_11", "EXT_WIDTH_34"]

#: The face transform: our detector's box is the service's (no evidence of a difference yet).
FACE_SCALE, FACE_DX, FACE_DY = 1.0, 0.0, 0.0
#: 1:1 side in face sides and upward shift of the centre in face sides (emo-detect sample A).
EXT_SCALE_11, EXT_SHIFT_UP_11 = 2.5, 0.15
#: 3:4 width in face sides and the face top's place as a share of the height (DESIGN).
EXT_WIDTH_34, FACE_TOP_34 = 3.4, 0.12

#: The file's sections and keys, each with the Geometry field it sets and the range a value
#: must lie in (a scale of 0 or a box smaller than the face makes no box at all).
_KEYS: dict[str, dict[str, tuple[str, float, float]]] = {
    "face": {"scale": ("face_scale", 0.2, 5.0), "dx": ("face_dx", -2.0, 2.0), "dy": ("face_dy", -2.0, 2.0)},
    "1:1": {"scale": ("scale_11", 1.0, 10.0), "shift_up": ("shift_up_11", -2.0, 2.0)},
    "3:4": {"width": ("width_34", 1.0, 10.0), "face_top": ("face_top_34", 0.0, 0.9)},
}
_SHAPE = ('{"face": {"scale": 1.0, "dx": 0.0, "dy": 0.0}, "1:1": {"scale": 2.5, "shift_up": 0.15}, '
          '"3:4": {"width": 3.4, "face_top": 0.12}}')


@dataclass(frozen=True)
class Geometry:
    """Every parameter of the box rules; `source` and `sha256` name the file they came from
    (None: the defaults)."""

    face_scale: float = FACE_SCALE
    """Service face side / detector face side, each side scaled about the centre."""
    face_dx: float = FACE_DX
    """Service face centre minus ours, in face sides, positive to the right."""
    face_dy: float = FACE_DY
    """... positive downwards."""
    scale_11: float = EXT_SCALE_11
    """1:1 ext side in (service) face sides."""
    shift_up_11: float = EXT_SHIFT_UP_11
    """1:1 ext centre above the face centre, in face sides."""
    width_34: float = EXT_WIDTH_34
    """3:4 ext width in face sides."""
    face_top_34: float = FACE_TOP_34
    """The face top's place in the 3:4 box, as a share of its height."""
    source: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        for section, keys in _KEYS.items():
            for key, (name, lo, hi) in keys.items():
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                    raise GeometryError(
                        f"geometry{' file ' + self.source if self.source else ''}: {section}.{key} must be a "
                        f"number from {lo:g} to {hi:g}, got {value!r}",
                        hint="fix the value, or delete the key to keep the default (emo-prep calibrate writes "
                             "a valid file)")

    @classmethod
    def from_dict(cls, data: Any, *, base: Geometry | None = None, source: str | None = None) -> Geometry:
        """The file's JSON object over `base` (default: the defaults); unknown sections and
        keys, and values that are not numbers in range, raise GeometryError."""
        where = f"geometry file {source}" if source else "geometry"
        hint = f"the file holds a JSON object shaped like {_SHAPE}; a section or key left out keeps the default"
        if not isinstance(data, dict):
            raise GeometryError(f"{where}: expected a JSON object, got {type(data).__name__}", hint=hint)
        changes: dict[str, float] = {}
        for section, values in data.items():
            if section not in _KEYS:
                raise GeometryError(f"{where}: unknown section {section!r}; expected some of {sorted(_KEYS)} "
                                    f"(a ratio must be \"1:1\" or \"3:4\")", hint=hint)
            if not isinstance(values, dict):
                raise GeometryError(f"{where}: section {section!r} must be an object, got {values!r}", hint=hint)
            for key, value in values.items():
                if key not in _KEYS[section]:
                    raise GeometryError(f"{where}: unknown key {section}.{key}; expected some of "
                                        f"{sorted(_KEYS[section])}", hint=hint)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise GeometryError(f"{where}: {section}.{key} must be a number, got {value!r}", hint=hint)
                changes[_KEYS[section][key][0]] = float(value)
        return replace(base or DEFAULT_GEOMETRY, **changes, source=source, sha256=None)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """The file's JSON shape, every key written."""
        return {section: {key: getattr(self, name) for key, (name, _, _) in keys.items()}
                for section, keys in _KEYS.items()}

    def describe(self) -> dict[str, Any]:
        """What reports say about the geometry used: {"source": "default"}, the file's path and
        sha256, or {"source": "custom", "values": ...} for one made in Python."""
        if self.source is not None:
            return {"source": self.source, "sha256": self.sha256 or ""}
        if self.to_dict() == DEFAULT_GEOMETRY.to_dict():
            return {"source": "default"}
        return {"source": "custom", "values": self.to_dict()}


DEFAULT_GEOMETRY = Geometry()


def load_geometry(path: str | os.PathLike[str]) -> Geometry:
    """Read a geometry file; a missing or unreadable file, bad JSON or a bad value raise
    GeometryError with a hint."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as exc:
        raise GeometryError(f"geometry file {name}: {exc.strerror or exc}",
                            hint="give the path of a file written by emo-prep calibrate") from exc
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GeometryError(f"geometry file {name} is not JSON ({exc})",
                            hint=f"the file holds a JSON object shaped like {_SHAPE}") from exc
    return replace(Geometry.from_dict(data, source=name), sha256=hashlib.sha256(raw).hexdigest())


def resolve_geometry(geometry: Geometry | str | os.PathLike[str] | None) -> Geometry:
    """A Geometry, a file to read, or None: then $EMO_PREP_GEOMETRY when set, else the defaults."""
    if isinstance(geometry, Geometry):
        return geometry
    if geometry is None:
        geometry = os.environ.get(ENV_GEOMETRY) or None
        if geometry is None:
            return DEFAULT_GEOMETRY
    return load_geometry(geometry)


def face_box(xyxy: tuple[float, float, float, float], size_wh: tuple[int, int]) -> XYXY:
    """Detector box rounded to integers and clipped to the image, at least 1 px each way."""
    w, h = size_wh
    x1 = min(max(0, math.floor(xyxy[0])), w - 1)
    y1 = min(max(0, math.floor(xyxy[1])), h - 1)
    x2 = max(min(w, math.ceil(xyxy[2])), x1 + 1)
    y2 = max(min(h, math.ceil(xyxy[3])), y1 + 1)
    return (x1, y1, x2, y2)


def service_face(xyxy: tuple[float, float, float, float],
                 geometry: Geometry = DEFAULT_GEOMETRY) -> tuple[float, float, float, float]:
    """Our detector's box mapped to the service's face box (unrounded, may reach past the
    border): each side scaled about the centre, the centre moved by (dx, dy) face sides."""
    g = geometry
    if (g.face_scale, g.face_dx, g.face_dy) == (1.0, 0.0, 0.0):
        return xyxy
    x1, y1, x2, y2 = xyxy
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2 + g.face_dx * side, (y1 + y2) / 2 + g.face_dy * side
    hw, hh = g.face_scale * (x2 - x1) / 2, g.face_scale * (y2 - y1) / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def _place(want: float, size: int, lo_face: int, hi_face: int, limit: int) -> int | None:
    """Origin of a span of `size` near `want` that stays in [0, limit] and covers the face."""
    lo = max(0, hi_face - size)
    hi = min(lo_face, limit - size)
    if lo > hi:
        return None
    return int(min(max(round(want), lo), hi))


def crop_box(face_xyxy: tuple[float, float, float, float], size_wh: tuple[int, int],
             ratio: str = "1:1", *, floor: float = 1.5, geometry: Geometry = DEFAULT_GEOMETRY) -> XYXY | None:
    """The ext_bbox for a face, exactly `ratio`, inside the image and containing the face box.

    `face_xyxy` is the service's face box (`service_face` of the detector's) in displayed
    pixels (it may reach past the border); `floor` is the smallest width allowed, in face
    sides; `geometry` gives the rule's parameters. Returns None when no box of at least that
    width fits: the face is too large or too close to the edges.
    """
    if ratio not in RATIOS:
        raise ValueError(f"ratio: expected one of {sorted(RATIOS)}, got {ratio!r}")
    rw, rh = RATIOS[ratio]
    img_w, img_h = size_wh
    x1, y1, x2, y2 = face_xyxy
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if ratio == "1:1":
        want_w = geometry.scale_11 * side
    else:
        want_w = geometry.width_34 * side
    # sizes are (rw * k, rh * k) so the ratio is exact in integers
    k = min(round(want_w / rw), img_w // rw, img_h // rh)
    if k < 1 or rw * k < floor * side:
        return None
    bw, bh = rw * k, rh * k
    if ratio == "1:1":
        want_x, want_y = cx - bw / 2, cy - geometry.shift_up_11 * side - bh / 2
    else:
        want_x, want_y = cx - bw / 2, cy - side / 2 - geometry.face_top_34 * bh
    fx1, fy1, fx2, fy2 = face_box(face_xyxy, size_wh)
    ox = _place(want_x, bw, fx1, fx2, img_w)
    oy = _place(want_y, bh, fy1, fy2, img_h)
    if ox is None or oy is None:
        return None
    return (ox, oy, ox + bw, oy + bh)


def boxes_for_upload(face_bbox: XYXY, ext_bbox: XYXY, scale: float, upload_wh: tuple[int, int],
                     ratio: str, geometry: Geometry = DEFAULT_GEOMETRY) -> tuple[XYXY, XYXY] | None:
    """The boxes in the pixels of an upload form downscaled by `scale` (1.0: unchanged).

    The face box scales; the ext box is made again on it (scaling would break the exact
    ratio in integers), allowed down to the face itself since the check already passed.
    """
    if scale == 1.0:
        return face_bbox, ext_bbox
    face = face_box(tuple(v * scale for v in face_bbox), upload_wh)
    ext = crop_box(face, upload_wh, ratio, floor=1.0, geometry=geometry)
    return None if ext is None else (face, ext)
