"""Fix: turn a rejected photo into one that passes, when an honest change can.

    check -> the smallest honest change -> write it -> check the written file again

The changes: a crop around the main face (the check's own choice) that holds its ext_bbox,
which EMO crops to anyway, and leaves the other faces out (multiple_faces) or brings the face's
share of the photo inside the limits (face_too_small); a downscale past the service's 7000 px
(image_too_large, the upload form's own); and, only when asked (`light=True`: it changes how
the person looks), an exposure curve for a dark or overexposed face. Everything else (blur,
pose, a covered or cut-off face, no face, hips outside a 3:4 frame, ...) is refused with the
reason. A result counts as fixed only when a fresh check of the written file passes and its
face is the source's main face; otherwise nothing is left behind.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import cv2
import numpy as np

from .boxes import XYXY, covered, iou
from .checks import ORDER
from .config import (
    FIX_JPEG_QUALITIES,
    FIX_LOSSLESS_FORMATS,
    FIX_MIN_FACE_H_SHARE,
    FIX_MIN_FACE_PX,
    FIX_OTHER_FACE_REL_SIDE,
    FIX_OUT_DIR,
    FIX_SAME_FACE_IOU,
    FIX_TIGHTER_MARGINS,
    LIGHT_MIN_HIGHLIGHTS,
    LIGHT_TARGET_HIGHLIGHTS,
    LIGHT_TARGET_LUMA,
    MAX_PIXELS,
    RATIOS,
    CheckConfig,
)
from .errors import InputError
from .ingest import downscale, full_image, read_source
from .verdict import Checker, Report, default_checker

__all__ = ["FixResult", "fix", "NEVER_FIXED", "FIX_RATIOS"]

#: What `ratio` may be: one of RATIOS, or "auto" (3:4 when the photo passes or can be fixed as
#: a half-body shot, else 1:1).
FIX_RATIOS = (*RATIOS, "auto")
#: Error codes a crop, a downscale or (with light) an exposure curve can mend.
_CROP_CODES = ("multiple_faces", "face_too_small")
_LIGHT_CODES = ("dark", "overexposed")
#: The codes no change can honestly mend, and why (the reason of a refusal).
NEVER_FIXED = {
    "unreadable": "the file is not a readable image",
    "unsupported_format": "the file is not a still photo in a format we read",
    "image_too_small": "enlarging would invent detail the photo does not have",
    "no_face": "there is no face to animate",
    "face_too_large": "EMO needs room around the face; adding it would invent pixels",
    "face_cut_off": "the missing part of the face is not in the photo",
    "face_occluded": "what covers the face cannot be taken away",
    "pose": "the head's angle cannot be changed",
    "blur": "a blurred face cannot be made sharp",
    "body_cut_off": "the hips are not in the photo, and 3:4 needs them",
}
_LIGHT_OFF = "exposure can be corrected with --light (light=True), which changes how the person looks"

Status = Literal["pass", "fixed", "refused"]


@dataclass(frozen=True)
class FixResult:
    """What `fix` did with one photo. Boxes are [x1, y1, x2, y2] in displayed pixels."""

    source: str
    ratio: str
    """The ratio the photo was judged (and fixed) at; with "auto", the one chosen."""
    status: Status
    """pass: passes as it is, nothing written; fixed: `output` passes; refused: see `reason`."""
    report: Report
    """The fresh check of the written output when fixed; the source's own check otherwise."""
    source_report: Report
    """The check of the source as it is."""
    output: str | None = None
    """Path of the fixed photo (None unless fixed)."""
    operations: tuple[str, ...] = ()
    """What was done, in order: "crop", "downscale", "light"."""
    crop: XYXY | None = None
    """The part of the source kept, in the source's displayed pixels (None unless fixed)."""
    scale: float | None = None
    """Output pixels per source pixel (1.0 unless downscaled; None unless fixed)."""
    reason: str | None = None
    """Why nothing was written (None when fixed)."""
    ratio_reason: str | None = None
    """With ratio "auto": why this ratio was chosen."""

    @property
    def fixed(self) -> bool:
        return self.status == "fixed"

    def to_dict(self) -> dict[str, Any]:
        """The `fix --json` record; `report` is the check JSON contract of the output."""
        out: dict[str, Any] = {"source": self.source, "status": self.status, "fixed": self.fixed,
                               "ratio": self.ratio}
        if self.ratio_reason is not None:
            out["ratio_reason"] = self.ratio_reason
        out.update({"output": self.output, "operations": list(self.operations),
                    "crop": list(self.crop) if self.crop is not None else None,
                    "scale": round(self.scale, 6) if self.scale is not None else None,
                    "reason": self.reason, "report": self.report.to_dict()})
        return out


def fix(source: str | os.PathLike[str] | bytes, ratio: str = "1:1", *, out_dir: str | os.PathLike[str] = FIX_OUT_DIR,
        light: bool = False, checker: Checker | None = None, name: str | None = None) -> FixResult:
    """Check a photo and, when it fails for a reason an honest change can mend, write the
    changed photo as OUT_DIR/<name>.fixed.<jpg|png> and check that file again.

    `ratio` is "1:1", "3:4" or "auto"; `light` allows the exposure curve; `checker` defaults
    to the process-wide one; `name` names the output (default: the source's file name).
    """
    if ratio not in FIX_RATIOS:
        raise ValueError(f"ratio: expected one of {list(FIX_RATIOS)}, got {ratio!r}")
    checker = checker or default_checker()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, source_id = bytes(source), name or "<bytes>"
    else:
        source_id = os.fspath(source)
        try:
            data = read_source(source)
        except InputError:  # the check reports it as a finding with its code
            report = checker.check(source, "1:1" if ratio == "auto" else ratio)
            return FixResult(source_id, report.ratio, "refused", report, report, reason=_refusal(report, light))
    stem = _stem(name or source_id)
    if ratio != "auto":
        return _fix_at(checker, data, source_id, stem, ratio, Path(out_dir), light)
    half = _fix_at(checker, data, source_id, stem, "3:4", Path(out_dir), light)
    if half.status != "refused":
        how = "passes" if half.status == "pass" else "was fixed to pass"
        return replace(half, ratio_reason=f"3:4: the photo {how} as a half-body shot")
    head = _fix_at(checker, data, source_id, stem, "1:1", Path(out_dir), light)
    return replace(head, ratio_reason=f"1:1: not as a half-body shot ({half.reason})")


def _fix_at(checker: Checker, data: bytes, source_id: str, stem: str, ratio: str, out_dir: Path,
            light: bool) -> FixResult:
    report = checker.check_bytes(data, source_id, ratio)
    if report.ok:
        return FixResult(source_id, ratio, "pass", report, report, reason="passes as it is; nothing written")
    refusal = _refusal(report, light)
    if refusal is not None:
        return FixResult(source_id, ratio, "refused", report, report, reason=refusal)

    def refused(reason: str) -> FixResult:
        return FixResult(source_id, ratio, "refused", report, report, reason=reason)

    assert report.image is not None and report.loaded is not None and report.face_bbox is not None
    codes = {f.code for f in report.errors}
    size = (report.image.width, report.image.height)
    face_side = max(report.face_bbox[2] - report.face_bbox[0], report.face_bbox[3] - report.face_bbox[1])
    if codes & set(_CROP_CODES):
        if face_side < FIX_MIN_FACE_PX:
            return refused(f"the face is {face_side} px; a photo of it alone needs at least {FIX_MIN_FACE_PX} px "
                           f"for a sharp 512 px video")
        crops = _crops(report, ratio, checker.config)
        if not crops:
            return refused("another face lies inside the area EMO animates (ext_bbox): no crop leaves it out")
    else:
        crops = [(0, 0, *size)]
    lut = None
    if codes & set(_LIGHT_CODES):
        lut = _light_curve(report)
        if lut is None:
            return refused(f"the face is too dark to brighten: its lit parts are below grey level "
                           f"{LIGHT_MIN_HIGHLIGHTS:g}, where a photo keeps only noise")
    lossless = report.image.format in FIX_LOSSLESS_FORMATS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.fixed.{'png' if lossless else 'jpg'}"
    full = full_image(report.loaded)
    failures: list[str] = []
    for crop in crops:
        picture, scale = downscale(full.crop(crop), checker.config.max_side)
        if min(picture.size) < checker.config.min_side:
            failures.append(f"crop {list(crop)} is {picture.width}x{picture.height}, under "
                            f"{checker.config.min_side} px")
            continue
        if lut is not None:
            picture = picture.point(lut * 3)
        operations = tuple(op for op, done in (("crop", crop != (0, 0, *size)), ("downscale", scale < 1.0),
                                               ("light", lut is not None)) if done)
        for quality in (None,) if lossless else FIX_JPEG_QUALITIES:
            if quality is None:
                picture.save(path, format="PNG")
            else:
                picture.save(path, format="JPEG", quality=quality)
            fresh = checker.check(path, ratio)
            problem = _problem(fresh, report.face_bbox, crop, scale)
            if problem is None:
                return FixResult(source_id, ratio, "fixed", fresh, report, output=str(path), operations=operations,
                                 crop=crop, scale=scale)
        failures.append(problem)
        path.unlink(missing_ok=True)
    return refused("no change passes a fresh check: " + "; ".join(dict.fromkeys(failures)))


def _refusal(report: Report, light: bool) -> str | None:
    """Why no change can mend this report's errors, or None when every error can be."""
    mendable = set(_CROP_CODES) | {"image_too_large"} | (set(_LIGHT_CODES) if light else set())
    blocked = sorted({f.code for f in report.errors} - mendable, key=ORDER.index)
    if not blocked:
        if report.loaded is None:  # past MAX_PIXELS: refused before decoding, so no pixels to scale
            first = report.errors[0]
            return (f"{first.code}: {first.message}; a photo past {MAX_PIXELS} pixels is not decoded at all "
                    f"(a guard against decompression bombs): downscale it with an image editor first")
        return None
    return "; ".join(f"{code}: {NEVER_FIXED.get(code, _LIGHT_OFF)}" for code in blocked)


def _problem(fresh: Report, face: XYXY, crop: XYXY, scale: float) -> str | None:
    """Why a fresh check of an output does not count as a fix (None: it does)."""
    if not fresh.ok:
        first = fresh.errors[0]
        return f"{first.code} after the change ({first.message})"
    assert fresh.face_bbox is not None
    x1, y1, x2, y2 = fresh.face_bbox
    back = (x1 / scale + crop[0], y1 / scale + crop[1], x2 / scale + crop[0], y2 / scale + crop[1])
    if iou(back, face) < FIX_SAME_FACE_IOU:
        return (f"the face found after the change overlaps the photo's main face by {iou(back, face):.2f} "
                f"(IoU), {FIX_SAME_FACE_IOU:g} needed: not clearly the same face")
    return None


def _crops(report: Report, ratio: str, cfg: CheckConfig) -> list[XYXY]:
    """Crops to try, widest first: as much of the photo as the rules allow around the ext box,
    then tighter ones (FIX_TIGHTER_MARGINS). Empty when another face sits inside the ext box."""
    assert report.image is not None and report.face_bbox is not None and report.ext_bbox is not None
    width, height = report.image.width, report.image.height
    ext = report.ext_bbox
    fx1, fy1, fx2, fy2 = report.face_bbox
    face_side = max(fx2 - fx1, fy2 - fy1)
    limit = [0, 0, width, height]  # the crop's edges, narrowed face by face
    others = [box for box, _ in report.faces if box != report.face_bbox
              and max(box[2] - box[0], box[3] - box[1]) >= FIX_OTHER_FACE_REL_SIDE * cfg.other_face_min_rel_side
              * face_side]
    centre = ((fx1 + fx2) / 2, (fy1 + fy2) / 2)
    for box in sorted(others, key=lambda b: math.dist(centre, ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))):
        if covered(box, limit) == 0.0:
            continue  # already cut away by an earlier edge
        # the edge that leaves this face out: beside the ext box, on a side where the face lies
        # apart from it (the one keeping the most area); for a face that reaches a little into
        # the ext box, the ext box's own edge on the side the face sticks out most. The ext box
        # always stays whole: it is what EMO animates.
        gaps = (ext[0] - box[2], ext[1] - box[3], box[0] - ext[2], box[1] - ext[3])
        if max(gaps) >= 0:
            cuts = [(side, (box[2], box[3], box[0], box[1])[side]) for side, gap in enumerate(gaps) if gap >= 0]
        elif covered(box, ext) <= 0.5:
            side = int(np.argmax((ext[0] - box[0], ext[1] - box[1], box[2] - ext[2], box[3] - ext[3])))
            cuts = [(side, ext[side])]
        else:
            return []
        options = []
        for side, edge in cuts:
            trial = list(limit)
            trial[side] = max(trial[side], edge) if side < 2 else min(trial[side], edge)
            options.append(((trial[2] - trial[0]) * (trial[3] - trial[1]), trial))
        limit = max(options)[1]
    # the face's share of the height: at least FIX_MIN_FACE_H_SHARE; keep the width to the
    # photo's own proportion (landscape stays landscape, no wider)
    max_h = int((fy2 - fy1) / FIX_MIN_FACE_H_SHARE[ratio])
    keep_below = ratio == "3:4"  # a half-body shot needs what lies below the face: the hips
    top, bottom = _span(limit[1], limit[3], ext[1], ext[3], max_h, keep_high=keep_below)
    max_w = int((bottom - top) * max(1.0, width / height))
    left, right = _span(limit[0], limit[2], ext[0], ext[2], max_w, keep_high=False)
    widest = (left, top, right, bottom)
    crops = [widest]
    for margin in FIX_TIGHTER_MARGINS:
        grow = margin * (ext[2] - ext[0])
        crops.append((max(left, math.floor(ext[0] - grow)), max(top, math.floor(ext[1] - grow)),
                      min(right, math.ceil(ext[2] + grow)), min(bottom, math.ceil(ext[3] + grow))))
    return list(dict.fromkeys(_at_least(c, cfg.min_side, (width, height)) for c in crops))


def _span(lo: int, hi: int, keep_lo: int, keep_hi: int, most: int, *, keep_high: bool) -> tuple[int, int]:
    """[lo, hi] narrowed to at most `most` around [keep_lo, keep_hi], the room left shared
    evenly between both sides (or given to the high side first when `keep_high`)."""
    if hi - lo <= most:
        return lo, hi
    room = max(0, most - (keep_hi - keep_lo))
    below, above = keep_lo - lo, hi - keep_hi
    if keep_high:
        up = min(above, room)
        down = min(below, room - up)
    else:
        down = min(below, max(room // 2, room - above))
        up = min(above, room - down)
    return keep_lo - down, keep_hi + up


def _at_least(crop: XYXY, side: int, size_wh: tuple[int, int]) -> XYXY:
    """`crop` grown evenly to at least `side` px each way, staying inside the photo."""
    out = list(crop)
    for lo, hi, limit in ((0, 2, size_wh[0]), (1, 3, size_wh[1])):
        short = side - (out[hi] - out[lo])
        if short > 0:
            start = min(max(0, out[lo] - short // 2), max(0, limit - max(side, out[hi] - out[lo])))
            out[lo], out[hi] = start, min(limit, start + max(side, out[hi] - out[lo]))
    return (out[0], out[1], out[2], out[3])


def _light_curve(report: Report) -> list[int] | None:
    """A 256-entry tone curve (a gamma) that brings a dark face's lit parts to
    LIGHT_TARGET_HIGHLIGHTS or an overexposed face's mean to LIGHT_TARGET_LUMA; None when the
    face is too dark to hold a face at all."""
    assert report.loaded is not None and report.face_bbox is not None
    image = report.loaded
    sx, sy = image.scale
    x1, y1, x2, y2 = report.face_bbox
    face = image.pixels[int(y1 / sy):max(int(y1 / sy) + 1, int(y2 / sy)),
                        int(x1 / sx):max(int(x1 / sx) + 1, int(x2 / sx))]
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    if any(f.code == "dark" for f in report.errors):
        level, target = float(np.percentile(gray, 90)), LIGHT_TARGET_HIGHLIGHTS
        if level < LIGHT_MIN_HIGHLIGHTS:
            return None
    else:
        level, target = float(gray.mean()), LIGHT_TARGET_LUMA
    level = min(max(level, 1.0), 254.0)
    gamma = math.log(target / 255.0) / math.log(level / 255.0)
    return [min(255, round(255.0 * (v / 255.0) ** gamma)) for v in range(256)]


def _stem(source_id: str) -> str:
    """A file-name-safe stem for the output, from a path or a URL."""
    name = Path(urlparse(source_id).path if "://" in source_id else source_id).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem) or "photo"

