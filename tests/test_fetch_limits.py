"""URL sources inside their limits, against real loopback servers: a gzip bomb stays under the
decoded-byte cap (peak memory of a real `emo-prep` process, by os.wait4), a server trickling
one byte a second meets the total deadline, redirects into private ranges are refused, and
credentials in URLs never reach a report or a message."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import EMO_PREP, SAMPLES, loopback_http
from fuzzing import gzip_bomb

from pipeline.audio import check_audio
from pipeline.errors import InputError
from pipeline.fetch import fetch_url, redact_url, refused_address

PHOTO = (SAMPLES / "astronaut.png").read_bytes()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(1024)  # 1 GiB of zeros, gzipped twice


@pytest.fixture(scope="module")
def server(bomb):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path.startswith("/bomb"):
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip, gzip")
                self.send_header("Content-Length", str(len(bomb)))
                self.end_headers()
                self.wfile.write(bomb)
            elif self.path.startswith("/hop"):
                self.send_response(302)
                self.send_header("Location", "/photo")
                self.end_headers()
            elif self.path.startswith("/photo"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(PHOTO)))
                self.end_headers()
                self.wfile.write(PHOTO)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args):
            pass

    with loopback_http(Handler) as url:
        yield url


#: Runs a command and prints its exit code and peak RSS (KB) last. The command is started from
#: this small process, not from pytest: a child's ru_maxrss includes what it had between fork and
#: exec, i.e. its parent's resident memory (a pytest process that has loaded models or Ray).
_MEASURE = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[1:], stderr=subprocess.STDOUT)\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def _peak_rss_mb(args: list[str]) -> tuple[int, str, float]:
    """Run a command; its exit code, output and peak resident memory in MB (ru_maxrss)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, timeout=300)
    *lines, last = proc.stdout.splitlines()
    code, kb = last.split()
    return int(code), "\n".join(lines), int(kb) / 1024


def test_a_gzip_bomb_url_stops_at_the_decoded_cap_with_bounded_memory(server, bomb):
    assert len(bomb) < 20_000  # a few KB on the wire, 1 GiB decoded
    code, out, peak = _peak_rss_mb([EMO_PREP, "check", "--json", f"{server}/bomb.jpg"])
    report = json.loads(out.splitlines()[-1])
    assert code == 1 and report["findings"][0]["code"] == "unreadable", out
    assert "more than 67108864 bytes (decoded)" in report["findings"][0]["message"]
    assert peak < 600, f"peak RSS {peak:.0f} MB"  # main: > 1 GiB (all of it inflated before the cap)
    audio = check_audio(f"{server}/bomb.wav")  # the same fetch, with the audio cap
    assert [f.code for f in audio.findings] == ["audio_unreadable"] and "(decoded)" in audio.findings[0].message


def _trickler(headers_too: bool) -> tuple[socket.socket, str]:
    """A server that sends one byte a second (of its headers, or of its body)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
            if not headers_too:
                conn.sendall(head)
            for byte in (head if headers_too else b"x" * 100000):
                time.sleep(1.0)
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.getsockname()[1]}/slow.jpg"


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_one_byte_a_second_server_meets_the_total_deadline(headers_too):
    srv, url = _trickler(headers_too)
    started = time.monotonic()
    with srv, pytest.raises(InputError, match="not fetched within 2 s"):
        fetch_url(url, 1 << 20, deadline_s=2.0)
    assert time.monotonic() - started < 3.0


def test_each_reach_refuses_its_address_ranges(server):
    for address, kind in (("169.254.169.254", "link-local (cloud metadata)"), ("127.0.0.1", "loopback"),
                          ("10.1.2.3", "private"), ("::1", "loopback"), ("192.168.0.1", "private"),
                          ("::ffff:127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "non-public")):
        assert refused_address(address, "public") == kind, address
    assert refused_address("93.184.216.35", "public") is None
    assert refused_address("127.0.0.1", "private") is None and refused_address("10.1.2.3", "private") is None
    assert refused_address("169.254.169.254", "private") == "link-local (cloud metadata)"
    assert refused_address("169.254.169.254", "any") is None
    # the command line's rule: a loopback URL may redirect on loopback
    assert fetch_url(f"{server}/hop", 1 << 20) == PHOTO
    with pytest.raises(InputError, match="a loopback address; not fetched"):
        fetch_url(f"{server}/hop", 1 << 20, reach="public")


def test_credentials_in_urls_are_redacted_in_the_report_and_messages(server):
    url = f"{server.replace('http://', 'http://ann:hunter2@')}/gone.jpg?size=2&access_token=abc123&Signature=zz9"
    assert redact_url(url) == (f"{server.replace('http://', 'http://***@')}/gone.jpg?size=2&access_token=***"
                               "&Signature=***")
    proc = subprocess.run([EMO_PREP, "check", "--json", url], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    assert report["source"] == redact_url(url) and "HTTP 404" in report["findings"][0]["message"]
    for secret in ("hunter2", "abc123", "zz9"):
        assert secret not in proc.stdout + proc.stderr
