"""The ledger on real SQLite files: transactions, migrations, the submit write-ahead."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.ledger import LEDGER_SCHEMA_VERSION, Ledger, job_key


def test_atomic_rolls_back_and_reraises(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.add_job("j1", 0, "a.jpg", "sha-a", None, None, "1:1", "normal")
        with pytest.raises(RuntimeError, match="boom"):
            with ledger.atomic() as db:
                db.execute("UPDATE jobs SET state='downloaded' WHERE job_id='j1'")
                raise RuntimeError("boom")
        assert ledger.job("j1").state == "new"


def test_schema_is_versioned_and_wal_is_on(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LEDGER_SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version={LEDGER_SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="upgrade emo-prep"):
        Ledger(path)


def test_a_submit_is_written_before_it_is_sent_and_counts_against_the_budget(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        key = job_key("sha-a", "sha-b", "1:1", "normal")
        assert ledger.add_job(key, 0, "a.jpg", "sha-a", "b.wav", "sha-b", "1:1", "normal") is True
        assert ledger.add_job(key, 0, "a.jpg", "sha-a", "b.wav", "sha-b", "1:1", "normal") is False
        ledger.record_check(key, verdict="pass", report={"findings": [], "face_bbox": [1, 1, 2, 2],
                                                         "ext_bbox": [0, 0, 3, 3]}, audio=None,
                            cost_estimate=0.5, thumbnail=None)
        submit = ledger.begin_submit(key, {"model": "emo-v1"}, "abc")
        assert [s["outcome"] for s in ledger.unsettled_submits()] == ["pending"]
        assert ledger.committed_cost() == pytest.approx(0.5)  # an open submit may be a paid task
        ledger.submit_created(submit, "task-1", cost_estimate=0.5)
        ledger.update_task("task-1", "FAILED", error="InternalError.Algo")
        assert ledger.committed_cost() == 0.0 and ledger.job(key).state == "failed"
        assert ledger.known_task_ids() == {"task-1"}
        whats = [e["what"] for e in ledger.events(key)]
        assert whats == ["job added", "check pass", "submit sent", "task created (answer)", "task FAILED"]


def test_settle_needs_an_unsettled_submit(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.add_job("j1", 0, "a.jpg", "sha-a", None, None, "1:1", "normal")
        with pytest.raises(ValueError, match="no unsettled submit"):
            ledger.settle("j1", None)
        submit = ledger.begin_submit("j1", {}, "x")
        ledger.submit_unknown(submit, "no answer")
        ledger.settle("j1", None)
        assert ledger.job("j1").state == "checked" and not ledger.unsettled_submits()
