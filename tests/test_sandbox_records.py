"""What the sandbox records, over real HTTP on loopback: every request in arrival order (its
route, and whether it carried an API key, never the key), and each submit with the body it
received, also served at `GET /sandbox/records`."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from conftest import SAMPLES

from pipeline import check, upload_form
from pipeline.client import EmoClient, RetryPolicy
from pipeline.payload import VideoInput, VideoParameters, VideoSynthesisRequest
from pipeline.serve.sandbox import Sandbox, SandboxOptions

KEY = "sk-records-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
FAST = RetryPolicy(max_retries=2, initial_s=0.01, max_s=0.05)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """One client run on a fresh sandbox: policy + upload (photo, audio), submit, poll, download,
    then the records read both ways; yields (sandbox, request sent, records(), served records)."""
    report = check(SAMPLES / "astronaut.png")
    assert report.ok, report.findings
    with Sandbox(SandboxOptions(api_key=KEY, pending_s=0.05, running_s=0.05, fps=5)) as sb, \
            EmoClient(api_key=KEY, base_url=sb.api_base, retry=FAST, poll_initial_s=0.05, poll_max_s=0.1) as client:
        request = VideoSynthesisRequest(
            input=VideoInput(image_url=client.upload(upload_form(report.loaded).data, filename="p.jpg"),
                             audio_url=client.upload(SAMPLES / "speech.wav"),
                             face_bbox=list(report.face_bbox), ext_bbox=list(report.ext_bbox)),
            parameters=VideoParameters(style_level="active"))
        done = client.wait(client.submit(request), timeout=60)
        client.download(done.video_url, tmp_path_factory.mktemp("records") / "v.mp4")
        records = sb.records()
        served = httpx.get(f"{sb.base_url}/sandbox/records", headers=AUTH)
        assert served.status_code == 200
        yield sb, request, records, served.json()


def _squeezed(routes: list[str]) -> list[str]:
    """Runs of one route as one: the number of polls depends on the clock."""
    return [r for i, r in enumerate(routes) if i == 0 or routes[i - 1] != r]


def test_every_request_is_logged_in_arrival_order_with_its_route(flow):
    _, _, records, _ = flow
    requests = records["requests"]
    assert _squeezed([r["route"] for r in requests]) == ["api", "oss", "api", "oss", "api", "result"]
    assert [(r["method"], r["path"]) for r in requests[:5]] == [
        ("GET", "/api/v1/uploads"), ("POST", "/oss"), ("GET", "/api/v1/uploads"), ("POST", "/oss"),
        ("POST", "/api/v1/services/aigc/image2video/video-synthesis")]
    task_id = records["submits"][0]["task_id"]
    assert {r["path"] for r in requests[5:-1]} == {f"/api/v1/tasks/{task_id}"}
    assert requests[-1] == {"method": "GET", "path": f"/results/{task_id}.mp4", "route": "result", "key_sent": False}


def test_the_key_goes_to_the_api_only_and_is_never_recorded(flow):
    _, _, records, served = flow
    assert all(r["key_sent"] == (r["route"] == "api") for r in records["requests"])
    assert all(set(r) == {"method", "path", "route", "key_sent"} for r in records["requests"])
    assert KEY not in json.dumps(records) and KEY not in json.dumps(served)


def test_records_are_served_over_http_with_their_own_request_last(flow):
    _, _, records, served = flow
    assert served["requests"][:-1] == records["requests"]
    assert served["requests"][-1] == {"method": "GET", "path": "/sandbox/records", "route": "records",
                                      "key_sent": True}
    assert served["submits"] == records["submits"]


def test_a_submit_record_holds_the_body_the_sandbox_received(flow):
    _, request, records, _ = flow
    [submit] = records["submits"]
    body = submit["body"]
    assert body == json.loads(json.dumps(request.model_dump()))
    assert body["model"] == "emo-v1" and body["parameters"] == {"style_level": "active"}
    assert body["input"]["image_url"].startswith("oss://dashscope-instant/sandbox/")
    assert body["input"]["audio_url"].startswith("oss://dashscope-instant/sandbox/")
    assert body["input"]["face_bbox"] == list(request.input.face_bbox)
    assert body["input"]["ext_bbox"] == list(request.input.ext_bbox)
    assert submit["body_sha256"] == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxOptions(api_key=KEY)) as sb:
        yield sb


@pytest.mark.parametrize("method,path,headers,route,key_sent,status", [
    ("GET", f"/api/v1/tasks?api_key={KEY}", {}, "api", True, 401),  # in the query string
    ("GET", "/api/v1/tasks?auth=Bearer%20sk-someone-else", {}, "api", True, 401),  # any key, encoded
    ("GET", "/api/v1/tasks/x", {}, "api", False, 401),
    ("GET", "/api/v1/tasks/x", {"Authorization": "Bearer sk-wrong"}, "api", True, 401),
    ("GET", "/results/nope.mp4", {"X-Api-Key": KEY}, "result", True, 404),  # in any header
    ("POST", "/oss", {"Authorization": "bearer SK-shouting"}, "oss", True, 400),
    ("POST", "/oss", {}, "oss", False, 400),
    ("GET", "/nowhere", {}, "other", False, 404),
    ("DELETE", "/api/v1/tasks/x", AUTH, "api", True, 405),  # a method the sandbox does not serve, logged too
    ("GET", "/sandbox/records", {}, "records", False, 401),
])
def test_key_sent_is_seen_wherever_a_key_travels(sandbox, method, path, headers, route, key_sent, status):
    answer = httpx.request(method, sandbox.base_url + path, headers=headers)
    assert answer.status_code == status
    assert sandbox.records()["requests"][-1] == {"method": method, "path": path.split("?")[0], "route": route,
                                                 "key_sent": key_sent}


def test_a_refused_submit_is_logged_but_creates_no_task(sandbox):
    before = sandbox.records()
    answer = httpx.post(f"{sandbox.api_base}/services/aigc/image2video/video-synthesis",
                        json={"model": "emo-v2", "input": {}}, headers={**AUTH, "X-DashScope-Async": "enable"})
    assert answer.status_code == 404 and answer.json()["code"] == "ModelNotFound"
    after = sandbox.records()
    assert after["submits"] == before["submits"] and after["tasks"] == before["tasks"]
    assert after["requests"][-1] == {"method": "POST", "path": "/api/v1/services/aigc/image2video/video-synthesis",
                                     "route": "api", "key_sent": True}
