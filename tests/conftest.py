"""Shared fixtures: the dev photo sets (read-only, beside the repo) and one Checker."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: ../shared beside the repo (mutmut runs the tests from a copy in mutants/, one level deeper)
SHARED = next((p / "shared" for p in ROOT.parents if (p / "shared").is_dir()), ROOT.parent / "shared")
DATA = SHARED / "data"
DATA34 = SHARED / "data34"
SAMPLES = ROOT / "samples"
EMO_PREP = next((str(p) for p in (ROOT / ".venv" / "bin" / "emo-prep", Path(sys.executable).parent / "emo-prep")
                 if p.exists()), "emo-prep")


def labels(folder: Path) -> list[dict]:
    path = folder / "labels.jsonl"
    if not path.is_file():
        pytest.skip(f"labelled photos not found at {folder} (../shared/ beside the repo)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class LoopbackServer(http.server.ThreadingHTTPServer):
    """A threaded test server that stays quiet when a client goes away before its answer (the
    timeout and deadline tests do that on purpose); any other error is printed as usual."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def loopback_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 answering with `handler`; yields its base URL."""
    httpd = LoopbackServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def checker():
    from pipeline import Checker

    with Checker() as c:
        yield c


@pytest.fixture(scope="session")
def checked(checker):
    """`checked(folder, name, ratio)`: the check record (JSON contract) of a photo, computed once
    per session, so that the tests comparing against the dev set do not check it again each."""
    cache: dict[tuple[str, str, str], dict] = {}

    def record(folder: Path, name: str, ratio: str) -> dict:
        key = (str(folder), name, ratio)
        if key not in cache:
            cache[key] = checker.check(folder / name, ratio=ratio).to_dict()
        return cache[key]

    return record


def errors(record: dict) -> list[str]:
    """The error codes of a check record, first (the reason shown) first."""
    return [f["code"] for f in record["findings"] if f["severity"] == "error"]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Tests never see the caller's emo-prep or DashScope settings."""
    for name in list(os.environ):
        if name.startswith(("DASHSCOPE_", "EMO_PREP_")):
            monkeypatch.delenv(name, raising=False)
