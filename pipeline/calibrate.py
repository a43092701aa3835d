"""Calibrate: fit the box geometry to a few of emo-detect-v1's own answers.

    photos -> local check (current geometry) -> up to N passing ones, each placed on a plain
    canvas when its box would touch the edges -> upload + emo-detect-v1 (paid, capped)
    -> least-squares fit of the face transform and the ext rule -> a geometry file

The fit models the rule as `geometry.crop_box` applies it: an answer whose box was shifted
against an edge or shrunk to the image says only that the rule's box did not fit there, so
it bounds a parameter instead of measuring it (a raw-edge fit would read the clamping as the
rule). Parameters no answer measures keep their current value, moved inside those bounds,
and are named. `fit_geometry` is a pure function over the observations; `calibrate` does the
I/O (checks, uploads, calls, files).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .boxes import XYXY, iou
from .config import (
    CALIBRATE_CANVAS_FACES,
    CALIBRATE_CANVAS_TRIES,
    CALIBRATE_SAMPLES,
    CALIBRATE_SLACK_FACES,
    CANVAS_BGR,
    DEFAULT_CONFIG,
    DETECT_MODEL,
    DETECT_PRICE_CNY,
    RATIOS,
)
from .errors import APIError, EmoPrepError, PortraitRejected, UsageError
from .geometry import DEFAULT_GEOMETRY, Geometry, crop_box, face_box, load_geometry, service_face

__all__ = ["Observation", "ParamFit", "GeometryFit", "Sample", "Answer", "Calibration", "fit_geometry",
           "predict_boxes", "choose_samples", "calibrate"]

#: Parameters per fitted part: the face transform, and each ratio's ext rule.
_FACE = ("face_scale", "face_dx", "face_dy")
_EXT = {"1:1": ("scale_11", "shift_up_11"), "3:4": ("width_34", "face_top_34")}


@dataclass(frozen=True)
class Observation:
    """One answer: our detector's box and the service's boxes, in the sent image's pixels."""

    detector_xyxy: tuple[float, float, float, float]
    size_wh: tuple[int, int]
    face_bbox: XYXY
    ext_bbox: XYXY


@dataclass(frozen=True)
class ParamFit:
    """One fitted parameter: `value` ± `spread` (its standard error), from `n` answers that
    measure it; `determined` False means no answer did, and `value` is the prior moved into
    [`lower`, `upper`], the range the clamped answers allow."""

    name: str
    value: float
    prior: float
    spread: float | None
    n: int
    determined: bool
    lower: float | None = None
    upper: float | None = None


@dataclass(frozen=True)
class GeometryFit:
    geometry: Geometry
    params: tuple[ParamFit, ...]
    rms_px: float
    """Root mean square of the fitted boxes' edges against the answers, in pixels."""

    @property
    def undetermined(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if not p.determined)


def predict_boxes(obs: Observation, ratio: str, geometry: Geometry) -> tuple[XYXY, XYXY | None]:
    """Our face_bbox and ext_bbox for an observation's photo under `geometry` (floor 1.0: the
    photo passed, only the boxes are compared)."""
    face = service_face(obs.detector_xyxy, geometry)
    return face_box(face, obs.size_wh), crop_box(face, obs.size_wh, ratio, floor=1.0, geometry=geometry)


def _solve(rows: list[tuple[list[float], float]], names: tuple[str, ...], prior: dict[str, float],
           bounds: dict[str, list[float]], counts: dict[str, int]) -> list[ParamFit]:
    """Least squares of `rows` (coefficients, right-hand side) for `names`; a parameter that
    the rows do not identify keeps its prior (clipped into its bounds), and the others are
    solved with it fixed. Spread: standard errors from the residuals."""
    k = len(names)
    a = np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, k)
    b = np.array([r[1] for r in rows], dtype=np.float64)
    if len(rows):
        projection = np.linalg.pinv(a) @ a
        known = [abs(projection[j, j] - 1.0) < 1e-6 for j in range(k)]
    else:
        known = [False] * k
    fixed = {}
    for j, name in enumerate(names):
        if not known[j]:
            lo = max(bounds.get(f"{name}>", [-math.inf]))
            hi = min(bounds.get(f"{name}<", [math.inf]))
            fixed[name] = float(min(max(prior[name], lo), hi)) if lo <= hi else float(prior[name])
    free = [j for j in range(k) if known[j]]
    values = dict(fixed)
    spreads: dict[str, float | None] = {}
    if free:
        rhs = b - sum((a[:, j] * fixed[names[j]] for j in range(k) if not known[j]), np.zeros(len(b)))
        sub = a[:, free]
        solution, *_ = np.linalg.lstsq(sub, rhs, rcond=None)
        dof = len(rows) - len(free)
        resid = rhs - sub @ solution
        sigma2 = float(resid @ resid) / dof if dof > 0 else float("nan")
        cov = np.linalg.pinv(sub.T @ sub) * sigma2
        for i, j in enumerate(free):
            values[names[j]] = float(solution[i])
            spreads[names[j]] = float(math.sqrt(cov[i, i])) if dof > 0 else None
    out = []
    for j, name in enumerate(names):
        lo, hi = bounds.get(f"{name}>"), bounds.get(f"{name}<")
        out.append(ParamFit(name, round(values[name], 4), prior[name],
                            None if spreads.get(name) is None else round(spreads[name], 4),
                            counts.get(name, 0) if known[j] else 0, bool(known[j]),
                            round(max(lo), 4) if lo else None, round(min(hi), 4) if hi else None))
    return out


def _inside(box: XYXY, size_wh: tuple[int, int]) -> list[bool]:
    """Per edge (x1, y1, x2, y2): lies off the image's border (an edge on it may be clipped)."""
    w, h = size_wh
    return [box[0] > 0, box[1] > 0, box[2] < w, box[3] < h]


def _face_rows(observations: list[Observation]) -> tuple[list[tuple[list[float], float]], dict[str, int]]:
    """service edge = our centre +- scale * half side + shift * F, per edge that is not at the
    border (a clipped edge says nothing about the transform); rows in face sides."""
    rows, counts = [], {name: 0 for name in _FACE}
    for obs in observations:
        x1, y1, x2, y2 = obs.detector_xyxy
        w, h = x2 - x1, y2 - y1
        side = max(w, h)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        inside = _inside(obs.face_bbox, obs.size_wh)
        edges = ((-w / 2, 1, 0, obs.face_bbox[0] - cx), (-h / 2, 0, 1, obs.face_bbox[1] - cy),
                 (w / 2, 1, 0, obs.face_bbox[2] - cx), (h / 2, 0, 1, obs.face_bbox[3] - cy))
        used = [e for e, ok in zip(edges, inside, strict=True) if ok]
        for half, ux, uy, rhs in used:
            rows.append(([half / side, ux, uy], rhs / side))
        if used:
            counts["face_scale"] += 1
            counts["face_dx"] += any(e[1] for e in used)
            counts["face_dy"] += any(e[2] for e in used)
    return rows, counts


def _ext_rows(observations: list[Observation], ratio: str, face_geometry: Geometry):
    """The ext rule's rows: size from boxes that were not shrunk to the image, place from
    boxes not held by an edge (or by the face they must contain); the others bound it.

    The rule is measured on the fitted transform of our detector's box, not on the service's
    integer face box: that is the face the rule will be applied to here, and it carries no
    rounding (a face box 1 px too wide would bias a 3:4 width by 0.02 on a 160 px face)."""
    size_name, place_name = _EXT[ratio]
    rw, rh = RATIOS[ratio]
    rows: list[tuple[list[float], float]] = []
    bounds: dict[str, list[float]] = {}
    counts = {size_name: 0, place_name: 0}
    for obs in observations:
        fx1, fy1, fx2, fy2 = service_face(obs.detector_xyxy, face_geometry)
        side = max(fx2 - fx1, fy2 - fy1)
        cy = (fy1 + fy2) / 2
        w, h = obs.size_wh
        ex1, ey1, ex2, ey2 = obs.ext_bbox
        bw, bh = ex2 - ex1, ey2 - ey1
        k = bw // rw
        step = rw / 2  # sizes are whole multiples of rw: the rule's width is within half a step
        if k < min(w // rw, h // rh):  # not shrunk: the rule's width, rounded to a step
            rows.append(([1.0, 0.0], bw / side))
            counts[size_name] += 1
        else:  # shrunk to the image: the rule wanted at least this
            bounds.setdefault(f"{size_name}>", []).append((bw - step) / side)
        # the vertical place: 1:1 centre = cy - shift * F; 3:4 top = cy - F/2 - face_top * bh
        lo = max(0, obs.face_bbox[3] - bh)
        hi = min(obs.face_bbox[1], h - bh)
        anchor = ey1 + bh / 2 if ratio == "1:1" else ey1
        base = cy if ratio == "1:1" else cy - side / 2
        unit = side if ratio == "1:1" else bh  # the place parameter's unit, in px
        if lo < ey1 < hi:
            rows.append(([0.0, -unit / side], (anchor - base) / side))
            counts[place_name] += 1
        elif ey1 <= lo and ey1 == 0:  # held at the top: the rule wanted it higher
            bounds.setdefault(f"{place_name}>", []).append((base - anchor) / unit)
        elif ey1 >= hi and ey2 == h:  # held at the bottom: the rule wanted it lower
            bounds.setdefault(f"{place_name}<", []).append((base - anchor) / unit)
    return rows, bounds, counts


def fit_geometry(observations: Iterable[Observation], ratio: str, prior: Geometry = DEFAULT_GEOMETRY) -> GeometryFit:
    """Fit the face transform and `ratio`'s ext rule to the answers; the other ratio's
    section is kept from `prior`, as is every parameter the answers do not determine."""
    if ratio not in RATIOS:
        raise ValueError(f"ratio: expected one of {sorted(RATIOS)}, got {ratio!r}")
    observations = list(observations)
    current = {name: getattr(prior, name) for name in _FACE + _EXT[ratio]}
    rows, counts = _face_rows(observations)
    face_params = _solve(rows, _FACE, current, {}, counts)
    face_geometry = replace(prior, **{p.name: p.value for p in face_params}, source=None, sha256=None)
    rows, bounds, counts = _ext_rows(observations, ratio, face_geometry)
    ext_params = _solve(rows, _EXT[ratio], current, bounds, counts)
    geometry = replace(face_geometry, **{p.name: p.value for p in ext_params})
    errors = []
    for obs in observations:
        face, ext = predict_boxes(obs, ratio, geometry)
        errors += [a - b for a, b in zip(face, obs.face_bbox, strict=True)]
        if ext is not None:
            errors += [a - b for a, b in zip(ext, obs.ext_bbox, strict=True)]
    rms = math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else float("nan")
    return GeometryFit(geometry, tuple(face_params + ext_params), round(rms, 2))


# --- choosing and sending photos -------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """A photo as it will be sent: the bytes, our report on exactly those bytes, and the
    canvas it was placed on ((left, top, right, bottom) px added; None: sent as it is)."""

    source: str
    data: bytes = field(repr=False)
    filename: str
    report: Any = field(repr=False)
    canvas: tuple[int, int, int, int] | None
    free: bool
    """The box the current geometry predicts keeps its slack from every edge."""


def _unbounded_ext(face: tuple[float, float, float, float], ratio: str, geometry: Geometry) -> XYXY:
    """Where the rule puts the ext box with no image edge in the way: the rule applied to the
    face moved onto the middle of a canvas far larger than the box."""
    side = max(face[2] - face[0], face[3] - face[1])
    pad = math.ceil(20 * side)
    moved = (face[0] + pad, face[1] + pad, face[2] + pad, face[3] + pad)
    box = crop_box(moved, (2 * pad + math.ceil(face[2]), 2 * pad + math.ceil(face[3])), ratio, floor=0.0,
                   geometry=geometry)
    assert box is not None  # the canvas holds any box of up to 20 face sides
    return (box[0] - pad, box[1] - pad, box[2] - pad, box[3] - pad)


def _room_needed(report: Any, ratio: str, geometry: Geometry,
                 slack_faces: float = CALIBRATE_SLACK_FACES) -> tuple[int, int, int, int]:
    """Pixels to add on (left, top, right, bottom) so the predicted box keeps `slack_faces`
    face sides from every edge."""
    face = service_face(report.detector_xyxy, geometry)
    slack = slack_faces * max(face[2] - face[0], face[3] - face[1])
    x1, y1, x2, y2 = _unbounded_ext(face, ratio, geometry)
    w, h = report.image.width, report.image.height
    return (max(0, math.ceil(slack - x1)), max(0, math.ceil(slack - y1)),
            max(0, math.ceil(x2 + slack - w)), max(0, math.ceil(y2 + slack - h)))


def _on_canvas(data: bytes, pads: tuple[int, int, int, int]) -> bytes:
    """The photo on a plain canvas, its pixels unchanged, as PNG (lossless)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise UsageError("the upload form could not be decoded for the canvas copy")
    left, top, right, bottom = pads
    out = cv2.copyMakeBorder(pixels, top, bottom, left, right, cv2.BORDER_CONSTANT, value=CANVAS_BGR)
    ok, buf = cv2.imencode(".png", out)
    if not ok:
        raise UsageError("the canvas copy could not be encoded")
    return buf.tobytes()


def choose_samples(checker: Any, sources: Iterable[str], ratio: str, samples: int,
                   say: Callable[[str], None] = lambda s: None) -> list[Sample]:
    """Up to `samples` photos that pass the local check, informative ones first: a photo
    whose predicted box would touch an edge is placed on a canvas when that copy passes too.
    Stops reading photos once `samples` informative ones are found."""
    from .ingest import upload_form

    geometry = checker.geometry
    found: list[Sample] = []
    for source in sources:
        report = checker.check(source, ratio=ratio)
        if not report.ok:
            say(f"skipped {source}: {report.errors[0].code}")
            continue
        form = upload_form(report.loaded)
        name = Path(source).stem
        suffix = "jpg" if form.format == "jpeg" else form.format
        if form.fixes:  # what is sent must be what was checked
            report = checker.check_bytes(form.data, f"{source} (upload form)", ratio)
            if not report.ok:
                say(f"skipped {source}: its upload form gets {report.errors[0].code}")
                continue
        pads = _room_needed(report, ratio, geometry, CALIBRATE_CANVAS_FACES)
        sample = Sample(source, form.data, f"{name}.{suffix}", report, None,
                        not any(_room_needed(report, ratio, geometry)))
        if not sample.free:
            # the detector sees a canvas copy at another working scale, so its box moves by a
            # few px: widen the canvas by what the copy still lacks, a few times at most
            for _ in range(CALIBRATE_CANVAS_TRIES):
                data = _on_canvas(form.data, pads)
                copy = checker.check_bytes(data, f"{source} (on canvas)", ratio)
                lacking = _room_needed(copy, ratio, geometry) if copy.ok else ()
                if copy.ok and not any(lacking):
                    sample = Sample(source, data, f"{name}.canvas.png", copy, pads, True)
                    break
                if not copy.ok:
                    say(f"{source}: its canvas copy gets {copy.errors[0].code}; sending the photo as it is "
                        f"(its box will touch an edge)")
                    break
                pads = tuple(p + extra + (2 if extra else 0) for p, extra in zip(pads, lacking, strict=True))
            else:
                say(f"{source}: no canvas copy kept its box off the edges; sending the photo as it is")
        found.append(sample)
        if sum(s.free for s in found) >= samples:
            break
    found.sort(key=lambda s: not s.free)  # stable: informative first, in the order given
    return found[:samples]


@dataclass(frozen=True)
class Answer:
    """What one call gave: the service's boxes, or its refusal; IoUs before/after the fit."""

    sample: Sample
    observation: Observation | None
    rejection: PortraitRejected | None = None
    raw: dict[str, Any] | None = None
    iou_before: tuple[float, float] | None = None
    iou_after: tuple[float, float] | None = None


@dataclass(frozen=True)
class Calibration:
    ratio: str
    answers: tuple[Answer, ...]
    fit: GeometryFit | None
    prior: Geometry
    spent_cny: float
    stopped_by_cap: bool
    output: str
    record: str
    interrupted: str | None = None
    """The service error that stopped the calls after some answers (None: not stopped)."""


def _cost(count: int) -> float:
    return round(count * DETECT_PRICE_CNY, 6)


def _record_line(handle: Any, record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()


def calibrate(paths: Iterable[str], *, ratio: str, output: str | os.PathLike[str], samples: int = CALIBRATE_SAMPLES,
              max_cost: float | None = None, confirm: Callable[[list[Sample], float], bool] = lambda s, c: True,
              client: Any = None, say: Callable[[str], None] = lambda s: None) -> Calibration | None:
    """Check `paths`, send up to `samples` passing photos to emo-detect-v1, fit the geometry and
    write it to `output` (merged into the file there, if any); the raw answers and every sent
    copy that is not the photo's own file go to `output`.record/. `confirm(samples, cost)`
    may refuse (None is returned, nothing is sent). `max_cost` (CNY) caps the calls: none is
    made that would pass it. `client` defaults to an EmoClient from the environment."""
    from .client import EmoClient
    from .ingest import expand_sources
    from .verdict import Checker

    if ratio not in RATIOS:
        raise ValueError(f"ratio: expected one of {sorted(RATIOS)}, got {ratio!r}")
    if samples < 1:
        raise UsageError("samples must be at least 1")
    if max_cost is not None and max_cost < DETECT_PRICE_CNY:
        raise UsageError(f"a max cost of CNY {max_cost:g} buys no emo-detect call (CNY {DETECT_PRICE_CNY:g} each)")
    output = Path(output)
    prior = load_geometry(output) if output.exists() else DEFAULT_GEOMETRY
    with Checker(DEFAULT_CONFIG, geometry=prior) as checker:
        chosen = choose_samples(checker, expand_sources(list(paths)), ratio, samples, say)
    if not chosen:
        raise UsageError("no photo passed the local check; calibration needs photos that pass")
    affordable = len(chosen) if max_cost is None else min(len(chosen), int(max_cost / DETECT_PRICE_CNY + 1e-9))
    if not confirm(chosen[:affordable], _cost(affordable)):
        return None
    stopped = affordable < len(chosen)
    record_dir = Path(f"{output}.record")
    (record_dir / "sent").mkdir(parents=True, exist_ok=True)
    record = record_dir / f"{ratio.replace(':', 'x')}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
    answers: list[Answer] = []
    calls = 0
    interrupted: str | None = None
    own = client is None
    client = client or EmoClient()
    say(f"endpoint: {client.endpoint}")
    try:
        with record.open("a", encoding="utf-8") as handle:
            for sample in chosen:
                if max_cost is not None and _cost(calls + 1) > max_cost + 1e-9:
                    say(f"stopping: another call would pass --max-cost {max_cost:g} (spent CNY {_cost(calls):.3f})")
                    stopped = True
                    break
                sent = _sent_record(sample, record_dir)
                try:
                    url = client.upload(sample.data, model=DETECT_MODEL, filename=sample.filename)
                    calls += 1  # counted before the answer: a call that may have been billed counts
                    answer = client.face_detect(url, ratio=ratio)
                except PortraitRejected as exc:
                    answers.append(Answer(sample, None, rejection=exc))
                    _record_line(handle, {"source": sample.source, "sent": sent, "ours": _ours(sample.report),
                                          "answer": {"check_pass": False, "code": exc.code, "message": exc.message,
                                                     "request_id": exc.request_id}})
                    say(f"{sample.source}: the service refused it: {exc.code} (ours: pass)")
                    continue
                except APIError as exc:
                    if not answers:
                        raise
                    interrupted = str(exc)  # what was paid for is kept and fitted; the rest is not sent
                    say(f"stopping after {len(answers)} answers: {exc}")
                    break
                raw = answer.model_dump()
                out = answer.output
                obs = None
                if out.face_bbox and out.ext_bbox and len(out.face_bbox) == 4 and len(out.ext_bbox) == 4:
                    obs = Observation(tuple(sample.report.detector_xyxy),
                                      (sample.report.image.width, sample.report.image.height),
                                      tuple(out.face_bbox), tuple(out.ext_bbox))  # type: ignore[arg-type]
                answers.append(Answer(sample, obs, raw=raw))
                _record_line(handle, {"source": sample.source, "sent": sent, "ours": _ours(sample.report),
                                      "answer": raw})
            observations = [a.observation for a in answers if a.observation is not None]
            fit = fit_geometry(observations, ratio, prior) if observations else None
            if fit is not None:
                answers = [_with_ious(a, ratio, prior, fit.geometry) for a in answers]
                _record_line(handle, {"fit": {"ratio": ratio, "geometry": fit.geometry.to_dict(),
                                              "params": [p.__dict__ for p in fit.params], "rms_px": fit.rms_px,
                                              "spent_cny": _cost(calls)}})
    finally:
        if own:
            client.close()
    if fit is not None:
        _write_atomically(output, json.dumps(fit.geometry.to_dict(), indent=2) + "\n")
    return Calibration(ratio, tuple(answers), fit, prior, _cost(calls), stopped, str(output), str(record),
                       interrupted)


def _ours(report: Any) -> dict[str, Any]:
    return {"detector_xyxy": [round(v, 2) for v in report.detector_xyxy], "face_bbox": list(report.face_bbox),
            "ext_bbox": list(report.ext_bbox) if report.ext_bbox else None,
            "geometry": report.geometry.describe()}


def _sent_record(sample: Sample, record_dir: Path) -> dict[str, Any]:
    """What was sent: its hash and size, the canvas, and a copy when the bytes are not the
    photo's own file (a canvas or a fixed upload form)."""
    sha = hashlib.sha256(sample.data).hexdigest()
    out: dict[str, Any] = {"filename": sample.filename, "sha256": sha, "bytes": len(sample.data),
                           "width": sample.report.image.width, "height": sample.report.image.height,
                           "canvas": list(sample.canvas) if sample.canvas else None}
    try:
        same = Path(sample.source).is_file() and Path(sample.source).read_bytes() == sample.data
    except OSError:
        same = False
    if not same:
        copy = record_dir / "sent" / f"{sha[:16]}{Path(sample.filename).suffix}"
        copy.write_bytes(sample.data)
        out["copy"] = str(copy.relative_to(record_dir))
    return out


def _with_ious(answer: Answer, ratio: str, before: Geometry, after: Geometry) -> Answer:
    obs = answer.observation
    if obs is None:
        return answer

    def ious(geometry: Geometry) -> tuple[float, float]:
        face, ext = predict_boxes(obs, ratio, geometry)
        return round(iou(face, obs.face_bbox), 4), round(iou(ext, obs.ext_bbox), 4) if ext else 0.0

    return replace(answer, iou_before=ious(before), iou_after=ious(after))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EmoPrepError(f"cannot write the geometry file {path}: {exc.strerror or exc}") from exc
