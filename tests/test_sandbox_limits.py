"""The sandbox under hostile clients, over raw sockets: the key is checked before a body is
read, every body length is capped (a negative one too), silent connections are closed, and a
request whose image URL streams forever is answered within the fetch deadline."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from pipeline.sandbox import Sandbox, SandboxOptions

KEY = "sk-sandbox-limits"
SYNTH = "/api/v1/services/aigc/image2video/video-synthesis"


@pytest.fixture
def sandbox():
    sb = Sandbox(SandboxOptions(api_key=KEY, idle_timeout_s=1.0, fetch_timeout_s=1.5)).start()
    yield sb
    sb.stop()


def _port(sb: Sandbox) -> int:
    return int(sb.base_url.rsplit(":", 1)[1])


def _exchange(sb: Sandbox, head: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send a request head (and maybe some body) and read the answer; (status, json, rest)."""
    with socket.create_connection(("127.0.0.1", _port(sb)), timeout=timeout) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        top, rest = data.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in top.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += conn.recv(65536)
        status = int(top.split(b" ")[1])
        return status, json.loads(rest[:length] or b"{}"), conn.recv(1) if status >= 400 else b""


def test_an_unauthenticated_body_is_never_read(sandbox):
    started = time.monotonic()
    head = (f"POST {SYNTH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-wrong\r\n"
            f"Content-Length: 115343360\r\n")  # 110 MB announced, none sent
    status, answer, after = _exchange(sandbox, head)
    assert status == 401 and answer["code"] == "InvalidApiKey"
    assert after == b""  # and the connection is closed behind the answer
    assert time.monotonic() - started < 5  # answered without waiting for the body (the idle limit is 1 s)


@pytest.mark.parametrize("length,status", [("-1", 400), ("abc", 400), ("2097152", 413)])
def test_bad_or_oversized_content_lengths_are_refused_unread(sandbox, length, status):
    head = (f"POST {SYNTH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {length}\r\n")
    got, answer, after = _exchange(sandbox, head)
    assert got == status and after == b""


def test_a_silent_connection_is_closed(sandbox):
    with socket.create_connection(("127.0.0.1", _port(sandbox)), timeout=10) as conn:
        started = time.monotonic()
        assert conn.recv(1) == b""  # the sandbox hangs up
        assert time.monotonic() - started < 5


def test_a_submit_whose_image_url_streams_forever_is_answered_within_the_fetch_deadline(sandbox):
    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))

    def endless() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n")  # no length: until closed
            while not stop.is_set():
                try:
                    conn.sendall(b"\xff" * 65536)
                except OSError:
                    return
                time.sleep(0.01)

    threading.Thread(target=endless, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/forever.jpg"
    body = json.dumps({"model": "emo-v1", "input": {"image_url": url, "audio_url": url, "face_bbox": [10, 10, 50, 50],
                                                    "ext_bbox": [0, 0, 60, 60]},
                       "parameters": {"style_level": "normal"}}).encode()
    head = (f"POST {SYNTH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nX-DashScope-Async: enable\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
    started = time.monotonic()
    try:
        status, answer, _ = _exchange(sandbox, head, body, timeout=30)
    finally:
        stop.set()
        srv.close()
    assert status == 400 and answer["code"].startswith("InvalidURL")
    assert "not fetched within 1.5 s" in answer["message"] or "more than" in answer["message"]
    assert time.monotonic() - started < 10
