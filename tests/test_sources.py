"""Sources other than local files: http(s) URLs from a real loopback server, raw bytes."""

from __future__ import annotations

import http.server

import pytest
from conftest import SAMPLES, loopback_http

from pipeline import check
from pipeline.errors import InputError
from pipeline.ingest import read_source

PHOTO = (SAMPLES / "astronaut.png").read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/photo":
            body, status = PHOTO, 200
        elif self.path == "/huge":
            body, status = b"\0" * (3 * 1024 * 1024), 200
        else:
            body, status = b"not here", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    with loopback_http(_Handler) as url:
        yield url


def test_url_is_fetched_and_checked(checker, server):
    report = checker.check(f"{server}/photo")
    assert report.ok and report.source == f"{server}/photo" and report.image.bytes == len(PHOTO)


def test_missing_url_is_unreadable_with_status(checker, server):
    report = checker.check(f"{server}/gone")
    assert report.errors[0].code == "unreadable" and "HTTP 404" in report.errors[0].message


def test_url_over_the_size_cap_is_refused(server):
    with pytest.raises(InputError, match="more than 1048576 bytes"):
        read_source(f"{server}/huge", max_bytes=1024 * 1024)


def test_other_schemes_are_refused():
    with pytest.raises(InputError, match="only http and https"):
        read_source("file:///etc/passwd")


def test_bytes_and_default_checker():
    report = check(PHOTO)
    assert report.ok and report.source == "<bytes>"
