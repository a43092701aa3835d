"""A local stand-in for DashScope's EMO API, on loopback, for trying and testing clients.

It speaks the API of the spec: the temporary-upload policy and its form-POST target,
face-detect (answered by our own check stage, with the box rules of a geometry file when one
is given, so a client can meet a "service" whose rule is not ours), video-synthesis (header,
model, box, style and audio validation with the spec's error bodies), task get, list and
cancel, and result download. Tasks queue per API key and run one at a time, PENDING ->
RUNNING -> SUCCEEDED on a configurable clock. The result is a real MP4: the ext_bbox crop at 512x512 (1:1) or
512x704 (3:4), as long as the audio, with the audio track. It previews the framing only,
and says so on every frame. It fetches only its own uploads and loopback URLs.

Faults for clients and tests: a share of 429 and 500 answers, added latency, dropping the
connection after a task was created, and tasks that expire early. `GET /sandbox/records`
shows what the sandbox saw: every request in arrival order (method, path, route, whether it
carried an API key), each submit with the body it received, tasks, uploads and downloads.

It is a FastAPI app served by uvicorn in a background thread, on a socket bound when the
Sandbox is made (port 0 picks a free one; `base_url` names it before `start()`).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import email.parser
import email.policy
import hashlib
import hmac
import io
import ipaddress
import json
import logging
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs, unquote_plus, urlsplit

import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..audio import check_audio
from ..config import (
    AUDIO_MAX_BYTES,
    AUDIO_MAX_INPUT_BYTES,
    AUDIO_MAX_SECONDS,
    DETECT_MODEL,
    MAX_INPUT_BYTES,
    OUTPUT_WH,
    SANDBOX_FETCH_TIMEOUT_S,
    SANDBOX_IDLE_TIMEOUT_S,
    SANDBOX_MAX_API_BODY_BYTES,
    SANDBOX_MAX_UPLOAD_BYTES,
    SANDBOX_STOP_GRACE_S,
    STYLE_LEVELS,
    VIDEO_MODEL,
)
from ..errors import InputError
from ..fetch import fetch_url
from ..geometry import DEFAULT_GEOMETRY, Geometry
from ..ingest import decode_image
from ..nativelog import quiet_native_stderr
from ..payload import box_ratio
from .answers import INVALID_IMAGE_MESSAGE, detect_answer, rejection
from .sockets import IdleClosingProtocol, listen

__all__ = ["SandboxOptions", "Sandbox", "render_framing_video"]

API_PREFIX = "/api/v1"
RESULT_PATH = re.compile(r"/results/([\w-]+)\.mp4")
#: Any DashScope-style key in a header or query string, not only the sandbox's own.
BEARER_KEY = re.compile(r"Bearer\s+sk-", re.IGNORECASE)
#: uvicorn's protocol logs through this: malformed requests and dropped clients are routine
#: for a sandbox (quiet below ERROR), and the key is never in what it logs.
_HTTP_LOG = logging.getLogger("pipeline.serve.sandbox.http")
_HTTP_LOG.setLevel(logging.ERROR)


@dataclass(frozen=True)
class SandboxOptions:
    """How the sandbox behaves; the fault options default to off."""

    api_key: str = "sk-sandbox"
    pending_s: float = 0.5
    """Seconds a task stays PENDING (when nothing runs before it)."""
    running_s: float = 1.0
    """Seconds a task stays RUNNING before its video is made."""
    fps: int = 10
    fault_429: float = 0.0
    """Share (0-1) of API calls answered 429 Throttling."""
    fault_500: float = 0.0
    """Share (0-1) of API calls answered 500 InternalError."""
    latency_s: float = 0.0
    """Seconds added to every call: API, upload and result download."""
    drop_submits: int = 0
    """The first N submits create their task, then drop the connection without an answer."""
    submit_answer_delay_s: float = 0.0
    """Seconds between creating a submit's task and answering it: a client stopped meanwhile has
    a paid task it never heard of."""
    expire_after_s: float | None = None
    """Tasks are forgotten (UNKNOWN, result gone) this long after creation."""
    result_ttl_s: float | None = None
    """A task's video answers 404 this long after the task succeeded (the task still answers)."""
    detect_reject_status: int = 200
    """How face-detect says no: 200 with check_pass=false, or 400 with InvalidFile.* (spec 1.2)."""
    detect_geometry: Geometry | None = None
    """The box rules of face-detect's answers (None: emo-prep's defaults, never the environment),
    so that a client can be tested against a "service" whose rule is not ours."""
    task_list_shape: Literal["data", "tasks"] = "data"
    """How GET /tasks lists tasks (undocumented, spec 8.11): `data` with `task_status`, or `tasks`
    with `status` (the shape SDK 2.x reads)."""
    seed: int | None = None
    idle_timeout_s: float = SANDBOX_IDLE_TIMEOUT_S
    """A connection that sends nothing for this long is closed (keep-alive or mid-request)."""
    fetch_timeout_s: float = SANDBOX_FETCH_TIMEOUT_S
    """Total seconds for fetching a loopback image or audio URL of a request."""


def _now_text(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.") + f"{int(t * 1000) % 1000:03d}"


@dataclass
class _Task:
    task_id: str
    key: str
    request: dict[str, Any]
    image: bytes
    audio: bytes
    duration_s: float
    created: float
    status: str = "PENDING"
    scheduled: float | None = None
    ended: float | None = None
    video: bytes | None = None
    code: str | None = None
    message: str | None = None
    history: list[tuple[str, float]] = field(default_factory=list)

    def output(self, base: str) -> dict[str, Any]:
        out: dict[str, Any] = {"task_id": self.task_id, "task_status": self.status,
                               "submit_time": _now_text(self.created)}
        if self.scheduled:
            out["scheduled_time"] = _now_text(self.scheduled)
        if self.ended:
            out["end_time"] = _now_text(self.ended)
        if self.status == "SUCCEEDED":
            out["results"] = {"video_url": f"{base}/results/{self.task_id}.mp4"}
        if self.code:
            out["code"], out["message"] = self.code, self.message
        return out


class _Reply(Exception):
    """Raised inside a handler to answer with an error body; `close` ends the connection behind
    the answer (its request body, if any, was never read)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = {**(headers or {}), **({"Connection": "close"} if close else {})}


class Sandbox:
    """The server: `Sandbox()` binds its socket, `start()` serves in background threads (the
    uvicorn loop and the task clock), `stop()` ends them."""

    def __init__(self, options: SandboxOptions | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.options = options or SandboxOptions()
        if self.options.task_list_shape not in ("data", "tasks"):
            raise ValueError(f"SandboxOptions.task_list_shape: expected 'data' or 'tasks', got "
                             f"{self.options.task_list_shape!r}")
        self._rng = random.Random(self.options.seed)
        self._lock = threading.RLock()
        self._secret = uuid.uuid4().bytes
        self._objects: dict[str, bytes] = {}
        self._tasks: dict[str, _Task] = {}
        self._records: dict[str, Any] = {"requests": [], "submits": [], "uploads": 0, "downloads": {}, "faults": 0,
                                         "dropped": []}
        self._drops_left = self.options.drop_submits
        self._checker = None
        self._check_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-check")
        self._stop = threading.Event()
        self._socket = listen(host, port)  # bound now: a busy port fails here, port 0 is named
        bound_host, bound_port = self._socket.getsockname()[:2]
        self._base_url = f"http://{bound_host}:{bound_port}"
        self._server = uvicorn.Server(uvicorn.Config(
            _App(self).build(), http=_Protocol, loop="asyncio", ws="none", lifespan="off", log_config=None,
            access_log=False, server_header=False, headers=[("server", "emo-prep-sandbox")],
            timeout_keep_alive=self.options.idle_timeout_s, timeout_graceful_shutdown=SANDBOX_STOP_GRACE_S))
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def api_base(self) -> str:
        """What DASHSCOPE_HTTP_BASE_URL should be set to."""
        return self.base_url + API_PREFIX

    def start(self) -> Sandbox:
        """Serve in background threads; returns once uvicorn accepts connections."""
        serve = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
                                 name="sandbox-http")
        clock = threading.Thread(target=self._schedule, daemon=True, name="sandbox-clock")
        for thread in (serve, clock):
            thread.start()
            self._threads.append(thread)
        while not self._server.started:
            if not serve.is_alive():
                raise RuntimeError("the sandbox's HTTP server ended while starting")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Stop serving: open connections are closed, requests in progress get up to
        SANDBOX_STOP_GRACE_S to finish and are then cancelled (work already in a thread, such as
        an added latency, runs out first)."""
        self._stop.set()
        self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=SANDBOX_STOP_GRACE_S + 10)
        self._socket.close()  # uvicorn closes it too; this covers a sandbox never started

        def close() -> None:
            if self._checker is not None:
                self._checker.close()

        self._check_thread.submit(close).result()
        with quiet_native_stderr():  # LiteRT logs its teardown when the thread that used it ends
            self._check_thread.shutdown()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_next_submits(self, count: int) -> None:
        """Drop the connection after creating the task for the next `count` submits."""
        with self._lock:
            self._drops_left = count

    def records(self) -> dict[str, Any]:
        """What the sandbox saw: every request in arrival order (`requests`: method, path,
        route `api`/`oss`/`result`/`records`/`other`, and `key_sent`: whether an API key was in
        its headers or query string; never the key or a header value), submits (the body each
        received and the task it created), uploads, downloads per task, injected faults,
        dropped answers, and every task's status history."""
        with self._lock:
            tasks = {t.task_id: {"status": t.status, "history": list(t.history)} for t in self._tasks.values()}
            return json.loads(json.dumps({**self._records, "tasks": tasks}))

    # --- the clock ------------------------------------------------------------------------
    def _schedule(self) -> None:
        while not self._stop.wait(0.05):
            now = time.time()
            to_render: list[_Task] = []
            with self._lock:
                expire = self.options.expire_after_s
                if expire is not None:
                    for task_id in [t.task_id for t in self._tasks.values() if now - t.created > expire]:
                        del self._tasks[task_id]
                running_keys = {t.key for t in self._tasks.values() if t.status == "RUNNING"}
                for task in sorted(self._tasks.values(), key=lambda t: t.created):
                    if task.status == "RUNNING" and now - (task.scheduled or now) >= self.options.running_s:
                        to_render.append(task)
                    elif task.status == "PENDING" and task.key not in running_keys \
                            and now - task.created >= self.options.pending_s:
                        self._move(task, "RUNNING", now)
                        task.scheduled = now
                        running_keys.add(task.key)
            for task in to_render:
                try:
                    video = render_framing_video(task.image, task.request["input"]["ext_bbox"], task.audio,
                                                 fps=self.options.fps)
                except Exception as exc:  # a failed render is a FAILED task, as on the service
                    with self._lock:
                        task.code, task.message = "InternalError.Algo", f"render failed: {type(exc).__name__}"
                        task.ended = time.time()
                        self._move(task, "FAILED", task.ended)
                    continue
                with self._lock:
                    task.video = video
                    task.ended = time.time()
                    self._move(task, "SUCCEEDED", task.ended)

    @staticmethod
    def _move(task: _Task, status: str, when: float) -> None:
        task.status = status
        task.history.append((status, round(when, 3)))

    # --- API ------------------------------------------------------------------------------
    def _fault(self) -> None:
        if self.options.latency_s:
            time.sleep(self.options.latency_s)
        with self._lock:
            roll = self._rng.random()
            if roll < self.options.fault_429 + self.options.fault_500:
                self._records["faults"] += 1
        if roll < self.options.fault_429:
            raise _Reply(429, "Throttling", "Requests throttling triggered.", {"Retry-After": "0"})
        if roll < self.options.fault_429 + self.options.fault_500:
            raise _Reply(500, "InternalError", "An internal error has occured, please try again later.")

    def _auth(self, headers: Any) -> str:
        value = headers.get("Authorization", "")
        key = value[7:] if value.startswith("Bearer ") else ""
        if not key:
            raise _Reply(401, "InvalidApiKey", "No API-key provided.")
        if not hmac.compare_digest(key, self.options.api_key):
            raise _Reply(401, "InvalidApiKey", "Invalid API-key provided.")
        return key

    def _api(self, method: str, route: str, query: dict[str, list[str]], headers: Any, raw: bytes,
             key: str) -> tuple[dict[str, Any], bool]:
        """Answer one authenticated API call, after the injected faults; the bool says whether
        to drop the connection instead (a submit whose answer is lost)."""
        self._fault()
        if method == "GET" and route == "/uploads":
            if query.get("action") != ["getPolicy"] or not query.get("model"):
                raise _Reply(400, "InvalidParameter", "action=getPolicy and model are required")
            return self.policy(query["model"][0]), False
        if method == "POST" and route == "/services/aigc/image2video/face-detect":
            return self.face_detect(_json_body(raw), headers), False
        if method == "POST" and route == "/services/aigc/image2video/video-synthesis":
            return self.submit(_json_body(raw), headers, key)
        if method == "GET" and route == "/tasks":
            return self.list(query, key), False
        if method == "GET" and (m := re.fullmatch(r"/tasks/([\w.-]+)", route)):
            return self.task(m.group(1), key), False
        if method == "POST" and (m := re.fullmatch(r"/tasks/([\w.-]+)/cancel", route)):
            return self.cancel(m.group(1), key), False
        raise _Reply(404, "NotFound", f"no such route: {method} {API_PREFIX}{route}")

    def policy(self, model: str) -> dict[str, Any]:
        expires = time.time() + 300
        doc = base64.b64encode(json.dumps({"expiration": expires, "model": model}).encode()).decode()
        signature = base64.b64encode(hmac.new(self._secret, doc.encode(), hashlib.sha1).digest()).decode()
        upload_dir = f"dashscope-instant/sandbox/{datetime.now():%Y-%m-%d}/{uuid.uuid4().hex[:12]}"
        return {"request_id": str(uuid.uuid4()), "data": {
            "policy": doc, "signature": signature, "upload_dir": upload_dir,
            "upload_host": f"{self.base_url}/oss", "expire_in_seconds": 300, "max_file_size_mb": 100,
            "capacity_limit_mb": 999999999, "oss_access_key_id": "SANDBOXKEY", "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true"}}

    def upload(self, content_type: str, body: bytes) -> None:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        if not message.is_multipart():
            raise _Reply(400, "InvalidArgument", "multipart/form-data expected")
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = part.get_payload(decode=True) or b""
        doc = fields.get("policy", b"").decode()
        expected = base64.b64encode(hmac.new(self._secret, doc.encode(), hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(expected, fields.get("Signature", b"").decode()):
            raise _Reply(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        if json.loads(base64.b64decode(doc))["expiration"] < time.time():
            raise _Reply(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        key = fields.get("key", b"").decode()
        if "file" not in fields or not key.startswith("dashscope-instant/sandbox/"):
            raise _Reply(400, "InvalidArgument", "key and file are required")
        if len(fields["file"]) > 100 * 1024 * 1024:
            raise _Reply(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
        with self._lock:
            if key in self._objects:
                raise _Reply(409, "FileAlreadyExists", "The object you specified already exists.")
            self._objects[key] = fields["file"]
            self._records["uploads"] += 1

    def _resolve(self, url: str, headers: Any, what: str) -> bytes:
        if url.startswith("oss://"):
            if headers.get("X-DashScope-OssResourceResolve", "").lower() != "enable":
                raise _Reply(400, "InvalidParameter.DataInspection",
                             "The media format is not supported or incorrect for the data inspection.")
            with self._lock:
                data = self._objects.get(url[len("oss://"):])
            if data is None:
                raise _Reply(400, "InvalidURL", f"Required URL is missing or invalid, please check the request "
                                                f"{what} URL.")
            return data
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not _loopback(parts.hostname or ""):
            raise _Reply(400, "InvalidURL", f"The sandbox fetches only its own uploads and loopback URLs ({what}).")
        try:  # bounded like any URL source: decoded size, total time
            return fetch_url(url, AUDIO_MAX_INPUT_BYTES if what == "audio" else MAX_INPUT_BYTES,
                             deadline_s=self.options.fetch_timeout_s)
        except InputError as exc:
            raise _Reply(400, "InvalidURL.ConnectionRefused", f"Download {what} failed: {exc.message}") from exc

    def _check(self, data: bytes, source: str, ratio: str):
        """Run our check stage on the sandbox's one check thread: the models are loaded, used
        and closed on the same thread (LiteRT logs a teardown line when a thread that used
        it ends)."""
        def run():
            if self._checker is None:
                from ..verdict import Checker

                self._checker = Checker(geometry=self.options.detect_geometry or DEFAULT_GEOMETRY)
            return self._checker.check_bytes(data, source, ratio)

        return self._check_thread.submit(run).result()

    def face_detect(self, body: dict[str, Any], headers: Any) -> dict[str, Any]:
        if headers.get("X-DashScope-Async", "").lower() == "enable":
            raise _Reply(403, "AccessDenied", "Current user api does not support asynchronous calls.")
        if body.get("model") != DETECT_MODEL:
            raise _Reply(400, "InvalidParameter", "The request parameter is invalid.")
        ratio = (body.get("parameters") or {}).get("ratio", "1:1")
        url = (body.get("input") or {}).get("image_url")
        if ratio not in OUTPUT_WH or not isinstance(url, str):
            raise _Reply(400, "InvalidParameter",
                         "The request parameter is invalid, please check the request parameter.")
        data = self._resolve(url, headers, "image")
        record = self._check(data, url, ratio).to_dict()
        if not record["ok"]:
            verdict = rejection(record)  # the service's code and message, as `emo-prep serve` answers
            if verdict.code == "InvalidURL" or self.options.detect_reject_status == 400:
                raise _Reply(400, verdict.code, verdict.message)
        return detect_answer(record)

    def submit(self, body: dict[str, Any], headers: Any, key: str) -> tuple[dict[str, Any], bool]:
        """Validate and create a task; the bool says whether to drop the connection instead."""
        if headers.get("X-DashScope-Async", "").lower() != "enable":
            raise _Reply(403, "AccessDenied", "current user api does not support synchronous calls.")
        if body.get("model") != VIDEO_MODEL:
            raise _Reply(404, "ModelNotFound", f"Model not exist: {body.get('model')!r}.")
        inp = body.get("input") or {}
        if set(body) - {"model", "input", "parameters"} or not isinstance(inp, dict):
            raise _Reply(400, "InvalidParameter", "The request parameter is invalid.")
        for name in ("image_url", "audio_url"):
            if not isinstance(inp.get(name), str) or not inp[name]:
                raise _Reply(400, "InvalidParameter", "Required parameter(s) missing or invalid, please check the "
                                                      "request parameters.")
        face, ext = inp.get("face_bbox"), inp.get("ext_bbox")
        if not all(isinstance(b, list) and len(b) == 4 and all(type(v) is int and v >= 0 for v in b)
                   for b in (face, ext)) or not (face[0] < face[2] and face[1] < face[3] and ext[0] < ext[2]
                                                 and ext[1] < ext[3]):
            raise _Reply(400, "InvalidParameter", "Invalid bbox input")
        ratio = box_ratio(ext)
        if ratio is None:
            raise _Reply(400, "InvalidParameter", "The request parameter is invalid, please check the request "
                                                  "parameter.")
        if not (ext[0] <= face[0] and ext[1] <= face[1] and face[2] <= ext[2] and face[3] <= ext[3]):
            raise _Reply(400, "InvalidParameter", "Invalid bbox input")
        style = (body.get("parameters") or {}).get("style_level", "normal")
        if style not in STYLE_LEVELS:
            raise _Reply(400, "InvalidParameter", "The style_level is invalid.")
        image = self._resolve(inp["image_url"], headers, "image")
        try:
            info = decode_image(image, inp["image_url"]).info
        except InputError as exc:
            raise _Reply(400, "InvalidURL", INVALID_IMAGE_MESSAGE) from exc
        if ext[2] > info.width or ext[3] > info.height:
            raise _Reply(400, "InvalidParameter", "Invalid bbox input")
        audio_bytes = self._resolve(inp["audio_url"], headers, "audio")
        audio = check_audio(audio_bytes, source_id=inp["audio_url"])
        if audio.format not in ("wav", "mp3"):
            raise _Reply(400, "InvalidURL", "File type is not supported. Allowed types are: .wav, .mp3.")
        if len(audio_bytes) >= AUDIO_MAX_BYTES:
            raise _Reply(400, "InvalidURL", "File size is larger than 15MB.")
        if (audio.duration_s or 0) >= AUDIO_MAX_SECONDS:
            raise _Reply(400, "InvalidURL", f"The input audio is longer than {AUDIO_MAX_SECONDS:g}s.")
        now = time.time()
        task = _Task(task_id=str(uuid.uuid4()), key=key, request=body, image=image, audio=audio_bytes,
                     duration_s=audio.duration_s or 0.0, created=now)
        self._move(task, "PENDING", now)
        with self._lock:
            self._tasks[task.task_id] = task
            self._records["submits"].append({"task_id": task.task_id, "at": round(now, 3), "body": body,
                                             "body_sha256": hashlib.sha256(json.dumps(body, sort_keys=True).encode())
                                             .hexdigest(), "user_agent": headers.get("User-Agent"),
                                             "workspace": headers.get("X-DashScope-WorkSpace")})
            drop = self._drops_left > 0
            if drop:
                self._drops_left -= 1
                self._records["dropped"].append(task.task_id)
        if self.options.submit_answer_delay_s:
            time.sleep(self.options.submit_answer_delay_s)
        return {"output": {"task_id": task.task_id, "task_status": "PENDING"}, "request_id": str(uuid.uuid4())}, drop

    def task(self, task_id: str, key: str) -> dict[str, Any]:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.key != key:
                return {"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            answer: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": task.output(self.base_url)}
            if task.status == "SUCCEEDED":
                answer["usage"] = {"video_duration": round(task.duration_s, 2), "video_ratio":
                                   box_ratio(task.request["input"]["ext_bbox"])}
            return answer

    def cancel(self, task_id: str, key: str) -> dict[str, Any]:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.key != key or task.status != "PENDING":
                raise _Reply(400, "UnsupportedOperation", "Failed to cancel the task, please confirm if the task is "
                                                          "in PENDING status.")
            task.ended = time.time()
            self._move(task, "CANCELED", task.ended)
            return {"request_id": str(uuid.uuid4()), "output": task.output(self.base_url)}

    def list(self, query: dict[str, list[str]], key: str) -> dict[str, Any]:
        def one(name: str) -> str | None:
            return query.get(name, [None])[0]

        page_no = max(1, int(one("page_no") or 1))
        page_size = min(100, max(1, int(one("page_size") or 10)))

        def stamp(value: str | None) -> float | None:
            return datetime.strptime(value, "%Y%m%d%H%M%S").timestamp() if value else None

        start, end = stamp(one("start_time")), stamp(one("end_time"))
        with self._lock:
            tasks = [t for t in sorted(self._tasks.values(), key=lambda t: -t.created) if t.key == key
                     and (one("status") in (None, t.status))
                     and (one("model_name") in (None, VIDEO_MODEL))
                     and (start is None or t.created >= start) and (end is None or t.created <= end)]
            page = tasks[(page_no - 1) * page_size: page_no * page_size]
            data = [{"task_id": t.task_id, "task_status": t.status, "model_name": VIDEO_MODEL,
                     "submit_time": _now_text(t.created), **({"end_time": _now_text(t.ended)} if t.ended else {})}
                    for t in page]
        if self.options.task_list_shape == "tasks":
            data = [{("status" if k == "task_status" else k): v for k, v in item.items()} for item in data]
        return {"request_id": str(uuid.uuid4()), self.options.task_list_shape: data, "total": len(tasks),
                "page_no": page_no, "page_size": page_size}

    def result(self, task_id: str) -> bytes:
        with self._lock:
            task = self._tasks.get(task_id)
            ttl = self.options.result_ttl_s
            if task is None or task.video is None or (ttl is not None and time.time() - (task.ended or 0) > ttl):
                raise _Reply(404, "NoSuchKey", "The specified key does not exist.")
            downloads = self._records["downloads"]
            downloads[task_id] = downloads.get(task_id, 0) + 1
            return task.video


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise _Reply(400, "InvalidParameter", "The request is missing required parameters or in a wrong format.") \
            from exc
    if not isinstance(body, dict):
        raise _Reply(400, "InvalidParameter", "The request parameter is invalid.")
    return body


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Protocol(IdleClosingProtocol):
    """The shared protocol, logging through the sandbox's quiet logger."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _HTTP_LOG


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "request_id": str(uuid.uuid4())},
                      ensure_ascii=False).encode()


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False).encode(), 200, media_type="application/json")


def _route_of(path: str) -> str:
    """The request log's name for a path: api, oss, result, records or other."""
    if path.startswith(API_PREFIX):
        return "api"
    if path == "/oss":
        return "oss"
    if RESULT_PATH.fullmatch(path):
        return "result"
    return "records" if path == "/sandbox/records" else "other"


class _App:
    """The sandbox's HTTP side: one FastAPI route that reads a request in the service's order
    (route, then the key, then the body within its cap) and hands it to the Sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def build(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.add_api_route("/{path:path}", self.handle, include_in_schema=False,  # every method reaches the log
                          methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
        return app

    async def handle(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        self._log(request, path)
        try:
            return await self._dispatch(request, path)
        except _Reply as reply:
            return Response(_error_body(reply.code, reply.message), reply.status, reply.headers, "application/json")
        except Exception as exc:  # never a traceback on the wire or the terminal
            return Response(_error_body("InternalError", f"sandbox error: {type(exc).__name__}"), 500,
                            media_type="application/json")

    def _log(self, request: Request, path: str) -> None:
        key = self.sb.options.api_key
        seen = [f"{name}: {value}" for name, value in request.headers.items()]
        seen += [request.url.query, unquote_plus(request.url.query)]
        sent = any((key and key in text) or BEARER_KEY.search(text) for text in seen)
        with self.sb._lock:
            self.sb._records["requests"].append({"method": request.method, "path": request.url.path,
                                                 "route": _route_of(path), "key_sent": bool(sent)})

    async def _read_body(self, request: Request, cap: int) -> bytes:
        """The whole body, read before anything answers, so that a reply never leaves body bytes
        on a keep-alive connection. h11 has refused a bad Content-Length already; a chunked body
        or one over `cap` is refused unread, and a body that stalls for the idle timeout ends
        the request."""
        if "transfer-encoding" in request.headers:
            raise _Reply(400, "InvalidParameter", "a request body needs a Content-Length from 0 up (no chunked bodies)",
                         close=True)
        if int(request.headers.get("content-length", "0")) > cap:
            raise _Reply(413, "EntityTooLarge", f"request body over {cap} bytes", close=True)
        chunks, stream = [], request.stream()
        while True:
            try:
                chunks.append(await asyncio.wait_for(anext(stream), self.sb.options.idle_timeout_s))
            except StopAsyncIteration:
                return b"".join(chunks)
            except TimeoutError as exc:
                raise _Reply(408, "RequestTimeout", f"no request body byte for {self.sb.options.idle_timeout_s:g} s",
                             close=True) from exc

    async def _dispatch(self, request: Request, path: str) -> Response:
        sb, method, headers = self.sb, request.method, request.headers
        if method not in ("GET", "POST"):
            raise _Reply(405, "MethodNotAllowed", f"{method} is not served here", close=True)  # body never read
        upload = method == "POST" and path == "/oss"  # signed by its form fields, inside the body
        api = path.startswith(API_PREFIX) or path == "/sandbox/records"
        result = RESULT_PATH.fullmatch(path)
        if not upload and not api and not result:
            raise _Reply(404, "NotFound", f"no such route: {path}", close=True)  # its body, if any, is never read
        key = ""
        if api:  # the key first: an unauthenticated body is never read
            try:
                key = sb._auth(headers)
            except _Reply as reply:
                raise _Reply(reply.status, reply.code, reply.message, close=True) from None
        raw = await self._read_body(request, SANDBOX_MAX_UPLOAD_BYTES if upload else SANDBOX_MAX_API_BODY_BYTES)
        if sb.options.latency_s and not api:
            await asyncio.sleep(sb.options.latency_s)  # API calls get theirs in _fault
        if upload:
            await run_in_threadpool(sb.upload, headers.get("content-type", ""), raw)
            return Response(b"", 200, media_type="text/plain")
        if method == "GET" and result:
            return Response(sb.result(result.group(1)), 200, media_type="video/mp4")
        if not api:
            raise _Reply(404, "NotFound", f"no such route: {method} {path}")
        if path == "/sandbox/records":
            return _json(sb.records())
        answer, drop = await run_in_threadpool(sb._api, method, path[len(API_PREFIX):],
                                               parse_qs(request.url.query), headers, raw, key)
        if drop:  # the task exists, the answer is lost on the way (the response below goes nowhere)
            await self._drop(request)
        return _json(answer)

    async def _drop(self, request: Request) -> None:
        """Close the request's connection without an answer, then wait for uvicorn to see it
        gone (so it neither logs nor answers a response that was never started)."""
        for connection in list(self.sb._server.server_state.connections):
            if connection.client == request.client and not connection.transport.is_closing():
                connection.transport.close()
        while (await request.receive())["type"] != "http.disconnect":
            pass


def render_framing_video(image: bytes, ext_bbox: list[int], audio: bytes, *, fps: int = 10) -> bytes:
    """An MP4 of the ext_bbox crop at EMO's output size, as long as the audio, with it as the
    sound track (AAC). A framing preview: the picture does not move, and says so."""
    import av

    from ..ingest import load_image, upload_form

    ratio = box_ratio(ext_bbox) or "1:1"
    width, height = OUTPUT_WH[ratio]
    # the boxes are in the pixels of the uploaded image (EXIF applied): decode it as such
    form = upload_form(load_image(image))
    frame_bgr = cv2.imdecode(np.frombuffer(form.data, np.uint8), cv2.IMREAD_COLOR)
    if frame_bgr is None:
        raise ValueError("image could not be decoded")
    x1, y1, x2, y2 = ext_bbox
    crop = cv2.resize(frame_bgr[y1:y2, x1:x2], (width, height), interpolation=cv2.INTER_AREA)
    cv2.rectangle(crop, (0, height - 28), (width, height), (0, 0, 0), -1)
    cv2.putText(crop, "emo-prep sandbox: framing preview, not EMO", (8, height - 9),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    rgb = np.ascontiguousarray(crop[:, :, ::-1])
    out = io.BytesIO()
    with av.logging.Capture(), av.open(io.BytesIO(audio)) as src, av.open(out, mode="w", format="mp4") as dst:
        video = dst.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "28"}
        sound = dst.add_stream("aac", rate=44100, layout="mono")
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=44100)
        samples = 0
        for decoded in src.decode(src.streams.audio[0]):
            for chunk in resampler.resample(decoded):
                samples += chunk.samples
                for packet in sound.encode(chunk):
                    dst.mux(packet)
        for chunk in resampler.resample(None):
            samples += chunk.samples
            for packet in sound.encode(chunk):
                dst.mux(packet)
        for packet in sound.encode(None):
            dst.mux(packet)
        frames = max(1, round(samples / 44100 * fps))
        picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for index in range(frames):
            picture.pts = index
            for packet in video.encode(picture):
                dst.mux(packet)
        for packet in video.encode(None):
            dst.mux(packet)
    return out.getvalue()
