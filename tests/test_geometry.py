"""ext_bbox geometry: properties over random sizes and faces, and the published example."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import crop_box
from pipeline.boxes import covered, iou
from pipeline.geometry import boxes_for_upload, face_box, service_face


@st.composite
def image_and_face(draw):
    w = draw(st.integers(400, 7000))
    h = draw(st.integers(400, 7000))
    side = draw(st.integers(20, min(w, h)))
    x1 = draw(st.integers(-side // 3, w - 2 * side // 3))
    y1 = draw(st.integers(-side // 3, h - 2 * side // 3))
    aspect = draw(st.floats(0.8, 1.25))
    return (w, h), (float(x1), float(y1), float(x1 + side), float(y1 + side * aspect))


@settings(max_examples=400, deadline=None)
@given(case=image_and_face(), ratio=st.sampled_from(["1:1", "3:4"]), floor=st.floats(1.0, 3.0))
def test_ext_bbox_properties(case, ratio, floor):
    size, face = case
    ext = crop_box(face, size, ratio, floor=floor)
    if ext is None:
        return
    x1, y1, x2, y2 = ext
    assert all(isinstance(v, int) for v in ext)
    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
    w, h = x2 - x1, y2 - y1
    assert (w == h) if ratio == "1:1" else (4 * w == 3 * h)
    fx1, fy1, fx2, fy2 = face_box(face, size)
    assert x1 <= fx1 and y1 <= fy1 and fx2 <= x2 and fy2 <= y2
    assert w >= floor * max(face[2] - face[0], face[3] - face[1]) - 1e-9


@settings(max_examples=200, deadline=None)
@given(case=image_and_face())
def test_face_box_is_integer_and_inside(case):
    size, face = case
    x1, y1, x2, y2 = face_box(face, size)
    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]


def test_default_geometry_gives_the_published_emo_detect_answers():
    # spec section 6, example A (documented): face [302,286,610,593] -> ext [71,9,840,778], no
    # edge in the way; the service's own float face box is unknown, so its edges round 1 px apart
    face = service_face((302, 286, 610, 593))
    assert face == (302, 286, 610, 593)  # the default face transform changes nothing
    ext = crop_box(face, (2000, 2000), "1:1")
    assert max(abs(a - b) for a, b in zip(ext, (71, 9, 840, 778), strict=True)) <= 1
    # example B (public client code), a 706 px high photo: the 2.5 F square shrank to the
    # height, kept the face's centre column, and was shifted inside
    assert crop_box(service_face((387, 188, 769, 570)), (1280, 706), "1:1") == (225, 0, 931, 706)


@pytest.mark.parametrize("ratio,want_w", [("1:1", 2.5), ("3:4", 3.4)])
def test_unclamped_size_follows_the_rule(ratio, want_w):
    ext = crop_box((900, 900, 1100, 1100), (4000, 4000), ratio)
    assert abs((ext[2] - ext[0]) - want_w * 200) <= 3


def test_border_shifts_before_it_shrinks():
    # face near the top-left corner: same size as unclamped, shifted inside
    ext = crop_box((10, 10, 210, 210), (2000, 2000), "1:1")
    assert ext[:2] == (0, 0) and ext[2] - ext[0] == 500


def test_shrinks_to_the_image_then_gives_up_below_the_floor():
    ext = crop_box((100, 100, 400, 400), (600, 600), "1:1", floor=1.5)
    assert ext == (0, 0, 600, 600)  # 2.5 F = 750 does not fit; 600 = 2.0 F does
    assert crop_box((100, 100, 500, 500), (560, 560), "1:1", floor=1.5) is None


def test_unknown_ratio_is_refused():
    with pytest.raises(ValueError, match="expected one of"):
        crop_box((0, 0, 10, 10), (100, 100), "16:9")


def test_boxes_follow_a_downscaled_upload_form():
    face, ext = (1000, 1000, 2000, 2000), crop_box((1000, 1000, 2000, 2000), (7200, 7200), "1:1")
    assert boxes_for_upload(face, ext, 1.0, (7200, 7200), "1:1") == (face, ext)
    small_face, small_ext = boxes_for_upload(face, ext, 7000 / 7200, (7000, 7000), "3:4")
    assert small_face == (972, 972, 1945, 1945)
    assert (small_ext[2] - small_ext[0]) * 4 == (small_ext[3] - small_ext[1]) * 3


boxes = st.tuples(st.integers(0, 500), st.integers(0, 500), st.integers(1, 300), st.integers(1, 300)).map(
    lambda b: (float(b[0]), float(b[1]), float(b[0] + b[2]), float(b[1] + b[3])))


@settings(max_examples=300, deadline=None)
@given(a=boxes, b=boxes)
def test_overlap_measures(a, b):
    """iou is symmetric and in [0, 1]; covered(a, b) is a's share inside b, so the smaller box
    is covered at least as much as the larger one, and iou never exceeds either share."""
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    assert iou(a, b) == pytest.approx(iou(b, a)) and 0.0 <= iou(a, b) <= 1.0
    assert covered(a, a) == 1.0 and 0.0 <= covered(a, b) <= 1.0
    assert iou(a, b) <= min(covered(a, b), covered(b, a)) + 1e-12
    small, large = sorted((a, b), key=area)
    assert covered(small, large) >= covered(large, small) - 1e-12
    assert covered(a, b) * area(a) == pytest.approx(covered(b, a) * area(b))  # the same intersection
