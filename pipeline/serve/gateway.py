"""The gateway in front of emo-v1: boxes made optional, failing photos stopped before they cost.

    caller --emo-v1 body, boxes optional--> gateway --check--> 400 InvalidFile.* (nothing sent)
                                                   \\--pass--> boxes filled in --> upstream, answer as is

The gateway plans a submit (`plan`), the app fetches and checks the photo, `complete` fills in
or verifies the boxes, and `Upstream` forwards the body with the caller's own Authorization and
DashScope headers. The key is passed through, never kept, logged or put in a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import API_TIMEOUT_S, RATIOS
from ..payload import box_ratio
from .answers import Reply

__all__ = ["SubmitPlan", "plan", "complete", "Upstream"]

_BOX_NAMES = ("face_bbox", "ext_bbox")
#: Headers of the caller's passed upstream, besides DashScope's own X-DashScope-* (async,
#: workspace, oss): the key and the caller's name.
_PASSED_HEADERS = ("authorization", "user-agent")


@dataclass(frozen=True)
class SubmitPlan:
    """What a submit needs before it may be forwarded."""

    body: dict[str, Any]
    """The emo-v1 body to forward (the gateway's own `parameters.ratio` taken out)."""
    image_url: str
    ratio: str
    """The ratio the photo is checked at: the given ext_bbox's, else parameters.ratio, else 1:1."""
    given: bool
    """Both boxes were given (they are kept after checking them)."""
    check: bool
    """False for an oss:// photo with both boxes: only DashScope can read it, so it goes as is."""


def _invalid(message: str) -> Reply:
    return Reply(400, "InvalidParameter", message)


def plan(body: Any) -> SubmitPlan:
    """Read an emo-v1 body whose boxes may be missing; a Reply (400) when it cannot be used."""
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict) \
            or not isinstance(body["input"].get("image_url"), str) or not body["input"]["image_url"]:
        raise _invalid("Required parameter(s) missing or invalid, please check the request parameters.")
    body = json.loads(json.dumps(body))  # a copy: the caller's body is never changed in place
    inp, params = body["input"], body.get("parameters")
    ratio = params.pop("ratio", None) if isinstance(params, dict) else None
    if isinstance(params, dict) and not params:
        del body["parameters"]
    given = [name for name in _BOX_NAMES if name in inp]
    if len(given) == 1:
        raise _invalid(f"Invalid bbox input: {given[0]} was given without "
                       f"{_BOX_NAMES[1 - _BOX_NAMES.index(given[0])]}; give both boxes or neither")
    if given:
        for name in _BOX_NAMES:
            box = inp[name]
            if not (isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box)):
                raise _invalid(f"Invalid bbox input: {name} must be 4 integers [x1, y1, x2, y2], got {box!r}")
        ext_ratio = box_ratio(inp["ext_bbox"])
        if ext_ratio is None:
            raise _invalid(f"Invalid bbox input: ext_bbox {inp['ext_bbox']} is neither 1:1 nor 3:4")
        if ratio is not None and ratio != ext_ratio:
            raise _invalid(f"parameters.ratio {ratio!r} differs from the given ext_bbox's {ext_ratio}")
        ratio = ext_ratio
    ratio = ratio or "1:1"
    if ratio not in RATIOS:
        raise _invalid(f"parameters.ratio must be one of {sorted(RATIOS)}, got {ratio!r}")
    url = inp["image_url"]
    if url.startswith("oss://") and not given:
        raise Reply(400, "InvalidParameter",
                    "image_url is an oss:// URL and the boxes are missing: only DashScope can read oss:// files, "
                    "so the gateway cannot compute face_bbox and ext_bbox",
                    hint="Send the photo's http(s) URL, or compute the boxes first (emo-prep check, or POST "
                         "/v1/check) and send them with the oss:// URL.")
    return SubmitPlan(body, url, ratio, bool(given), check=not url.startswith("oss://"))


def complete(submit: SubmitPlan, record: dict[str, Any]) -> dict[str, Any]:
    """The body to forward for a photo whose check passed: missing boxes filled in from the
    check, given ones kept when they lie inside the photo and the ext box holds the face box."""
    if record["fixes"]:
        raise _invalid(f"the photo at image_url must be changed before EMO can use it ({', '.join(record['fixes'])}): "
                       f"boxes computed here would not match the pixels the service reads; upload the changed copy "
                       f"(emo-prep submit does) and send its URL")
    body, inp = json.loads(json.dumps(submit.body)), submit.body["input"]
    if not submit.given:
        body["input"]["face_bbox"], body["input"]["ext_bbox"] = record["face_bbox"], record["ext_bbox"]
        return body
    width, height = record["image"]["width"], record["image"]["height"]
    face, ext = inp["face_bbox"], inp["ext_bbox"]
    for name, box in (("face_bbox", face), ("ext_bbox", ext)):
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise _invalid(f"Invalid bbox input: {name} {box} is not inside the {width}x{height} photo")
    if not (ext[0] <= face[0] and ext[1] <= face[1] and face[2] <= ext[2] and face[3] <= ext[3]):
        raise _invalid(f"Invalid bbox input: ext_bbox {ext} does not contain face_bbox {face}")
    return body


class Upstream:
    """Forwards requests to the DashScope API base `base_url` with the caller's own headers."""

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=API_TIMEOUT_S, transport=transport, follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    @staticmethod
    def headers(incoming: Any) -> dict[str, str]:
        """The caller's headers that go upstream: Authorization, DashScope's X-DashScope-*."""
        return {k: v for k, v in incoming.items()
                if k.lower() in _PASSED_HEADERS or k.lower().startswith("x-dashscope-")}

    async def send(self, method: str, route: str, *, headers: Any, query: str = "",
                   body: bytes | None = None) -> httpx.Response:
        """`route` is the path after the API base (e.g. /tasks/ID); a Reply (502/504) when the
        upstream cannot be reached."""
        url = self.base_url + route + (f"?{query}" if query else "")
        passed = self.headers(headers) | ({"Content-Type": "application/json"} if body is not None else {})
        try:
            return await self._client.request(method, url, headers=passed, content=body)
        except httpx.TimeoutException as exc:
            raise Reply(504, "RequestTimeOut", f"the upstream API did not answer within {API_TIMEOUT_S:g} s") from exc
        except httpx.TransportError as exc:
            raise Reply(502, "BadGateway", f"the upstream API could not be reached ({type(exc).__name__})") from exc
