"""The ledger's state transitions on a real SQLite file: uploads reused only with life left,
the submit's outcomes, settling, downloads, and what counts against the budget."""

from __future__ import annotations

import time

import pytest

from pipeline.ledger import Ledger


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        for job_id, cost in (("j1", 0.5), ("j2", 0.25)):
            led.add_job(job_id, 0, f"{job_id}.jpg", f"sha-{job_id}", "a.wav", "sha-a", "1:1", "normal")
            led.record_check(job_id, verdict="pass", report={"findings": []}, audio=None, cost_estimate=cost,
                             thumbnail=None)
        yield led


def state(ledger: Ledger, job_id: str = "j1") -> str:
    return ledger.job(job_id).state


def outcomes(ledger: Ledger, job_id: str = "j1") -> list[tuple]:
    return [(s["outcome"], s["task_id"], s["detail"]) for s in ledger.submits(job_id)]


def test_an_upload_is_reused_only_while_it_has_the_margin_left(ledger):
    now = time.time()
    ledger.record_upload("sha-x", "emo-v1", "oss://x", now + 3600)
    assert ledger.upload_url("sha-x", "emo-v1", valid_for_s=3000) == "oss://x"
    assert ledger.upload_url("sha-x", "emo-v1", valid_for_s=3700) is None
    assert ledger.upload_url("sha-x", "emo-detect-v1", valid_for_s=0) is None  # bound to its model
    assert ledger.upload_url("sha-y", "emo-v1", valid_for_s=0) is None
    ledger.record_upload("sha-x", "emo-v1", "oss://x2", now + 7200)  # uploaded again: the new one counts
    assert ledger.upload_url("sha-x", "emo-v1", valid_for_s=3700) == "oss://x2"
    ledger.forget_upload("sha-x", "emo-v1")
    assert ledger.upload_url("sha-x", "emo-v1", valid_for_s=0) is None


def test_begin_submit_writes_the_request_and_moves_the_job(ledger):
    sid = ledger.begin_submit("j1", {"model": "emo-v1", "k": [1, 2]}, "sha-req")
    (row,) = ledger.submits("j1")
    assert row["submit_id"] == sid and row["outcome"] == "pending" and row["request_sha256"] == "sha-req"
    assert row["request_json"] == '{"model": "emo-v1", "k": [1, 2]}' and row["sent_at"] <= time.time()
    assert state(ledger) == "submitting" and state(ledger, "j2") == "checked"
    assert [s["submit_id"] for s in ledger.unsettled_submits()] == [sid]
    assert ledger.events("j1")[-1]["what"] == "submit sent"


def test_a_created_task_settles_the_submit(ledger):
    sid = ledger.begin_submit("j1", {}, "x")
    ledger.submit_created(sid, "t-1", cost_estimate=0.5)
    assert outcomes(ledger) == [("created", "t-1", "answer")] and state(ledger) == "submitted"
    (task,) = ledger.tasks("j1")
    assert (task["task_id"], task["status"], task["cost_estimate"]) == ("t-1", "PENDING", 0.5)
    assert ledger.unsettled_submits() == [] and ledger.known_task_ids() == {"t-1"}
    assert ledger.events("j1")[-1]["what"] == "task created (answer)"
    sid2 = ledger.begin_submit("j2", {}, "y")
    ledger.submit_created(sid2, "t-2", cost_estimate=None, status="RUNNING", how="found in task list")
    assert outcomes(ledger, "j2") == [("created", "t-2", "found in task list")]
    assert ledger.tasks("j2")[0]["status"] == "RUNNING"


def test_a_refused_submit_fails_the_job_with_the_reason(ledger):
    sid = ledger.begin_submit("j1", {}, "x")
    ledger.submit_refused(sid, "HTTP 400 InvalidParameter: bad box")
    assert outcomes(ledger) == [("refused", None, "HTTP 400 InvalidParameter: bad box")]
    job = ledger.job("j1")
    assert (job.state, job.last_error) == ("failed", "HTTP 400 InvalidParameter: bad box")
    assert ledger.unsettled_submits() == [] and state(ledger, "j2") == "checked"


def test_an_unknown_submit_waits_for_a_person_and_never_goes_back(ledger):
    sid = ledger.begin_submit("j1", {}, "x")
    ledger.submit_unknown(sid, "no answer; settle with ...")
    assert outcomes(ledger) == [("unknown", None, "no answer; settle with ...")]
    assert (ledger.job("j1").state, ledger.job("j1").last_error) == ("unknown", "no answer; settle with ...")
    assert [s["outcome"] for s in ledger.unsettled_submits()] == ["unknown"]
    ledger.submit_unknown(sid, "still no answer")  # a second reconciliation updates the detail
    assert outcomes(ledger) == [("unknown", None, "still no answer")]
    # one that has its task id (found meanwhile) never goes back to unknown
    ledger.submit_created(sid, "t-1", cost_estimate=0.5)
    ledger.submit_unknown(sid, "late")
    assert outcomes(ledger) == [("created", "t-1", "answer")] and state(ledger) == "submitted"


def test_settling_with_a_task_or_none(ledger):
    first = ledger.begin_submit("j1", {}, "x")
    second = ledger.begin_submit("j1", {}, "x")
    ledger.submit_unknown(second, "no answer")
    ledger.settle("j1", "t-9")
    assert outcomes(ledger) == [("settled", None, "superseded"), ("created", "t-9", "settled")]
    assert ledger.tasks("j1")[0]["cost_estimate"] == 0.5 and state(ledger) == "submitted"
    assert first < second
    sid = ledger.begin_submit("j2", {}, "y")
    ledger.submit_unknown(sid, "no answer")
    ledger.settle("j2", None)
    assert outcomes(ledger, "j2") == [("settled", None, "no task")]
    assert (ledger.job("j2").state, ledger.job("j2").last_error) == ("checked", None)
    assert ledger.events("j2")[-1]["what"] == "settled: no task" and ledger.unsettled_submits() == []
    with pytest.raises(ValueError, match="job j2 has no unsettled submit"):
        ledger.settle("j2", None)


def test_a_download_marks_the_job_done_and_a_failure_keeps_a_done_job(ledger):
    ledger.submit_created(ledger.begin_submit("j1", {}, "x"), "t-1", cost_estimate=0.5)
    ledger.download_failed("t-1", "download_failed", "disk full")
    assert (ledger.job("j1").state, ledger.job("j1").last_error) == ("download_failed", "disk full")
    assert ledger.tasks("j1")[0]["last_error"] == "disk full"
    assert ledger.events("j1")[-1]["what"] == "download failed"
    ledger.mark_downloaded("t-1", "/out/v.mp4", 1234)
    task = ledger.tasks("j1")[0]
    assert (task["output_path"], task["bytes"]) == ("/out/v.mp4", 1234) and task["downloaded_at"] > 0
    assert state(ledger) == "downloaded" and ledger.events("j1")[-1]["what"] == "downloaded"
    ledger.download_failed("t-1", "expired", "gone")  # a later failure never undoes a video
    assert state(ledger) == "downloaded" and ledger.events("j1")[-1]["what"] == "expired"


def test_committed_cost_counts_what_may_be_charged(ledger):
    assert ledger.committed_cost() == 0.0
    s1 = ledger.begin_submit("j1", {}, "x")
    assert ledger.committed_cost() == 0.5  # sent, outcome not known: may be a paid task
    ledger.submit_unknown(s1, "?")
    assert ledger.committed_cost() == 0.5
    ledger.submit_created(s1, "t-1", cost_estimate=0.5)
    assert ledger.committed_cost() == 0.5  # the task, not the submit, counts now
    s2 = ledger.begin_submit("j2", {}, "y")
    ledger.submit_refused(s2, "no")
    assert ledger.committed_cost() == 0.5  # refused: nothing made
    for status, counted in (("RUNNING", 0.5), ("SUCCEEDED", 0.5), ("FAILED", 0.0), ("CANCELED", 0.0),
                            ("UNKNOWN", 0.0)):
        ledger.update_task("t-1", status)
        assert ledger.committed_cost() == counted, status


def _event(ledger: Ledger, job_id: str = "j1") -> tuple:
    e = ledger.events(job_id)[-1]
    return e["what"], e["job_id"], e["task_id"], e["detail"]


def test_each_transition_leaves_an_event_saying_what_and_on_what(ledger):
    sid = ledger.begin_submit("j1", {}, "x")
    assert _event(ledger) == ("submit sent", "j1", None, f'{{"submit_id": {sid}}}')
    ledger.submit_created(sid, "t-1", cost_estimate=0.5)
    assert _event(ledger) == ("task created (answer)", "j1", "t-1", None)
    ledger.download_failed("t-1", "download_failed", "disk full")
    assert _event(ledger) == ("download failed", "j1", "t-1", '"disk full"')
    ledger.mark_downloaded("t-1", "/out/v.mp4", 1234)
    assert _event(ledger) == ("downloaded", "j1", "t-1", '{"path": "/out/v.mp4", "bytes": 1234}')
    sid2 = ledger.begin_submit("j2", {}, "y")
    ledger.submit_refused(sid2, "HTTP 400 bad")
    assert _event(ledger, "j2") == ("submit refused", "j2", None, '"HTTP 400 bad"')
    sid3 = ledger.begin_submit("j2", {}, "y")
    ledger.submit_unknown(sid3, "no answer")
    assert _event(ledger, "j2") == ("submit unknown", "j2", None, '"no answer"')


def test_settling_supersedes_every_earlier_unsettled_submit(ledger):
    ids = [ledger.begin_submit("j1", {}, "x") for _ in range(3)]
    ledger.settle("j1", None)
    assert [(s["submit_id"], s["outcome"], s["detail"]) for s in ledger.submits("j1")] == [
        (ids[0], "settled", "superseded"), (ids[1], "settled", "superseded"), (ids[2], "settled", "no task")]
