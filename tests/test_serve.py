"""`emo-prep serve` over real HTTP on loopback: a real `emo-prep serve` process (2 check
workers) whose gateway forwards to the real sandbox, photos fetched from a loopback host.

Detect answers equal `check` on every dev photo at both ratios; the gateway fills boxes, keeps
given ones, refuses failing photos with nothing sent upstream, passes task calls through; SSRF
cases are refused; overload gets 429, not a hang; the key never reaches the server's output.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import DATA, EMO_PREP, SAMPLES, errors, labels, loopback_http

from pipeline.payload import DETECT_MESSAGES
from pipeline.serve.sandbox import Sandbox, SandboxOptions

KEY = "sk-serve-test-5b1f0c9e7d"
DETECT = "/api/v1/services/aigc/image2video/face-detect"
SUBMIT = "/api/v1/services/aigc/image2video/video-synthesis"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def photo_host():
    """Serves ../shared/data/ under /data/ and samples/ under /samples/, and a few redirects."""
    folders = {"data": DATA, "samples": SAMPLES}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            redirects = {"/to-metadata": "http://169.254.169.254/latest/meta-data/",
                         "/to-file": "file:///etc/passwd",
                         "/to-sample": "/samples/astronaut.png"}
            if self.path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            _, folder, name = (self.path.split("/", 2) + ["", ""])[:3]
            path = folders.get(folder, Path("/nonexistent")) / name
            body = path.read_bytes() if "/" not in name and path.is_file() else None
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    with loopback_http(Handler) as url:
        yield url


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(SandboxOptions(api_key=KEY, pending_s=2.0, running_s=0.1, fps=5, seed=5)).start()
    yield sb
    sb.stop()


class Served:
    """A running `emo-prep serve` process, its URL and its captured output."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.out, self.err = tmp / "serve.out", tmp / "serve.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([EMO_PREP, "serve", "--port", "0", *args], stdout=out, stderr=err)
        give_up = time.monotonic() + 120
        while not (found := re.search(r"listening on (http://\S+)", self.err.read_text())):
            if self.proc.poll() is not None or time.monotonic() > give_up:
                self.stop()
                pytest.fail(f"emo-prep serve did not start:\n{self.err.read_text()}")
            time.sleep(0.1)
        self.url = found.group(1)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def logs(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory, sandbox):
    """Two workers, private URLs allowed (the photos are on loopback), the sandbox upstream."""
    server = Served(tmp_path_factory.mktemp("serve"), "--workers", "2", "--allow-private-urls",
                    "--upstream", sandbox.api_base)
    yield server
    server.http.close()
    server.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """Defaults for URLs (public only), one worker and a queue of one: easy to overload; a short
    request deadline."""
    server = Served(tmp_path_factory.mktemp("strict"), "--workers", "1", "--max-queue", "1", "--deadline", "8")
    yield server
    server.http.close()
    server.stop()


def _detect(http: httpx.Client, url: str, ratio: str = "1:1") -> httpx.Response:
    return http.post(DETECT, json={"model": "emo-detect-v1", "input": {"image_url": url},
                                   "parameters": {"ratio": ratio}})


# --- emo-detect-v1 compatible -------------------------------------------------------------------
def test_detect_answers_equal_check_on_every_dev_photo(served, photo_host, checked):
    rows = labels(DATA)
    cases = [(row["file"], ratio) for row in rows for ratio in ("1:1", "3:4")]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # the server's 2 workers stay busy
        answers = list(pool.map(lambda c: _detect(served.http, f"{photo_host}/data/{c[0]}", c[1]), cases))
    wrong = []
    for (name, ratio), answer in zip(cases, answers, strict=True):
        record = checked(DATA, name, ratio)
        body = answer.json()
        if record["ok"]:
            expected = (200, {"check_pass": True, "face_bbox": record["face_bbox"], "ext_bbox": record["ext_bbox"],
                              "humanoid": True})
        elif errors(record)[0] in ("unreadable", "unsupported_format"):
            expected = (400, "InvalidURL")
        else:
            api_code = next(f["api_code"] for f in record["findings"] if f["severity"] == "error")
            expected = (200, {"check_pass": False, "code": api_code, "message": DETECT_MESSAGES[api_code]})
        got = (answer.status_code, body.get("output", body.get("code")))
        if got != expected:
            wrong.append(f"{name} {ratio}: expected {expected}, got {got}")
        if answer.status_code == 200:
            assert body["usage"] == {"image_count": 1} and body["request_id"]
    assert not wrong, "\n".join(wrong)


def test_detect_refuses_what_the_service_refuses(served, photo_host):
    url = f"{photo_host}/samples/astronaut.png"
    async_header = served.http.post(DETECT, headers={"X-DashScope-Async": "enable"},
                                    json={"model": "emo-detect-v1", "input": {"image_url": url}})
    assert async_header.status_code == 403 and async_header.json()["code"] == "AccessDenied"
    bad_ratio = _detect(served.http, url, "16:9")
    assert bad_ratio.status_code == 400 and bad_ratio.json()["code"] == "InvalidParameter"
    oss = _detect(served.http, "oss://dashscope-instant/x/photo.jpg")
    assert oss.status_code == 400 and "only be read by DashScope" in oss.json()["message"]
    not_json = served.http.post(DETECT, content=b"{not json")
    assert not_json.status_code == 400 and not_json.json()["code"] == "InvalidParameter"


def test_a_dashscope_client_pointed_at_the_server_gets_its_detect_answers(served, photo_host, checked):
    from pipeline import EmoClient

    with EmoClient(base_url=served.url + "/api/v1", api_key="unused-by-detect") as client:
        answer = client.face_detect(f"{photo_host}/data/dv001.jpg", ratio="1:1")
    record = checked(DATA, "dv001.jpg", "1:1")
    assert answer.output.check_pass and [answer.output.face_bbox, answer.output.ext_bbox] == \
        [record["face_bbox"], record["ext_bbox"]]
    docs, schema = served.http.get("/docs"), served.http.get("/openapi.json").json()
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert {DETECT, SUBMIT, "/v1/check", "/v1/preview", "/v1/fix", "/healthz", "/metrics"} <= set(schema["paths"])


# --- native ---------------------------------------------------------------------------------------
def test_native_check_preview_and_fix_take_a_body_a_form_or_a_url(served, photo_host, checker):
    photo = SAMPLES / "astronaut.png"
    expected = checker.check(photo).to_dict()
    raw = served.http.post("/v1/check?ratio=1:1&name=astronaut.png", content=photo.read_bytes()).json()
    form = served.http.post("/v1/check", files={"file": ("astronaut.png", photo.read_bytes(), "image/png")}).json()
    url = f"{photo_host}/samples/astronaut.png"
    fetched = served.http.post("/v1/check", json={"url": url}).json()
    assert raw == form == {**expected, "source": "astronaut.png"}
    assert fetched == {**expected, "source": url}
    preview = served.http.post("/v1/preview?ratio=3:4", content=photo.read_bytes())
    assert preview.headers["content-type"] == "image/png" and preview.content.startswith(b"\x89PNG")
    assert preview.headers["x-emo-prep-ok"] == "false"  # the astronaut's hips are not in the photo
    fixed = served.http.post("/v1/fix?name=astronaut_pair.jpg",
                             content=(SAMPLES / "astronaut_pair.jpg").read_bytes()).json()
    assert fixed["status"] == "fixed" and fixed["operations"] == ["crop"] and fixed["report"]["ok"]
    assert fixed["image_base64"] and fixed["output"] == "astronaut_pair.fixed.jpg"
    for bad, code in ((served.http.post("/v1/check?ratio=2:3", content=b"x"), 400),
                      (served.http.post("/v1/check", content=b""), 400),
                      (served.http.post("/v1/check", json={"path": "/etc/passwd"}), 400)):
        assert bad.status_code == code and bad.json()["hint"], bad.text


# --- the gateway ------------------------------------------------------------------------------------
def _submit(served: Served, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"X-DashScope-Async": "enable", **({"Authorization": f"Bearer {key}"} if key else {})}
    return served.http.post(SUBMIT, json=body, headers=headers)


def _body(photo_host: str, photo: str, **boxes) -> dict:
    return {"model": "emo-v1", "input": {"image_url": f"{photo_host}/samples/{photo}",
                                         "audio_url": f"{photo_host}/samples/speech.wav", **boxes},
            "parameters": {"style_level": "calm"}}


def test_the_gateway_fills_the_boxes_and_forwards_with_the_callers_key(served, sandbox, photo_host, checker):
    report = checker.check(SAMPLES / "astronaut.png")
    answer = _submit(served, _body(photo_host, "astronaut.png"))
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["output"]["task_id"]
    submit = sandbox.records()["submits"][-1]
    assert submit["task_id"] == task_id
    assert submit["body"] == _body(photo_host, "astronaut.png", face_bbox=list(report.face_bbox),
                                   ext_bbox=list(report.ext_bbox))
    # task query, list and cancel pass through unchanged
    task = served.http.get(f"/api/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}"})
    assert task.status_code == 200 and task.json()["output"]["task_id"] == task_id
    listed = served.http.get("/api/v1/tasks", params={"page_size": 5}, headers={"Authorization": f"Bearer {KEY}"})
    assert task_id in [t["task_id"] for t in listed.json()["data"]]
    canceled = served.http.post(f"/api/v1/tasks/{task_id}/cancel", headers={"Authorization": f"Bearer {KEY}"})
    assert canceled.status_code == 200 and canceled.json()["output"]["task_status"] == "CANCELED"
    again = served.http.post(f"/api/v1/tasks/{task_id}/cancel", headers={"Authorization": f"Bearer {KEY}"})
    assert again.status_code == 400 and again.json()["code"] == "UnsupportedOperation"  # the sandbox's own answer


def test_the_gateway_keeps_given_boxes_once_checked(served, sandbox, photo_host):
    given = {"face_bbox": [170, 66, 277, 173], "ext_bbox": [90, 0, 356, 266]}
    answer = _submit(served, _body(photo_host, "astronaut.png", **given))
    assert answer.status_code == 200, answer.text
    assert sandbox.records()["submits"][-1]["body"] == _body(photo_host, "astronaut.png", **given)


def _upstream_calls(sandbox: Sandbox) -> int:
    return sum(r["route"] == "api" for r in sandbox.records()["requests"])


def test_the_gateway_sends_nothing_upstream_for_a_failing_photo_or_bad_boxes(served, sandbox, photo_host):
    before = _upstream_calls(sandbox)
    refused = _submit(served, _body(photo_host, "cameraman.png"))  # head turned 47 degrees
    assert refused.status_code == 400
    assert refused.json() == {"code": "InvalidFile.FacePose", "message": DETECT_MESSAGES["InvalidFile.FacePose"],
                              "request_id": refused.json()["request_id"]}
    outside = _submit(served, _body(photo_host, "astronaut.png", face_bbox=[172, 68, 275, 171],
                                    ext_bbox=[300, 300, 600, 600]))
    assert outside.status_code == 400 and "is not inside the 512x512 photo" in outside.json()["message"]
    one_box = _submit(served, _body(photo_host, "astronaut.png", face_bbox=[172, 68, 275, 171]))
    assert one_box.status_code == 400 and "without ext_bbox" in one_box.json()["message"]
    turned = _submit(served, _body(photo_host, "astronaut_exif6.jpg"))  # the service would read it unrotated
    assert turned.status_code == 400 and "exif_orientation_applied" in turned.json()["message"]
    oss = _submit(served, {"model": "emo-v1", "input": {"image_url": "oss://dashscope-instant/a.jpg",
                                                        "audio_url": "oss://dashscope-instant/a.wav"}})
    assert oss.status_code == 400 and "only DashScope can read oss:// files" in oss.json()["message"]
    assert oss.json()["hint"]
    assert _upstream_calls(sandbox) == before  # not one API call reached the upstream
    no_key = _submit(served, _body(photo_host, "astronaut.png"), key=None)  # the upstream's own 401, unchanged
    assert no_key.status_code == 401 and no_key.json()["code"] == "InvalidApiKey"


# --- reach, overload, secrets -------------------------------------------------------------------------
def test_urls_into_loopback_metadata_or_files_are_refused(strict, served, photo_host):
    cases = [(strict, f"{photo_host}/samples/astronaut.png", "a loopback address"),
             (strict, "http://localhost:9/photo.jpg", "a loopback address"),
             (strict, "http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
             (strict, "file:///etc/passwd", "only http and https"),
             # private URLs allowed: the redirects are still checked, hop by hop
             (served, f"{photo_host}/to-metadata", "link-local (cloud metadata)"),
             (served, f"{photo_host}/to-file", "only http and https"),
             (served, "http://[::ffff:169.254.169.254]/", "link-local (cloud metadata)")]
    for server, url, why in cases:
        for answer in (_detect(server.http, url), server.http.post("/v1/check", json={"url": url})):
            assert answer.status_code == 400 and answer.json()["code"] == "InvalidURL", (url, answer.text)
            assert why in answer.json()["message"], (url, answer.text)
    assert _detect(served.http, f"{photo_host}/to-sample").json()["output"]["check_pass"]  # a redirect on loopback


def test_overload_gets_429_with_retry_after_not_a_hang(strict):
    photo = (DATA / "dv001.jpg").read_bytes() if (DATA / "dv001.jpg").is_file() else \
        (SAMPLES / "astronaut.png").read_bytes()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: strict.http.post("/v1/check", content=photo), range(16)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2, statuses
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.json()["code"] == "Throttling" and busy.headers["retry-after"] == "1"
    health = strict.http.get("/healthz").json()
    assert health["admitted"] == 0 and health["checking_or_queued"] == 0, health
    metrics = strict.http.get("/metrics").text
    assert 'emo_prep_requests_total{route="/v1/check",status="429"}' in metrics
    assert "emo_prep_check_seconds_bucket" in metrics and "emo_prep_queue_depth 0.0" in metrics


def test_a_body_that_stops_arriving_gets_504_at_the_deadline_and_frees_its_place(strict):
    host, port = httpx.URL(strict.url).host, httpx.URL(strict.url).port
    with socket.create_connection((host, port)) as conn:
        conn.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\xff" * 10)
        conn.settimeout(60)
        started, answer = time.monotonic(), b""
        while b"\r\n\r\n" not in answer and (chunk := conn.recv(4096)):
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 504 "), answer[:200]
    assert 7 < waited < 30, waited  # the --deadline of 8 s, not uvicorn's forever
    assert strict.http.get("/healthz").json()["admitted"] == 0


def test_a_public_host_is_warned_about_and_a_busy_port_is_a_clear_error():
    with socket.create_server(("0.0.0.0", 0)) as busy:
        proc = subprocess.run([EMO_PREP, "serve", "--host", "0.0.0.0", "--port", str(busy.getsockname()[1])],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "WARNING: listening on 0.0.0.0: the detect and check endpoints need no key" in proc.stderr
    assert "Error: cannot listen on 0.0.0.0" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_the_page_shows_a_pass_and_a_reject_in_a_real_browser(served):
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 800})  # a phone
            page.goto(served.url + "/")
            page.set_input_files("#file", str(SAMPLES / "astronaut.png"))
            page.wait_for_selector("#verdict[data-ok=true]", timeout=30_000)
            assert page.inner_text("#verdict").startswith("PASS")
            assert "face_bbox [172,68,275,171]" in page.inner_text("#boxes")
            assert page.eval_on_selector("#crop", "c => [c.width, c.height]") == [512, 512]
            page.set_input_files("#file", str(SAMPLES / "cameraman.png"))
            page.wait_for_selector("#verdict[data-ok=false]", timeout=30_000)
            assert page.inner_text("#verdict").startswith("REJECT")
            finding = page.inner_text("#findings li[data-code=pose]")
            assert "Face the camera" in finding and "请" in finding  # the hint in English and Chinese
            assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
        finally:
            browser.close()


def test_the_key_reaches_no_log_line(served, strict):
    """Last in the module: by now the server has forwarded, refused and proxied with the key."""
    assert "POST /api/v1/services/aigc/image2video/video-synthesis" in served.logs()  # access log on
    for server in (served, strict):
        assert KEY not in server.logs() and "Bearer" not in server.logs()
