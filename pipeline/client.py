"""Typed DashScope client for EMO: upload, face-detect, submit, poll, cancel, list, download.

`EmoClient` (sync) and `AsyncEmoClient` share everything but I/O: requests are built and
answers parsed by `_Core`; retry decisions are three pure functions (`parse_retry_after`,
`backoff_delay`, `should_retry`). Only calls that are safe to repeat are retried; a submit
whose request may have reached the service is never resent (AmbiguousSubmitError).

Arguments first, environment as fallback, the way the DashScope SDK reads it: `api_key` or
DASHSCOPE_API_KEY, DASHSCOPE_API_KEY_FILE_PATH, ~/.dashscope/api_key; `base_url` or
DASHSCOPE_HTTP_BASE_URL (SDK 1.x), DASHSCOPE_BASE_URL (SDK 2.x, unless it is the OpenAI-compatible
mode), default Beijing; `workspace` or DASHSCOPE_WORKSPACE. The key is sent only in the
Authorization header of API calls (never to upload or result hosts) and never appears in a log,
repr or message. Each retry is logged (logger `pipeline.client`, INFO) with its reason and wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import json
import logging
import os
import platform
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import __version__
from .config import (
    API_TIMEOUT_S,
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    COMPATIBLE_MODE_PATH,
    DEFAULT_API_KEY_FILE,
    DEFAULT_BASE_URL,
    ENV_API_KEY,
    ENV_API_KEY_FILE,
    ENV_BASE_URL,
    ENV_BASE_URL_V2,
    ENV_WORKSPACE,
    MAX_DOWNLOAD_BYTES,
    MAX_RETRIES,
    NATIVE_API_PATH,
    POLL_FACTOR,
    POLL_INITIAL_S,
    POLL_MAX_S,
    RETRY_AFTER_CAP_S,
    TRANSFER_TIMEOUT_S,
    VIDEO_MODEL,
    WAIT_TIMEOUT_S,
    WORKSPACE_HEADER,
)
from .errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    InvalidRequestError,
    PortraitRejected,
    ServerError,
    TaskFailed,
    TaskTimeout,
    ThrottledError,
    UsageError,
)
from .payload import (
    DETECT_MESSAGES,
    ErrorBody,
    FaceDetectInput,
    FaceDetectParameters,
    FaceDetectRequest,
    FaceDetectResponse,
    PolicyResponse,
    TaskList,
    TaskResponse,
    UploadPolicy,
    VideoSynthesisRequest,
)

__all__ = ["EmoClient", "AsyncEmoClient", "RetryPolicy", "parse_retry_after", "backoff_delay", "should_retry",
           "finding_for_api_code", "resolve_base_url", "USER_AGENT"]

log = logging.getLogger("pipeline.client")

#: Names us to the service (and to whoever reads its logs), as the SDK names itself.
USER_AGENT = f"emo-prep/{__version__} httpx/{httpx.__version__} python/{platform.python_version()}"


def resolve_base_url(base_url: str | None = None) -> tuple[str, str]:
    """The API base URL and where it came from: the argument, DASHSCOPE_HTTP_BASE_URL (SDK 1.x),
    DASHSCOPE_BASE_URL (SDK 2.x; a bare host gets /api/v1; an OpenAI-compatible-mode URL is
    ignored with a warning, it has no EMO), else Beijing."""
    if base_url:
        return base_url.rstrip("/"), "argument"
    if value := os.environ.get(ENV_BASE_URL, "").strip():
        return value.rstrip("/"), ENV_BASE_URL
    if value := os.environ.get(ENV_BASE_URL_V2, "").strip():
        path = httpx.URL(value).path
        if COMPATIBLE_MODE_PATH not in path:
            return value.rstrip("/") + (NATIVE_API_PATH if path.strip("/") == "" else ""), ENV_BASE_URL_V2
        log.warning("ignoring %s=%s: that is the OpenAI-compatible API, which has no EMO; using %s", ENV_BASE_URL_V2,
                    value, DEFAULT_BASE_URL)
    return DEFAULT_BASE_URL, "default: Beijing"


def _read_api_key(api_key: str | None) -> str:
    """The key the SDK's ways: argument, DASHSCOPE_API_KEY, the file DASHSCOPE_API_KEY_FILE_PATH
    names, ~/.dashscope/api_key."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if key is None:
        named = os.environ.get(ENV_API_KEY_FILE)
        path = Path(named or DEFAULT_API_KEY_FILE).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            if named:  # asked for by name: say why it was not read
                raise UsageError(f"{ENV_API_KEY_FILE}: cannot read the key file {path} "
                                 f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if not key:
        raise UsageError(f"no DashScope API key: pass api_key=... or set {ENV_API_KEY} (or write the key to "
                         f"{DEFAULT_API_KEY_FILE}, or name a key file in {ENV_API_KEY_FILE})")
    return key


def _task_id_of(task: str | TaskResponse) -> str:
    """A task id, given as the id or as the TaskResponse that submit() returned."""
    if isinstance(task, TaskResponse):
        return task.output.task_id
    if isinstance(task, str):
        return task
    raise UsageError(f"task: expected a task id or the TaskResponse submit() returned, got {type(task).__name__}")

#: The service's portrait verdicts (spec 3.1/3.2) mapped to our check codes.
_API_CODE_TO_FINDING = {
    "InvalidFile.NoHuman": "no_face", "InvalidFile.MultiHuman": "multiple_faces",
    "InvalidFile.BodyProportion": "face_too_large", "InvalidFile.Resolution": "image_too_small",
    "InvalidFile.Value": "blur", "InvalidFile.FrontBody": "pose", "InvalidFile.FullFace": "face_cut_off",
    "InvalidFile.FacePose": "pose", "InvalidFile.FullBody": "body_cut_off", "InvalidFile.Content": "multiple_faces",
}
#: A received message is taken for the code whose message it shares the longest normalised
#: prefix with, from this many characters on (variants differ in spelling and the ending).
_MIN_SHARED_PREFIX = 40


def _normalised(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower()).strip()


def finding_for_api_code(code: str | None, message: str | None = None) -> str | None:
    """Our check code for a service verdict, from its code or (failing that) its message."""
    if code in _API_CODE_TO_FINDING:
        return _API_CODE_TO_FINDING[code]
    text = _normalised(message or "")
    shared, best = max((len(os.path.commonprefix([text, _normalised(official)])), api_code)
                       for api_code, official in DETECT_MESSAGES.items())
    return _API_CODE_TO_FINDING[best] if shared >= _MIN_SHARED_PREFIX else None


# --- retry decisions: pure functions --------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently calls that are safe to repeat are retried."""

    max_retries: int = MAX_RETRIES
    initial_s: float = BACKOFF_INITIAL_S
    max_s: float = BACKOFF_MAX_S
    retry_after_cap_s: float = RETRY_AFTER_CAP_S


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent
    or unparseable; never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, policy: RetryPolicy, *, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2**attempt)]."""
    return rand() * min(policy.max_s, policy.initial_s * (2 ** attempt))


def should_retry(status: int | None, *, idempotent: bool, sent: bool) -> bool:
    """Whether a failed call may be made again.

    status None means no answer: safe when the request never left (connect failed), else
    only for idempotent calls. 429 means the service refused the request, so it is safe for
    every call. 408/5xx (and 409 lock conflicts) only for idempotent calls.
    """
    if status is None:
        return idempotent or not sent
    if status == 429:
        return True
    return idempotent and (status in (408, 409) or status >= 500)


# --- requests and answers: shared by both clients -----------------------------------------

@dataclass(frozen=True)
class _Call:
    method: str
    url: str
    what: str
    """Short name for logs and messages ("get task", "submit")."""
    idempotent: bool
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    authorised: bool = True
    """Send the API key (API calls only; never to upload or result hosts)."""


class _Core:
    """Options, request building and answer parsing; no I/O."""

    def __init__(self, *, api_key: str | None, base_url: str | None, workspace: str | None, timeout: float,
                 retry: RetryPolicy, poll_initial_s: float, poll_max_s: float) -> None:
        self._api_key = _read_api_key(api_key)
        self.base_url, self.base_url_source = resolve_base_url(base_url)
        """The API base URL, and where it came from (argument, an environment variable, default)."""
        self.workspace = workspace if workspace is not None else (os.environ.get(ENV_WORKSPACE) or None)
        self.timeout = timeout
        self.retry = retry
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s

    @property
    def endpoint(self) -> str:
        """The API base URL and where it came from, for telling the user which service is paid."""
        return f"{self.base_url} ({self.base_url_source})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key='{self._api_key[:3]}***')"

    def _options(self) -> dict[str, Any]:
        return {"api_key": self._api_key, "base_url": self.base_url, "workspace": self.workspace,
                "timeout": self.timeout,
                "retry": self.retry, "poll_initial_s": self.poll_initial_s, "poll_max_s": self.poll_max_s}

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _auth(self, call: _Call) -> dict[str, str]:
        headers = dict(call.headers)
        if call.authorised:
            headers["Authorization"] = f"Bearer {self._api_key}"
            if self.workspace:
                headers[WORKSPACE_HEADER] = self.workspace
        return headers

    # builders
    def _policy_call(self, model: str) -> _Call:
        return _Call("GET", f"{self.base_url}/uploads", "get upload policy", True,
                     params={"action": "getPolicy", "model": model})

    @staticmethod
    def _upload_call(policy: UploadPolicy, key: str, data: bytes, filename: str, mime: str) -> _Call:
        # form field order matters to OSS: the file goes last (spec 5)
        fields = {"OSSAccessKeyId": policy.oss_access_key_id, "Signature": policy.signature,
                  "policy": policy.policy, "key": key, "x-oss-object-acl": policy.x_oss_object_acl,
                  "x-oss-forbid-overwrite": policy.x_oss_forbid_overwrite, "success_action_status": "200",
                  "x-oss-content-type": mime}
        return _Call("POST", policy.upload_host, "upload", True, data=fields,
                     files={"file": (filename, data, mime)}, authorised=False)

    def _detect_call(self, image_url: str, ratio: str) -> _Call:
        body = FaceDetectRequest(input=FaceDetectInput(image_url=image_url),
                                 parameters=FaceDetectParameters(ratio=ratio))  # type: ignore[arg-type]
        # synchronous API: no X-DashScope-Async (spec 1.2); the call has no side effect
        # beyond its CNY 0.004 fee, so it is retried like a query
        return _Call("POST", f"{self.base_url}/services/aigc/image2video/face-detect", "face-detect", True,
                     json=body.model_dump(), headers=_oss_header(image_url))

    def _submit_call(self, request: VideoSynthesisRequest) -> _Call:
        headers = {"X-DashScope-Async": "enable",  # required: emo-v1 is async only (spec 1.3)
                   **_oss_header(request.input.image_url, request.input.audio_url)}
        return _Call("POST", f"{self.base_url}/services/aigc/image2video/video-synthesis", "submit", False,
                     json=request.model_dump(), headers=headers)

    def _task_call(self, task_id: str) -> _Call:
        return _Call("GET", f"{self.base_url}/tasks/{_safe_id(task_id)}", "get task", True)

    def _cancel_call(self, task_id: str) -> _Call:
        return _Call("POST", f"{self.base_url}/tasks/{_safe_id(task_id)}/cancel", "cancel", True)

    def _list_call(self, **filters: Any) -> _Call:
        params = {k: v for k, v in filters.items() if v is not None}
        return _Call("GET", f"{self.base_url}/tasks", "list tasks", True, params=params)

    # answers
    def _error(self, call: _Call, response: httpx.Response) -> APIStatusError:
        try:
            body: Any = json.loads(self._redact(json.dumps(response.json())))  # a body may echo the key
            parsed = ErrorBody.model_validate(body) if isinstance(body, dict) else ErrorBody()
        except (ValueError, json.JSONDecodeError):
            body, parsed = self._redact(response.text[:500]), ErrorBody()
        status = response.status_code
        cls: type[APIStatusError]
        if status in (401, 403):
            cls = AuthenticationError
        elif status == 429:
            cls = ThrottledError
        elif status >= 500:
            cls = ServerError
        else:
            cls = InvalidRequestError
        message = self._redact(parsed.message or response.reason_phrase or "error")
        return cls(f"{call.what}: {message}", status_code=status, code=parsed.code,
                   request_id=parsed.request_id or response.headers.get("x-request-id"), body=body)

    def _parse_detect(self, response: httpx.Response) -> FaceDetectResponse:
        answer = FaceDetectResponse.model_validate(response.json())
        if not answer.output.check_pass:
            code = answer.output.code or None
            finding = finding_for_api_code(code, answer.output.message)
            raise PortraitRejected(f"emo-detect rejected the photo: {answer.output.message or code}",
                                   code=code, finding_code=finding, request_id=answer.request_id)
        return answer

    def _detect_rejection(self, exc: APIStatusError) -> APIError:
        """A 400 InvalidFile.* answer to face-detect is a verdict too (spec 1.2)."""
        if exc.status_code == 400 and (exc.code or "").startswith("InvalidFile."):
            return PortraitRejected(f"emo-detect rejected the photo: {exc.message}", code=exc.code,
                                    finding_code=finding_for_api_code(exc.code), request_id=exc.request_id)
        return exc

    @staticmethod
    def _final_or_raise(task: TaskResponse) -> TaskResponse:
        status = task.output.task_status
        if status == "SUCCEEDED":
            return task
        detail = task.output.message or task.output.code or ""
        raise TaskFailed(f"task {task.output.task_id} ended {status}" + (f": {detail}" if detail else ""),
                         task_id=task.output.task_id, status=status, code=task.output.code,
                         request_id=task.request_id)

    def _poll_delays(self) -> Iterator[float]:
        delay = self.poll_initial_s
        while True:
            yield delay
            delay = min(self.poll_max_s, delay * POLL_FACTOR)

    def _decide(self, call: _Call, attempt: int, status: int | None, sent: bool,
                retry_after: str | None, reason: str) -> float | None:
        """Seconds to wait before trying `call` again, or None to give up now; `reason` (what went
        wrong, never a secret) goes into the log line."""
        if attempt >= self.retry.max_retries or not should_retry(status, idempotent=call.idempotent, sent=sent):
            return None
        hinted = parse_retry_after(retry_after)
        if hinted is not None and hinted > self.retry.retry_after_cap_s:
            return None
        delay = hinted if hinted is not None else backoff_delay(attempt, self.retry)
        log.info("retrying %s after %s: waiting %.2f s%s (retry %d of %d)", call.what, reason, delay,
                 " as Retry-After asks" if hinted is not None else "", attempt + 1, self.retry.max_retries)
        return delay

    def _after_failure(self, call: _Call, attempt: int, failure: httpx.Response | httpx.TransportError,
                       sent_at: float) -> float:
        """Seconds to wait before trying `call` again; raises the typed error when it must not be."""
        if isinstance(failure, httpx.Response):
            code = self._error(call, failure).code
            delay = self._decide(call, attempt, failure.status_code, True, failure.headers.get("retry-after"),
                                 f"HTTP {failure.status_code}" + (f" {code}" if code else ""))
            if delay is None:
                raise self._error(call, failure)
            return delay
        sent = not isinstance(failure, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        delay = self._decide(call, attempt, None, sent, None, f"no answer ({type(failure).__name__})")
        if delay is None:
            if sent and not call.idempotent:
                raise self._ambiguous(call, failure, sent_at) from failure
            raise self._no_answer(call, failure) from failure
        return delay

    def _after_download_failure(self, call: _Call, attempt: int, exc: Exception) -> float:
        """Seconds before fetching a result again (a GET, safe to repeat); raises the typed
        error when it must not be."""
        status = exc.status_code if isinstance(exc, APIStatusError) else None
        delay = self._decide(call, attempt, status, True, None,
                             f"HTTP {status}" if status is not None else f"no answer ({type(exc).__name__})")
        if delay is not None:
            return delay
        if isinstance(exc, httpx.TransportError):
            raise self._no_answer(call, exc) from exc
        raise exc

    def _no_answer(self, call: _Call, exc: httpx.TransportError) -> APIError:
        kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        return kind(f"{call.what}: no answer from {_host(call.url)} ({type(exc).__name__})")

    @staticmethod
    def _ambiguous(call: _Call, exc: Exception, sent_at: float) -> AmbiguousSubmitError:
        digest = hashlib.sha256(json.dumps(call.json, sort_keys=True).encode()).hexdigest()
        return AmbiguousSubmitError(
            f"submit: the request was sent but no answer came back ({type(exc).__name__}); a task may "
            f"exist: do not resend, look for it with the task list", sent_at=sent_at, body_sha256=digest)


def _oss_header(*urls: str) -> dict[str, str]:
    """oss:// inputs need the resolve header on the model call (spec 5)."""
    return {"X-DashScope-OssResourceResolve": "enable"} if any(u.startswith("oss://") for u in urls) else {}


def _safe_id(task_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", task_id):
        raise UsageError(f"task id: expected letters, digits, '.', '_' or '-', got {task_id!r}")
    return task_id


def _host(url: str) -> str:
    return httpx.URL(url).host or url


def _object_key(policy: UploadPolicy, filename: str) -> str:
    """Unique per upload: OSS refuses to overwrite (x-oss-forbid-overwrite, spec 5)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name)[-80:] or "file"
    return f"{policy.upload_dir.rstrip('/')}/{uuid.uuid4().hex}-{safe}"


def _check_size(policy: UploadPolicy, data: bytes) -> None:
    if len(data) > policy.max_file_size_mb * 1024 * 1024:
        raise UsageError(f"upload: {len(data)} bytes is over the policy's {policy.max_file_size_mb} MB")


_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
         ".webp": "image/webp", ".wav": "audio/wav", ".mp3": "audio/mpeg"}


def _mime(filename: str) -> str:
    return _MIME.get(Path(filename).suffix.lower(), "application/octet-stream")


class _Download:
    """Writes a stream to a temporary file beside `dest`, then renames it into place."""

    def __init__(self, dest: Path, expected: int | None) -> None:
        if expected is not None and expected > MAX_DOWNLOAD_BYTES:
            raise APIError(f"download: {expected} bytes is more than the {MAX_DOWNLOAD_BYTES} accepted")
        self.dest, self.expected, self.size = dest, expected, 0
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        self.fh = self.part.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_DOWNLOAD_BYTES:
            raise APIError(f"download: more than {MAX_DOWNLOAD_BYTES} bytes")
        self.fh.write(chunk)

    def finish(self) -> Path:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        if self.expected is not None and self.size != self.expected:
            self.part.unlink(missing_ok=True)
            raise APIConnectionError(f"download: got {self.size} of {self.expected} bytes")
        os.replace(self.part, self.dest)
        return self.dest

    def abort(self) -> None:
        self.fh.close()
        self.part.unlink(missing_ok=True)


def _expected_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    return int(value) if value and value.isdigit() and "content-encoding" not in response.headers else None


_CLIENT_DOC = """Keyword-only options: api_key (else DASHSCOPE_API_KEY), base_url (else
    DASHSCOPE_HTTP_BASE_URL or DASHSCOPE_BASE_URL, else Beijing), workspace (else
    DASHSCOPE_WORKSPACE), timeout (seconds per connect/read/write),
    retry (RetryPolicy), poll_initial_s / poll_max_s (task polling), transport (an httpx
    transport, for tests). Use as a context manager or call close()."""


class EmoClient(_Core):
    __doc__ = "Synchronous EMO client. " + _CLIENT_DOC

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, workspace: str | None = None,
                 timeout: float = API_TIMEOUT_S, retry: RetryPolicy | None = None,
                 poll_initial_s: float = POLL_INITIAL_S, poll_max_s: float = POLL_MAX_S,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(api_key=api_key, base_url=base_url, workspace=workspace, timeout=timeout,
                         retry=retry or RetryPolicy(),
                         poll_initial_s=poll_initial_s, poll_max_s=poll_max_s)
        self._transport = transport
        self._sleep = sleep
        self._http: httpx.Client | None = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True,
                                                              headers={"User-Agent": USER_AGENT})

    def with_options(self, **changes: Any) -> EmoClient:
        """A new client with some options changed (the original stays open and usable)."""
        return EmoClient(**{**self._options(), "transport": self._transport, "sleep": self._sleep, **changes})

    def __enter__(self) -> EmoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; idempotent. The client cannot be used afterwards."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def _client(self) -> httpx.Client:
        if self._http is None:
            raise UsageError("this client is closed; create a new one")
        return self._http

    def _send(self, call: _Call, *, timeout: float | None = None) -> httpx.Response:
        http = self._client()
        attempt = 0
        while True:
            sent_at = time.time()
            try:
                response = http.request(call.method, call.url, params=call.params, json=call.json,
                                        data=call.data, files=call.files, headers=self._auth(call),
                                        timeout=timeout or self.timeout)
            except httpx.TransportError as exc:
                delay = self._after_failure(call, attempt, exc, sent_at)
            else:
                if response.status_code < 400:
                    return response
                delay = self._after_failure(call, attempt, response, sent_at)
            self._sleep(delay)
            attempt += 1

    def upload(self, data: bytes | str | os.PathLike[str], *, model: str = VIDEO_MODEL,
               filename: str | None = None) -> str:
        """Upload bytes or a local file for `model` (files are bound to the model named at
        upload, spec 5) and return its oss:// URL, valid 48 h."""
        if not isinstance(data, (bytes, bytearray)):
            filename = filename or Path(data).name
            data = Path(data).read_bytes()
        filename = filename or "upload.bin"
        policy = PolicyResponse.model_validate(self._send(self._policy_call(model)).json()).data
        _check_size(policy, bytes(data))
        key = _object_key(policy, filename)
        try:
            self._send(self._upload_call(policy, key, bytes(data), filename, _mime(filename)),
                       timeout=TRANSFER_TIMEOUT_S)
        except InvalidRequestError as exc:
            if exc.status_code != 409:  # 409: a retry found our own (unique) object already there
                raise
        return f"oss://{key}"

    def face_detect(self, image_url: str, *, ratio: str = "1:1") -> FaceDetectResponse:
        """emo-detect-v1's boxes for a photo; raises PortraitRejected on its verdict."""
        try:
            return self._parse_detect(self._send(self._detect_call(image_url, ratio)))
        except APIStatusError as exc:
            raise self._detect_rejection(exc) from exc

    def submit(self, request: VideoSynthesisRequest) -> TaskResponse:
        """Create an emo-v1 task (paid). Never resent after it may have arrived."""
        return TaskResponse.model_validate(self._send(self._submit_call(request)).json())

    def get_task(self, task: str | TaskResponse) -> TaskResponse:
        """A task's state, by id or by the TaskResponse submit() returned."""
        return TaskResponse.model_validate(self._send(self._task_call(_task_id_of(task))).json())

    def cancel(self, task_id: str) -> TaskResponse:
        """Cancel a task that is still PENDING."""
        return TaskResponse.model_validate(self._send(self._cancel_call(task_id)).json())

    def list_tasks(self, *, status: str | None = None, model_name: str | None = VIDEO_MODEL,
                   start_time: str | None = None, end_time: str | None = None,
                   page_no: int = 1, page_size: int = 10) -> TaskList:
        """Tasks of the account (times as YYYYMMDDhhmmss)."""
        call = self._list_call(status=status, model_name=model_name, start_time=start_time,
                               end_time=end_time, page_no=page_no, page_size=page_size)
        return TaskList.model_validate(self._send(call).json())

    def wait(self, task: str | TaskResponse, *, timeout: float = WAIT_TIMEOUT_S,
             on_update: Callable[[TaskResponse], None] | None = None) -> TaskResponse:
        """Poll until the task (an id, or the TaskResponse submit() returned) is final; return it
        when SUCCEEDED, else raise TaskFailed. Raises TaskTimeout (carrying the task id) when
        `timeout` seconds pass first."""
        task_id = _task_id_of(task)
        deadline = time.monotonic() + timeout
        for delay in self._poll_delays():
            task = self.get_task(task_id)
            if on_update is not None:
                on_update(task)
            if task.final:
                return self._final_or_raise(task)
            if time.monotonic() + delay > deadline:
                raise TaskTimeout(f"task {task_id} still {task.output.task_status} after {timeout:g} s",
                                  task_id=task_id, status=task.output.task_status)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def create_and_poll(self, request: VideoSynthesisRequest, *, timeout: float = WAIT_TIMEOUT_S,
                        on_update: Callable[[TaskResponse], None] | None = None) -> TaskResponse:
        """submit() then wait()."""
        return self.wait(self.submit(request).output.task_id, timeout=timeout, on_update=on_update)

    def download(self, url: str, dest: str | os.PathLike[str]) -> Path:
        """Stream a result to `dest`, checked against Content-Length, written atomically."""
        call = _Call("GET", url, "download", True, authorised=False)
        http = self._client()
        attempt = 0
        while True:
            try:
                with http.stream("GET", url, timeout=TRANSFER_TIMEOUT_S) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise self._error(call, response)
                    sink = _Download(Path(dest), _expected_length(response))
                    try:
                        for chunk in response.iter_bytes():
                            sink.write(chunk)
                        return sink.finish()
                    except BaseException:
                        sink.abort()
                        raise
            except (httpx.TransportError, APIConnectionError, ServerError) as exc:
                delay = self._after_download_failure(call, attempt, exc)
            self._sleep(delay)
            attempt += 1


class AsyncEmoClient(_Core):
    __doc__ = "Asynchronous twin of EmoClient (same calls, awaitable). " + _CLIENT_DOC

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, workspace: str | None = None,
                 timeout: float = API_TIMEOUT_S, retry: RetryPolicy | None = None,
                 poll_initial_s: float = POLL_INITIAL_S, poll_max_s: float = POLL_MAX_S,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(api_key=api_key, base_url=base_url, workspace=workspace, timeout=timeout,
                         retry=retry or RetryPolicy(),
                         poll_initial_s=poll_initial_s, poll_max_s=poll_max_s)
        self._transport = transport
        self._http: httpx.AsyncClient | None = httpx.AsyncClient(timeout=timeout, transport=transport,
                                                                 follow_redirects=True,
                                                                 headers={"User-Agent": USER_AGENT})

    def with_options(self, **changes: Any) -> AsyncEmoClient:
        return AsyncEmoClient(**{**self._options(), "transport": self._transport, **changes})

    async def __aenter__(self) -> AsyncEmoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise UsageError("this client is closed; create a new one")
        return self._http

    async def _send(self, call: _Call, *, timeout: float | None = None) -> httpx.Response:
        http = self._client()
        attempt = 0
        while True:
            sent_at = time.time()
            try:
                response = await http.request(call.method, call.url, params=call.params, json=call.json,
                                              data=call.data, files=call.files, headers=self._auth(call),
                                              timeout=timeout or self.timeout)
            except httpx.TransportError as exc:
                delay = self._after_failure(call, attempt, exc, sent_at)
            else:
                if response.status_code < 400:
                    return response
                delay = self._after_failure(call, attempt, response, sent_at)
            await asyncio.sleep(delay)
            attempt += 1

    async def upload(self, data: bytes | str | os.PathLike[str], *, model: str = VIDEO_MODEL,
                     filename: str | None = None) -> str:
        if not isinstance(data, (bytes, bytearray)):
            filename = filename or Path(data).name
            data = Path(data).read_bytes()
        filename = filename or "upload.bin"
        policy = PolicyResponse.model_validate((await self._send(self._policy_call(model))).json()).data
        _check_size(policy, bytes(data))
        key = _object_key(policy, filename)
        try:
            await self._send(self._upload_call(policy, key, bytes(data), filename, _mime(filename)),
                             timeout=TRANSFER_TIMEOUT_S)
        except InvalidRequestError as exc:
            if exc.status_code != 409:
                raise
        return f"oss://{key}"

    async def face_detect(self, image_url: str, *, ratio: str = "1:1") -> FaceDetectResponse:
        try:
            return self._parse_detect(await self._send(self._detect_call(image_url, ratio)))
        except APIStatusError as exc:
            raise self._detect_rejection(exc) from exc

    async def submit(self, request: VideoSynthesisRequest) -> TaskResponse:
        return TaskResponse.model_validate((await self._send(self._submit_call(request))).json())

    async def get_task(self, task: str | TaskResponse) -> TaskResponse:
        return TaskResponse.model_validate((await self._send(self._task_call(_task_id_of(task)))).json())

    async def cancel(self, task_id: str) -> TaskResponse:
        return TaskResponse.model_validate((await self._send(self._cancel_call(task_id))).json())

    async def list_tasks(self, *, status: str | None = None, model_name: str | None = VIDEO_MODEL,
                         start_time: str | None = None, end_time: str | None = None,
                         page_no: int = 1, page_size: int = 10) -> TaskList:
        call = self._list_call(status=status, model_name=model_name, start_time=start_time,
                               end_time=end_time, page_no=page_no, page_size=page_size)
        return TaskList.model_validate((await self._send(call)).json())

    async def wait(self, task: str | TaskResponse, *, timeout: float = WAIT_TIMEOUT_S,
                   on_update: Callable[[TaskResponse], None] | None = None) -> TaskResponse:
        task_id = _task_id_of(task)
        deadline = time.monotonic() + timeout
        for delay in self._poll_delays():
            task = await self.get_task(task_id)
            if on_update is not None:
                on_update(task)
            if task.final:
                return self._final_or_raise(task)
            if time.monotonic() + delay > deadline:
                raise TaskTimeout(f"task {task_id} still {task.output.task_status} after {timeout:g} s",
                                  task_id=task_id, status=task.output.task_status)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def create_and_poll(self, request: VideoSynthesisRequest, *, timeout: float = WAIT_TIMEOUT_S,
                              on_update: Callable[[TaskResponse], None] | None = None) -> TaskResponse:
        return await self.wait((await self.submit(request)).output.task_id, timeout=timeout, on_update=on_update)

    async def download(self, url: str, dest: str | os.PathLike[str]) -> Path:
        call = _Call("GET", url, "download", True, authorised=False)
        http = self._client()
        attempt = 0
        while True:
            try:
                async with http.stream("GET", url, timeout=TRANSFER_TIMEOUT_S) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise self._error(call, response)
                    sink = _Download(Path(dest), _expected_length(response))
                    try:
                        async for chunk in response.aiter_bytes():
                            sink.write(chunk)
                        return sink.finish()
                    except BaseException:
                        sink.abort()
                        raise
            except (httpx.TransportError, APIConnectionError, ServerError) as exc:
                delay = self._after_download_failure(call, attempt, exc)
            await asyncio.sleep(delay)
            attempt += 1


