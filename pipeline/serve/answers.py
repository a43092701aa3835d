"""What the server answers, in DashScope's shapes: error bodies and emo-detect-v1's verdict.

Every error leaves the server as `{"code", "message", "request_id"}` (spec 3.2), with a `hint`
on the native endpoints; `Reply` carries one from wherever it is decided to the app's edge.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..payload import DETECT_MESSAGES

__all__ = ["Reply", "error_body", "detect_answer", "rejection", "new_request_id", "INVALID_IMAGE_MESSAGE"]

#: The service's answer to an image it cannot read (spec 3.2, InvalidURL).
INVALID_IMAGE_MESSAGE = ("The request URL is invalid, please check the request URL is available and the request image "
                         "format is one of the following types: JPEG, JPG, PNG, BMP, and WEBP.")
#: Check codes that mean the bytes are not a usable image (the service says InvalidURL).
_UNREADABLE = ("unreadable", "unsupported_format")


class Reply(Exception):
    """An error answer: HTTP status, DashScope-style code, message, and an optional hint."""

    def __init__(self, status: int, code: str, message: str, *, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint, self.headers = status, code, message, hint, headers or {}


def new_request_id() -> str:
    return str(uuid.uuid4())


def error_body(reply: Reply) -> dict[str, Any]:
    body: dict[str, Any] = {"code": reply.code, "message": reply.message, "request_id": new_request_id()}
    if reply.hint:
        body["hint"] = reply.hint
    return body


def _first_error(record: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in record["findings"] if f["severity"] == "error")


def rejection(record: dict[str, Any]) -> Reply:
    """A failing check record as the service's 400 verdict: the InvalidFile.* code of the first
    error and the service's own message for it; an unreadable photo is InvalidURL."""
    first = _first_error(record)
    if first["code"] in _UNREADABLE:
        return Reply(400, "InvalidURL", INVALID_IMAGE_MESSAGE)
    code = first["api_code"]
    return Reply(400, code, DETECT_MESSAGES.get(code, DETECT_MESSAGES["InvalidFile.Value"]))


def detect_answer(record: dict[str, Any]) -> dict[str, Any]:
    """emo-detect-v1's answer for a check record: check_pass with the boxes, or check_pass false
    with the code and message of `rejection`; an unreadable photo raises its 400 Reply."""
    if record["ok"]:
        output: dict[str, Any] = {"check_pass": True, "face_bbox": record["face_bbox"],
                                  "ext_bbox": record["ext_bbox"], "humanoid": True}
    else:
        reply = rejection(record)
        if reply.code == "InvalidURL":
            raise reply
        output = {"check_pass": False, "code": reply.code, "message": reply.message}
    return {"output": output, "usage": {"image_count": 1}, "request_id": new_request_id()}
