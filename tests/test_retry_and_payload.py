"""Pure pieces of the client: retry decisions, verdict mapping, request and response models."""

from __future__ import annotations

import email.utils
from contextlib import ExitStack as DoesNotRaise

import pytest
from pydantic import ValidationError

from pipeline.client import RetryPolicy, backoff_delay, finding_for_api_code, parse_retry_after, should_retry
from pipeline.payload import (
    FaceDetectResponse,
    TaskResponse,
    VideoInput,
    VideoSynthesisRequest,
    box_ratio,
    estimate_cost,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize("value,expected", [
    (None, None), ("", None), ("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("soon", None),
    (email.utils.formatdate(NOW + 7, usegmt=True), 7.0),
    (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
])
def test_parse_retry_after(value, expected):
    got = parse_retry_after(value, now=NOW)
    assert got == pytest.approx(expected, abs=1.0) if expected is not None else got is None


@pytest.mark.parametrize("attempt,rand,expected", [(0, 1.0, 0.5), (1, 1.0, 1.0), (3, 1.0, 4.0), (6, 1.0, 8.0),
                                                   (2, 0.0, 0.0), (2, 0.5, 1.0)])
def test_backoff_delay_is_capped_exponential_with_jitter(attempt, rand, expected):
    assert backoff_delay(attempt, RetryPolicy(initial_s=0.5, max_s=8.0), rand=lambda: rand) == expected


@pytest.mark.parametrize("status,idempotent,sent,expected", [
    (None, True, True, True),      # query, connection broke: ask again
    (None, False, False, True),    # submit never left (connect refused): safe
    (None, False, True, False),    # submit sent, answer lost: never resend
    (429, False, True, True),      # throttled submit: the service refused it
    (429, True, True, True),
    (500, True, True, True),
    (503, False, True, False),     # a failed submit is raised, not resent
    (400, True, True, False),
    (401, True, True, False),
    (404, True, True, False),
])
def test_should_retry(status, idempotent, sent, expected):
    assert should_retry(status, idempotent=idempotent, sent=sent) is expected


@pytest.mark.parametrize("code,message,expected", [
    ("InvalidFile.NoHuman", None, "no_face"),
    ("InvalidFile.FullBody", None, "body_cut_off"),
    ("", "The input image has multi human bodies. Please upload other image with single person.", "multiple_faces"),
    (None, "The pose of the detected face is invalid, please upload other image with the expected oriention.", "pose"),
    (None, "The pose of the detected face is invalid, please upload other image with whole face and expected "
           "orientation.", "face_cut_off"),
    (None, "The pose of the detected person is invalid, please upload other image with whole body, or change the "
           "ratio parameter to 1:1。", "body_cut_off"),
    (None, "something new", None),
])
def test_service_verdicts_map_to_our_codes(code, message, expected):
    assert finding_for_api_code(code, message) == expected


BOXES = dict(image_url="oss://a/b.jpg", audio_url="oss://a/c.wav")


@pytest.mark.parametrize("face,ext,raises", [
    ([10, 10, 50, 50], [0, 0, 60, 60], DoesNotRaise()),
    ([10, 10, 50, 50], [0, 0, 60, 80], DoesNotRaise()),
    ([10, 10, 50, 50], [0, 0, 60, 70], pytest.raises(ValidationError, match="exactly 1:1 or 3:4")),
    ([10, 10, 70, 50], [0, 0, 60, 60], pytest.raises(ValidationError, match="does not contain")),
    ([10, 10, 50], [0, 0, 60, 60], pytest.raises(ValidationError, match="4 integers")),
    ([50, 10, 10, 50], [0, 0, 60, 60], pytest.raises(ValidationError, match="x1 < x2")),
    ([10, 10, 50.5, 50], [0, 0, 60, 60], pytest.raises(ValidationError, match="valid integer")),
    ([-1, 10, 50, 50], [0, 0, 60, 60], pytest.raises(ValidationError, match="0 <= x1")),
])
def test_video_input_boxes(face, ext, raises):
    with raises:
        VideoInput(**BOXES, face_bbox=face, ext_bbox=ext)


def test_requests_are_strict_and_responses_tolerant():
    with pytest.raises(ValidationError, match="style_level"):
        VideoSynthesisRequest.model_validate({"input": {**BOXES, "face_bbox": [1, 1, 2, 2], "ext_bbox": [0, 0, 3, 3]},
                                              "parameters": {"style_level": "wild"}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        VideoSynthesisRequest.model_validate({"input": {**BOXES, "face_bbox": [1, 1, 2, 2], "ext_bbox": [0, 0, 3, 3]},
                                              "surprise": 1})
    task = TaskResponse.model_validate({"output": {"task_id": "t", "task_status": "PRE-PROCESSING", "new": 1},
                                       "brand_new_field": {}})
    assert task.output.task_status == "PRE-PROCESSING" and not task.final
    verdict = FaceDetectResponse.model_validate({"output": {"check_pass": False, "code": "", "message": "x"}})
    assert verdict.output.face_bbox is None


def test_cost_and_ratio():
    assert estimate_cost(13.93, "1:1") == pytest.approx(1.1144)
    assert estimate_cost(10, "3:4") == pytest.approx(1.6)
    assert box_ratio([0, 0, 300, 400]) == "3:4" and box_ratio([5, 5, 10, 10]) == "1:1"
    assert box_ratio([0, 0, 10, 12]) is None
    with pytest.raises(ValueError):
        estimate_cost(1, "4:3")
