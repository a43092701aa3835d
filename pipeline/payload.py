"""pydantic models of everything that crosses the wire (spec sections 1 and 5).

Requests are strict (unknown fields rejected, boxes validated); responses are tolerant
(unknown fields ignored, unknown statuses kept as strings) so that a new server field never
breaks a client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator

from .config import DETECT_MODEL, PRICE_CNY_PER_SECOND, RATIOS, VIDEO_MODEL

__all__ = ["DETECT_MESSAGES", "Box", "FaceDetectRequest", "FaceDetectResponse", "VideoSynthesisRequest", "VideoInput",
           "VideoParameters", "TaskResponse", "TaskOutput", "TaskList", "UploadPolicy", "PolicyResponse",
           "ErrorBody", "TaskStatus", "FINAL_STATUSES", "estimate_cost", "box_ratio"]

#: emo-detect's check_pass=false messages by error code, as the service writes them (spec 3.1,
#: typo "oriention" included).
DETECT_MESSAGES = {
    "InvalidFile.NoHuman": "The input image has no human body. Please upload other image with single person.",
    "InvalidFile.MultiHuman": "The input image has multi human bodies. Please upload other image with single person.",
    "InvalidFile.BodyProportion": "The proportion of the detected person in the picture is too large or too small, "
                                  "please upload other image.",
    "InvalidFile.Resolution": "The image resolution is invalid, please make sure that the largest length of image is "
                              "smaller than 7000, and the smallest length of image is larger than 400.",
    "InvalidFile.Value": "The value of the image is invalid, please upload other clearer image.",
    "InvalidFile.FrontBody": "The pose of the detected person is invalid, please upload other image with the front "
                             "view.",
    "InvalidFile.FullFace": "The pose of the detected face is invalid, please upload other image with whole face.",
    "InvalidFile.FacePose": "The pose of the detected face is invalid, please upload other image with the expected "
                            "oriention.",
    "InvalidFile.FullBody": "The pose of the detected person is invalid, please upload other image with whole body, "
                            "or change the ratio parameter to 1:1.",
}

TaskStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN", "SUSPENDED"]
#: Statuses after which a task never changes (spec 1.4).
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"})


def _check_box(box: list[int]) -> list[int]:
    if len(box) != 4:
        raise ValueError(f"expected 4 integers [x1, y1, x2, y2], got {len(box)}")
    x1, y1, x2, y2 = box
    if min(box) < 0 or not (x1 < x2 and y1 < y2):
        raise ValueError(f"expected 0 <= x1 < x2 and 0 <= y1 < y2, got {box}")
    return box


#: A box [x1, y1, x2, y2] in integer pixels of the uploaded image.
Box = Annotated[list[Annotated[int, Field(strict=True)]], AfterValidator(_check_box)]


def box_ratio(box: list[int] | tuple[int, ...]) -> str | None:
    """"1:1" or "3:4" when the box has exactly that width:height, else None."""
    w, h = box[2] - box[0], box[3] - box[1]
    for name, (rw, rh) in RATIOS.items():
        if w * rh == h * rw:
            return name
    return None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- emo-detect-v1 ------------------------------------------------------------------------

class FaceDetectInput(_Request):
    image_url: str
    """http(s) or oss:// URL of the photo."""


class FaceDetectParameters(_Request):
    ratio: Literal["1:1", "3:4"] = "1:1"
    """Aspect of the returned ext_bbox: 1:1 head, 3:4 half body."""


class FaceDetectRequest(_Request):
    model: str = DETECT_MODEL
    input: FaceDetectInput
    parameters: FaceDetectParameters = FaceDetectParameters()


class FaceDetectOutput(_Response):
    check_pass: bool
    face_bbox: list[int] | None = None
    ext_bbox: list[int] | None = None
    humanoid: bool | None = None
    code: str | None = None
    message: str | None = None


class FaceDetectResponse(_Response):
    output: FaceDetectOutput
    usage: dict[str, Any] | None = None
    request_id: str | None = None


# --- emo-v1 -------------------------------------------------------------------------------

class VideoInput(_Request):
    image_url: str
    """http(s) or oss:// URL of the same image the boxes were computed on."""
    audio_url: str
    """http(s) or oss:// URL of a wav or mp3, under 15 MB and 60 s."""
    face_bbox: Box
    ext_bbox: Box
    """Exactly 1:1 or 3:4 (width:height), containing face_bbox."""

    @model_validator(mode="after")
    def _ext_contains_face(self) -> VideoInput:
        if box_ratio(self.ext_bbox) is None:
            w, h = self.ext_bbox[2] - self.ext_bbox[0], self.ext_bbox[3] - self.ext_bbox[1]
            raise ValueError(f"ext_bbox: expected exactly 1:1 or 3:4, got {w}x{h}")
        f, e = self.face_bbox, self.ext_bbox
        if not (e[0] <= f[0] and e[1] <= f[1] and f[2] <= e[2] and f[3] <= e[3]):
            raise ValueError(f"ext_bbox {e} does not contain face_bbox {f}")
        return self


class VideoParameters(_Request):
    style_level: Literal["normal", "calm", "active"] = "normal"
    """Motion amplitude: calm, normal (default) or active."""


class VideoSynthesisRequest(_Request):
    model: str = VIDEO_MODEL
    input: VideoInput
    parameters: VideoParameters = VideoParameters()

    @property
    def ratio(self) -> str:
        return box_ratio(self.input.ext_bbox) or "1:1"


# --- tasks --------------------------------------------------------------------------------

class TaskResults(_Response):
    video_url: str | None = None


class TaskOutput(_Response):
    task_id: str
    task_status: str
    """One of TaskStatus; kept as a string so that a new status does not break parsing."""
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    results: TaskResults | None = None
    code: str | None = None
    message: str | None = None


class TaskUsage(_Response):
    video_duration: float | None = None
    """Seconds of video, the billing basis."""
    video_ratio: str | None = None


class TaskResponse(_Response):
    """Answer of submit and of task query."""

    output: TaskOutput
    usage: TaskUsage | None = None
    request_id: str | None = None

    @property
    def final(self) -> bool:
        return self.output.task_status in FINAL_STATUSES

    @property
    def video_url(self) -> str | None:
        return self.output.results.video_url if self.output.results else None


class TaskListItem(_Response):
    task_id: str
    task_status: str = Field(validation_alias=AliasChoices("task_status", "status"))
    """Read from `task_status` (our sandbox, the task query) or `status` (as SDK 2.x accepts)."""
    model_name: str | None = None
    submit_time: str | None = None
    end_time: str | None = None


class TaskList(_Response):
    """Answer of GET /tasks (its shape is not documented; spec 8.11): tolerant on purpose."""

    data: list[TaskListItem] = Field(default=[], validation_alias=AliasChoices("data", "tasks"))
    """The tasks, listed under `data` (our sandbox) or `tasks` (as SDK 2.x reads them)."""
    total: int | None = None
    page_no: int | None = None
    page_size: int | None = None
    request_id: str | None = None


# --- uploads ------------------------------------------------------------------------------

class UploadPolicy(_Response):
    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: int = 300
    max_file_size_mb: int = 100
    capacity_limit_mb: int | None = None
    oss_access_key_id: str
    x_oss_object_acl: str = "private"
    x_oss_forbid_overwrite: str = "true"


class PolicyResponse(_Response):
    data: UploadPolicy
    request_id: str | None = None


class ErrorBody(_Response):
    code: str | None = None
    message: str | None = None
    request_id: str | None = None


def estimate_cost(duration_s: float, ratio: str) -> float:
    """CNY for a video as long as the audio at the ratio's price (spec section 4)."""
    if ratio not in PRICE_CNY_PER_SECOND:
        raise ValueError(f"ratio: expected one of {sorted(PRICE_CNY_PER_SECOND)}, got {ratio!r}")
    return round(duration_s * PRICE_CNY_PER_SECOND[ratio], 4)
