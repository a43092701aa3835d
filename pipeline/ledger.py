"""The job ledger: one SQLite file that records every job, upload, submit and task, so that
no paid task is ever lost or made twice, whatever happens to the process.

WAL journal, one transaction per state change (`Ledger.atomic`), schema versioned by an
ordered list of migrations. A submit is written as `pending` *before* the request is sent;
only the answer's task id turns it into `created`. A `pending` or `unknown` submit found on
resume is reconciled through the task list, or left for a person to settle. The API key is
never stored.

Tables: jobs (one per photo + audio + ratio + style, keyed by their content), uploads
(oss:// URLs by content hash and model, with expiry), audio (checked clips), submits (every
attempt), tasks (every task id ever created), events (timestamped history).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ENV_FAULT_AFTER, LEDGER_BUSY_TIMEOUT_S
from .errors import LedgerLockedError

__all__ = ["Ledger", "Job", "job_key", "fault_point", "LEDGER_SCHEMA_VERSION"]

_MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,          -- sha256 of photo, audio, ratio and style (content key)
        row INTEGER NOT NULL,             -- position in the input, for stable ordering
        photo_path TEXT NOT NULL, photo_sha256 TEXT,
        audio_path TEXT, audio_sha256 TEXT,
        ratio TEXT NOT NULL, style TEXT NOT NULL,
        state TEXT NOT NULL,              -- new, checked, rejected, ready, submitted, unknown, succeeded,
                                          -- downloaded, failed, download_failed, expired
        verdict TEXT,                     -- pass | reject
        report_json TEXT,                 -- the check JSON contract of the photo
        audio_json TEXT,
        face_bbox TEXT, ext_bbox TEXT,
        cost_estimate REAL,
        thumbnail TEXT,                   -- path of the preview picture
        last_error TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE uploads (
        sha256 TEXT NOT NULL, model TEXT NOT NULL, url TEXT NOT NULL,
        uploaded_at REAL NOT NULL, expires_at REAL NOT NULL,
        PRIMARY KEY (sha256, model)
    );
    CREATE TABLE submits (
        submit_id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL REFERENCES jobs(job_id),
        request_json TEXT NOT NULL, request_sha256 TEXT NOT NULL,
        sent_at REAL NOT NULL,
        outcome TEXT NOT NULL,            -- pending (sent, no answer yet), created, refused, unknown, settled
        task_id TEXT, detail TEXT
    );
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(job_id),
        status TEXT NOT NULL,
        cost_estimate REAL,
        usage_json TEXT, video_url TEXT,
        output_path TEXT, downloaded_at REAL, bytes INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE events (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL, job_id TEXT, task_id TEXT, what TEXT NOT NULL, detail TEXT
    );
    CREATE INDEX tasks_by_job ON tasks(job_id);
    CREATE INDEX submits_by_job ON submits(job_id);
    """,
]
LEDGER_SCHEMA_VERSION = len(_MIGRATIONS)


def fault_point(step: str) -> None:
    """Tests only: SIGKILL this process right after `step` when $EMO_PREP_FAULT_AFTER names it
    (config.ENV_FAULT_AFTER), to check the crash-safety order deterministically."""
    if os.environ.get(ENV_FAULT_AFTER) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def job_key(photo_sha256: str, audio_sha256: str | None, ratio: str, style: str) -> str:
    """Same photo, audio and parameters -> same job (idempotent by content)."""
    import hashlib

    text = "\n".join([photo_sha256, audio_sha256 or "-", ratio, style])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Job:
    job_id: str
    row: int
    photo_path: str
    audio_path: str | None
    ratio: str
    style: str
    state: str
    verdict: str | None
    report: dict[str, Any] | None
    audio: dict[str, Any] | None
    face_bbox: list[int] | None
    ext_bbox: list[int] | None
    cost_estimate: float | None
    thumbnail: str | None
    last_error: str | None
    photo_sha256: str | None
    audio_sha256: str | None


def _lock_holder(fd: int) -> str:
    """Who holds a submit lock, from the record its holder wrote into the lock file."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["since"])))
        return f"pid {int(record['pid'])} on {record['host']}, since {since}"
    except (ValueError, KeyError, TypeError, OSError):
        return "a process that has not written its name yet"


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


class Ledger:
    """A ledger file; use as a context manager or call close()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=LEDGER_BUSY_TIMEOUT_S, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._wal_on()
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed on success, rolled back (and re-raised) on error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _wal_on(self) -> None:
        """Switch to WAL. The switch needs the file to itself and SQLite answers 'database is
        locked' at once (no busy wait) while another process opens it: retry until the timeout."""
        deadline = time.monotonic() + LEDGER_BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        """Each migration in its own write transaction, the version read inside it: processes
        opening a new ledger at once run every migration exactly once between them."""
        while True:
            with self.atomic() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > LEDGER_SCHEMA_VERSION:
                    raise RuntimeError(f"{self.path} has ledger schema {version}; this emo-prep knows up to "
                                       f"{LEDGER_SCHEMA_VERSION}: upgrade emo-prep")
                if version == LEDGER_SCHEMA_VERSION:
                    return
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={version + 1}")

    @contextlib.contextmanager
    def submit_lock(self, *, wait: bool = False, on_wait: Any = None) -> Iterator[None]:
        """Hold the ledger's one submit lock (an flock on FILE.lock) for the block.

        The kernel releases it when the process ends in any way, so a crash leaves nothing
        stale. When another process holds it: raise LedgerLockedError naming the holder, or
        with `wait` call `on_wait(holder)` and block until it is free.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                if not wait:
                    raise LedgerLockedError(
                        f"ledger {self.path} is in use by another submitting emo-prep ({holder}); wait for it "
                        f"to end, or pass --wait-lock to wait", holder=holder) from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the flock

    def _event(self, db: sqlite3.Connection, what: str, *, job_id: str | None = None,
               task_id: str | None = None, detail: Any = None) -> None:
        db.execute("INSERT INTO events (at, job_id, task_id, what, detail) VALUES (?, ?, ?, ?, ?)",
                   (time.time(), job_id, task_id, what, None if detail is None else json.dumps(detail)))

    # --- jobs ------------------------------------------------------------------------------
    def add_job(self, job_id: str, row: int, photo_path: str, photo_sha256: str | None, audio_path: str | None,
                audio_sha256: str | None, ratio: str, style: str) -> bool:
        """Record a job unless it exists; True when it is new."""
        now = time.time()
        with self.atomic() as db:
            exists = db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if exists:
                db.execute("UPDATE jobs SET row=?, photo_path=?, audio_path=? WHERE job_id=?",
                           (row, photo_path, audio_path, job_id))
                return False
            db.execute("INSERT INTO jobs (job_id, row, photo_path, photo_sha256, audio_path, audio_sha256, ratio,"
                       " style, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,'new',?,?)",
                       (job_id, row, photo_path, photo_sha256, audio_path, audio_sha256, ratio, style, now, now))
            self._event(db, "job added", job_id=job_id, detail={"photo": photo_path, "audio": audio_path})
            return True

    def record_check(self, job_id: str, *, verdict: str, report: dict[str, Any], audio: dict[str, Any] | None,
                     cost_estimate: float | None, thumbnail: str | None) -> None:
        """The check's verdict of a new job (a job another process has checked meanwhile keeps its state)."""
        state = "checked" if verdict == "pass" else "rejected"
        with self.atomic() as db:
            if db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()[0] != "new":
                return
            db.execute("UPDATE jobs SET state=?, verdict=?, report_json=?, audio_json=?, face_bbox=?, ext_bbox=?,"
                       " cost_estimate=?, thumbnail=?, updated_at=? WHERE job_id=?",
                       (state, verdict, json.dumps(report, ensure_ascii=False),
                        None if audio is None else json.dumps(audio, ensure_ascii=False),
                        json.dumps(report.get("face_bbox")), json.dumps(report.get("ext_bbox")),
                        cost_estimate, thumbnail, time.time(), job_id))
            self._event(db, f"check {verdict}", job_id=job_id,
                        detail=[f["code"] for f in report.get("findings", []) if f["severity"] == "error"])
        fault_point("check recorded")

    def set_state(self, job_id: str, state: str, *, error: str | None = None) -> None:
        """Move a job to `state`; a downloaded job stays downloaded (only a new submit moves it)."""
        with self.atomic() as db:
            if db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()[0] == "downloaded":
                return
            db.execute("UPDATE jobs SET state=?, last_error=?, updated_at=? WHERE job_id=?",
                       (state, error, time.time(), job_id))
            self._event(db, f"job {state}", job_id=job_id, detail=error)

    def jobs(self) -> list[Job]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY row, job_id").fetchall()
        return [self._job(r) for r in rows]

    def job(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return self._job(row) if row else None

    @staticmethod
    def _job(r: sqlite3.Row) -> Job:
        return Job(job_id=r["job_id"], row=r["row"], photo_path=r["photo_path"], audio_path=r["audio_path"],
                   ratio=r["ratio"], style=r["style"], state=r["state"], verdict=r["verdict"],
                   report=_loads(r["report_json"]), audio=_loads(r["audio_json"]),
                   face_bbox=_loads(r["face_bbox"]), ext_bbox=_loads(r["ext_bbox"]),
                   cost_estimate=r["cost_estimate"], thumbnail=r["thumbnail"], last_error=r["last_error"],
                   photo_sha256=r["photo_sha256"], audio_sha256=r["audio_sha256"])

    # --- uploads ---------------------------------------------------------------------------
    def upload_url(self, sha256: str, model: str, *, valid_for_s: float) -> str | None:
        """A recorded oss:// URL for this content and model that stays valid `valid_for_s` more."""
        row = self._db.execute("SELECT url, expires_at FROM uploads WHERE sha256=? AND model=?",
                               (sha256, model)).fetchone()
        return row["url"] if row and row["expires_at"] > time.time() + valid_for_s else None

    def record_upload(self, sha256: str, model: str, url: str, expires_at: float) -> None:
        with self.atomic() as db:
            db.execute("INSERT OR REPLACE INTO uploads (sha256, model, url, uploaded_at, expires_at)"
                       " VALUES (?,?,?,?,?)", (sha256, model, url, time.time(), expires_at))
            self._event(db, "uploaded", detail={"sha256": sha256, "model": model})
        fault_point("upload recorded")

    def forget_upload(self, sha256: str, model: str) -> None:
        with self.atomic() as db:
            db.execute("DELETE FROM uploads WHERE sha256=? AND model=?", (sha256, model))
            self._event(db, "upload forgotten", detail={"sha256": sha256, "model": model})

    # --- submits and tasks -----------------------------------------------------------------
    def begin_submit(self, job_id: str, request: dict[str, Any], request_sha256: str) -> int:
        """Write the submit down before sending it; returns its id."""
        with self.atomic() as db:
            cur = db.execute("INSERT INTO submits (job_id, request_json, request_sha256, sent_at, outcome)"
                             " VALUES (?,?,?,?, 'pending')",
                             (job_id, json.dumps(request), request_sha256, time.time()))
            db.execute("UPDATE jobs SET state='submitting', updated_at=? WHERE job_id=?", (time.time(), job_id))
            self._event(db, "submit sent", job_id=job_id, detail={"submit_id": cur.lastrowid})
            submit_id = int(cur.lastrowid)
        fault_point("submit recorded")
        return submit_id

    def submit_created(self, submit_id: int, task_id: str, *, cost_estimate: float | None,
                       status: str = "PENDING", how: str = "answer") -> None:
        """The submit made `task_id` (from its answer, or found by reconciliation)."""
        now = time.time()
        with self.atomic() as db:
            job_id = db.execute("SELECT job_id FROM submits WHERE submit_id=?", (submit_id,)).fetchone()[0]
            db.execute("UPDATE submits SET outcome='created', task_id=?, detail=? WHERE submit_id=?",
                       (task_id, how, submit_id))
            db.execute("INSERT OR IGNORE INTO tasks (task_id, job_id, status, cost_estimate, created_at, updated_at)"
                       " VALUES (?,?,?,?,?,?)", (task_id, job_id, status, cost_estimate, now, now))
            db.execute("UPDATE jobs SET state='submitted', last_error=NULL, updated_at=? WHERE job_id=?",
                       (now, job_id))
            self._event(db, f"task created ({how})", job_id=job_id, task_id=task_id)
        fault_point("task recorded")

    def submit_refused(self, submit_id: int, error: str) -> None:
        """The service answered the submit with an error: no task was made."""
        with self.atomic() as db:
            job_id = db.execute("SELECT job_id FROM submits WHERE submit_id=?", (submit_id,)).fetchone()[0]
            db.execute("UPDATE submits SET outcome='refused', detail=? WHERE submit_id=? AND outcome='pending'",
                       (error, submit_id))
            db.execute("UPDATE jobs SET state='failed', last_error=?, updated_at=? WHERE job_id=?"
                       " AND state='submitting'", (error, time.time(), job_id))
            self._event(db, "submit refused", job_id=job_id, detail=error)

    def submit_unknown(self, submit_id: int, detail: str) -> None:
        """Sent, no answer, not found in the task list: a person must settle it. A submit that
        has its task id, and a job that has moved on (a task, a video), never go back."""
        with self.atomic() as db:
            job_id = db.execute("SELECT job_id FROM submits WHERE submit_id=?", (submit_id,)).fetchone()[0]
            db.execute("UPDATE submits SET outcome='unknown', detail=? WHERE submit_id=?"
                       " AND outcome IN ('pending','unknown') AND task_id IS NULL", (detail, submit_id))
            db.execute("UPDATE jobs SET state='unknown', last_error=?, updated_at=? WHERE job_id=?"
                       " AND state IN ('submitting','unknown')", (detail, time.time(), job_id))
            self._event(db, "submit unknown", job_id=job_id, detail=detail)

    def settle(self, job_id: str, task_id: str | None) -> None:
        """A person's word on an unknown submit: it made `task_id`, or (None) it made nothing."""
        rows = self._db.execute("SELECT submit_id FROM submits WHERE job_id=? AND outcome IN ('pending','unknown')",
                                (job_id,)).fetchall()
        if not rows:
            raise ValueError(f"job {job_id} has no unsettled submit")
        for row in rows[:-1]:
            with self.atomic() as db:
                db.execute("UPDATE submits SET outcome='settled', detail='superseded' WHERE submit_id=?", (row[0],))
        last = rows[-1][0]
        if task_id:
            job = self.job(job_id)
            self.submit_created(last, task_id, cost_estimate=job.cost_estimate if job else None, how="settled")
        else:
            with self.atomic() as db:
                db.execute("UPDATE submits SET outcome='settled', detail='no task' WHERE submit_id=?", (last,))
                db.execute("UPDATE jobs SET state='checked', last_error=NULL, updated_at=? WHERE job_id=?",
                           (time.time(), job_id))
                self._event(db, "settled: no task", job_id=job_id)

    def unsettled_submits(self) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM submits WHERE outcome IN ('pending','unknown') ORDER BY submit_id"
                                ).fetchall()

    def known_task_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT task_id FROM tasks")}

    def update_task(self, task_id: str, status: str, *, usage: dict[str, Any] | None = None,
                    video_url: str | None = None, error: str | None = None) -> None:
        with self.atomic() as db:
            old = db.execute("SELECT status, job_id FROM tasks WHERE task_id=?", (task_id,)).fetchone()
            db.execute("UPDATE tasks SET status=?, usage_json=COALESCE(?, usage_json),"
                       " video_url=COALESCE(?, video_url), last_error=COALESCE(?, last_error), updated_at=?"
                       " WHERE task_id=?", (status, None if usage is None else json.dumps(usage), video_url, error,
                                            time.time(), task_id))
            if old and old["status"] != status:
                state = {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELED": "failed",
                         "UNKNOWN": "failed"}.get(status)
                if state:  # a video already downloaded stays the job's result
                    db.execute("UPDATE jobs SET state=?, last_error=?, updated_at=? WHERE job_id=?"
                               " AND state != 'downloaded'", (state, error, time.time(), old["job_id"]))
                self._event(db, f"task {status}", job_id=old["job_id"], task_id=task_id, detail=error)

    def download_started(self, task_id: str, path: str) -> None:
        with self.atomic() as db:
            job_id = db.execute("SELECT job_id FROM tasks WHERE task_id=?", (task_id,)).fetchone()[0]
            self._event(db, "download started", job_id=job_id, task_id=task_id, detail={"path": path})
        fault_point("download started")

    def mark_downloaded(self, task_id: str, path: str, size: int) -> None:
        with self.atomic() as db:
            job_id = db.execute("SELECT job_id FROM tasks WHERE task_id=?", (task_id,)).fetchone()[0]
            db.execute("UPDATE tasks SET output_path=?, downloaded_at=?, bytes=?, updated_at=? WHERE task_id=?",
                       (path, time.time(), size, time.time(), task_id))
            db.execute("UPDATE jobs SET state='downloaded', updated_at=? WHERE job_id=?", (time.time(), job_id))
            self._event(db, "downloaded", job_id=job_id, task_id=task_id, detail={"path": path, "bytes": size})
        fault_point("downloaded")

    def download_failed(self, task_id: str, state: str, error: str) -> None:
        """The video could not be fetched: the job moves to `state` (download_failed: a later
        run tries again; expired: the service no longer has it), with the reason."""
        with self.atomic() as db:
            job_id = db.execute("SELECT job_id FROM tasks WHERE task_id=?", (task_id,)).fetchone()[0]
            db.execute("UPDATE tasks SET last_error=?, updated_at=? WHERE task_id=?", (error, time.time(), task_id))
            db.execute("UPDATE jobs SET state=?, last_error=?, updated_at=? WHERE job_id=? AND state != 'downloaded'",
                       (state, error, time.time(), job_id))
            self._event(db, state.replace("_", " "), job_id=job_id, task_id=task_id, detail=error)

    def tasks(self, job_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM tasks" + (" WHERE job_id=?" if job_id else "") + " ORDER BY created_at"
        rows = self._db.execute(query, (job_id,) if job_id else ()).fetchall()
        return [{**dict(r), "usage": _loads(r["usage_json"])} for r in rows]

    def committed_cost(self) -> float:
        """Estimated CNY of every task that may be charged (all but FAILED / CANCELED / UNKNOWN),
        plus submits whose outcome is not known yet."""
        tasks = self._db.execute("SELECT COALESCE(SUM(cost_estimate), 0) FROM tasks WHERE status NOT IN"
                                 " ('FAILED','CANCELED','UNKNOWN')").fetchone()[0]
        open_ = self._db.execute("SELECT COALESCE(SUM(j.cost_estimate), 0) FROM submits s JOIN jobs j USING (job_id)"
                                 " WHERE s.outcome IN ('pending','unknown')").fetchone()[0]
        return float(tasks) + float(open_)

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM events" + (" WHERE job_id=?" if job_id else "") + " ORDER BY event_id"
        return [dict(r) for r in self._db.execute(query, (job_id,) if job_id else ()).fetchall()]

    def submits(self, job_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM submits" + (" WHERE job_id=?" if job_id else "") + " ORDER BY submit_id"
        return [dict(r) for r in self._db.execute(query, (job_id,) if job_id else ()).fetchall()]

    def counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
