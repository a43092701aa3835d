"""One submitting process per ledger: the submit lock (real processes, real flock, real SQLite),
the migration race of processes opening a new ledger at once, and states that never go back."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import EMO_PREP, ROOT
from test_batch import SPEECH, _env, _portraits, _sandbox

from pipeline.errors import LedgerLockedError
from pipeline.ledger import Ledger

_HOLD = textwrap.dedent("""
    import sys, time
    from pipeline.ledger import Ledger
    with Ledger(sys.argv[1]) as ledger, ledger.submit_lock():
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(ledger: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(ledger), str(seconds)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_submit_lock_names_its_holder_waits_and_is_free_after_a_crash(tmp_path):
    path = tmp_path / "ledger.sqlite"
    holder = _holder(path, 60)
    try:
        with Ledger(path) as ledger:
            with pytest.raises(LedgerLockedError, match=f"pid {holder.pid} on ") as caught:
                with ledger.submit_lock():
                    pass
            assert "--wait-lock" in str(caught.value)
            holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the flock with the process
            holder.communicate(timeout=30)
            with ledger.submit_lock():
                pass
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate(timeout=30)
    # waiting: blocks until the holder ends on its own, and says whom it waits for
    holder = _holder(path, 1.5)
    said: list[str] = []
    started = time.monotonic()
    with Ledger(path) as ledger, ledger.submit_lock(wait=True, on_wait=said.append):
        waited = time.monotonic() - started
    holder.communicate(timeout=30)
    assert waited > 0.5 and said and f"pid {holder.pid}" in said[0]


_OPEN = textwrap.dedent("""
    import os, sys, time
    from pipeline.ledger import Ledger
    print("ready", flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.001)
    Ledger(sys.argv[1]).close()
""")


def test_many_processes_opening_a_new_ledger_at_once_all_succeed(tmp_path):
    failures = []
    for trial in range(3):  # 8 processes, released together onto a file that does not exist yet
        path, go = tmp_path / f"l{trial}.sqlite", tmp_path / f"go{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(path), str(go)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(8)]
        assert all(proc.stdout.readline().strip() == "ready" for proc in procs)  # all imported
        go.touch()
        for proc in procs:
            err = proc.communicate(timeout=120)[1]
            if proc.returncode:
                failures.append(err.strip().splitlines()[-1])
        with Ledger(path) as ledger:
            assert ledger.counts() == {}
    assert failures == []


def test_states_never_go_back(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.add_job("j1", 0, "a.jpg", "sha-a", None, None, "1:1", "normal")
        ledger.record_check("j1", verdict="pass", report={"findings": []}, audio=None, cost_estimate=0.5,
                            thumbnail=None)
        first = ledger.begin_submit("j1", {}, "x")
        ledger.submit_created(first, "task-1", cost_estimate=0.5)
        ledger.submit_unknown(first, "a second process's reconciliation")  # has a task id: stays created
        assert ledger.submits("j1")[0]["outcome"] == "created" and ledger.job("j1").state == "submitted"
        ledger.update_task("task-1", "SUCCEEDED")
        ledger.download_started("task-1", "v.mp4")
        ledger.mark_downloaded("task-1", "v.mp4", 10)
        ledger.record_check("j1", verdict="reject", report={"findings": []}, audio=None, cost_estimate=None,
                            thumbnail=None)
        ledger.update_task("task-1", "UNKNOWN", error="expired")
        ledger.set_state("j1", "failed", error="late")
        assert ledger.job("j1").state == "downloaded" and ledger.job("j1").verdict == "pass"


def test_two_submitting_batches_on_one_ledger_submit_each_photo_once(tmp_path):
    photos = _portraits(tmp_path / "in", n=2)
    out = tmp_path / "out"
    args = [EMO_PREP, "batch", str(photos), "--audio", SPEECH, "--submit", "--out", str(out), "--workers", "1",
            "--poll-interval", "0.1", "--max-cost", "100"]
    sb = _sandbox(latency_s=0.3)
    try:
        env = _env(sb)
        first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lock = out / "ledger.sqlite.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert first.poll() is None  # the first still holds the lock
        waiting = subprocess.Popen([*args, "--wait-lock"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        first_out, first_err = first.communicate(timeout=300)
        wait_out, wait_err = waiting.communicate(timeout=300)
        submits = sb.records()["submits"]
    finally:
        sb.stop()
    assert second.returncode == 2 and f"pid {first.pid} on " in second.stderr, second.stderr
    assert "--wait-lock" in second.stderr and "Traceback" not in second.stderr
    assert "tasks 2, videos 2" in first_out, first_err
    assert "waiting for the other submitting emo-prep" in wait_err and "tasks 2, videos 2" in wait_out, wait_err
    assert len(submits) == 2  # every photo once between the three runs
