"""face_occluded: covered faces of data2/ are refused, honest portraits pass, and each kind of
covering drawn onto a real dev pass (where the mesh says the part is) is caught."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import DATA, ROOT, labels

from pipeline.checks import ORDER
from pipeline.faces import FaceFinder, primary_index
from pipeline.findings import COVER_HINTS
from pipeline.ingest import load_image

DATA2 = ROOT.parent / "shared" / "data2"


def test_every_covered_dev_face_is_rejected_and_told_why(checker):
    rows = [r for r in labels(DATA2) if r["reject_reason"] == "face_occluded"]
    assert len(rows) == 20
    named = 0
    for row in rows:
        for ratio in ("1:1", "3:4"):
            report = checker.check(DATA2 / row["file"], ratio=ratio)
            assert not report.ok, f"{row['file']} ({ratio}) passed: {row['notes']}"
            first = report.errors[0]
            if first.code == "face_occluded":
                named += ratio == "1:1"
                assert first.api_code == "InvalidFile.FullFace" and first.to_dict()["covered"]
                assert first.value is not None and first.limit is not None
                assert "mouth" in first.covered  # every covering in data2 is over the mouth
                if row["occlusion"] == "hand":
                    assert first.causes == ("hand",) and "hand" in first.hint.lower()
            else:
                # only a reason that comes first in the labels' precedence may stand in for it
                assert ORDER.index(first.code) < ORDER.index("face_occluded"), (row["file"], first.code)
    # 18 of 20: dv2_002 (a mask and sunglasses) is not detected at all (no_face), and on dv2_004
    # the detector's box on the masked face is too wide for any 1:1 crop (face_too_large)
    assert named >= 18


def test_every_pass_of_data2_passes(checker):
    """Glasses, a hat over the forehead, and people of every skin tone and age group."""
    rows = [r for r in labels(DATA2) if r["expected"] == "pass"]
    assert len(rows) == 11
    failed = {r["file"]: [f.code for f in checker.check(DATA2 / r["file"]).errors] for r in rows}
    assert {k: v for k, v in failed.items() if v} == {}


@pytest.fixture(scope="module")
def finder():
    with FaceFinder() as f:
        yield f


def _mesh_points(finder, path):
    image = load_image(path)
    faces = finder.detect(image)
    face = faces[primary_index(faces, image.info.width, image.info.height)]
    return cv2.imread(str(path)), finder.mesh(image, face).points[:, :2]


#: A mask's outline: across the nose's middle, over the cheeks and round the chin.
_MASK = (197, 195, 5, 4, 1, 98, 327, 64, 294, 129, 358, 203, 423, 207, 427, 214, 434, 210, 430, 211, 431,
         32, 262, 208, 428, 199, 175, 152)
_MOUTH = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
          57, 287, 164, 18)
_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246, 70, 63, 105, 66,
              107, 230, 229, 228, 31)
_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466, 300, 293, 334,
             296, 336, 450, 449, 448, 261)
#: Passes with light, medium and dark skin (data/ and data2/ labels).
_PASSES = [DATA / "dv001.jpg", DATA2 / "dv2_021.jpg", DATA2 / "dv2_032.jpg"]


def _cover(bgr, pts, indices, colour, grow=1.0):
    """`bgr` with the convex hull of the mesh points `indices` (grown about its centre) filled."""
    out = bgr.copy()
    part = pts[list(indices)]
    part = part.mean(axis=0) + grow * (part - part.mean(axis=0))
    hull = cv2.convexHull(np.round(part).astype(np.int32))
    cv2.fillPoly(out, [hull], colour, lineType=cv2.LINE_AA)
    return out


def _check(checker, bgr):
    ok, png = cv2.imencode(".png", bgr)
    return checker.check_bytes(png.tobytes(), "drawn.png")


def _occluded(report):
    found = [f for f in report.errors if f.code == "face_occluded"]
    assert found, f"expected face_occluded, got {[f.code for f in report.errors]}"
    return found[0]


@pytest.mark.parametrize("path", _PASSES, ids=lambda p: p.name)
def test_a_mask_over_nose_and_mouth(checker, finder, path):
    bgr, pts = _mesh_points(finder, path)
    assert _check(checker, bgr).ok
    finding = _occluded(_check(checker, _cover(bgr, pts, _MASK, (235, 206, 160))))  # light blue
    assert finding.covered == ("nose", "mouth") and finding.causes == ("mask",)
    assert finding.hint == COVER_HINTS["mask"][0]


@pytest.mark.parametrize("path", _PASSES, ids=lambda p: p.name)
def test_a_patch_of_the_persons_own_skin_colour_over_the_mouth(checker, finder, path):
    """Colour cannot tell this one: the lip outline's lost contrast does."""
    bgr, pts = _mesh_points(finder, path)
    x, y = np.round(pts[151]).astype(int)
    skin = tuple(int(v) for v in np.median(bgr[y - 3:y + 4, x - 3:x + 4].reshape(-1, 3), axis=0))
    finding = _occluded(_check(checker, _cover(bgr, pts, _MOUTH, skin, grow=1.3)))
    assert "mouth" in finding.covered and "nose" not in finding.covered


@pytest.mark.parametrize("path", _PASSES, ids=lambda p: p.name)
def test_dark_lenses_over_both_eyes(checker, finder, path):
    bgr, pts = _mesh_points(finder, path)
    covered = _cover(_cover(bgr, pts, _RIGHT_EYE, (25, 25, 25)), pts, _LEFT_EYE, (25, 25, 25))
    finding = _occluded(_check(checker, covered))
    assert set(finding.covered) == {"right_eye", "left_eye"} and finding.causes == ("sunglasses",)


@pytest.mark.parametrize("path", _PASSES, ids=lambda p: p.name)
def test_dark_lenses_with_bright_reflections(checker, finder, path):
    """Reflections give the eye outline contrast; the lens still hides the skin below the eye."""
    bgr, pts = _mesh_points(finder, path)
    out = bgr.copy()
    for eye in (_RIGHT_EYE, _LEFT_EYE):
        lens = pts[list(eye)]
        centre, size = lens.mean(axis=0), np.ptp(lens, axis=0)
        box = ((float(centre[0]), float(centre[1] + 0.1 * size[1])), (float(size[0] * 1.3), float(size[1] * 1.6)), 0.0)
        cv2.ellipse(out, box, (20, 20, 20), -1, cv2.LINE_AA)
        for k in (-0.25, 0.0, 0.25):  # white streaks across the lens, like a window's reflection
            a = (int(centre[0] - 0.4 * size[0]), int(centre[1] + k * size[1]))
            b = (int(centre[0] + 0.4 * size[0]), int(centre[1] + (k - 0.2) * size[1]))
            cv2.line(out, a, b, (235, 235, 235), max(2, int(size[1] / 12)), cv2.LINE_AA)
    finding = _occluded(_check(checker, out))
    assert set(finding.covered) == {"right_eye", "left_eye"} and finding.causes == ("sunglasses",)


@pytest.mark.parametrize("path", _PASSES, ids=lambda p: p.name)
def test_one_eye_hidden(checker, finder, path):
    bgr, pts = _mesh_points(finder, path)
    finding = _occluded(_check(checker, _cover(bgr, pts, _LEFT_EYE, (30, 40, 60))))  # dark brown hair
    assert finding.covered == ("left_eye",) and finding.causes == ("eye",)


@pytest.mark.parametrize("path", _PASSES, ids=lambda p: p.name)
def test_thin_eyeglass_frames_still_pass(checker, finder, path):
    bgr, pts = _mesh_points(finder, path)
    out = bgr.copy()
    width = max(2, round(np.ptp(pts[:, 0]) / 120))
    for eye in (_RIGHT_EYE, _LEFT_EYE):
        (cx, cy), (w, h), angle = cv2.minAreaRect(np.round(pts[list(eye[:16])]).astype(np.float32))
        cv2.ellipse(out, ((cx, cy), (w * 1.6, max(h, w * 0.5) * 2.2), angle), (20, 20, 20), width, cv2.LINE_AA)
    bridge = np.round(pts[[133, 362]]).astype(int)
    cv2.line(out, tuple(bridge[0]), tuple(bridge[1]), (20, 20, 20), width, cv2.LINE_AA)
    report = _check(checker, out)
    assert report.ok, [f.message for f in report.errors]


def test_the_hand_model_is_asked_only_when_the_pixels_leave_it_open_and_the_face_scores_low():
    from pipeline.checks import face_occluded
    from pipeline.config import DEFAULT_CONFIG as cfg
    from pipeline.occlusion import Coverage

    visible = Coverage(nose_warmth=0.9, lips_warmth=0.9, mouth_contrast=0.8,
                       eye_contrast={"right_eye": 0.6, "left_eye": 0.6},
                       below_eye={"right_eye": (0.9, 0.9), "left_eye": (0.9, 0.9)}, mouth_xy=(100.0, 100.0),
                       face_side=200.0)
    asked: list[float] = []

    def hand(_: Coverage) -> float:
        asked.append(1.0)
        return 0.98

    sure = cfg.hand_check_below_score
    assert face_occluded(lambda: visible, hand, sure, [], cfg) == [] and asked == []
    found = face_occluded(lambda: visible, hand, sure - 0.01, [], cfg)
    assert asked == [1.0] and found[0].causes == ("hand",) and found[0].value == 0.98
    masked = replace(visible, lips_warmth=0.0, nose_warmth=0.0)
    assert face_occluded(lambda: masked, hand, 0.5, [], cfg)[0].causes == ("mask",) and asked == [1.0]
