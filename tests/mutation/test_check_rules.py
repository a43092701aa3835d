"""Every photo rule on both sides of its limit, as the README's table states it, and the
findings' JSON shape. Pure functions over plain data: no model, no photo."""

from __future__ import annotations

import pytest

from pipeline import checks
from pipeline.body import Hips
from pipeline.config import CheckConfig
from pipeline.faces import Face, HeadPose
from pipeline.findings import CODES, COVER_HINTS, Finding, Verdict
from pipeline.ingest import ImageInfo
from pipeline.occlusion import Coverage

CFG = CheckConfig()


def info(w: int, h: int) -> ImageInfo:
    return ImageInfo(width=w, height=h, format="jpeg", exif_orientation=1, bytes=1000)


def face(x1: float, y1: float, x2: float, y2: float, score: float = 0.95) -> Face:
    return Face((x1, y1, x2, y2), score, ((0.0, 0.0),) * 6)


def summary(findings: list[Finding]) -> list[tuple]:
    return [(f.code, f.severity, f.value, f.limit) for f in findings]


# --- image size: shorter side >= 400, longer side <= 7000 -------------------------------------

@pytest.mark.parametrize("w,h,want", [
    (400, 400, []), (400, 7000, []), (7000, 400, []),
    (399, 800, [("image_too_small", "error", 399, 400)]),
    (800, 399, [("image_too_small", "error", 399, 400)]),
    (7001, 800, [("image_too_large", "error", 7001, 7000)]),
    (800, 7001, [("image_too_large", "error", 7001, 7000)]),
    (399, 7001, [("image_too_small", "error", 399, 400), ("image_too_large", "error", 7001, 7000)]),
])
def test_image_size_limits(w, h, want):
    found = checks.image_size(info(w, h), CFG)
    assert summary(found) == want
    for f in found:
        assert str(f.value) in f.message and str(f.limit) in f.message


# --- faces: a detection counts from 0.5, or when the mesh confirms it (>= 0.8) ----------------

@pytest.mark.parametrize("score,presence,want,asked", [
    (0.5, 0.0, True, False), (0.9, 0.0, True, False),
    (0.49, 0.8, True, True), (0.49, 0.79, False, True), (0.3, 1.0, True, True),
])
def test_counts_as_face(score, presence, want, asked):
    calls = []

    def mesh() -> float:
        calls.append(1)
        return presence

    assert checks.counts_as_face(score, mesh, CFG) is want
    assert bool(calls) is asked  # the mesh is asked only when the score alone does not decide


def test_no_face_names_the_best_score():
    found = checks.face_count([face(0, 0, 10, 10, 0.31), face(0, 0, 10, 10, 0.42)], [], None, CFG)
    assert summary(found) == [("no_face", "error", 0.42, 0.5)]
    assert "0.42" in found[0].message and "0.5" in found[0].message
    assert summary(checks.face_count([], [], None, CFG)) == [("no_face", "error", 0.0, 0.5)]


def test_multiple_faces_from_three_tenths_of_the_main_face():
    main = face(0, 0, 100, 100)
    at = face(200, 0, 230, 30)         # 0.30 of the main face's side: counts
    below = face(300, 0, 329, 29)      # 0.29: does not
    assert checks.face_count([main, below], [main, below], main, CFG) == []
    found = checks.face_count([main, at, below], [main, at, below], main, CFG)
    assert summary(found) == [("multiple_faces", "error", 2, 1)]
    assert found[0].message.startswith("2 faces; the largest other one is 0.30")
    big = face(400, 0, 480, 80)
    found = checks.face_count([main, at, big], [main, at, big], main, CFG)
    assert summary(found) == [("multiple_faces", "error", 3, 1)] and "0.80" in found[0].message


def test_a_detection_that_does_not_count_is_not_a_second_face():
    main, weak = face(0, 0, 100, 100), face(200, 0, 300, 100, 0.2)
    assert checks.face_count([main, weak], [main], main, CFG) == []


# --- ext box fit ------------------------------------------------------------------------------

def test_ext_fit():
    assert checks.ext_fit(True, "1:1", CFG) == [] and checks.ext_fit(True, "3:4", CFG) == []
    assert summary(checks.ext_fit(False, "1:1", CFG)) == [("face_too_large", "error", None, 1.5)]
    assert summary(checks.ext_fit(False, "3:4", CFG)) == [("body_cut_off", "error", None, 2.4)]
    assert "1.5 face widths" in checks.ext_fit(False, "1:1", CFG)[0].message
    assert "3:4 crop of at least 2.4" in checks.ext_fit(False, "3:4", CFG)[0].message


# --- face size: too small at <= 14 % (1:1) / <= 9 % (3:4) of the height; too large at >= 57.5 %
#     of the height or >= 35 % of the area ----------------------------------------------------

@pytest.mark.parametrize("ratio,face_h,want", [
    ("1:1", 140, "face_too_small"),   # exactly 14 %: too small (the README: <=)
    ("1:1", 141, None),
    ("3:4", 90, "face_too_small"),    # exactly 9 %
    ("3:4", 91, None),
    ("3:4", 140, None),               # 14 % is fine for a half-body shot
    ("1:1", 575, "face_too_large"),   # exactly 57.5 %
    ("1:1", 574, None),
    ("3:4", 575, "face_too_large"),
])
def test_face_height_limits(ratio, face_h, want):
    # a narrow face (100 px wide in a 1000 x 1000 photo) so the area rule stays out of the way
    found = checks.face_size(face(450, 100, 550, 100 + face_h), info(1000, 1000), ratio, CFG)
    assert [f.code for f in found] == ([want] if want else [])
    if want:
        f = found[0]
        assert f.severity == "error" and f.value == pytest.approx(face_h / 1000)
        small = 0.14 if ratio == "1:1" else 0.09
        assert f.limit == (small if want == "face_too_small" else 0.575)
        assert f"{face_h / 1000:.0%}" in f.message and f"{f.limit:.0%}" in f.message


def test_face_area_counts_width_times_height_wherever_the_face_is():
    # the same 700 x 500 face lower in the photo: still 35 % of the area
    found = checks.face_size(face(100, 300, 800, 800), info(1000, 1000), "1:1", CFG)
    assert summary(found) == [("face_too_large", "error", pytest.approx(0.35), 0.35)]
    assert checks.face_size(face(100, 300, 799, 800), info(1000, 1000), "1:1", CFG) == []


def test_face_area_limit():
    # 700 x 500 in 1000 x 1000: height 50 % (fine), area exactly 35 %: too large; 699 wide: fine
    found = checks.face_size(face(0, 0, 700, 500), info(1000, 1000), "1:1", CFG)
    assert summary(found) == [("face_too_large", "error", pytest.approx(0.35), 0.35)]
    assert "covers 35%" in found[0].message and "under 35%" in found[0].message
    assert checks.face_size(face(0, 0, 699, 500), info(1000, 1000), "1:1", CFG) == []


def test_face_size_uses_width_and_height_of_the_photo():
    # the same 150 px face: 15 % of a 1000 px high photo passes, 150/1100 = 13.6 % does not
    assert checks.face_size(face(0, 0, 150, 150), info(2000, 1000), "1:1", CFG) == []
    assert [f.code for f in checks.face_size(face(0, 0, 150, 150), info(800, 1100), "1:1", CFG)] == \
        ["face_too_small"]
    # area: 400 x 560 in a 1600 x 1000 photo is 14 % of the area (passes); in 800 x 1000, 28 %
    assert checks.face_size(face(0, 0, 400, 560), info(1600, 1000), "1:1", CFG) == []


# --- face cut off: >= 12 % of the box outside (warning from 3 %) ----------------------------

@pytest.mark.parametrize("box,want", [
    ((-12, 100, 88, 200), ("error", 0.12)),      # 12 % outside on the left
    ((-11, 100, 89, 200), ("warning", 0.03)),    # 11 %
    ((912, 100, 1012, 200), ("error", 0.12)),    # right edge
    ((100, -12, 200, 88), ("error", 0.12)),      # top
    ((100, 912, 200, 1012), ("error", 0.12)),    # bottom
    ((-3, 100, 97, 200), ("warning", 0.03)),     # exactly 3 %
    ((-2, 100, 98, 200), None),
    ((0, 0, 100, 100), None),
    ((900, 900, 1000, 1000), None),              # touching the corner from inside
])
def test_face_cut_off_limits(box, want):
    found = checks.face_cut_off(face(*box), info(1000, 1000), CFG)
    if want is None:
        assert found == []
        return
    (f,) = found
    share = abs(min(box[0], box[1], 1000 - box[2], 1000 - box[3])) / 100
    assert (f.code, f.severity, f.limit) == ("face_cut_off", *want)
    assert f.value == pytest.approx(share)
    assert f"{share:.0%}" in f.message


@pytest.mark.parametrize("box", [(1100, 100, 1200, 200), (100, 1100, 200, 1200), (-300, -300, -200, -200)])
def test_a_face_wholly_outside_is_all_cut_off(box):
    (f,) = checks.face_cut_off(face(*box), info(1000, 1000), CFG)
    assert (f.severity, f.value) == ("error", 1.0) and f.message == "100% of the face lies outside the photo"


def test_a_face_smaller_than_a_pixel_is_measured_by_its_own_area():
    # 1 x 0.5 px, half of it past the right edge: 50 % outside
    (f,) = checks.face_cut_off(face(999.5, 100, 1000.5, 100.5), info(1000, 1000), CFG)
    assert f.value == pytest.approx(0.5)


def test_face_cut_off_in_a_corner_counts_both_edges():
    # 10 % off the left and 10 % off the top: 1 - 0.9 * 0.9 = 19 % outside
    (f,) = checks.face_cut_off(face(-10, -10, 90, 90), info(1000, 1000), CFG)
    assert f.severity == "error" and f.value == pytest.approx(0.19)


# --- pose: yaw > 40, down > 15.5, up > 25, roll > 25 (warnings from 25 / 12 / 18 / 10) -------

@pytest.mark.parametrize("yaw,pitch,roll,want", [
    (40, 0, 0, ("warning", 40, 25)), (40.1, 0, 0, ("error", 40.1, 40)), (-40.1, 0, 0, ("error", 40.1, 40)),
    (25, 0, 0, None), (25.1, 0, 0, ("warning", 25.1, 25)), (-25.1, 0, 0, ("warning", 25.1, 25)),
    (0, 25, 0, ("warning", 25, 18)), (0, 25.1, 0, ("error", 25.1, 25)), (0, 18, 0, None),
    (0, 18.1, 0, ("warning", 18.1, 18)),
    (0, -15.5, 0, ("warning", 15.5, 12)), (0, -15.6, 0, ("error", 15.6, 15.5)), (0, -12, 0, None),
    (0, -12.1, 0, ("warning", 12.1, 12)),
    (0, 0, 25, ("warning", 25, 10)), (0, 0, 25.1, ("error", 25.1, 25)), (0, 0, -25.1, ("error", 25.1, 25)),
    (0, 0, 10, None), (0, 0, -10.1, ("warning", 10.1, 10)),
    (0, 0, 0, None),
])
def test_pose_limits(yaw, pitch, roll, want):
    found = checks.pose(HeadPose(yaw, pitch, roll), CFG)
    if want is None:
        assert found == []
        return
    (f,) = found
    assert (f.code, f.severity, f.value, f.limit) == ("pose", *want)


def test_pose_names_the_worst_axis_relative_to_its_limit():
    # yaw 44 is 1.10 of its limit, roll 30 is 1.20 of its: roll speaks
    (f,) = checks.pose(HeadPose(44, 0, 30), CFG)
    assert (f.value, f.limit) == (30, 25) and f.message == "roll (head tilted) is 30 degrees; the limit is 25"
    (f,) = checks.pose(HeadPose(48, 0, 28), CFG)  # 1.20 against 1.12: yaw
    assert f.message == "yaw (head turned) is 48 degrees; the limit is 40"
    (f,) = checks.pose(HeadPose(0, -17, 0), CFG)
    assert f.message == "pitch (looking down) is 17 degrees; the limit is 15.5"
    (f,) = checks.pose(HeadPose(0, 26, 0), CFG)
    assert f.message == "pitch (looking up) is 26 degrees; the limit is 25"
    # warnings: yaw 30 is 1.20 of 25, roll 11 is 1.10 of 10: yaw speaks
    (f,) = checks.pose(HeadPose(30, 0, 11), CFG)
    assert f.message == "yaw (head turned) is 30 degrees, above 25" and f.limit == 25
    (f,) = checks.pose(HeadPose(26, 0, 14), CFG)  # 1.04 against 1.40: roll
    assert f.message == "roll (head tilted) is 14 degrees, above 10"


# --- upside down: asked only under 0.9 and without an earlier error -------------------------

def _turned(value: float, calls: list):
    def ask() -> float:
        calls.append(1)
        return value
    return ask


def test_upside_down():
    calls: list = []
    assert checks.upside_down(0.9, _turned(1.0, calls), [], CFG) == [] and calls == []  # upright score
    found = checks.upside_down(0.85, _turned(0.9, calls), [], CFG)
    assert summary(found) == [("pose", "error", 0.05, 0.0)] and calls == [1]
    assert "0.90 turned by 180 degrees against 0.85" in found[0].message
    assert checks.upside_down(0.85, _turned(0.85, calls), [], CFG) == []  # no gain: not upside down
    (f,) = checks.upside_down(0.8, _turned(0.91234, calls), [], CFG)
    assert f.value == 0.112  # the gain, to 3 decimals


@pytest.mark.parametrize("earlier,asked", [
    ("face_cut_off", False), ("no_face", False), ("dark", False),      # before pose, or dark
    ("pose", True), ("blur", True), ("overexposed", True), ("body_cut_off", True),  # pose itself, after pose
])
def test_upside_down_is_asked_only_when_it_can_matter(earlier, asked):
    calls: list = []
    so_far = [Finding(earlier, "error", "x")]
    checks.upside_down(0.6, _turned(0.95, calls), so_far, CFG)
    assert bool(calls) is asked
    calls.clear()
    checks.upside_down(0.6, _turned(0.95, calls), [Finding(earlier, "warning", "x")], CFG)
    assert calls == [1]  # a warning never stops it


# --- a faint face and a doubtful one ----------------------------------------------------------

def test_faint_face():
    assert checks.faint_face(0.5, [], CFG) == []
    found = checks.faint_face(0.49, [], CFG)
    assert summary(found) == [("no_face", "error", 0.49, 0.5)] and "score 0.49, 0.5 needed" in found[0].message
    assert checks.faint_face(0.49, [Finding("blur", "error", "x")], CFG) == []
    assert summary(checks.faint_face(0.49, [Finding("blur", "warning", "x")], CFG))[0][0] == "no_face"


@pytest.mark.parametrize("code", ["multiple_faces", "face_too_large", "face_cut_off", "pose", "blur", "dark",
                                  "overexposed"])
def test_face_presence_keeps_quiet_when_an_error_explains_a_low_score(code):
    assert checks.face_presence(0.2, [Finding(code, "error", "x")], CFG) == []
    assert checks.face_presence(0.2, [Finding(code, "warning", "x")], CFG) != []


def test_face_presence():
    assert checks.face_presence(0.5, [], CFG) == []
    found = checks.face_presence(0.49, [], CFG)
    assert summary(found) == [("no_face", "error", 0.49, 0.5)] and "0.49" in found[0].message
    # a small face does not explain it: a pattern taken for a tiny face is no face
    assert checks.face_presence(0.1, [Finding("face_too_small", "error", "x")], CFG) != []


# --- blur (< 60, warning < 90), dark (< 45, warning < 70), overexposed (> 235, warning > 220) --

@pytest.mark.parametrize("value,want", [
    (59.9, ("error", 60)), (60, ("warning", 90)), (89.9, ("warning", 90)), (90, None), (500, None),
])
def test_blur_limits(value, want):
    found = checks.blur(value, CFG)
    assert summary(found) == ([("blur", want[0], value, want[1])] if want else [])
    if want and want[0] == "error":
        assert found[0].message == f"face sharpness {value:.1f} is below the limit 60"
    if want and want[0] == "warning":
        assert found[0].message == f"face sharpness {value:.1f} is close to the limit 60"


@pytest.mark.parametrize("highlights,luma,want", [
    (44.9, 30, ("dark", "error", 44.9, 45)), (45, 30, ("dark", "warning", 45, 70)),
    (69.9, 50, ("dark", "warning", 69.9, 70)), (70, 100, None),
    (250, 235, ("overexposed", "warning", 235, 220)), (250, 235.1, ("overexposed", "error", 235.1, 235)),
    (250, 220, None), (250, 220.1, ("overexposed", "warning", 220.1, 220)),
    (30, 240, ("dark", "error", 30, 45)),   # dark speaks first (it never is both in practice)
])
def test_exposure_limits(highlights, luma, want):
    found = checks.exposure(highlights, luma, CFG)
    assert summary(found) == ([want] if want else [])


def test_exposure_messages():
    assert checks.exposure(21, 30, CFG)[0].message == \
        "brightness of the face's lit parts 21.0 is below the limit 45"
    assert checks.exposure(250, 240, CFG)[0].message == "face brightness 240.0 is above the limit 235"
    assert checks.exposure(250, 225, CFG)[0].message == "face brightness 225.0 is close to the limit 235"


# --- 3:4 body: hips >= 0.35 face sides above the bottom, inside the sides, visible >= 0.5 ----

@pytest.mark.parametrize("hips,visibility,want", [
    (((400, 965), (600, 960)), 0.9, None),                    # lowest hip 965: margin exactly 0.35 F
    (((400, 960), (600, 966)), 0.9, ("error", 0.34, 0.35)),
    (((0, 500), (1000, 500)), 0.9, None),                     # on the side edges: inside
    (((-1, 500), (600, 500)), 0.9, ("error", 5.0, 0.35)),     # past the left side
    (((400, 500), (1001, 500)), 0.9, ("error", 5.0, 0.35)),   # past the right side
    (((400, 500), (600, 500)), 0.5, None),
    (((400, 500), (600, 500)), 0.49, ("error", 0.49, 0.5)),
])
def test_body_cut_off_limits(hips, visibility, want):
    found = checks.body_cut_off(Hips(hips, visibility, 0.9), face(450, 100, 550, 200), info(1000, 1000), CFG)
    if want is None:
        assert found == []
        return
    (f,) = found
    assert (f.code, f.severity) == ("body_cut_off", want[0])
    assert f.value == pytest.approx(want[1]) and f.limit == want[2]
    assert ("visible" in f.message) is (want[2] == 0.5)


# --- occlusion: judged only on a face with no other error ----------------------------------

def cov(*, nose=0.9, lips=0.9, mouth=0.6, eyes=(0.5, 0.5), below=((0.9, 0.8), (0.9, 0.8))) -> Coverage:
    return Coverage(nose, lips, mouth, {"right_eye": eyes[0], "left_eye": eyes[1]},
                    {"right_eye": below[0], "left_eye": below[1]}, (100.0, 100.0), 100.0)


def _occluded(c: Coverage, *, score=0.95, hand=0.0, so_far=(), calls=None):
    calls = [] if calls is None else calls

    def hand_presence(measured: Coverage) -> float:
        assert measured is c  # the hand is looked for where the coverage found the mouth
        calls.append("hand")
        return hand

    def coverage() -> Coverage:
        calls.append("coverage")
        return c
    return checks.face_occluded(coverage, hand_presence, score, list(so_far), CFG)


def test_a_clear_face_is_not_occluded():
    calls: list = []
    assert _occluded(cov(), calls=calls) == [] and calls == ["coverage"]  # 0.95: the hand model is not asked
    assert _occluded(cov(nose=0.35, lips=0.35, mouth=0.3, eyes=(0.2, 0.2))) == []  # every limit itself passes
    assert _occluded(cov(lips=None, nose=None)) == []  # no colour cue: not covered


def test_mask_cover_and_their_limits():
    (f,) = _occluded(cov(lips=0.34, nose=0.34))
    assert (f.code, f.severity, f.covered, f.causes) == ("face_occluded", "error", ("nose", "mouth"), ("mask",))
    assert (f.value, f.limit) == (0.34, 0.35)
    assert f.message == "the nose, mouth look covered (lips warmth against the skin 0.34, limit 0.35)"
    assert f.hint == COVER_HINTS["mask"][0]
    (f,) = _occluded(cov(lips=0.34))
    assert (f.covered, f.causes) == (("mouth",), ("cover",))
    assert f.message == "the mouth looks covered (lips warmth against the skin 0.34, limit 0.35)"
    (f,) = _occluded(cov(lips=0.1, nose=0.35))  # the nose at its limit is not covered
    assert (f.covered, f.causes) == (("mouth",), ("cover",))
    (f,) = _occluded(cov(mouth=0.29, nose=0.1))
    assert (f.covered, f.causes, f.value, f.limit) == (("nose", "mouth"), ("mask",), 0.29, 0.3)
    assert "mouth contrast 0.29, limit 0.3" in f.message


def test_hand_over_the_mouth_is_asked_under_0_9():
    calls: list = []
    assert _occluded(cov(), score=0.9, hand=1.0, calls=calls) == [] and "hand" not in calls
    calls.clear()
    (f,) = _occluded(cov(), score=0.89, hand=0.51, calls=calls)
    assert calls == ["coverage", "hand"]
    assert (f.severity, f.covered, f.causes, f.value, f.limit) == ("error", ("mouth",), ("hand",), 0.51, 0.5)
    assert "hand presence over the mouth 0.51, limit 0.5" in f.message
    assert _occluded(cov(), score=0.89, hand=0.5) == []
    calls.clear()
    _occluded(cov(lips=0.1), score=0.5, hand=1.0, calls=calls)
    assert "hand" not in calls  # the pixels already show the mouth covered


def test_eyes_flat_or_behind_a_dark_lens():
    (f,) = _occluded(cov(eyes=(0.19, 0.5)))
    assert (f.severity, f.covered, f.causes, f.value, f.limit) == ("error", ("right_eye",), ("eye",), 0.19, 0.2)
    assert f.message == "the right eye looks covered (right eye contrast 0.19, limit 0.2)"
    (f,) = _occluded(cov(eyes=(0.1, 0.15)))
    assert (f.covered, f.causes, f.value) == (("right_eye", "left_eye"), ("sunglasses",), 0.1)
    assert f.message.startswith("the right eye, left eye look covered (right eye and left eye contrast 0.10")
    # cold and dark below both eyes: a dark lens; cold but light, or dark but warm: not
    (f,) = _occluded(cov(below=((0.34, 0.24), (0.1, 0.1))))
    assert (f.covered, f.causes, f.value, f.limit) == (("right_eye", "left_eye"), ("sunglasses",), 0.1, 0.25)
    assert "as behind a dark lens" in f.message
    (f,) = _occluded(cov(eyes=(0.2, 0.5), below=((0.1, 0.1), (0.9, 0.8))))  # contrast at its limit: the lens speaks
    assert (f.covered, f.value, f.limit) == (("right_eye",), 0.1, 0.25)
    assert f.message == "the right eye looks covered (lightness below the right eye, as behind a dark lens, 0.10, " \
                        "limit 0.25)"
    assert _occluded(cov(below=((0.35, 0.1), (0.9, 0.24)))) == []
    assert _occluded(cov(below=((0.1, 0.25), (None, 0.0)))) == []
    # eyes and mouth at once: the eyes speak first, every part listed, both hints
    (f,) = _occluded(cov(eyes=(0.1, 0.1), lips=0.1, nose=0.1))
    assert f.covered == ("right_eye", "left_eye", "nose", "mouth") and f.causes == ("sunglasses", "mask")
    assert f.hint == COVER_HINTS["sunglasses"][0] + " " + COVER_HINTS["mask"][0]


@pytest.mark.parametrize("earlier,judged", [("blur", False), ("pose", False), ("body_cut_off", True)])
def test_occlusion_is_judged_only_without_another_error(earlier, judged):
    calls: list = []
    found = _occluded(cov(lips=0.1), so_far=[Finding(earlier, "error", "x")], calls=calls)
    assert bool(found) is judged and bool(calls) is judged
    assert _occluded(cov(lips=0.1), so_far=[Finding(earlier, "warning", "x")]) != []


# --- findings: the JSON contract --------------------------------------------------------------

def test_finding_to_dict():
    f = Finding("dark", "error", "brightness 21.0 is below the limit 45", 21.04449, 45)
    assert f.to_dict() == {"code": "dark", "severity": "error", "value": 21.044, "limit": 45.0,
                           "message": "brightness 21.0 is below the limit 45", "hint": CODES["dark"].hint,
                           "hint_zh": CODES["dark"].hint_zh, "api_code": "InvalidFile.Value"}
    assert Finding("face_cut_off", "error", "m", 0.123456, 0.0304449).to_dict()["limit"] == 0.03
    assert Finding("face_cut_off", "error", "m", 0.123456, 0.1234567).to_dict()["limit"] == 0.123
    assert Finding("no_face", "error", "m").to_dict()["value"] is None
    assert Finding("no_face", "error", "m").to_dict()["limit"] is None
    occ = Finding("face_occluded", "error", "m", 0.1, 0.35, covered=("nose", "mouth"), causes=("mask", "hand"))
    d = occ.to_dict()
    assert d["covered"] == ["nose", "mouth"] and d["api_code"] == "InvalidFile.FullFace"
    assert d["hint"] == COVER_HINTS["mask"][0] + " " + COVER_HINTS["hand"][0] == occ.hint
    assert d["hint_zh"] == COVER_HINTS["mask"][1] + COVER_HINTS["hand"][1]
    assert f.api_code == "InvalidFile.Value" and f.hint == CODES["dark"].hint


@pytest.mark.parametrize("code,api_code", [
    ("unreadable", "InvalidURL"), ("image_too_small", "InvalidFile.Resolution"), ("no_face", "InvalidFile.NoHuman"),
    ("multiple_faces", "InvalidFile.MultiHuman"), ("face_too_small", "InvalidFile.BodyProportion"),
    ("face_cut_off", "InvalidFile.FullFace"), ("face_occluded", "InvalidFile.FullFace"),
    ("pose", "InvalidFile.FacePose"), ("blur", "InvalidFile.Value"), ("body_cut_off", "InvalidFile.FullBody"),
    ("audio_too_long", "InvalidURL"),
])
def test_api_codes(code, api_code):
    assert Finding(code, "error", "m").api_code == api_code


def test_unknown_codes_and_causes_are_refused():
    with pytest.raises(ValueError, match=r"Finding.code: expected one of \[.*'unreadable'.*\], got 'blurry'"):
        Finding("blurry", "error", "m")
    with pytest.raises(ValueError, match=r"Finding.causes: expected keys of \[.*\], got \['scarf'\]"):
        Finding("face_occluded", "error", "m", causes=("mask", "scarf"))


def test_verdict_ok_and_errors():
    class R(Verdict):
        def __init__(self, findings):
            self.findings = tuple(findings)

    warn, err = Finding("blur", "warning", "w"), Finding("dark", "error", "e")
    assert R([]).ok and R([warn]).ok and not R([warn, err]).ok
    assert R([warn, err, warn]).errors == [err] and R([warn]).errors == []
