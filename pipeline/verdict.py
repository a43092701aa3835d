"""The check stage end to end: `Checker` holds the models, `Report` is what comes back.

A `Checker` loads and verifies the models once and is a context manager; batch workers or
a server keep one per worker. `check()` at the package top level uses a default one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from . import checks
from .body import BodyFinder
from .boxes import XYXY
from .config import DEFAULT_CONFIG, HAND_CROP_DROP, HAND_CROP_FACES, RATIOS, CheckConfig
from .errors import InputError, UsageError
from .faces import Face, FaceFinder, HeadPose, Mesh, head_pose, primary_index
from .fetch import source_name
from .findings import Finding, Verdict
from .geometry import DEFAULT_GEOMETRY, Geometry, crop_box, face_box, resolve_geometry, service_face
from .hands import HandFinder
from .ingest import ImageInfo, LoadedImage, decode_image, read_source
from .occlusion import Coverage, measure_coverage

__all__ = ["Report", "Checker", "check", "default_checker"]


@dataclass(frozen=True)
class Report(Verdict):
    """Everything the JSON contract says about one photo. Boxes are integer [x1, y1, x2, y2]
    in pixels of the image as displayed (EXIF orientation applied)."""

    source: str
    ratio: str
    image: ImageInfo | None
    findings: tuple[Finding, ...]
    face_bbox: XYXY | None = None
    ext_bbox: XYXY | None = None
    faces: tuple[tuple[XYXY, float], ...] = ()
    """Every face scoring at least the configured minimum: (box clipped to the image, score)."""
    pose: HeadPose | None = None
    fixes: tuple[str, ...] = ()
    """What the upload form changes relative to the file (empty: upload the file as it is)."""
    loaded: LoadedImage | None = field(default=None, repr=False, compare=False)
    """The decoded photo, for previews and the upload form (None when it did not decode)."""
    geometry: Geometry = field(default=DEFAULT_GEOMETRY, repr=False, compare=False)
    """The box rules face_bbox and ext_bbox were made with."""
    detector_xyxy: tuple[float, float, float, float] | None = field(default=None, repr=False, compare=False)
    """The main face as our detector found it: unrounded, unclipped, before the geometry's face
    transform (what `emo-prep calibrate` fits the service's boxes to)."""

    def to_dict(self) -> dict[str, Any]:
        """The `check --json` record (DESIGN, 'The check JSON contract')."""
        out: dict[str, Any] = {"source": self.source, "ok": self.ok, "ratio": self.ratio}
        if self.image is not None:
            out["image"] = {"width": self.image.width, "height": self.image.height,
                            "format": self.image.format, "exif_orientation": self.image.exif_orientation,
                            "bytes": self.image.bytes}
        else:
            out["image"] = None
        if self.face_bbox is not None:
            out["face_bbox"] = list(self.face_bbox)
        if self.ext_bbox is not None:
            out["ext_bbox"] = list(self.ext_bbox)
        out["faces"] = [{"bbox": list(box), "score": round(score, 3)} for box, score in self.faces]
        if self.pose is not None:
            out["pose"] = {"yaw": self.pose.yaw, "pitch": self.pose.pitch, "roll": self.pose.roll}
        out["findings"] = [f.to_dict() for f in self.findings]
        out["fixes"] = list(self.fixes)
        out["geometry"] = self.geometry.describe()
        return out


def _sorted(findings: list[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: (f.severity != "error", checks.ORDER.index(f.code))))


def _failed(source: str, ratio: str, exc: InputError, geometry: Geometry) -> Report:
    return Report(source=source, ratio=ratio, image=None,
                  findings=(Finding(exc.code, "error", exc.message, exc.value, exc.limit),), geometry=geometry)


class Checker:
    """Runs the whole check on photos; models load once, on creation (the 3:4 body model and
    the hand model on first use). Use as a context manager or call `close()`.

    `geometry` (a Geometry or a geometry file) gives the box rules; it falls back to
    `config.geometry`, then to $EMO_PREP_GEOMETRY, then to the defaults.
    """

    def __init__(self, config: CheckConfig | None = None, *,
                 geometry: Geometry | str | os.PathLike[str] | None = None) -> None:
        self.config = config or DEFAULT_CONFIG
        self.geometry = resolve_geometry(geometry if geometry is not None else self.config.geometry)
        self._faces: FaceFinder | None = FaceFinder()
        self._body: BodyFinder | None = None
        self._hands: HandFinder | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the models; idempotent. The checker cannot be used afterwards."""
        if self._faces is not None:
            self._faces.close()
            self._faces = None
        if self._body is not None:
            self._body.close()
            self._body = None
        if self._hands is not None:
            self._hands.close()
            self._hands = None

    def _finder(self) -> FaceFinder:
        if self._faces is None:
            raise UsageError("this Checker is closed; create a new one")
        return self._faces

    def check(self, source: str | os.PathLike[str] | bytes, ratio: str = "1:1") -> Report:
        """Check a photo given as a path, an http(s) URL or bytes."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self.check_bytes(bytes(source), "<bytes>", ratio)
        source_id = source_name(source)
        _check_ratio(ratio)
        try:
            data = read_source(source)
        except InputError as exc:
            return _failed(source_id, ratio, exc, self.geometry)
        return self.check_bytes(data, source_id, ratio)

    def check_bytes(self, data: bytes, source_id: str, ratio: str = "1:1") -> Report:
        """Check a photo's bytes; `source_id` names it in the report."""
        _check_ratio(ratio)
        finder = self._finder()
        try:
            image = decode_image(data, source_id, max_side=self.config.max_side)
        except InputError as exc:
            return _failed(source_id, ratio, exc, self.geometry)
        with self._lock:  # the MediaPipe task and interpreters are not re-entrant
            return self._check_image(finder, image, ratio)

    def _check_image(self, finder: FaceFinder, image: LoadedImage, ratio: str) -> Report:
        cfg = self.config
        info = image.info
        size = (info.width, info.height)
        findings = checks.image_size(info, cfg)
        detected = finder.detect(image)
        meshes: dict[int, Mesh] = {}  # by id(face): a mesh run to confirm a face is not run again

        def mesh_of(face: Face) -> Mesh:
            if id(face) not in meshes:
                meshes[id(face)] = finder.mesh(image, face)
            return meshes[id(face)]

        faces = [f for f in detected if checks.counts_as_face(f.score, lambda f=f: mesh_of(f).presence, cfg)]
        primary = faces[primary_index(faces, *size)] if faces else None
        findings += checks.face_count(detected, faces, primary, cfg)
        report_faces = tuple((face_box(f.xyxy, size), round(f.score, 3)) for f in faces)
        if primary is None:
            return Report(image.source, ratio, info, _sorted(findings), faces=report_faces,
                          fixes=image.fixes, loaded=image, geometry=self.geometry)
        # the floors are in our detector's face sides (the labels' rule), whatever the geometry
        floor = (cfg.ext_floor_11 if ratio == "1:1" else cfg.ext_floor_34) / self.geometry.face_scale
        face = service_face(primary.xyxy, self.geometry)
        ext = crop_box(face, size, ratio, floor=floor, geometry=self.geometry)
        findings += checks.ext_fit(ext is not None, ratio, cfg)
        findings += checks.face_size(primary, info, ratio, cfg)
        findings += checks.face_cut_off(primary, info, cfg)
        mesh = mesh_of(primary)
        head = head_pose(mesh)
        findings += checks.pose(head, cfg)
        gray = _face_gray(image, mesh)
        findings += checks.blur(checks.face_sharpness(gray), cfg)
        findings += checks.exposure(checks.face_highlights(gray), checks.face_luma(gray), cfg)
        findings += checks.upside_down(primary.score, lambda: finder.score_turned(image, primary), findings, cfg)
        findings += checks.face_presence(mesh.presence, findings, cfg)
        if ratio == "3:4":
            if self._body is None:
                self._body = BodyFinder()
            findings += checks.body_cut_off(self._body.hips(image, primary), primary, info, cfg)
        findings += checks.face_occluded(lambda: measure_coverage(image, mesh),
                                         lambda cov: self._hand_presence(image, cov), primary.score, findings, cfg)
        findings += checks.faint_face(primary.score, findings, cfg)
        return Report(image.source, ratio, info, _sorted(findings), face_bbox=face_box(face, size),
                      ext_bbox=ext, faces=report_faces, pose=head, fixes=image.fixes, loaded=image,
                      geometry=self.geometry, detector_xyxy=tuple(primary.xyxy))

    def _hand_presence(self, image: LoadedImage, cov: Coverage) -> float:
        """The hand model's score on a square below the mouth (HAND_CROP_* in config)."""
        if self._hands is None:
            self._hands = HandFinder()
        side = HAND_CROP_FACES * cov.face_side
        centre = (cov.mouth_xy[0], cov.mouth_xy[1] + HAND_CROP_DROP * cov.face_side)
        return self._hands.presence(image, centre, side)


def _check_ratio(ratio: str) -> None:
    if ratio not in RATIOS:
        raise ValueError(f"ratio: expected one of {sorted(RATIOS)}, got {ratio!r}")


def _face_gray(image: LoadedImage, mesh: Mesh) -> np.ndarray:
    """Grey pixels of the mesh's bounding box in the working copy (clipped to the image)."""
    sx, sy = image.scale
    h, w = image.pixels.shape[:2]
    pts = mesh.points[:, :2] / (sx, sy)
    x1, y1 = np.clip(np.floor(pts.min(axis=0)).astype(int), 0, (w - 1, h - 1))
    x2, y2 = np.clip(np.ceil(pts.max(axis=0)).astype(int), (x1 + 1, y1 + 1), (w, h))
    return cv2.cvtColor(image.pixels[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)


_default: Checker | None = None
_default_lock = threading.Lock()


def default_checker() -> Checker:
    """The process-wide Checker behind `check()` (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Checker()
        return _default


def check(source: str | os.PathLike[str] | bytes, ratio: str = "1:1") -> Report:
    """Check one photo with a process-wide default Checker (created on first use)."""
    return default_checker().check(source, ratio)
