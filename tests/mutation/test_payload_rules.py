"""The request models refuse what the service would: boxes, ratios, and the cost estimate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.payload import VideoInput, box_ratio, estimate_cost


def video_input(face, ext) -> VideoInput:
    return VideoInput(image_url="oss://a/p.jpg", audio_url="oss://a/a.wav", face_bbox=face, ext_bbox=ext)


@pytest.mark.parametrize("face", [[5, 0, 5, 10], [0, 5, 10, 5], [6, 0, 5, 10], [0, 6, 10, 5], [-1, 0, 5, 5],
                                  [0, 0, 5], [0, 0, 5, 5, 5]])
def test_empty_negative_or_malformed_boxes_are_refused(face):
    with pytest.raises(ValidationError):
        video_input(face, [0, 0, 30, 30])


def test_a_box_of_one_pixel_is_a_box():
    assert video_input([0, 0, 1, 1], [0, 0, 30, 30]).face_bbox == [0, 0, 1, 1]


@pytest.mark.parametrize("box,want", [
    ([10, 0, 20, 10], "1:1"), ([10, 5, 40, 45], "3:4"), ([3, 7, 6, 11], "3:4"), ([10, 0, 20, 11], None),
    ([10, 5, 50, 35], None),   # 4:3 is not 3:4
])
def test_box_ratio(box, want):
    assert box_ratio(box) == want


def test_the_ext_box_must_be_exact_and_hold_the_face():
    with pytest.raises(ValidationError, match="ext_bbox: expected exactly 1:1 or 3:4, got 30x31"):
        video_input([10, 10, 20, 20], [0, 0, 30, 31])
    with pytest.raises(ValidationError, match=r"ext_bbox \[0, 0, 30, 30\] does not contain face_bbox "
                                              r"\[10, 10, 31, 20\]"):
        video_input([10, 10, 31, 20], [0, 0, 30, 30])
    assert video_input([0, 0, 30, 30], [0, 0, 30, 30]).ext_bbox == [0, 0, 30, 30]  # the face may fill it


def test_estimate_cost():
    assert estimate_cost(7.35, "1:1") == 0.588 and estimate_cost(7.35, "3:4") == pytest.approx(7.35 * 0.16)
    assert estimate_cost(1.234567, "1:1") == 0.0988  # CNY to 4 decimals
    with pytest.raises(ValueError, match=r"ratio: expected one of \['1:1', '3:4'\], got '4:3'"):
        estimate_cost(1.0, "4:3")
