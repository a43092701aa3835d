"""The batch's crash-safety order and its submit decisions, observed from outside: a real
`emo-prep batch` process against the sandbox, killed (SIGKILL, by itself) right after a named
step ($EMO_PREP_FAULT_AFTER, config.ENV_FAULT_AFTER), then the ledger file and the sandbox's
records are read. No timer races the process: each kill lands exactly where the test says."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import av
from conftest import EMO_PREP
from test_batch import SPEECH, _env, _portraits, _records, _sandbox

from pipeline.batch import QUEUE_AHEAD, UPLOAD_REUSE_MARGIN_S
from pipeline.config import ENV_FAULT_AFTER


def _batch(args: list[str], env: dict[str, str], fault: str | None = None) -> int:
    """Run the batch to its end, or until it kills itself after `fault`; returns its exit
    status (-9 when killed). Its process group (check workers) goes with it."""
    env = {**env, ENV_FAULT_AFTER: fault} if fault else {k: v for k, v in env.items() if k != ENV_FAULT_AFTER}
    proc = subprocess.Popen([EMO_PREP, "batch", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _db(ledger: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def test_the_submit_is_written_down_before_it_is_sent(tmp_path):
    photos = _portraits(tmp_path / "in", n=1)
    out = tmp_path / "out"
    args = [str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.1"]
    sb = _sandbox()
    try:
        assert _batch(args, _env(sb), fault="submit recorded") == -signal.SIGKILL
        assert sb.records()["submits"] == []  # killed after the write: nothing was sent yet
        with _db(out / "ledger.sqlite") as db:
            (submit,) = db.execute("SELECT * FROM submits").fetchall()
            job = db.execute("SELECT state FROM jobs WHERE job_id=?", (submit["job_id"],)).fetchone()
        assert submit["outcome"] == "pending" and json.loads(submit["request_json"])["model"] == "emo-v1"
        assert job["state"] == "submitting"
        # the next run cannot know whether it left: no task in the list, so it is left for a person
        assert _batch(args, _env(sb)) == 1
        assert sb.records()["submits"] == []  # never resent blindly
        assert [r["state"] for r in _records(out) if r["ok"]] == ["unknown"]
        settled = subprocess.run([EMO_PREP, "ledger", "--ledger", str(out / "ledger.sqlite"), "settle",
                                  submit["job_id"], "--no-task"], capture_output=True, text=True, timeout=60)
        assert settled.returncode == 0, settled.stderr
        assert _batch(args, _env(sb)) == 1  # 1: the two rejects of _portraits
        assert len(sb.records()["submits"]) == 1
        assert [r["state"] for r in _records(out) if r["ok"]] == ["downloaded"]
    finally:
        sb.stop()


def test_the_video_is_complete_before_the_job_is_marked_done(tmp_path):
    photos = _portraits(tmp_path / "in", n=1)
    out = tmp_path / "out"
    args = [str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.1"]
    sb = _sandbox()
    try:
        assert _batch(args, _env(sb), fault="downloaded") == -signal.SIGKILL
        with _db(out / "ledger.sqlite") as db:
            (task,) = db.execute("SELECT * FROM tasks").fetchall()
            job = db.execute("SELECT state FROM jobs WHERE job_id=?", (task["job_id"],)).fetchone()
        assert job["state"] == "downloaded" and task["downloaded_at"]
        video = Path(task["output_path"])
        assert video.stat().st_size == task["bytes"] > 10_000  # on disk, whole, when the job says done
        with av.open(str(video)) as container:
            assert abs(float(container.duration) / 1e6 - 7.35) < 0.3 and container.streams.audio
        assert not list(out.rglob("*.part"))
    finally:
        sb.stop()


def test_killed_after_each_step_then_resumed_loses_nothing_and_duplicates_nothing(tmp_path):
    photos = _portraits(tmp_path / "in", n=4)
    out = tmp_path / "out"
    ledger = out / "ledger.sqlite"
    args = [str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--workers", "2", "--poll-interval", "0.1"]
    sb = _sandbox(running_s=1.0)
    try:
        env = _env(sb)
        steps = ["check recorded", "upload recorded", "submit answered", "task recorded", "download started"]
        killed = {step: _batch(args, env, fault=step) for step in steps}
        with _db(ledger) as db:
            adopted = db.execute("SELECT COUNT(*) FROM events WHERE what = 'task created (found in task list)'"
                                 ).fetchone()[0]
        assert _batch(args, env) == 1  # the two rejects
        records = sb.records()
    finally:
        sb.stop()
    assert killed == {step: -signal.SIGKILL for step in steps}
    # "submit answered": the task was made and its answer lost with the process; the next run
    # found it in the task list instead of sending again
    assert adopted == 1
    made = [s["task_id"] for s in records["submits"]]
    assert len(made) == len(set(made)) == 4  # one task per passing photo: nothing sent twice
    with sqlite3.connect(ledger) as db:
        tasks = {r[0]: (r[1], r[2]) for r in db.execute("SELECT task_id, output_path, bytes FROM tasks")}
        states = [r[0] for r in db.execute("SELECT state FROM jobs WHERE verdict = 'pass'")]
    assert set(tasks) == set(made) and states == ["downloaded"] * 4  # no task id lost
    for path, size in tasks.values():
        assert Path(path).stat().st_size == size
    assert len(list((out / "videos").iterdir())) == 4 and not list(out.rglob("*.part"))
    assert set(records["downloads"]) == set(made) and sum(records["downloads"].values()) == 4


def test_no_more_than_queue_ahead_tasks_wait_behind_the_running_one(tmp_path):
    photos = _portraits(tmp_path / "in", n=5)
    out = tmp_path / "out"
    # each task takes 2.5 s from its submit to its end, one at a time: the third submit (three
    # photos prepared, uploaded and paced at 5 a second) comes well before the first one ends
    sb = _sandbox(pending_s=0.5, running_s=2.0)
    try:
        _batch([str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.1"], _env(sb))
        records = sb.records()
    finally:
        sb.stop()
    finished = {tid: next(t for status, t in task["history"] if status == "SUCCEEDED")
                for tid, task in records["tasks"].items()}
    assert len(finished) == 5
    ahead = [sum(1 for other in records["submits"] if other["at"] < s["at"] and finished[other["task_id"]] > s["at"])
             for s in records["submits"]]
    # when each task was submitted, this many earlier tasks were still unfinished: at most
    # QUEUE_AHEAD (2), and the batch does keep that many queued
    assert max(ahead) == QUEUE_AHEAD == 2, ahead


def test_an_upload_about_to_expire_is_made_again(tmp_path):
    photos = _portraits(tmp_path / "in", n=1)
    out = tmp_path / "out"
    args = [str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--poll-interval", "0.1"]
    sb = _sandbox()

    def expire_in(seconds: float) -> None:
        with sqlite3.connect(out / "ledger.sqlite") as db:
            db.execute("UPDATE uploads SET expires_at = ?", (time.time() + seconds,))

    try:
        _batch(args, _env(sb))
        assert sb.records()["uploads"] == 2  # the photo and the audio
        expire_in(UPLOAD_REUSE_MARGIN_S + 600)  # 6 h 10 min of life left: reused
        _batch([*args, "--force"], _env(sb))
        assert sb.records()["uploads"] == 2 and len(sb.records()["submits"]) == 2
        expire_in(UPLOAD_REUSE_MARGIN_S - 600)  # 5 h 50 min left: too close, uploaded again
        _batch([*args, "--force"], _env(sb))
        assert sb.records()["uploads"] == 4 and len(sb.records()["submits"]) == 3
    finally:
        sb.stop()
