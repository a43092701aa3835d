"""The client against the sandbox over real HTTP on loopback: end to end, every error class,
retries, a dropped submit, and the key kept out of every output."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import socket
import subprocess
from collections import Counter

import av
import httpx
import pytest
from conftest import DATA34, EMO_PREP, SAMPLES, loopback_http

from pipeline import upload_form
from pipeline.boxes import iou
from pipeline.client import AsyncEmoClient, EmoClient, RetryPolicy
from pipeline.errors import (
    AmbiguousSubmitError,
    APIConnectionError,
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
from pipeline.geometry import Geometry
from pipeline.payload import VideoInput, VideoParameters, VideoSynthesisRequest
from pipeline.serve.sandbox import Sandbox, SandboxOptions

KEY = "sk-test-0123456789abcdef"
FAST = RetryPolicy(max_retries=6, initial_s=0.01, max_s=0.05)


def _sandbox(**options) -> Sandbox:
    base = dict(api_key=KEY, pending_s=0.1, running_s=0.2, fps=5, seed=1)
    return Sandbox(SandboxOptions(**{**base, **options})).start()


@pytest.fixture(scope="module")
def sandbox():
    sb = _sandbox()
    yield sb
    sb.stop()


def _client(sb: Sandbox, **kw) -> EmoClient:
    return EmoClient(api_key=KEY, base_url=sb.api_base, retry=kw.pop("retry", FAST), poll_initial_s=0.05,
                     poll_max_s=0.2, **kw)


def _request(client: EmoClient, photo=SAMPLES / "astronaut.png", ratio="1:1", style="normal") -> VideoSynthesisRequest:
    from pipeline import check

    report = check(photo, ratio=ratio)
    assert report.ok, report.findings
    form = upload_form(report.loaded)
    return VideoSynthesisRequest(
        input=VideoInput(image_url=client.upload(form.data, filename="p.jpg"),
                         audio_url=client.upload(SAMPLES / "speech.wav"),
                         face_bbox=list(report.face_bbox), ext_bbox=list(report.ext_bbox)),
        parameters=VideoParameters(style_level=style))


def _video_facts(path) -> tuple[int, int, float, bool]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return video.width, video.height, float(container.duration) / 1e6, bool(container.streams.audio)


def test_sync_end_to_end(sandbox, tmp_path):
    with _client(sandbox) as client:
        created = client.submit(_request(client))
        assert created.output.task_status == "PENDING"
        seen = []
        done = client.wait(created.output.task_id, on_update=lambda t: seen.append(t.output.task_status))
        assert seen[-1] == "SUCCEEDED" and "RUNNING" in seen
        assert done.usage.video_ratio == "1:1" and done.usage.video_duration == pytest.approx(7.35, abs=0.05)
        out = client.download(done.video_url, tmp_path / "v.mp4")
    width, height, duration, has_audio = _video_facts(out)
    assert (width, height) == (512, 512) and has_audio and duration == pytest.approx(7.35, abs=0.3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no partial file left


def test_async_end_to_end(sandbox, tmp_path):
    async def run():
        sync = _client(sandbox)
        request = _request(sync)
        sync.close()
        async with AsyncEmoClient(api_key=KEY, base_url=sandbox.api_base, retry=FAST, poll_initial_s=0.05,
                                  poll_max_s=0.2) as client:
            detect_url = await client.upload((SAMPLES / "astronaut.png").read_bytes(), model="emo-detect-v1",
                                             filename="a.png")
            verdict = await client.face_detect(detect_url)
            assert verdict.output.check_pass and verdict.output.ext_bbox
            done = await client.create_and_poll(request)
            return await client.download(done.video_url, tmp_path / "a.mp4")

    width, height, _, _ = _video_facts(asyncio.run(run()))
    assert (width, height) == (512, 512)


def test_half_body_video_is_512x704(sandbox, tmp_path):
    photo = DATA34 / "d34_01.jpg"
    if not photo.exists():
        pytest.skip(f"{photo} not found (../shared/data34)")
    with _client(sandbox) as client:
        done = client.create_and_poll(_request(client, photo, ratio="3:4", style="calm"))
        assert done.usage.video_ratio == "3:4"
        width, height, _, _ = _video_facts(client.download(done.video_url, tmp_path / "h.mp4"))
    assert (width, height) == (512, 704)


@pytest.mark.parametrize("status", [200, 400])
def test_face_detect_rejection_in_both_shapes(status):
    sb = _sandbox(detect_reject_status=status)
    try:
        with _client(sb) as client:
            url = client.upload(SAMPLES / "coffee.jpg", model="emo-detect-v1")
            with pytest.raises(PortraitRejected) as info:
                client.face_detect(url)
    finally:
        sb.stop()
    assert info.value.code == "InvalidFile.NoHuman" and info.value.finding_code == "no_face"


def test_wrong_key_is_an_authentication_error_without_the_key(sandbox):
    with EmoClient(api_key="sk-wrong-key-999", base_url=sandbox.api_base, retry=FAST) as client:
        with pytest.raises(AuthenticationError) as info:
            client.get_task("abc")
        assert "sk-wrong-key-999" not in repr(client)
    err = info.value
    assert err.status_code == 401 and err.code == "InvalidApiKey" and err.request_id
    assert "sk-wrong-key-999" not in str(err) + repr(err) + json.dumps(err.body)


def test_missing_key_names_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.dashscope/api_key
    with pytest.raises(UsageError, match="api_key=.*DASHSCOPE_API_KEY"):
        EmoClient()


@pytest.mark.parametrize("mutate,status,code,message", [
    (lambda b, h: h.pop("X-DashScope-Async"), 403, "AccessDenied", "does not support synchronous calls"),
    (lambda b, h: b.update(model="emo-v2"), 404, "ModelNotFound", "Model not exist"),
    (lambda b, h: b["input"].update(ext_bbox=[0, 0, 100, 90]), 400, "InvalidParameter", "request parameter is invalid"),
    (lambda b, h: b["input"].update(face_bbox=[0, 0, 9999, 9999]), 400, "InvalidParameter", "Invalid bbox input"),
    (lambda b, h: b["parameters"].update(style_level="wild"), 400, "InvalidParameter", "style_level is invalid"),
    (lambda b, h: h.pop("X-DashScope-OssResourceResolve"), 400, "InvalidParameter.DataInspection", "not supported"),
    (lambda b, h: b["input"].update(audio_url=b["input"]["image_url"]), 400, "InvalidURL",
     "File type is not supported"),
])
def test_sandbox_validates_submits_like_the_service(sandbox, mutate, status, code, message):
    with _client(sandbox) as client:
        body = _request(client).model_dump()
    headers = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable",
               "X-DashScope-OssResourceResolve": "enable"}
    mutate(body, headers)
    response = httpx.post(f"{sandbox.api_base}/services/aigc/image2video/video-synthesis", json=body, headers=headers)
    assert response.status_code == status
    assert response.json()["code"] == code and message in response.json()["message"]


def test_invalid_request_error_carries_the_service_code(sandbox):
    with _client(sandbox) as client:
        good = _request(client)
        bad = good.model_copy(update={"input": good.input.model_copy(update={"audio_url": "oss://nowhere/x.wav"})})
        with pytest.raises(InvalidRequestError) as info:
            client.submit(bad)
    assert info.value.status_code == 400 and info.value.code == "InvalidURL"


def test_cancelled_and_expired_tasks_fail_with_their_status():
    sb = _sandbox(pending_s=5.0, expire_after_s=None)
    try:
        with _client(sb) as client:
            request = _request(client)
            first = client.submit(request).output.task_id
            client.cancel(first)
            with pytest.raises(TaskFailed) as info:
                client.wait(first)
            assert info.value.status == "CANCELED" and info.value.task_id == first
            with pytest.raises(InvalidRequestError):
                client.cancel(first)  # only PENDING tasks can be cancelled
            with pytest.raises(TaskTimeout) as timeout:
                client.wait(client.submit(request).output.task_id, timeout=0.3)
            assert timeout.value.status == "PENDING" and timeout.value.task_id
    finally:
        sb.stop()
    sb = _sandbox(expire_after_s=0.05, pending_s=1.0)
    try:
        with _client(sb) as client:
            task_id = client.submit(_request(client)).output.task_id
            with pytest.raises(TaskFailed) as info:
                client.wait(task_id)
        assert info.value.status == "UNKNOWN"
    finally:
        sb.stop()


def test_retries_recover_from_injected_429_and_500(tmp_path):
    """Queries, uploads and downloads ride through the faults; a submit is retried on 429 only.
    A 500 answer to a submit is raised: the caller looks in the task list before sending again."""
    # seed 104: its first 5,000 rolls never fail more than 8 times in a row, so 10 retries always
    # outlast a streak (seed 1 fails rolls 23-35: whichever call met them failed, timing decided)
    sb = _sandbox(fault_429=0.3, fault_500=0.2, seed=104)
    try:
        with _client(sb, retry=RetryPolicy(max_retries=10, initial_s=0.01, max_s=0.05)) as client:
            request = _request(client)
            for _ in range(10):
                try:
                    created = client.submit(request)
                    break
                except ServerError:
                    assert client.list_tasks().total == 0  # the failed submit created nothing
            done = client.wait(created.output.task_id)
            client.download(done.video_url, tmp_path / "r.mp4")
        records = sb.records()
    finally:
        sb.stop()
    assert records["faults"] >= 3
    assert len(records["submits"]) == 1 and list(records["downloads"].values()) == [1]


def test_throttling_that_does_not_stop_is_raised_after_the_retries():
    sb = _sandbox(fault_429=1.0)
    try:
        with _client(sb, retry=RetryPolicy(max_retries=3, initial_s=0.01, max_s=0.02)) as client:
            with pytest.raises(ThrottledError) as info:
                client.get_task("abc")
        assert sb.records()["faults"] == 4  # the first try and three retries
    finally:
        sb.stop()
    assert info.value.status_code == 429 and info.value.code == "Throttling"


def test_dropped_submit_is_not_resent_and_the_task_can_be_found():
    sb = _sandbox(drop_submits=1)
    try:
        with _client(sb) as client:
            request = _request(client)
            with pytest.raises(AmbiguousSubmitError) as info:
                client.submit(request)
            records = sb.records()
            assert len(records["submits"]) == 1 and records["dropped"] == [records["submits"][0]["task_id"]]
            listed = client.list_tasks()
            assert [t.task_id for t in listed.data] == records["dropped"]
            assert info.value.body_sha256 == records["submits"][0]["body_sha256"]
    finally:
        sb.stop()


def test_unreachable_and_slow_services():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with EmoClient(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port}/api/v1",
                   retry=RetryPolicy(max_retries=1, initial_s=0.01)) as client:
        with pytest.raises(APIConnectionError):
            client.get_task("abc")
    sb = _sandbox(latency_s=1.0)
    try:
        with EmoClient(api_key=KEY, base_url=sb.api_base, timeout=0.2, retry=RetryPolicy(max_retries=0)) as client:
            with pytest.raises(APITimeoutError):
                client.get_task("abc")
    finally:
        sb.stop()


def test_download_of_a_missing_result_leaves_nothing(sandbox, tmp_path):
    with _client(sandbox) as client:
        with pytest.raises(InvalidRequestError):
            client.download(f"{sandbox.base_url}/results/nope.mp4", tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


class _FlakyResults(http.server.BaseHTTPRequestHandler):
    """A result host that answers 500 to the first request for each path, and always to /broken."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server naming)
        first = self.path not in self.hits
        self.hits.append(self.path)
        if self.path == "/broken.mp4" or first:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"\0" * 4096
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_downloads_retry_a_server_error_then_give_up_leaving_nothing(tmp_path):
    policy = RetryPolicy(max_retries=2, initial_s=0.01, max_s=0.01)
    with loopback_http(_FlakyResults) as base:
        with EmoClient(api_key=KEY, base_url=base, retry=policy) as client:
            assert client.download(f"{base}/sync.mp4", tmp_path / "sync.mp4").stat().st_size == 4096
            with pytest.raises(ServerError):
                client.download(f"{base}/broken.mp4", tmp_path / "broken-sync.mp4")

        async def run():
            async with AsyncEmoClient(api_key=KEY, base_url=base, retry=policy) as client:
                done = await client.download(f"{base}/async.mp4", tmp_path / "async.mp4")
                with pytest.raises(ServerError):
                    await client.download(f"{base}/broken.mp4", tmp_path / "broken-async.mp4")
                return done

        assert asyncio.run(run()).stat().st_size == 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == ["async.mp4", "sync.mp4"]
    # one retry after the first 500 for each good file; 1 + max_retries tries for the broken one
    assert Counter(_FlakyResults.hits) == {"/sync.mp4": 2, "/async.mp4": 2, "/broken.mp4": 6}


def test_closed_client_refuses_work(sandbox):
    client = _client(sandbox)
    client.close()
    client.close()
    with pytest.raises(UsageError, match="closed"):
        client.get_task("abc")


def _cli(*args, env_extra, timeout=180):
    env = {**os.environ, **env_extra}
    return subprocess.run([EMO_PREP, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_submit_wait_download_and_task(tmp_path):
    # face-detect answers with a rule unlike ours (the sandbox's own detector, another box
    # geometry), so "--boxes remote" has boxes of its own to compare and to send
    remote_rule = Geometry(face_scale=1.12, face_dx=0.04, face_dy=-0.06, scale_11=2.2, shift_up_11=0.08)
    sb = _sandbox(detect_geometry=remote_rule)
    try:
        env = {"DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": sb.api_base}
        out = tmp_path / "out.mp4"
        proc = _cli("submit", str(SAMPLES / "astronaut_exif6.jpg"), str(SAMPLES / "speech.wav"), "--wait",
                    "-o", str(out), "--boxes", "remote", env_extra=env)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert lines[0]["request"]["input"]["image_url"].startswith("oss://")
        task_id = lines[1]["task_id"]
        assert lines[-1]["task_status"] == "SUCCEEDED"
        assert "exif_orientation_applied" in proc.stderr
        assert _video_facts(out)[:2] == (512, 512)
        shown = _cli("task", task_id, env_extra=env)
        assert shown.returncode == 0 and json.loads(shown.stdout)["output"]["task_status"] == "SUCCEEDED"
        listed = _cli("task", "--list", env_extra=env)
        assert task_id in listed.stdout
        for p in (proc, shown, listed):
            assert KEY not in p.stdout + p.stderr
    finally:
        sb.stop()
    ours = json.loads(_cli("check", "--json", str(SAMPLES / "astronaut_exif6.jpg"), env_extra={}).stdout)
    said = re.search(r"emo-detect boxes: face (\[[^]]*\]) ext (\[[^]]*\]); IoU with ours: face ([0-9.]+), "
                     r"ext ([0-9.]+)", proc.stderr)
    remote_face, remote_ext = json.loads(said[1]), json.loads(said[2])
    # the printed IoUs are those of our boxes with the service's, and the request carries its boxes
    assert float(said[3]) == round(iou(ours["face_bbox"], remote_face), 2) < 0.95
    assert float(said[4]) == round(iou(ours["ext_bbox"], remote_ext), 2) < 0.99
    assert lines[0]["request"]["input"]["face_bbox"] == remote_face
    assert lines[0]["request"]["input"]["ext_bbox"] == remote_ext


def test_cli_refuses_rejected_inputs_and_dry_run_sends_nothing(sandbox):
    env = {"DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": sandbox.api_base}
    before = len(sandbox.records()["submits"])
    refused = _cli("submit", str(SAMPLES / "astronaut_dark.jpg"), str(SAMPLES / "speech.wav"), env_extra=env)
    assert refused.returncode == 1 and "dark" in refused.stderr and "--force" in refused.stderr
    dry = _cli("submit", str(SAMPLES / "astronaut.png"), str(SAMPLES / "speech.wav"), "--dry-run", "--style", "active",
               env_extra=env)
    assert dry.returncode == 0
    plan = json.loads(dry.stdout)
    assert plan["request"]["parameters"]["style_level"] == "active"
    assert plan["estimated_cost_cny"] == pytest.approx(7.35 * 0.08, abs=0.01)
    assert len(sandbox.records()["submits"]) == before


def test_cli_errors_exit_two_without_the_key(sandbox, tmp_path):
    wrong = _cli("task", "abc", env_extra={"DASHSCOPE_API_KEY": "sk-secret-wrong", "DASHSCOPE_HTTP_BASE_URL":
                                           sandbox.api_base})
    assert wrong.returncode == 2 and wrong.stderr.splitlines()[-1].startswith("Error: HTTP 401 InvalidApiKey")
    assert wrong.stderr.splitlines()[0] == f"endpoint: {sandbox.api_base} (DASHSCOPE_HTTP_BASE_URL)"
    assert "sk-secret-wrong" not in wrong.stdout + wrong.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")} | {"HOME": str(tmp_path)}
    missing = subprocess.run([EMO_PREP, "task", "abc"], capture_output=True, text=True, timeout=60, env=env)
    assert missing.returncode == 2 and "DASHSCOPE_API_KEY" in missing.stderr
    assert "Traceback" not in wrong.stderr + missing.stderr


def test_cli_sandbox_serves_until_terminated(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with subprocess.Popen([EMO_PREP, "sandbox", "--port", str(port), "--api-key", KEY], stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            line = proc.stderr.readline()
            assert f"DASHSCOPE_HTTP_BASE_URL=http://127.0.0.1:{port}/api/v1" in line
            answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/tasks/none",
                               headers={"Authorization": f"Bearer {KEY}"})
            assert answer.json()["output"]["task_status"] == "UNKNOWN"
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0
            assert proc.stderr.read() == ""
    refused = subprocess.run([EMO_PREP, "sandbox", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "loopback" in refused.stderr
