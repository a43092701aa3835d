"""Where the API key travels, seen by the sandbox's request log (`records()["requests"]`: route
and whether a key came with each request): only to the API routes, from every command that
talks to the service and on its error paths; and no message, output or exception holds it."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import EMO_PREP, SAMPLES

from pipeline import check, upload_form
from pipeline.client import EmoClient, RetryPolicy
from pipeline.errors import APIError, InvalidRequestError, PortraitRejected, ServerError, TaskFailed, ThrottledError
from pipeline.payload import VideoInput, VideoSynthesisRequest
from pipeline.serve.sandbox import Sandbox, SandboxOptions

KEY = "sk-keypath-5e1b7d0c9a"
FAST = RetryPolicy(max_retries=3, initial_s=0.01, max_s=0.02)


def _sandbox(**options) -> Sandbox:
    return Sandbox(SandboxOptions(**{"api_key": KEY, "pending_s": 0.05, "running_s": 0.1, "fps": 5, "seed": 3,
                                     **options})).start()


def _routes_and_keys(sb: Sandbox) -> list[tuple[str, bool]]:
    return [(r["route"], r["key_sent"]) for r in sb.records()["requests"]]


def _key_only_to_the_api(sb: Sandbox, *, routes: set[str]) -> None:
    seen = _routes_and_keys(sb)
    assert {route for route, _ in seen} >= routes, seen
    wrong = [(route, sent) for route, sent in seen if sent != (route == "api")]
    assert wrong == [], wrong


def _cli(*args: str, sb: Sandbox, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": sb.api_base}
    proc = subprocess.run([EMO_PREP, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert KEY not in proc.stdout + proc.stderr
    return proc


def test_cli_submit_with_remote_boxes_through_faults(tmp_path):
    # throttled and failing answers on a share of the API calls: the retries carry the key
    # again, the uploads and the download never
    sb = _sandbox(fault_429=0.2, fault_500=0.1)
    try:
        proc = _cli("submit", str(SAMPLES / "astronaut_exif6.jpg"), str(SAMPLES / "speech.wav"), "--boxes", "remote",
                    "--wait", "-o", str(tmp_path / "v.mp4"), "-v", sb=sb)
        assert proc.returncode in (0, 2), proc.stderr  # 2: a fault on the submit itself is not resent
        _key_only_to_the_api(sb, routes={"api", "oss"} | ({"result"} if proc.returncode == 0 else set()))
        listed = _cli("task", "--list", sb=sb)
        assert listed.returncode == 0
    finally:
        sb.stop()


def test_cli_batch_submit_and_download(tmp_path):
    from test_batch import _portraits

    photos = _portraits(tmp_path / "in", n=2)
    sb = _sandbox()
    try:
        proc = _cli("batch", str(photos), "--audio", str(SAMPLES / "speech.wav"), "--submit", "--out",
                    str(tmp_path / "out"), "--poll-interval", "0.1", sb=sb)
        assert "videos 2" in proc.stdout, proc.stderr
        _key_only_to_the_api(sb, routes={"api", "oss", "result"})
        assert KEY not in (tmp_path / "out" / "report.jsonl").read_text()
        assert KEY not in (tmp_path / "out" / "report.html").read_text()
    finally:
        sb.stop()
    with open(tmp_path / "out" / "ledger.sqlite", "rb") as fh:
        assert KEY.encode() not in fh.read()


def _free_of_key(exc: BaseException) -> None:
    texts = [str(exc), repr(exc), repr(vars(exc))]
    if getattr(exc, "body", None) is not None:
        texts.append(json.dumps(exc.body))
    for text in texts:
        assert KEY not in text, text


def test_client_error_paths_keep_the_key_to_the_api_and_out_of_every_message(tmp_path):
    sb = _sandbox(result_ttl_s=0.05, detect_reject_status=400)
    try:
        with EmoClient(api_key=KEY, base_url=sb.api_base, retry=FAST, poll_initial_s=0.05, poll_max_s=0.1) as client:
            url = client.upload(SAMPLES / "coffee.jpg", model="emo-detect-v1")
            with pytest.raises(PortraitRejected) as rejected:  # a 400 InvalidFile answer
                client.face_detect(url)
            _free_of_key(rejected.value)
            with pytest.raises(TaskFailed) as unknown:  # a task the service does not know
                client.wait("no-such-task", timeout=5)
            _free_of_key(unknown.value)
            report = check(SAMPLES / "astronaut.png")
            done = client.create_and_poll(VideoSynthesisRequest(input=VideoInput(
                image_url=client.upload(upload_form(report.loaded).data, filename="p.jpg"),
                audio_url=client.upload(SAMPLES / "speech.wav"), face_bbox=list(report.face_bbox),
                ext_bbox=list(report.ext_bbox))), timeout=60)
            time.sleep(0.2)  # past result_ttl_s: the video answers 404
            with pytest.raises(InvalidRequestError) as gone:
                client.download(done.video_url, tmp_path / "late.mp4")
            assert gone.value.status_code == 404
            _free_of_key(gone.value)
        with EmoClient(api_key="sk-not-the-sandbox-key", base_url=sb.api_base, retry=FAST) as stranger:
            with pytest.raises(APIError) as refused:
                stranger.get_task("abc")
            assert "sk-not-the-sandbox-key" not in str(refused.value) + repr(vars(refused.value))
    finally:
        sb.stop()
    _key_only_to_the_api(sb, routes={"api", "oss", "result"})
    for fault, kind in (({"fault_429": 1.0}, ThrottledError), ({"fault_500": 1.0}, ServerError)):
        sb = _sandbox(**fault)
        try:
            with EmoClient(api_key=KEY, base_url=sb.api_base, retry=FAST) as client:
                with pytest.raises(kind) as storm:
                    client.get_task("abc")
            _free_of_key(storm.value)
            assert _routes_and_keys(sb) == [("api", True)] * (1 + FAST.max_retries)
        finally:
            sb.stop()
