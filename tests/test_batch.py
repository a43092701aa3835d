"""Batch: same verdicts as `check`, a report that opens in Chromium, bad rows reported per
row, a budget, idempotence and the ledger commands. Kills at each crash-safety step, with
resume, are in test_batch_order.py."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA, EMO_PREP, SAMPLES, labels
from PIL import Image

from pipeline.client import EmoClient
from pipeline.serve.sandbox import Sandbox, SandboxOptions

KEY = "sk-batch-test-42"
SPEECH = str(SAMPLES / "speech.wav")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _sandbox(**options) -> Sandbox:
    return Sandbox(SandboxOptions(**{"api_key": KEY, "pending_s": 0.2, "running_s": 0.3, "fps": 5,
                                     **options})).start()


def _env(sb: Sandbox) -> dict[str, str]:
    return {**os.environ, "DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": sb.api_base}


def _batch(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([EMO_PREP, "batch", *args], capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ))


def _portraits(folder: Path, n: int = 4) -> Path:
    """n distinct passing portraits made from the astronaut sample (and two rejects)."""
    folder.mkdir(parents=True, exist_ok=True)
    astro = Image.open(SAMPLES / "astronaut.png").convert("RGB")
    variants = [astro, astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT), astro.crop((8, 0, 512, 504)),
                astro.crop((0, 8, 504, 512)), astro.crop((4, 4, 508, 508))]
    for i, im in enumerate(variants[:n]):
        im.save(folder / f"p{i}.jpg", quality=92)
    shutil.copy(SAMPLES / "coffee.jpg", folder / "r_coffee.jpg")
    shutil.copy(SAMPLES / "cameraman.png", folder / "r_cameraman.png")
    return folder


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]


def _dom(report: Path, fragment: str) -> str:
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", "--disable-sync",
                           f"--user-data-dir={report.parent / '.chromium'}", "--dump-dom",
                           f"file://{report}#{fragment}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    return proc.stdout


def test_batch_without_submit_gives_the_verdicts_of_check_and_a_report_that_opens(tmp_path):
    rows = labels(DATA)
    out = tmp_path / "out"
    proc = _batch(str(DATA), "--out", str(out), "--workers", "2")
    assert proc.returncode == 1 and "report:" in proc.stdout, proc.stderr
    check = subprocess.run([EMO_PREP, "check", "--json", str(DATA)], capture_output=True, text=True, timeout=300)
    by_check = {Path(r["source"]).name: r for r in map(json.loads, check.stdout.splitlines())}
    by_batch = {Path(r["source"]).name: r for r in _records(out)}
    assert set(by_batch) == {r["file"] for r in rows}
    for name, record in by_batch.items():
        assert record["ok"] == by_check[name]["ok"], name
        assert [f["code"] for f in record["findings"]] == [f["code"] for f in by_check[name]["findings"]], name
    rejected = sum(not r["ok"] for r in by_batch.values())
    # the page's content, read without a browser: a tile per photo with its verdict and reason
    # (its first error, as check orders them), the summary and reasons tables
    page = _Page.read(out / "report.html")
    first_error = {name: next((f["code"] for f in r["findings"] if f["severity"] == "error"), "")
                   for name, r in by_batch.items()}
    assert sorted(page.tiles) == sorted((name, "pass" if r["ok"] else "reject", first_error[name])
                                        for name, r in by_batch.items())
    assert page.tables["summary"][:3] == [["photos", str(len(rows))], ["passed", str(len(rows) - rejected)],
                                          ["rejected", str(rejected)]]
    counts = Counter(code for code in first_error.values() if code)
    assert page.tables["reasons"][1:] == [[code, str(n)] for code, n in counts.most_common()]
    assert counts["blur"] == sum(1 for r in rows if r["reject_reason"] == "blur")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    html = _dom(out / "report.html", "rejected")
    tiles = re.findall(r"<figure class=\"tile (pass|reject)\"[^>]*?(hidden=\"\")?>", html)
    assert len(tiles) == len(rows)
    assert sum(1 for verdict, hidden in tiles if not hidden) == rejected
    assert all(verdict == "reject" for verdict, hidden in tiles if not hidden)
    assert f"showing {rejected} of {len(rows)} (rejected)" in html
    blur = _dom(out / "report.html", "reason=blur")
    assert f"showing {sum(1 for r in rows if r['reject_reason'] == 'blur')} of {len(rows)}" in blur
    assert "<td>21</td>" in html and "data:image/jpeg;base64," in html  # summary and inlined thumbnails


class _Page(html.parser.HTMLParser):
    """report.html's tiles as (photo, data-verdict, data-reason) and its tables as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles: list[tuple[str, str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._tile: dict[str, str] | None = None
        self._in_badge = self._after_badge = False

    @classmethod
    def read(cls, path: Path) -> _Page:
        page = cls()
        page.feed(path.read_text(encoding="utf-8"))
        return page

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "figure":
            self._tile = a
        elif tag == "span" and a.get("class") == "badge":
            self._in_badge = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "span" and self._in_badge:
            self._in_badge, self._after_badge = False, True

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._after_badge:  # the photo's name follows its PASS / REJECT badge
            self.tiles.append((data.strip(), self._tile["data-verdict"], self._tile["data-reason"]))
            self._after_badge = False


def test_bad_rows_are_reported_and_the_rest_goes_on(tmp_path):
    photos = _portraits(tmp_path / "in", n=1)
    (tmp_path / "in" / "notes.txt").write_text("not a photo")
    manifest = tmp_path / "in" / "rows.csv"
    manifest.write_text("photo,audio,ratio,style\n"
                        "p0.jpg,,,\n"
                        "missing.jpg,,,\n"
                        "p0.jpg,,,wild\n"
                        "p0.jpg,nowhere.wav,1:1,\n"
                        "notes.txt,,,\n"
                        ",,,\n")
    sb = _sandbox()
    try:
        proc = _batch(str(manifest), "--audio", SPEECH, "--submit", "--out", str(tmp_path / "out"),
                      "--poll-interval", "0.1", env=_env(sb))
    finally:
        sb.stop()
    assert proc.returncode == 1, proc.stderr
    records = _records(tmp_path / "out")
    first = [(_first_code(r), r["state"]) for r in records]
    assert first == [(None, "downloaded"), ("unreadable", "rejected"), ("manifest_invalid", "rejected"),
                     ("audio_unreadable", "rejected"), ("unreadable", "rejected"), ("manifest_invalid", "rejected")]
    assert photos and (tmp_path / "out" / records[0]["video"]).is_file()
    jsonl = tmp_path / "in" / "rows.jsonl"
    jsonl.write_text('{"photo": "p0.jpg", "style": "calm"}\nthis is not json\n')
    plain = _batch(str(jsonl), "--audio", SPEECH, "--out", str(tmp_path / "out2"))
    assert plain.returncode == 1
    assert [_first_code(r) for r in _records(tmp_path / "out2")] == [None, "manifest_invalid"]


def _first_code(record: dict) -> str | None:
    for part in (record.get("findings") or [], (record.get("audio") or {}).get("findings") or []):
        for f in part:
            if f["severity"] == "error":
                return f["code"]
    return None


def test_budget_stops_submitting_and_a_rerun_continues_without_duplicates(tmp_path):
    photos = _portraits(tmp_path / "in", n=3)
    out = tmp_path / "out"
    cost = 7.35 * 0.08  # one clip's video at 1:1
    sb = _sandbox()
    try:
        first = _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--max-cost", f"{cost * 1.5:.3f}",
                       "--poll-interval", "0.1", env=_env(sb))
        assert first.returncode == 1 and "stopped by --max-cost" in first.stdout
        assert "would pass --max-cost" in first.stderr
        assert len(sb.records()["submits"]) == 1
        second = _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--max-cost", "10",
                        "--poll-interval", "0.1", env=_env(sb))
        assert "tasks 3, videos 3" in second.stdout, second.stderr
        again = _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.1",
                       env=_env(sb))
        assert len(sb.records()["submits"]) == 3  # idempotent by content
        forced = _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--force",
                        "--poll-interval", "0.1", env=_env(sb))
        assert len(sb.records()["submits"]) == 6 and "tasks 6, videos 6" in forced.stdout
        assert again.returncode == 1  # the two rejects
    finally:
        sb.stop()


def test_failed_tasks_are_resubmitted_only_with_retry_failed(tmp_path):
    photos = _portraits(tmp_path / "in", n=1)
    out = tmp_path / "out"
    sb = _sandbox(expire_after_s=0.1, pending_s=1.0)  # the task is forgotten: UNKNOWN -> failed
    try:
        _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.3", env=_env(sb))
        assert [r["state"] for r in _records(out) if r["ok"]] == ["failed"]
        _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.3", env=_env(sb))
        assert len(sb.records()["submits"]) == 1
    finally:
        sb.stop()
    sb = _sandbox()
    try:
        retry = _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--retry-failed",
                       "--poll-interval", "0.1", env=_env(sb))
        assert "videos 1" in retry.stdout and len(sb.records()["submits"]) == 1
    finally:
        sb.stop()
    assert len(_records(out)[0]["tasks"]) == 2  # both tasks kept in the ledger


def test_unknown_submit_is_left_for_a_person_and_settled_with_the_ledger_command(tmp_path):
    photos = _portraits(tmp_path / "in", n=1)
    out = tmp_path / "out"
    ledger = out / "ledger.sqlite"
    sb = _sandbox()
    try:
        with EmoClient(api_key=KEY, base_url=sb.api_base) as client:  # another client's task on the account
            from pipeline import check, upload_form
            from pipeline.payload import VideoInput, VideoSynthesisRequest

            r = check(SAMPLES / "astronaut.png")
            stranger = client.submit(VideoSynthesisRequest(input=VideoInput(
                image_url=client.upload(upload_form(r.loaded).data, filename="s.jpg"),
                audio_url=client.upload(SAMPLES / "speech.wav"), face_bbox=list(r.face_bbox),
                ext_bbox=list(r.ext_bbox)))).output.task_id
            sb.drop_next_submits(1)  # the batch's submit will make a task and lose the answer
        first = _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.1",
                       env=_env(sb))
        assert "unknown 1" in first.stdout and "Settle with: emo-prep ledger" in first.stderr
        dropped = sb.records()["dropped"][-1]
        status = subprocess.run([EMO_PREP, "ledger", "--ledger", str(ledger), "status"], capture_output=True,
                                text=True, timeout=60)
        assert json.loads(status.stdout)["unsettled_submits"] == 1
        job_id = next(r["job_id"] for r in _records(out) if r["state"] == "unknown")
        assert stranger in next(r["last_error"] for r in _records(out) if r["state"] == "unknown")
        settle = subprocess.run([EMO_PREP, "ledger", "--ledger", str(ledger), "settle", job_id, "--task", dropped],
                                capture_output=True, text=True, timeout=60)
        assert settle.returncode == 0, settle.stderr
        second = _batch(str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.1",
                        env=_env(sb))
        assert "videos 1" in second.stdout and len(sb.records()["submits"]) == 2  # nothing resent
        show = subprocess.run([EMO_PREP, "ledger", "--ledger", str(ledger), "show", job_id], capture_output=True,
                              text=True, timeout=60)
        events = [e["what"] for e in json.loads(show.stdout)["events"]]
        assert "submit unknown" in events and "task created (settled)" in events and "downloaded" in events
        export = subprocess.run([EMO_PREP, "ledger", "--ledger", str(ledger), "export"], capture_output=True,
                                text=True, timeout=60)
        assert len(export.stdout.splitlines()) == 3
    finally:
        sb.stop()
