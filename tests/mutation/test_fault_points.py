"""The ledger's fault points: each step kills the process right after its write, and only when
$EMO_PREP_FAULT_AFTER names that step (tests/test_batch_order.py uses them on whole batches)."""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest

from pipeline.config import ENV_FAULT_AFTER
from pipeline.ledger import Ledger

#: Each step's name and the call that ends with it (in this order a job has what each needs).
STEPS = [
    ("check recorded", lambda led: led.record_check("j", verdict="pass", report={"findings": []}, audio=None,
                                                    cost_estimate=0.5, thumbnail=None)),
    ("upload recorded", lambda led: led.record_upload("sha-j", "emo-v1", "oss://j", 1e12)),
    ("submit recorded", lambda led: led.begin_submit("j", {}, "x")),
    ("task recorded", lambda led: led.submit_created(1, "t-1", cost_estimate=0.5)),
    ("download started", lambda led: led.download_started("t-1", "/v.mp4")),
    ("downloaded", lambda led: led.mark_downloaded("t-1", "/v.mp4", 10)),
]


def _in_child(path, call, fault: str | None) -> int:
    """Run `call` on its own Ledger in a forked child with $EMO_PREP_FAULT_AFTER set to `fault`;
    returns the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            if fault is not None:
                os.environ[ENV_FAULT_AFTER] = fault
            with Ledger(path) as led:
                call(led)
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def test_each_step_kills_the_process_after_its_write_when_named(tmp_path):
    path = tmp_path / "l.sqlite"
    with Ledger(path) as ledger:
        ledger.add_job("j", 0, "j.jpg", "sha-j", None, None, "1:1", "normal")
        names = [name for name, _ in STEPS]
        for name, call in STEPS:
            # named: the child dies by SIGKILL, and what it wrote is on disk
            status = _in_child(path, call, name)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, name
            with sqlite3.connect(path) as db:
                last = db.execute("SELECT what FROM events ORDER BY event_id DESC LIMIT 1").fetchone()[0]
            assert last == {"check recorded": "check pass", "upload recorded": "uploaded",
                            "submit recorded": "submit sent", "task recorded": "task created (answer)",
                            "download started": "download started", "downloaded": "downloaded"}[name]
            # another step named, or none: it lives
            other = names[(names.index(name) + 1) % len(names)]
            for fault in (other, None):
                status = _in_child(path, call, fault)
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (name, fault)
            call(ledger)  # and in this process, with no fault named


@pytest.fixture(autouse=True)
def _no_fault_named(monkeypatch):
    monkeypatch.delenv(ENV_FAULT_AFTER, raising=False)
