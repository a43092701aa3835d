"""The conventions DashScope users and shell users expect: where the endpoint and the key come
from, the workspace and User-Agent headers, both task-list shapes, wait() on what submit()
returned, -v retries, `| head`, and missing paths as usage errors. Real HTTP on loopback."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import subprocess

import pytest
from conftest import EMO_PREP, SAMPLES, loopback_http

import pipeline
from pipeline.client import USER_AGENT, AsyncEmoClient, EmoClient, RetryPolicy, resolve_base_url
from pipeline.errors import AmbiguousSubmitError, UsageError
from pipeline.serve.sandbox import Sandbox, SandboxOptions

KEY = "sk-conventions-0123456789"
FAST = RetryPolicy(max_retries=6, initial_s=0.01, max_s=0.05)


@pytest.fixture(autouse=True)
def no_home_key(tmp_path, monkeypatch):
    """~/.dashscope/api_key of whoever runs the tests must not count."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(SandboxOptions(api_key=KEY, pending_s=0.05, running_s=0.1, fps=5, seed=3)).start()
    yield sb
    sb.stop()


@pytest.fixture
def recorder():
    """A loopback server that answers every GET with an UNKNOWN task and keeps the headers."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            body = json.dumps({"output": {"task_id": "t1", "task_status": "UNKNOWN"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with loopback_http(Handler) as url:
        yield url, seen


@pytest.mark.parametrize("env,expected", [
    ({}, ("https://dashscope.aliyuncs.com/api/v1", "default: Beijing")),
    ({"DASHSCOPE_HTTP_BASE_URL": "http://gw.example/qwen/api/v1/"}, ("http://gw.example/qwen/api/v1",
                                                                     "DASHSCOPE_HTTP_BASE_URL")),
    ({"DASHSCOPE_BASE_URL": "https://dashscope.aliyuncs.com/api/v1"}, ("https://dashscope.aliyuncs.com/api/v1",
                                                                       "DASHSCOPE_BASE_URL")),
    ({"DASHSCOPE_BASE_URL": "https://dashscope.aliyuncs.com"}, ("https://dashscope.aliyuncs.com/api/v1",
                                                                "DASHSCOPE_BASE_URL")),
    ({"DASHSCOPE_HTTP_BASE_URL": "http://a.example/api/v1", "DASHSCOPE_BASE_URL": "http://b.example/api/v1"},
     ("http://a.example/api/v1", "DASHSCOPE_HTTP_BASE_URL")),
])
def test_endpoint_from_the_sdk_variables(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve_base_url() == expected
    assert resolve_base_url("http://arg.example/api/v1/") == ("http://arg.example/api/v1", "argument")


def test_openai_compatible_base_url_is_ignored_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "https://dashscope.aliyuncs.com/compatible-mode/v1")
    with caplog.at_level(logging.WARNING, logger="pipeline.client"):
        assert resolve_base_url() == ("https://dashscope.aliyuncs.com/api/v1", "default: Beijing")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "OpenAI-compatible" in caplog.text and "DASHSCOPE_BASE_URL" in caplog.text


def test_key_read_the_sdk_ways_and_workspace_and_user_agent_sent(recorder, tmp_path, monkeypatch):
    base, seen = recorder
    home_key = tmp_path / "home" / ".dashscope" / "api_key"
    home_key.parent.mkdir(parents=True)
    home_key.write_text("sk-from-home\n")
    named = tmp_path / "key.txt"
    named.write_text("  sk-from-named-file\n")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", "ws-42")
    expected = []
    for setting, key in [({}, "sk-from-home"), ({"DASHSCOPE_API_KEY_FILE_PATH": str(named)}, "sk-from-named-file"),
                         ({"DASHSCOPE_API_KEY": "sk-from-env"}, "sk-from-env")]:
        for name, value in setting.items():
            monkeypatch.setenv(name, value)
        with EmoClient(base_url=base + "/api/v1", retry=FAST) as client:
            assert key not in repr(client)
            client.get_task("t1")
        expected.append(key)
    assert [h["authorization"] for h in seen] == [f"Bearer {k}" for k in expected]
    assert {h["x-dashscope-workspace"] for h in seen} == {"ws-42"}
    assert {h["user-agent"] for h in seen} == {USER_AGENT}
    assert USER_AGENT.startswith(f"emo-prep/{pipeline.__version__} ")


def test_missing_or_unreadable_key_names_every_way(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="DASHSCOPE_API_KEY .*~/.dashscope/api_key.*DASHSCOPE_API_KEY_FILE_PATH"):
        EmoClient()
    monkeypatch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(tmp_path / "absent.txt"))
    with pytest.raises(UsageError, match="cannot read the key file .*absent.txt"):
        EmoClient()


def _request(client: EmoClient):
    from pipeline import check, check_audio
    from pipeline.payload import VideoInput, VideoSynthesisRequest

    report, audio = check(str(SAMPLES / "astronaut.png")), check_audio(str(SAMPLES / "speech.wav"))
    return VideoSynthesisRequest(input=VideoInput(
        image_url=client.upload((SAMPLES / "astronaut.png").read_bytes(), filename="a.png"),
        audio_url=client.upload(audio.data, filename="speech.wav"),
        face_bbox=list(report.face_bbox), ext_bbox=list(report.ext_bbox)))


@pytest.mark.parametrize("shape", ["data", "tasks"])
def test_task_list_in_both_shapes_finds_a_lost_submit(shape):
    sb = Sandbox(SandboxOptions(api_key=KEY, pending_s=0.05, running_s=0.1, fps=5, seed=1, drop_submits=1,
                                task_list_shape=shape)).start()
    try:
        raw = json.loads(__import__("httpx").get(f"{sb.api_base}/tasks",
                                                 headers={"Authorization": f"Bearer {KEY}"}).text)
        assert shape in raw and ({"data", "tasks"} - {shape}).isdisjoint(raw)
        with EmoClient(api_key=KEY, base_url=sb.api_base, retry=FAST) as client:
            with pytest.raises(AmbiguousSubmitError):
                client.submit(_request(client))
            listed = client.list_tasks()
        dropped = sb.records()["dropped"]
        assert [t.task_id for t in listed.data] == dropped
        assert listed.data[0].task_status in ("PENDING", "RUNNING", "SUCCEEDED")

        async def via_async():
            async with AsyncEmoClient(api_key=KEY, base_url=sb.api_base, retry=FAST) as client:
                return await client.list_tasks()

        assert [t.task_id for t in asyncio.run(via_async()).data] == dropped
    finally:
        sb.stop()


def test_wait_takes_what_submit_returned(sandbox):
    with EmoClient(api_key=KEY, base_url=sandbox.api_base, retry=FAST, poll_initial_s=0.05, poll_max_s=0.1) as client:
        created = client.submit(_request(client))
        done = client.wait(created)
        assert done.output.task_id == created.output.task_id and done.output.task_status == "SUCCEEDED"
        assert client.get_task(created).output.task_status == "SUCCEEDED"
        with pytest.raises(UsageError, match="expected a task id or the TaskResponse"):
            client.wait(42)

    async def via_async():
        async with AsyncEmoClient(api_key=KEY, base_url=sandbox.api_base, retry=FAST, poll_initial_s=0.05,
                                  poll_max_s=0.1) as client:
            return await client.wait(created)

    assert asyncio.run(via_async()).output.task_status == "SUCCEEDED"


def _cli(*args, env_extra=None, home=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update(env_extra or {})
    if home:
        env["HOME"] = str(home)
    return subprocess.run([EMO_PREP, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_verbose_says_each_retry_its_reason_and_wait_never_the_key(tmp_path):
    sb = Sandbox(SandboxOptions(api_key=KEY, fault_429=1.0, seed=1)).start()
    try:
        env = {"DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": sb.api_base}
        loud = _cli("task", "abc", "-v", env_extra=env, home=tmp_path)
        quiet = _cli("task", "abc", env_extra=env, home=tmp_path)
    finally:
        sb.stop()
    assert loud.returncode == quiet.returncode == 2
    lines = loud.stderr.splitlines()
    assert lines[0] == f"endpoint: {sb.api_base} (DASHSCOPE_HTTP_BASE_URL)"
    assert lines[1:5] == [f"INFO: retrying get task after HTTP 429 Throttling: waiting 0.00 s as Retry-After asks "
                          f"(retry {i} of 4)" for i in range(1, 5)]
    assert lines[5].startswith("Error: HTTP 429 Throttling")
    assert [line.split(" (request_id")[0] for line in quiet.stderr.splitlines()] == [
        lines[0], lines[5].split(" (request_id")[0]]
    assert KEY not in loud.stdout + loud.stderr


def test_cli_takes_the_sdk_2_variable_and_a_key_file(sandbox, tmp_path):
    (tmp_path / ".dashscope").mkdir()
    (tmp_path / ".dashscope" / "api_key").write_text(KEY)
    host = sandbox.api_base.removesuffix("/api/v1")
    proc = _cli("task", "--list", env_extra={"DASHSCOPE_BASE_URL": host}, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"endpoint: {sandbox.api_base} (DASHSCOPE_BASE_URL)\n"
    assert KEY not in proc.stdout + proc.stderr


def test_closed_pipe_ends_quietly_after_the_data_already_written():
    with subprocess.Popen([EMO_PREP, "check", "--json", *[str(SAMPLES / "astronaut.png")] * 200],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        first = proc.stdout.readline()
        proc.stdout.close()  # like `| head -1`
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
    assert json.loads(first)["ok"] is True
    assert proc.returncode == 141 and stderr == ""


@pytest.mark.parametrize("args", [
    ["check", "nowhere/missing.jpg", str(SAMPLES / "astronaut.png")],
    ["check-audio", "nowhere/missing.jpg"],
    ["submit", "nowhere/missing.jpg", str(SAMPLES / "speech.wav"), "--dry-run"],
])
def test_missing_path_is_a_usage_error(args):
    proc = _cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "Error: no such file or folder: nowhere/missing.jpg\n"
