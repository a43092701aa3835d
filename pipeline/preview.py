"""Preview pictures: the photo with its boxes, the crop as EMO will animate it, the findings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .boxes import XYXY
from .config import OUTPUT_WH
from .fix import FixResult
from .verdict import Report

__all__ = ["render_preview", "write_preview", "render_fix_preview", "write_fix_preview"]

_PHOTO_SIDE, _INSET_W, _LINE_H = 720, 256, 22
_GREEN, _ORANGE, _RED, _WHITE, _GREY = (60, 200, 60), (0, 150, 255), (60, 60, 230), (255, 255, 255), (40, 40, 40)
_CYAN = (230, 200, 0)


def render_preview(report: Report, *, marks: Sequence[tuple[XYXY, tuple[int, int, int]]] = (),
                   notes: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> np.ndarray:
    """A BGR picture: photo with face box (green), ext box (orange) and other faces (red),
    the ext crop at the service's output size as an inset, and one line per finding.
    `marks` are more boxes (displayed pixels, BGR colour) and `notes` more lines of text."""
    image = report.loaded
    if image is None:
        photo = np.full((240, _PHOTO_SIDE, 3), 90, np.uint8)
        k, sx, sy = 1.0, 1.0, 1.0
    else:
        sx, sy = image.scale
        h, w = image.pixels.shape[:2]
        k = _PHOTO_SIDE / max(h, w)
        photo = cv2.resize(image.pixels, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)

    def draw(box: tuple[int, int, int, int], colour: tuple[int, int, int], width: int) -> None:
        p1 = (round(box[0] / sx * k), round(box[1] / sy * k))
        p2 = (round(box[2] / sx * k) - 1, round(box[3] / sy * k) - 1)
        cv2.rectangle(photo, p1, p2, colour, width)

    for box, _ in report.faces:
        if box != report.face_bbox:
            draw(box, _RED, 2)
    if report.ext_bbox is not None:
        draw(report.ext_bbox, _ORANGE, 3)
    if report.face_bbox is not None:
        draw(report.face_bbox, _GREEN, 2)
    for box, colour in marks:
        draw(box, colour, 3)

    out_w, out_h = OUTPUT_WH[report.ratio]
    inset_h = round(_INSET_W * out_h / out_w)
    inset = np.full((inset_h, _INSET_W, 3), 60, np.uint8)
    if image is not None and report.ext_bbox is not None:
        x1, y1, x2, y2 = report.ext_bbox
        crop = image.pixels[int(y1 / sy):max(int(y1 / sy) + 1, int(y2 / sy)),
                            int(x1 / sx):max(int(x1 / sx) + 1, int(x2 / sx))]
        frame = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA)
        inset = cv2.resize(frame, (_INSET_W, inset_h), interpolation=cv2.INTER_AREA)

    lines = [(("PASS" if report.ok else "REJECT") + f"  ratio {report.ratio}  {Path(report.source).name}",
              _GREEN if report.ok else _RED)]
    lines += [(f"{f.severity}: {f.code}: {_ascii(f.message)}", _RED if f.severity == "error" else _ORANGE)
              for f in report.findings]
    lines += [(f"hint: {_ascii(f.hint)}", _WHITE) for f in report.errors[:1]]
    lines += [(_ascii(text), colour) for text, colour in notes]
    width = photo.shape[1] + _INSET_W + 30
    height = max(photo.shape[0], inset_h + 30) + 20 + _LINE_H * len(lines) + 10
    canvas = np.full((height, width, 3), _GREY, np.uint8)
    canvas[10:10 + photo.shape[0], 10:10 + photo.shape[1]] = photo
    ix = photo.shape[1] + 20
    canvas[30:30 + inset_h, ix:ix + _INSET_W] = inset
    cv2.putText(canvas, f"as EMO animates it ({out_w}x{out_h})", (ix, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.42, _WHITE, 1,
                cv2.LINE_AA)
    y = max(photo.shape[0], inset_h + 30) + 20
    for text, colour in lines:
        y += _LINE_H
        cv2.putText(canvas, text[:110], (10, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return canvas


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()


def _stem(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).name) or "photo"


def _write_jpeg(picture: np.ndarray, path: Path, what: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise OSError(f"could not encode the preview for {what}")
    path.write_bytes(buf.tobytes())
    return path


def write_preview(report: Report, folder: str | Path) -> Path:
    """Write the preview as FOLDER/<photo name>.preview.jpg and return its path."""
    return _write_jpeg(render_preview(report), Path(folder) / f"{_stem(report.source)}.preview.jpg", report.source)


def render_fix_preview(result: FixResult) -> np.ndarray:
    """Before and after side by side: the source's preview with the crop kept (cyan) and the
    fix's verdict, and the fixed photo's own preview (its fresh check); a refused or passing
    photo gets the first half only, with the reason."""
    if result.fixed:
        assert result.crop is not None and result.scale is not None
        note = (f"FIXED: {', '.join(result.operations)}; crop {list(result.crop)} (cyan), scale {result.scale:.3f}",
                _CYAN)
    else:
        note = (f"{'PASSES AS IT IS' if result.status == 'pass' else 'NOT FIXED'}: {result.reason}",
                _GREEN if result.status == "pass" else _RED)
    before = render_preview(result.source_report, marks=[(result.crop, _CYAN)] if result.crop else [],
                            notes=[note])
    if not result.fixed:
        return before
    after = render_preview(result.report)
    height = max(before.shape[0], after.shape[0])
    pad = [cv2.copyMakeBorder(p, 0, height - p.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=_GREY)
           for p in (before, after)]
    return np.hstack([pad[0], np.full((height, 6, 3), 200, np.uint8), pad[1]])


def write_fix_preview(result: FixResult, folder: str | Path) -> Path:
    """Write the before/after picture as FOLDER/<photo name>.fix.jpg and return its path."""
    return _write_jpeg(render_fix_preview(result), Path(folder) / f"{_stem(result.source)}.fix.jpg", result.source)
