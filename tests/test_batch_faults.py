"""Batch --submit under faults, against the sandbox: a video that expired before its download,
an unwritable OUT/videos, a key the service refuses; and submit -o checked before paying."""

from __future__ import annotations

import subprocess

from conftest import EMO_PREP, SAMPLES
from test_batch import KEY, SPEECH, _env, _portraits, _records, _sandbox


def _args(photos, out) -> list[str]:
    return [EMO_PREP, "batch", str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--workers", "1",
            "--poll-interval", "0.1"]


def test_an_expired_video_is_asked_for_again_then_marked_expired_and_the_rest_goes_on(tmp_path):
    photos, out = _portraits(tmp_path / "in", n=2), tmp_path / "out"
    sb = _sandbox(result_ttl_s=0.0)  # every video answers 404 once its task has succeeded
    try:
        proc = subprocess.run(_args(photos, out), env=_env(sb), capture_output=True, text=True, timeout=300)
        records = sb.records()
    finally:
        sb.stop()
    assert proc.returncode == 1 and "tasks 2, videos 0, failed 2" in proc.stdout, proc.stderr
    assert proc.stderr.count("has expired") == 2 and "Traceback" not in proc.stderr
    done = [r for r in _records(out) if r["verdict"] == "pass"]
    assert [r["state"] for r in done] == ["expired", "expired"]
    assert all("404" in r["last_error"] for r in done)
    assert len(records["submits"]) == 2 and not records["downloads"]


def test_an_unwritable_videos_folder_fails_the_downloads_only_and_a_rerun_fetches_them(tmp_path):
    photos, out = _portraits(tmp_path / "in", n=2), tmp_path / "out"
    out.mkdir()
    (out / "videos").write_text("a file where the folder should be")
    sb = _sandbox()
    try:
        first = subprocess.run(_args(photos, out), env=_env(sb), capture_output=True, text=True, timeout=300)
        states = [r["state"] for r in _records(out) if r["verdict"] == "pass"]
        (out / "videos").unlink()
        second = subprocess.run(_args(photos, out), env=_env(sb), capture_output=True, text=True, timeout=300)
        records = sb.records()
    finally:
        sb.stop()
    assert first.returncode == 1 and "tasks 2, videos 0, failed 2" in first.stdout, first.stderr
    assert states == ["download_failed", "download_failed"] and first.stderr.count("cannot write") == 2
    assert "tasks 2, videos 2, failed 0" in second.stdout, second.stderr
    assert len(records["submits"]) == 2  # nothing paid twice
    assert len(list((out / "videos").glob("*.mp4"))) == 2


def test_a_refused_key_stops_the_batch_at_once_and_a_rerun_with_the_right_key_continues(tmp_path):
    photos, out = _portraits(tmp_path / "in", n=2), tmp_path / "out"
    sb = _sandbox()
    try:
        wrong = subprocess.run(_args(photos, out), env={**_env(sb), "DASHSCOPE_API_KEY": "sk-wrong"},
                               capture_output=True, text=True, timeout=300)
        pending = [r["state"] for r in _records(out) if r["verdict"] == "pass"]
        right = subprocess.run(_args(photos, out), env=_env(sb), capture_output=True, text=True, timeout=300)
        records = sb.records()
    finally:
        sb.stop()
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.count("stopping the batch: the service refuses this key or account") == 1
    assert wrong.stderr.count("HTTP 401") == 1 and "2 photo(s) not submitted" in wrong.stderr
    assert "sk-wrong" not in wrong.stderr + wrong.stdout
    assert pending == ["checked"] * 2  # not failed: the right key picks them up
    assert "tasks 2, videos 2, failed 0" in right.stdout, right.stderr
    assert len(records["submits"]) == 2


def test_submit_checks_that_it_can_write_the_video_before_it_pays(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    sb = _sandbox()
    try:
        proc = subprocess.run([EMO_PREP, "submit", str(SAMPLES / "astronaut.png"), SPEECH, "--wait", "-o",
                               str(tmp_path / "taken" / "out.mp4")], env=_env(sb), capture_output=True, text=True,
                              timeout=300)
        records = sb.records()
    finally:
        sb.stop()
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "choose another -o" in proc.stderr
    assert records["uploads"] == 0 and records["submits"] == []
    assert KEY not in proc.stderr
