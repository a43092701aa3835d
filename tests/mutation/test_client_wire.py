"""The client on the wire: what each call sends to which host, where the key goes, what its
errors say and when it waits or gives up. Three real HTTP servers on loopback play the API
host, the OSS upload host and the result host (127.0.0.1, .2 and .3), and record every request.

Sleeps go through the client's `sleep` argument (recorded, not slept), so a Retry-After of an
hour is seen at once.
"""

from __future__ import annotations

import email.utils
import http.server
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import LoopbackServer

from pipeline.client import EmoClient, RetryPolicy, parse_retry_after, resolve_base_url
from pipeline.errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InvalidRequestError,
    PortraitRejected,
    ServerError,
    ThrottledError,
    UsageError,
)
from pipeline.payload import VideoInput, VideoParameters, VideoSynthesisRequest

KEY = "sk-wire-test-7f3a9c"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(4000)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Host:
    """A loopback HTTP server that records every request and answers with `answer`, or with
    the next scripted reply first (status, headers, body; None body: drop the connection)."""

    ip: str
    answer: Callable[[Seen], tuple[int, dict[str, str], bytes]]
    seen: list[Seen] = field(default_factory=list)
    script: deque = field(default_factory=deque)

    def start(self) -> Host:
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                url = urlsplit(self.path)
                req = Seen(self.command, url.path, parse_qs(url.query), dict(self.headers.items()),
                           self.rfile.read(length))
                host.seen.append(req)
                status, headers, body = host.script.popleft() if host.script else host.answer(req)
                if "X-Test-Delay" in headers:  # answer late
                    time.sleep(float(headers["X-Test-Delay"]))
                if body is None:  # the request arrived; the answer is lost
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                headers = {k: v for k, v in headers.items() if k != "X-Test-Delay"}
                self.send_response(status, headers.pop("X-Test-Reason", None))  # the status line's phrase
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.server = LoopbackServer((self.ip, 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def base(self) -> str:
        return f"http://{self.ip}:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    return _json(status, {"code": code, "message": message, "request_id": "rid-1"}, headers)


@pytest.fixture(scope="module")
def _servers():
    result = Host("127.0.0.3", lambda req: (200, {"Content-Type": "video/mp4"}, VIDEO)).start()
    oss = Host("127.0.0.2", lambda req: (200, {}, b"")).start()

    def api(req: Seen):
        task = {"task_id": "t-1", "task_status": "SUCCEEDED", "results": {"video_url": f"{result.base}/v.mp4"}}
        if req.path.endswith("/uploads"):
            return _json(200, {"data": {"policy": "p", "signature": "s", "upload_dir": "dashscope-instant/abc/",
                                        "upload_host": oss.base, "oss_access_key_id": "AK-OSS"}})
        if req.path.endswith("/face-detect"):
            return _json(200, {"output": {"check_pass": True, "face_bbox": [1, 1, 5, 5], "ext_bbox": [0, 0, 9, 9]},
                               "request_id": "rid-d"})
        if req.path.endswith("/video-synthesis"):
            return _json(200, {"output": {"task_id": "t-1", "task_status": "PENDING"}, "request_id": "rid-s"})
        if req.path.endswith("/tasks"):
            return _json(200, {"data": [{"task_id": "t-1", "task_status": "RUNNING"}]})
        if req.path.endswith("/cancel"):
            return _json(200, {"output": {**task, "task_status": "CANCELED"}})
        return _json(200, {"output": task, "usage": {"video_duration": 7.35, "video_ratio": "1:1"}})

    api_host = Host("127.0.0.1", api).start()
    servers = (api_host, oss, result)
    defaults = [h.answer for h in servers]
    yield servers, defaults
    for h in servers:
        h.stop()


@pytest.fixture
def hosts(_servers):
    """The three hosts, with no request seen, nothing scripted and their usual answers."""
    servers, defaults = _servers
    for h, answer in zip(servers, defaults, strict=True):
        h.seen.clear()
        h.script.clear()
        h.answer = answer
    return servers


def _client(api: Host, sleeps: list | None = None, **options) -> EmoClient:
    sleeps = [] if sleeps is None else sleeps
    return EmoClient(api_key=KEY, base_url=f"{api.base}/api/v1", sleep=sleeps.append,
                     retry=options.pop("retry", RetryPolicy(max_retries=3, initial_s=0.5, max_s=4.0)), **options)


def _request(image_url: str = "oss://dashscope-instant/abc/p.jpg",
             audio_url: str = "oss://dashscope-instant/abc/a.wav") -> VideoSynthesisRequest:
    return VideoSynthesisRequest(input=VideoInput(image_url=image_url, audio_url=audio_url,
                                                  face_bbox=[10, 10, 20, 20], ext_bbox=[0, 0, 30, 30]),
                                 parameters=VideoParameters(style_level="calm"))


def _every_call(client: EmoClient, tmp_path) -> None:
    image = client.upload(b"\xff\xd8 a photo", filename="p.jpg")
    client.upload(b"RIFF audio", model="emo-detect-v1", filename="a b?.wav")
    client.face_detect(image, ratio="3:4")
    client.face_detect("https://example.com/p.jpg")
    created = client.submit(_request())
    client.submit(_request("https://example.com/p.jpg", "https://example.com/a.wav"))
    done = client.get_task(created)
    client.list_tasks(status="RUNNING", page_size=5)
    client.cancel("t-1")
    client.download(done.video_url, tmp_path / "v.mp4")


# --- where the key goes --------------------------------------------------------------------

def test_the_key_reaches_the_api_host_only(hosts, tmp_path):
    api, oss, result = hosts
    with _client(api, workspace="ws-9") as client:
        _every_call(client, tmp_path)
    assert len(api.seen) == 9 and len(oss.seen) == 2 and len(result.seen) == 1
    for req in api.seen:
        assert req.headers["Authorization"] == f"Bearer {KEY}", req.path
        assert req.headers["X-DashScope-WorkSpace"] == "ws-9"
        assert req.headers["User-Agent"].startswith("emo-prep/")
    for req in oss.seen + result.seen:
        assert "Authorization" not in req.headers and "X-DashScope-WorkSpace" not in req.headers, req.path
        assert KEY not in json.dumps(req.headers) and KEY.encode() not in req.body and KEY not in req.path
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO


def test_no_workspace_header_without_a_workspace(hosts):
    api, _, _ = hosts
    with _client(api) as client:
        client.get_task("t-1")
    assert "X-DashScope-WorkSpace" not in api.seen[0].headers


def test_the_client_repr_hides_the_key(hosts):
    api, _, _ = hosts
    with _client(api) as client:
        assert repr(client) == f"EmoClient(base_url='{api.base}/api/v1', api_key='sk-***')"
        assert KEY not in repr(client)


# --- what each call sends -------------------------------------------------------------------

def test_each_call_is_built_as_the_service_expects(hosts, tmp_path):
    api, oss, _ = hosts
    with _client(api) as client:
        _every_call(client, tmp_path)
    policy, policy2, detect_oss, detect_http, submit_oss, submit_http, task, listed, cancel = api.seen
    assert (policy.method, policy.path, policy.query) == ("GET", "/api/v1/uploads",
                                                          {"action": ["getPolicy"], "model": ["emo-v1"]})
    assert policy2.query["model"] == ["emo-detect-v1"]
    assert (detect_oss.method, detect_oss.path) == ("POST", "/api/v1/services/aigc/image2video/face-detect")
    assert json.loads(detect_oss.body) == {"model": "emo-detect-v1", "input": {"image_url": "oss://dashscope-instant/"
                                           + oss_key(oss.seen[0])}, "parameters": {"ratio": "3:4"}}
    assert detect_oss.headers["X-DashScope-OssResourceResolve"] == "enable"
    assert "X-DashScope-OssResourceResolve" not in detect_http.headers
    assert json.loads(detect_http.body)["parameters"] == {"ratio": "1:1"}
    for detect in (detect_oss, detect_http):
        assert "X-DashScope-Async" not in detect.headers  # face-detect is synchronous (spec 1.2)
    assert (submit_oss.method, submit_oss.path) == ("POST", "/api/v1/services/aigc/image2video/video-synthesis")
    assert submit_oss.headers["X-DashScope-Async"] == "enable" == submit_http.headers["X-DashScope-Async"]
    assert submit_oss.headers["X-DashScope-OssResourceResolve"] == "enable"
    assert "X-DashScope-OssResourceResolve" not in submit_http.headers
    assert json.loads(submit_oss.body) == _request().model_dump()
    assert (task.method, task.path) == ("GET", "/api/v1/tasks/t-1")
    assert (listed.method, listed.path) == ("GET", "/api/v1/tasks")
    assert listed.query == {"status": ["RUNNING"], "model_name": ["emo-v1"], "page_no": ["1"], "page_size": ["5"]}
    assert (cancel.method, cancel.path) == ("POST", "/api/v1/tasks/t-1/cancel")


def oss_key(upload: Seen) -> str:
    """The object key an upload form carried (its `key` field), without the bucket prefix."""
    text = upload.body.decode("latin-1")
    return text.split('name="key"\r\n\r\n', 1)[1].split("\r\n", 1)[0].removeprefix("dashscope-instant/")


def test_upload_form_fields_in_order_with_the_file_last(hosts):
    api, oss, _ = hosts
    with _client(api) as client:
        url = client.upload(b"\xff\xd8 a photo", filename="my photo.jpg")
    (form,) = oss.seen
    assert form.method == "POST" and form.path == "/"
    text = form.body.decode("latin-1")
    names = re.findall(r'; name="([^"]+)"', text)
    assert names == ["OSSAccessKeyId", "Signature", "policy", "key", "x-oss-object-acl", "x-oss-forbid-overwrite",
                     "success_action_status", "x-oss-content-type", "file"]
    for name, value in [("OSSAccessKeyId", "AK-OSS"), ("Signature", "s"), ("policy", "p"), ("x-oss-object-acl",
                        "private"), ("x-oss-forbid-overwrite", "true"), ("success_action_status", "200"),
                        ("x-oss-content-type", "image/jpeg")]:
        assert f'name="{name}"\r\n\r\n{value}\r\n' in text, name
    key = oss_key(form)
    assert key.startswith("abc/") and key.endswith("-my_photo.jpg") and len(key) == len("abc/") + 32 + 13
    assert url == f"oss://dashscope-instant/{key}"
    assert 'filename="my photo.jpg"' in text and "Content-Type: image/jpeg" in text


def test_an_upload_over_the_policy_size_is_refused_before_sending(hosts):
    api, oss, _ = hosts
    api.script.append(_json(200, {"data": {"policy": "p", "signature": "s", "upload_dir": "d/", "upload_host": oss.base,
                                           "oss_access_key_id": "AK", "max_file_size_mb": 1}}))
    with _client(api) as client:
        with pytest.raises(UsageError, match=r"upload: 1048577 bytes is over the policy's 1 MB"):
            client.upload(bytes(1024 * 1024 + 1), filename="big.wav")
        api.script.append(_json(200, {"data": {"policy": "p", "signature": "s", "upload_dir": "d/",
                                               "upload_host": oss.base, "oss_access_key_id": "AK",
                                               "max_file_size_mb": 1}}))
        client.upload(bytes(1024 * 1024), filename="fits.wav")
    assert len(oss.seen) == 1


@pytest.mark.parametrize("task_id", ["../uploads", "a/b", "", "x" * 129, "t 1"])
def test_unsafe_task_ids_are_refused_before_sending(hosts, task_id):
    api, _, _ = hosts
    with _client(api) as client:
        with pytest.raises(UsageError, match="task id: expected letters, digits"):
            client.get_task(task_id)
    assert api.seen == []


def test_a_task_id_of_128_safe_characters_is_sent():
    assert EmoClient(api_key=KEY, base_url="http://127.0.0.1:9/api/v1")._task_call("aZ0._-" + "x" * 122).url \
        .endswith("/tasks/aZ0._-" + "x" * 122)


# --- errors: typed, and never holding the key ----------------------------------------------

@pytest.mark.parametrize("reply,kind,status", [
    (_error(401, "InvalidApiKey", f"Invalid API-key provided: {KEY}"), AuthenticationError, 401),
    (_error(403, "AccessDenied", f"key {KEY} may not"), AuthenticationError, 403),
    (_error(400, "InvalidParameter", f"bad header Bearer {KEY}"), InvalidRequestError, 400),
    (_error(404, "NotFound", f"no task for {KEY}"), InvalidRequestError, 404),
    (_error(429, "Throttling", f"slow down {KEY}", {"Retry-After": "3600"}), ThrottledError, 429),
    (_error(500, "InternalError", f"oops {KEY}"), ServerError, 500),
    ((502, {"Content-Type": "text/html"}, f"<html>proxy saw Bearer {KEY}</html>".encode()), ServerError, 502),
    ((400, {"Content-Type": "text/plain"}, f"plain {KEY}".encode()), InvalidRequestError, 400),
])
def test_error_answers_are_typed_and_free_of_the_key(hosts, reply, kind, status):
    api, _, _ = hosts
    api.answer = lambda req: reply
    with _client(api, retry=RetryPolicy(max_retries=1, initial_s=0.0, max_s=0.0)) as client:
        with pytest.raises(kind) as info:
            client.submit(_request())  # not idempotent: every status is raised as it comes
    exc = info.value
    assert exc.status_code == status
    for text in (str(exc), repr(exc), exc.message, json.dumps(exc.body), repr(exc.__dict__)):
        assert KEY not in text
    assert "***" in str(exc) or "***" in json.dumps(exc.body)
    assert str(exc).startswith(f"HTTP {status} ")
    if reply[1].get("Content-Type") == "application/json":
        assert exc.code == json.loads(reply[2])["code"] and exc.request_id == "rid-1"
        assert str(exc) == f"HTTP {status} {exc.code}: submit: {json.loads(reply[2])['message'].replace(KEY, '***')}" \
                           " (request_id rid-1)"


def test_an_error_without_a_body_says_the_reason_phrase(hosts):
    api, _, _ = hosts
    api.answer = lambda req: (404, {}, b"")
    with _client(api) as client:
        with pytest.raises(InvalidRequestError) as info:
            client.get_task("t-1")
    assert str(info.value) == "HTTP 404 : get task: Not Found".replace("  ", " ")


def test_a_reason_phrase_that_echoes_the_key_is_redacted(hosts):
    api, _, _ = hosts
    api.answer = lambda req: (400, {"X-Test-Reason": f"Bad key {KEY}", "Content-Type": "text/plain"}, b"")
    with _client(api) as client:
        with pytest.raises(InvalidRequestError) as info:
            client.get_task("t-1")
    assert str(info.value) == "HTTP 400 : get task: Bad key ***".replace("  ", " ")
    assert KEY not in repr(info.value.__dict__)


def test_a_request_id_header_is_kept_when_the_body_has_none(hosts):
    api, _, _ = hosts
    api.answer = lambda req: (400, {"x-request-id": "hdr-7", "Content-Type": "text/plain"}, b"no")
    with _client(api) as client:
        with pytest.raises(InvalidRequestError) as info:
            client.get_task("t-1")
    assert info.value.request_id == "hdr-7" and info.value.body == "no"


def test_face_detect_verdicts_in_both_shapes(hosts):
    api, _, _ = hosts
    with _client(api) as client:
        api.script.append(_json(200, {"output": {"check_pass": False, "code": "InvalidFile.NoHuman",
                                                 "message": "no human"}, "request_id": "r2"}))
        with pytest.raises(PortraitRejected) as info:
            client.face_detect("oss://x/p.jpg")
        assert (info.value.code, info.value.finding_code) == ("InvalidFile.NoHuman", "no_face")
        assert str(info.value) == "emo-detect rejected the photo: no human"
        api.script.append(_error(400, "InvalidFile.FacePose", "pose"))
        with pytest.raises(PortraitRejected) as info:
            client.face_detect("oss://x/p.jpg")
        assert (info.value.code, info.value.finding_code) == ("InvalidFile.FacePose", "pose")
        api.script.append(_error(400, "InvalidParameter", "bad"))
        with pytest.raises(InvalidRequestError):
            client.face_detect("oss://x/p.jpg")
        api.script.append(_error(401, "InvalidFile.Value", "odd"))  # only a 400 is a verdict
        with pytest.raises(AuthenticationError):
            client.face_detect("oss://x/p.jpg")


# --- retries: what is repeated, how long it waits, when it gives up -----------------------

def test_a_retry_after_past_the_cap_is_raised_at_once(hosts):
    api, _, _ = hosts
    sleeps: list = []
    api.script.append(_error(429, "Throttling", "later", {"Retry-After": "3600"}))
    with _client(api, sleeps) as client:
        with pytest.raises(ThrottledError):
            client.get_task("t-1")
    assert sleeps == [] and len(api.seen) == 1  # an hour is not slept through


@pytest.mark.parametrize("after,slept", [("60", [60.0]), ("2", [2.0]), ("0", [0.0])])
def test_a_retry_after_within_the_cap_is_obeyed(hosts, after, slept):
    api, _, _ = hosts
    sleeps: list = []
    api.script.append(_error(429, "Throttling", "later", {"Retry-After": after}))
    with _client(api, sleeps) as client:
        assert client.get_task("t-1").output.task_status == "SUCCEEDED"
    assert sleeps == slept and len(api.seen) == 2


def test_the_cap_comes_from_the_policy(hosts):
    api, _, _ = hosts
    api.script.append(_error(429, "Throttling", "later", {"Retry-After": "5"}))
    with _client(api, retry=RetryPolicy(retry_after_cap_s=4.0)) as client:
        with pytest.raises(ThrottledError):
            client.get_task("t-1")


def test_server_errors_on_a_query_back_off_then_give_up(hosts):
    api, _, _ = hosts
    sleeps: list = []
    api.answer = lambda req: _error(500, "InternalError", "down")
    with _client(api, sleeps) as client:
        with pytest.raises(ServerError):
            client.get_task("t-1")
    assert len(api.seen) == 4 and len(sleeps) == 3  # 1 + max_retries 3
    for attempt, s in enumerate(sleeps):  # full jitter under min(max 4, 0.5 * 2**attempt)
        assert 0.0 <= s <= min(4.0, 0.5 * 2 ** attempt)


@pytest.mark.parametrize("status", [408, 409, 500, 503])
def test_retryable_statuses_of_a_query(hosts, status):
    api, _, _ = hosts
    sleeps: list = []
    api.script.append(_error(status, "X", "again"))
    with _client(api, sleeps) as client:
        client.get_task("t-1")
    assert len(api.seen) == 2 and len(sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 404])
def test_other_statuses_are_not_retried(hosts, status):
    api, _, _ = hosts
    api.script.append(_error(status, "X", "no"))
    with _client(api) as client:
        with pytest.raises(AuthenticationError if status == 401 else InvalidRequestError):
            client.get_task("t-1")
    assert len(api.seen) == 1


def test_a_failed_submit_is_never_resent_but_a_throttled_one_is(hosts):
    api, _, _ = hosts
    api.script.append(_error(500, "InternalError", "down"))
    with _client(api) as client:
        with pytest.raises(ServerError):
            client.submit(_request())
        assert len(api.seen) == 1
        api.script.append(_error(429, "Throttling", "slow", {"Retry-After": "1"}))
        assert client.submit(_request()).output.task_id == "t-1"
    assert len(api.seen) == 3


def test_a_submit_whose_answer_is_lost_is_ambiguous_and_not_resent(hosts):
    api, _, _ = hosts
    api.script.append((200, {}, None))
    with _client(api) as client:
        with pytest.raises(AmbiguousSubmitError) as info:
            client.submit(_request())
    assert len(api.seen) == 1
    assert str(info.value) == ("submit: the request was sent but no answer came back (RemoteProtocolError); a task "
                               "may exist: do not resend, look for it with the task list")
    assert len(info.value.body_sha256) == 64 and info.value.sent_at > 0


def test_a_query_whose_answer_is_lost_is_asked_again(hosts):
    api, _, _ = hosts
    api.script.append((200, {}, None))
    with _client(api) as client:
        assert client.get_task("t-1").output.task_status == "SUCCEEDED"
    assert len(api.seen) == 2


def test_a_refused_connection_is_retried_even_for_a_submit_then_named():
    sleeps: list = []
    with socket.socket() as s:  # a port nothing listens on: the request never leaves
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EmoClient(api_key=KEY, base_url=f"http://127.0.0.1:{port}/api/v1", sleep=sleeps.append,
                   retry=RetryPolicy(max_retries=2, initial_s=0.5, max_s=4.0)) as client:
        with pytest.raises(APIConnectionError) as info:
            client.submit(_request())
    assert type(info.value) is APIConnectionError and len(sleeps) == 2  # refused: not a timeout
    assert str(info.value) == "submit: no answer from 127.0.0.1 (ConnectError)" and KEY not in str(info.value)


# --- what each call is called in messages, and which calls are repeated -----------------------

def _each_call(client: EmoClient, image_url: str = "oss://dashscope-instant/abc/p.jpg"):
    return {"get upload policy": lambda: client.upload(b"x", filename="p.jpg"),
            "face-detect": lambda: client.face_detect(image_url),
            "submit": lambda: client.submit(_request()),
            "get task": lambda: client.get_task("t-1"),
            "cancel": lambda: client.cancel("t-1"),
            "list tasks": lambda: client.list_tasks()}


def test_every_call_names_itself_in_its_errors(hosts):
    api, oss, _ = hosts
    with _client(api) as client:
        for what, call in _each_call(client).items():
            api.script.append(_error(400, "InvalidParameter", "no"))
            with pytest.raises(InvalidRequestError) as info:
                call()
            assert str(info.value) == f"HTTP 400 InvalidParameter: {what}: no (request_id rid-1)"
        oss.script.append(_error(403, "AccessDenied", "signature"))
        with pytest.raises(AuthenticationError) as info:
            client.upload(b"x", filename="p.jpg")
        assert str(info.value) == "HTTP 403 AccessDenied: upload: signature (request_id rid-1)"


def test_every_call_but_the_submit_is_repeated_after_a_server_error(hosts):
    api, oss, _ = hosts
    with _client(api) as client:
        for what, call in _each_call(client).items():
            api.seen.clear()
            api.script.append(_error(500, "InternalError", "blip"))
            if what == "submit":
                with pytest.raises(ServerError):
                    call()
                assert len(api.seen) == 1
            else:
                call()
                assert len(api.seen) >= 2 and api.seen[0].path == api.seen[1].path, what
        oss.script.append(_error(503, "ServiceUnavailable", "blip"))
        client.upload(b"x", filename="p.jpg")
        assert len(oss.seen) == 3  # the upload of the loop above, the failed one and its retry


@pytest.mark.parametrize("image,audio,resolve", [
    ("oss://b/p.jpg", "https://x/a.wav", True), ("https://x/p.jpg", "oss://b/a.wav", True),
    ("https://x/p.jpg", "https://x/a.wav", False),
])
def test_the_resolve_header_goes_with_any_oss_input(hosts, image, audio, resolve):
    api, _, _ = hosts
    with _client(api) as client:
        client.submit(_request(image, audio))
    assert ("X-DashScope-OssResourceResolve" in api.seen[0].headers) is resolve


def test_each_retry_is_logged_with_its_reason_and_wait(hosts, caplog):
    api, _, _ = hosts
    sleeps: list = []
    api.script.extend([_error(429, "Throttling", "slow", {"Retry-After": "2"}), (500, {}, b"<html>"),
                       (200, {}, None)])
    with caplog.at_level(logging.INFO, logger="pipeline.client"):
        with _client(api, sleeps, retry=RetryPolicy(max_retries=3, initial_s=0.5, max_s=0.5)) as client:
            client.get_task("t-1")
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.client"]
    assert lines == [
        "retrying get task after HTTP 429 Throttling: waiting 2.00 s as Retry-After asks (retry 1 of 3)",
        f"retrying get task after HTTP 500: waiting {sleeps[1]:.2f} s (retry 2 of 3)",
        f"retrying get task after no answer (RemoteProtocolError): waiting {sleeps[2]:.2f} s (retry 3 of 3)"]
    assert all(r.levelno == logging.INFO for r in caplog.records) and KEY not in caplog.text


def test_a_retry_after_date_is_waited_for(hosts):
    api, _, _ = hosts
    sleeps: list = []
    api.script.append(_error(429, "Throttling", "later", {"Retry-After": email.utils.formatdate(time.time() + 30,
                                                                                                usegmt=True)}))
    with _client(api, sleeps) as client:
        client.get_task("t-1")
    assert len(sleeps) == 1 and 28 <= sleeps[0] <= 30


def test_a_retry_after_date_in_the_past_is_no_wait():
    assert parse_retry_after(email.utils.formatdate(1_000_000, usegmt=True)) == 0.0
    assert parse_retry_after(email.utils.formatdate(2_000, usegmt=True), now=1_000.0) == 1_000.0


def test_a_slow_answer_is_a_timeout(hosts):
    api, _, _ = hosts
    api.script.append((200, {"X-Test-Delay": "0.6"}, b"{}"))
    with EmoClient(api_key=KEY, base_url=f"{api.base}/api/v1", timeout=0.2, retry=RetryPolicy(max_retries=0)) as c:
        with pytest.raises(APITimeoutError) as info:
            c.get_task("t-1")
    assert str(info.value) == "get task: no answer from 127.0.0.1 (ReadTimeout)"


def test_error_bodies_of_other_shapes(hosts):
    api, _, _ = hosts
    with _client(api) as client:
        api.script.append((400, {"Content-Type": "application/json"}, b'["not", "an", "object"]'))
        with pytest.raises(InvalidRequestError) as info:
            client.get_task("t-1")
        assert info.value.body == ["not", "an", "object"] and info.value.code is None
        api.script.append((400, {"Content-Type": "text/plain"}, b"x" * 600))
        with pytest.raises(InvalidRequestError) as info:
            client.get_task("t-1")
        assert info.value.body == "x" * 500  # a text body is kept to 500 characters
        api.script.append((400, {"X-Test-Reason": "", "Content-Type": "text/plain"}, b""))
        with pytest.raises(InvalidRequestError) as info:
            client.get_task("t-1")
        assert str(info.value) == "HTTP 400 : get task: error".replace("  ", " ")


@pytest.mark.parametrize("env,argument,want", [
    ({}, "http://arg.example/api/v1/", ("http://arg.example/api/v1", "argument")),
    ({"DASHSCOPE_HTTP_BASE_URL": " http://one.example/api/v1/ "}, None,
     ("http://one.example/api/v1", "DASHSCOPE_HTTP_BASE_URL")),
    ({"DASHSCOPE_HTTP_BASE_URL": "http://one.example/api/v1", "DASHSCOPE_BASE_URL": "http://two.example"}, None,
     ("http://one.example/api/v1", "DASHSCOPE_HTTP_BASE_URL")),
    ({"DASHSCOPE_HTTP_BASE_URL": "  ", "DASHSCOPE_BASE_URL": "http://two.example/"}, None,
     ("http://two.example/api/v1", "DASHSCOPE_BASE_URL")),
    ({"DASHSCOPE_BASE_URL": "https://gw.example/qwen/api/v1/"}, None,
     ("https://gw.example/qwen/api/v1", "DASHSCOPE_BASE_URL")),
    ({}, None, ("https://dashscope.aliyuncs.com/api/v1", "default: Beijing")),
    ({}, "http://h.example/X/", ("http://h.example/X", "argument")),  # only slashes are stripped
    ({"DASHSCOPE_HTTP_BASE_URL": "http://h.example/X/"}, None, ("http://h.example/X", "DASHSCOPE_HTTP_BASE_URL")),
    ({"DASHSCOPE_BASE_URL": "http://h.example/X"}, None, ("http://h.example/X", "DASHSCOPE_BASE_URL")),
])
def test_resolve_base_url(monkeypatch, env, argument, want):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve_base_url(argument) == want


def test_the_openai_compatible_mode_is_ignored_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "https://gw.example/compatible-mode/v1")
    with caplog.at_level(logging.WARNING, logger="pipeline.client"):
        assert resolve_base_url() == ("https://dashscope.aliyuncs.com/api/v1", "default: Beijing")
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring DASHSCOPE_BASE_URL=https://gw.example/compatible-mode/v1: that is the OpenAI-compatible API, "
        "which has no EMO; using https://dashscope.aliyuncs.com/api/v1"]


def _sent_key(api: Host, **options) -> str:
    with EmoClient(base_url=f"{api.base}/api/v1", **options) as client:
        client.get_task("t-1")
    return api.seen[-1].headers["Authorization"].removeprefix("Bearer ")


def test_the_key_is_read_the_sdk_ways(hosts, monkeypatch, tmp_path):
    api, _, _ = hosts
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".dashscope").mkdir()
    (tmp_path / ".dashscope" / "api_key").write_text(" sk-home \n", encoding="utf-8")
    assert _sent_key(api) == "sk-home"
    (tmp_path / "named").write_text("sk-named\n", encoding="utf-8")
    monkeypatch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(tmp_path / "named"))
    assert _sent_key(api) == "sk-named"
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-env")
    assert _sent_key(api) == "sk-env"
    assert _sent_key(api, api_key="sk-arg") == "sk-arg"


@pytest.mark.parametrize("make,reason", [
    (lambda p: None, "No such file or directory"),
    (lambda p: p.mkdir(), "Is a directory"),
    (lambda p: p.write_bytes(b"\xff\xfe sk"), "UnicodeDecodeError"),
])
def test_a_named_key_file_that_cannot_be_read_is_said_why(monkeypatch, tmp_path, make, reason):
    path = tmp_path / "key"
    make(path)
    monkeypatch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(path))
    with pytest.raises(UsageError) as info:
        EmoClient(base_url="http://127.0.0.1:9/api/v1")
    assert str(info.value) == f"DASHSCOPE_API_KEY_FILE_PATH: cannot read the key file {path} ({reason})"


def test_no_key_anywhere_names_every_way(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.dashscope/api_key: quietly not there
    with pytest.raises(UsageError) as info:
        EmoClient(base_url="http://127.0.0.1:9/api/v1")
    assert str(info.value) == ("no DashScope API key: pass api_key=... or set DASHSCOPE_API_KEY (or write the key "
                               "to ~/.dashscope/api_key, or name a key file in DASHSCOPE_API_KEY_FILE_PATH)")
    (tmp_path / ".dashscope").mkdir()
    (tmp_path / ".dashscope" / "api_key").write_text("  \n")
    with pytest.raises(UsageError, match="no DashScope API key"):  # an empty file is no key
        EmoClient(base_url="http://127.0.0.1:9/api/v1")


def test_a_base_url_with_a_trailing_slash_makes_no_double_slash(hosts):
    api, _, _ = hosts
    with EmoClient(api_key=KEY, base_url=f"{api.base}/api/v1/") as client:
        client.get_task("t-1")
        assert client.endpoint == f"{api.base}/api/v1 (argument)"
    assert api.seen[0].path == "/api/v1/tasks/t-1"
