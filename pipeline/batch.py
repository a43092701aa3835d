"""Batch: check a folder or manifest of photos in worker processes, then (optionally) upload,
submit, wait and download the passing ones, with every step in the ledger.

Running the same batch again continues where it stopped: checked jobs are not checked again,
valid uploads are reused, a job with a task id is never submitted again, a submit whose
answer was lost is looked up in the task list (or left `unknown` with the command that
settles it), and finished videos are downloaded as soon as they succeed.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RATIOS, STYLE_LEVELS, VIDEO_MODEL
from .findings import Finding
from .geometry import Geometry, resolve_geometry
from .ingest import IMAGE_SUFFIXES
from .ledger import Job, Ledger, fault_point, job_key

if TYPE_CHECKING:
    from .fix import FixResult

__all__ = ["BatchOptions", "BatchSummary", "Row", "read_rows", "run_batch", "fix_record", "upload_path",
           "SUBMITS_PER_SECOND", "QUEUE_AHEAD"]

#: The service takes at most 5 submits a second per account (spec section 4).
SUBMITS_PER_SECOND = 5
#: Tasks kept waiting ahead of the one that runs (one runs at a time per account): enough to
#: keep the account busy, few enough not to flood the queue.
QUEUE_AHEAD = 2
#: Service answers that are about the account, not the photo (spec section 6): stop the batch.
ACCOUNT_ERROR_CODES = ("Arrearage", "InvalidApiKey", "AccessDenied.Unpurchased", "Model.AccessDenied",
                       "Workspace.AccessDenied")
#: Photos in a row whose submit failed with 5xx/429 after all retries before the batch stops.
SERVICE_FAILURE_STREAK = 3
#: An oss:// upload lives 48 h (spec 5); reuse one only with this much life left.
UPLOAD_LIFETIME_S, UPLOAD_REUSE_MARGIN_S = 48 * 3600.0, 6 * 3600.0
_THUMB_WIDTH = 360


@dataclass(frozen=True)
class BatchOptions:
    input: str
    audio: str | None = None
    manifest: str | None = None
    ratio: str = "1:1"
    style: str = "normal"
    submit: bool = False
    workers: int = os.cpu_count() or 1
    ledger: str | None = None
    out: str = "emo-batch"
    max_cost: float | None = None
    retry_failed: bool = False
    force: bool = False
    poll_interval_s: float = 2.0
    geometry: Geometry | str | None = None
    """The box rules (a Geometry or a geometry file); None: $EMO_PREP_GEOMETRY, else the defaults."""
    fix: bool = False
    """Fix what an honest change can (pipeline.fix) and submit the fixed photo."""
    wait_lock: bool = False


@dataclass(frozen=True)
class Row:
    """One line of work: a photo, its audio and parameters, and what is wrong with the row."""

    row: int
    photo: str
    audio: str | None
    ratio: str
    style: str
    problem: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    jobs: int
    passed: int
    rejected: int
    reasons: dict[str, int]
    submitted: int
    downloaded: int
    unknown: int
    failed: int
    cost_cny: float
    stopped_by_budget: bool
    seconds: float
    fixed: int = 0
    """Passing jobs whose photo is a fixed copy of the source (batch --fix)."""


def read_rows(options: BatchOptions) -> list[Row]:
    """The rows of a folder (recursive, with --audio) or of a CSV / JSONL manifest."""
    manifest = options.manifest or (options.input if Path(options.input).suffix.lower() in (".csv", ".jsonl")
                                    else None)
    if manifest is None:
        folder = Path(options.input)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder, .csv or .jsonl manifest")
        photos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and not p.name.startswith("."))
        return [Row(i, str(p), options.audio, options.ratio, options.style) for i, p in enumerate(photos)]
    path = Path(manifest)
    base = path.parent
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        records: list[dict[str, Any] | None] = list(csv.DictReader(text.splitlines()))
    else:
        records = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            records.append(value if isinstance(value, dict) else None)
    rows = []
    for i, rec in enumerate(records):
        if rec is None:
            rows.append(Row(i, f"{manifest}:{i + 1}", None, options.ratio, options.style,
                            f"line {i + 1} is not a JSON object"))
            continue
        photo = str(rec.get("photo") or "").strip()
        audio = str(rec.get("audio") or "").strip() or options.audio
        ratio = str(rec.get("ratio") or "").strip() or options.ratio
        style = str(rec.get("style") or "").strip() or options.style
        problem = None
        if not photo:
            problem = "no photo given"
        elif ratio not in RATIOS:
            problem = f"ratio must be one of {sorted(RATIOS)}, not {ratio!r}"
        elif style not in STYLE_LEVELS:
            problem = f"style must be one of {list(STYLE_LEVELS)}, not {style!r}"
        resolve = (lambda p: p if "://" in p or os.path.isabs(p) else str(base / p))  # noqa: E731
        rows.append(Row(i, resolve(photo) if photo else f"{manifest}:{i + 1}",
                        resolve(audio) if audio else None, ratio if ratio in RATIOS else options.ratio,
                        style if style in STYLE_LEVELS else options.style, problem))
    return rows


def _sha256_of(path: str | None) -> str | None:
    if not path or "://" in path:
        return None if not path else hashlib.sha256(path.encode()).hexdigest()
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


# --- worker processes ---------------------------------------------------------------------
_checker = None


def _init_worker(geometry: Geometry) -> None:
    global _checker
    from .verdict import Checker

    _checker = Checker(geometry=geometry)


def thumbnail_jpeg(picture) -> bytes | None:
    """A report-page picture (a rendered preview) 360 px wide, as JPEG bytes."""
    import cv2

    scale = _THUMB_WIDTH / picture.shape[1]
    thumb = cv2.resize(picture, (_THUMB_WIDTH, max(1, round(picture.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return buf.tobytes() if ok else None


def _check_in_worker(job_id: str, photo: str, ratio: str, thumb_dir: str,
                     fix_dir: str | None = None) -> tuple[str, dict[str, Any], str | None]:
    """Check one photo (and with `fix_dir` fix it, see `fix_record`) and write its preview
    thumbnail; runs in a worker process."""
    from .preview import render_fix_preview, render_preview

    if fix_dir is None:
        report = _checker.check(photo, ratio=ratio)
        record, picture = report.to_dict(), render_preview(report)
    else:
        from .fix import fix

        result = fix(photo, ratio, out_dir=fix_dir, checker=_checker, name=f"{job_id[:12]}-{Path(photo).name}")
        record, picture = fix_record(result), render_fix_preview(result)
    return job_id, record, write_thumbnail(Path(thumb_dir), job_id, thumbnail_jpeg(picture))


def write_thumbnail(thumb_dir: Path, job_id: str, data: bytes | None) -> str | None:
    """Store a job's thumbnail where the report finds it; its path, or None without one."""
    if not data:
        return None
    path = thumb_dir / f"{job_id}.jpg"
    path.write_bytes(data)
    return str(path)


def fix_record(result: FixResult) -> dict[str, Any]:
    """The job's report under batch --fix: the check record of what will be uploaded (the fixed
    photo when there is one, with `source` the original), plus `fix`: what was done and the
    source's own check record, or why nothing was."""
    if not result.fixed:
        record = result.report.to_dict()
        if result.status == "refused":
            record["fix"] = {"fixed": False, "reason": result.reason}
        return record
    record = {**result.report.to_dict(), "source": result.source}
    record["fix"] = {"fixed": True, "output": result.output, "operations": list(result.operations),
                     "crop": list(result.crop), "scale": round(result.scale, 6),
                     "source_report": result.source_report.to_dict()}
    return record


def upload_path(job: Job) -> str:
    """The photo a job uploads: its fixed copy under batch --fix, else the photo itself."""
    return ((job.report or {}).get("fix") or {}).get("output") or job.photo_path


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="checking", unit="photo", file=sys.stderr, disable=None, leave=False)


# --- the batch ----------------------------------------------------------------------------
def run_batch(options: BatchOptions, *, say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
              ) -> BatchSummary:
    started = time.monotonic()
    options = replace(options, geometry=resolve_geometry(options.geometry))  # a bad file stops us here
    out = Path(options.out)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    rows = read_rows(options)
    # one submitting process per ledger, held from before its first check; check-only runs share
    with Ledger(options.ledger or out / "ledger.sqlite") as ledger, (ledger.submit_lock(
            wait=options.wait_lock, on_wait=lambda holder: say(
                f"waiting for the other submitting emo-prep to finish with {ledger.path} ({holder})"))
            if options.submit else contextlib.nullcontext()):
        jobs: list[tuple[Row, str]] = []
        for row in rows:
            jobs.append((row, register_job(ledger, row, options, _sha256_of(row.photo))))
        todo = [(row, key) for row, key in jobs if ledger.job(key).state == "new"]
        _warn_other_geometry(ledger, [key for _, key in jobs], options.geometry, say)
        audio_reports = check_audio_once([row for row, _ in todo])
        if todo:
            _check_all(ledger, todo, audio_reports, options, out)
        from .report import write_report

        stopped = False
        try:
            if options.submit:
                stopped = _submit_all(ledger, options, out, say)
        finally:  # also when an account-wide error stops the submitting: the report shows where it stopped
            write_report(ledger, out, seconds=time.monotonic() - started)
        return _summary(ledger, ledger.jobs(), stopped, time.monotonic() - started)


def register_job(ledger: Ledger, row: Row, options: BatchOptions, photo_sha: str | None) -> str:
    """Add the row's job to the ledger (unless it is there) and return its key: same photo bytes,
    audio and parameters, same job."""
    audio_sha = _sha256_of(row.audio)
    key = job_key(photo_sha or f"missing:{row.photo}", audio_sha or (f"missing:{row.audio}" if row.audio
                                                                     else None), row.ratio, row.style)
    if row.problem:  # a broken row is its own job, never merged with a good one
        key = job_key(f"row {row.row}: {row.problem}", str(options.manifest or options.input), "-", "-")
    ledger.add_job(key, row.row, row.photo, photo_sha, row.audio, audio_sha, row.ratio, row.style)
    return key


def check_audio_once(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Each distinct clip checked once, in this process (PyAV is quick and not thread-bound)."""
    from .audio import check_audio

    reports: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.audio and row.audio not in reports:
            reports[row.audio] = _audio_dict(check_audio(row.audio))
    return reports


def _audio_dict(report) -> dict[str, Any]:
    return {**report.to_dict(), "upload_format": report.upload_format}


def _warn_other_geometry(ledger: Ledger, keys: list[str], geometry: Geometry, say: Callable[[str], None]) -> None:
    """Photos checked in an earlier run keep that run's boxes: say so when its geometry differs."""
    current = geometry.describe()
    other = [k for k in keys if (job := ledger.job(k)).report and job.report.get("geometry", {"source": "default"})
             != current]
    if other:
        say(f"{len(other)} photos were checked in an earlier run with another geometry and keep its boxes "
            f"(their report says which); use a new --out or --ledger to check them with this one")


def record_problems(ledger: Ledger, todo: list[tuple[Row, str]]) -> set[str]:
    """Record the manifest rows that cannot be checked as rejected; their keys."""
    problems = {key: row for row, key in todo if row.problem}
    for key, row in problems.items():
        finding = Finding("manifest_invalid", "error", f"manifest row {row.row + 1}: {row.problem}")
        ledger.record_check(key, verdict="reject", report=_failed_report(row, finding), audio=None,
                            cost_estimate=None, thumbnail=None)
    return set(problems)


def record_result(ledger: Ledger, key: str, row: Row, report: dict[str, Any], thumb: str | None,
                  audio_reports: dict[str, dict[str, Any]], options: BatchOptions) -> bool:
    """Record a photo's check with its audio's; True when both passed."""
    from .payload import estimate_cost

    audio = audio_reports.get(row.audio) if row.audio else None
    if options.submit and row.audio is None:
        audio = {"source": None, "ok": False, "findings": [Finding(
            "audio_unreadable", "error",
            "no audio given for this photo (--audio, or an audio column in the manifest)").to_dict()]}
    ok = report["ok"] and (audio is None or audio["ok"])
    cost = estimate_cost(audio["duration_s"], row.ratio) if audio and audio.get("duration_s") else None
    ledger.record_check(key, verdict="pass" if ok else "reject", report=report, audio=audio,
                        cost_estimate=cost, thumbnail=thumb)
    return ok


def _check_all(ledger: Ledger, todo: list[tuple[Row, str]], audio_reports: dict[str, dict[str, Any]],
               options: BatchOptions, out: Path) -> None:
    problems = record_problems(ledger, todo)
    work = [(row, key) for row, key in todo if key not in problems]
    if not work:
        return
    counts = Counter()
    bar = _progress(len(work))
    rows_by_key = {key: row for row, key in work}
    workers = max(1, min(options.workers, len(work)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(options.geometry,)) as pool:
        fix_dir = str(out / "fixed") if options.fix else None
        futures = {pool.submit(_check_in_worker, key, row.photo, row.ratio, str(out / "thumbs"), fix_dir): key
                   for row, key in work}
        for future in as_completed(futures):
            key = futures[future]
            row = rows_by_key[key]
            try:
                _, report, thumb = future.result()
            except BrokenProcessPool:
                raise
            except Exception as exc:  # one photo's failure is its own record; the run goes on
                report = _failed_report(row, Finding("unreadable", "error", f"{row.photo}: the check failed "
                                                                           f"({type(exc).__name__}: {str(exc)[:200]})"))
                thumb = None
            ok = record_result(ledger, key, row, report, thumb, audio_reports, options)
            counts["passed" if ok else "rejected"] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
    bar.close()


def _failed_report(row: Row, finding: Finding) -> dict[str, Any]:
    """The check JSON of a row that could not be checked."""
    return {"source": row.photo, "ok": False, "ratio": row.ratio, "image": None, "faces": [],
            "findings": [finding.to_dict()], "fixes": []}


def _summary(ledger: Ledger, jobs: list[Job], stopped: bool, seconds: float) -> BatchSummary:
    reasons = Counter(_first_error(job) for job in jobs if job.verdict == "reject")
    tasks = ledger.tasks()
    return BatchSummary(
        jobs=len(jobs), passed=sum(j.verdict == "pass" for j in jobs),
        rejected=sum(j.verdict == "reject" for j in jobs),
        reasons=dict(reasons.most_common()), submitted=len(tasks),
        downloaded=sum(1 for t in tasks if t["downloaded_at"]), unknown=sum(j.state == "unknown" for j in jobs),
        failed=sum(j.state in ("failed", "download_failed", "expired") for j in jobs),
        cost_cny=round(ledger.committed_cost(), 4), stopped_by_budget=stopped, seconds=round(seconds, 1),
        fixed=sum(j.verdict == "pass" and bool(((j.report or {}).get("fix") or {}).get("fixed")) for j in jobs))


def _first_error(job: Job) -> str:
    for part in (job.report, job.audio):
        for f in (part or {}).get("findings", []):
            if f["severity"] == "error":
                return f["code"]
    return "unknown"


# --- submission ---------------------------------------------------------------------------
def _submit_all(ledger: Ledger, options: BatchOptions, out: Path, say: Callable[[str], None]) -> bool:
    """Upload, submit, poll and download; True when the budget stopped the submitting."""
    from .client import EmoClient
    from .errors import AmbiguousSubmitError, APIStatusError, InputError

    streak = [0]  # service failures in a row
    with EmoClient(poll_initial_s=options.poll_interval_s, poll_max_s=options.poll_interval_s) as client:
        say(f"endpoint: {client.endpoint}")
        _reconcile(ledger, client, say)
        active: dict[str, str] = {t["task_id"]: t["job_id"] for t in ledger.tasks()
                                  if t["status"] not in ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")}
        for t in ledger.tasks():  # succeeded before a stop but not downloaded yet
            if t["status"] == "SUCCEEDED" and not t["downloaded_at"] and ledger.job(t["job_id"]).state != "expired":
                active[t["task_id"]] = t["job_id"]
        queue = deque(j for j in ledger.jobs() if _wants_submit(ledger, j, options))
        stopped = False
        sent: deque[float] = deque()
        while queue or active:
            while queue and len(active) < QUEUE_AHEAD + 1:
                job = queue[0]
                if options.max_cost is not None and \
                        ledger.committed_cost() + (job.cost_estimate or 0) > options.max_cost + 1e-9:
                    say(f"budget: submitting {Path(job.photo_path).name} would pass --max-cost "
                        f"{options.max_cost:g} CNY (committed {ledger.committed_cost():.2f}); stopping submits, "
                        f"{len(queue)} photo(s) not submitted")
                    queue.clear()
                    stopped = True
                    break
                queue.popleft()
                _pace(sent)
                try:
                    task_id = _submit_one(ledger, client, job, AmbiguousSubmitError, APIStatusError, say,
                                          options.geometry)
                except (APIStatusError, InputError, ValueError, OSError) as exc:  # this job only: the photo
                    # changed or vanished since its check, or the service refused an upload or the submit
                    _stop_if_account_wide(exc, streak, len(queue) + 1, say)
                    if ledger.job(job.job_id).state != "failed":
                        ledger.set_state(job.job_id, "failed", error=str(exc))
                    say(f"{Path(job.photo_path).name}: {exc}")
                    continue
                streak[0] = 0
                if task_id:
                    active[task_id] = job.job_id
            for task_id in list(active):
                if _poll_one(ledger, client, task_id, active[task_id], out, say):
                    del active[task_id]
            if active:
                time.sleep(options.poll_interval_s / max(1, len(active)))
        return stopped


def _stop_if_account_wide(exc: Exception, streak: list[int], waiting: int, say: Callable[[str], None]) -> None:
    """Re-raise what no other photo would fare better with: the key or the account refused
    (401/403, Arrearage, service not activated), or the service failing call after call."""
    from .errors import AuthenticationError, ServerError, ThrottledError

    account = isinstance(exc, AuthenticationError) or getattr(exc, "code", None) in ACCOUNT_ERROR_CODES
    streak[0] = streak[0] + 1 if isinstance(exc, (ServerError, ThrottledError)) else 0
    if account or streak[0] >= SERVICE_FAILURE_STREAK:
        why = "the service refuses this key or account" if account else \
            f"the service failed {streak[0]} photos in a row, each after its retries"
        say(f"stopping the batch: {why}; {waiting} photo(s) not submitted, nothing recorded against them. "
            f"Fix it and run the same command again to continue.")
        raise exc


def _wants_submit(ledger: Ledger, job: Job, options: BatchOptions) -> bool:
    if job.verdict != "pass":
        return False
    if options.force:
        return not any(t["status"] not in ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN") for t in
                       ledger.tasks(job.job_id)) and job.state not in ("submitting", "unknown")
    if job.state == "checked":
        return True
    return options.retry_failed and job.state == "failed"


def _pace(sent: deque[float]) -> None:
    """At most SUBMITS_PER_SECOND submits in any second."""
    now = time.monotonic()
    while sent and now - sent[0] >= 1.0:
        sent.popleft()
    if len(sent) >= SUBMITS_PER_SECOND:
        time.sleep(max(0.0, 1.0 - (now - sent[0])))
    sent.append(time.monotonic())


def _upload(ledger: Ledger, client, data: bytes, filename: str) -> str:
    sha = hashlib.sha256(data).hexdigest()
    url = ledger.upload_url(sha, VIDEO_MODEL, valid_for_s=UPLOAD_REUSE_MARGIN_S)
    if url is None:
        url = client.upload(data, model=VIDEO_MODEL, filename=filename)
        ledger.record_upload(sha, VIDEO_MODEL, url, time.time() + UPLOAD_LIFETIME_S)
    return url


def _submit_one(ledger: Ledger, client, job: Job, ambiguous_error, status_error, say,
                geometry: Geometry) -> str | None:
    from .geometry import boxes_for_upload
    from .ingest import load_image, upload_form
    from .payload import VideoInput, VideoParameters, VideoSynthesisRequest

    form = upload_form(load_image(upload_path(job)))
    boxes = boxes_for_upload(tuple(job.face_bbox), tuple(job.ext_bbox), form.scale, (form.width, form.height),
                             job.ratio, geometry)
    if boxes is None:
        raise ValueError("the downscaled photo leaves no room for the crop box")
    face, ext = (list(b) for b in boxes)
    suffix = "jpg" if form.format == "jpeg" else form.format
    audio_data = _audio_bytes(job.audio_path, job.audio_sha256)
    files = ((form.data, f"{Path(job.photo_path).stem}.{suffix}"),
             (audio_data, f"{Path(job.audio_path).stem}.{job.audio['upload_format']}"))
    for fresh in (False, True):
        if fresh:  # the service no longer knew a reused oss:// URL: upload again, once
            for data, _ in files:
                ledger.forget_upload(hashlib.sha256(data).hexdigest(), VIDEO_MODEL)
        image_url, audio_url = (_upload(ledger, client, data, name) for data, name in files)
        request = VideoSynthesisRequest(input=VideoInput(image_url=image_url, audio_url=audio_url, face_bbox=face,
                                                         ext_bbox=list(ext)),
                                        parameters=VideoParameters(style_level=job.style))
        body = request.model_dump()
        submit_id = ledger.begin_submit(job.job_id, body, hashlib.sha256(json.dumps(body, sort_keys=True).encode())
                                        .hexdigest())
        try:
            created = client.submit(request)
        except ambiguous_error:
            say(f"{Path(job.photo_path).name}: the submit's answer was lost; looking for its task")
            return _reconcile(ledger, client, say, only=submit_id)
        except status_error as exc:
            ledger.submit_refused(submit_id, str(exc))  # an answer: no task was made
            if fresh or exc.status_code != 400 or not (exc.code or "").startswith("InvalidURL"):
                raise
            continue
        fault_point("submit answered")
        ledger.submit_created(submit_id, created.output.task_id, cost_estimate=job.cost_estimate)
        return created.output.task_id
    return None


@functools.lru_cache(maxsize=8)
def _audio_bytes(path: str, sha256: str | None) -> bytes:
    """The audio to upload (the clip, or its WAV conversion); one decode per clip and run."""
    from .audio import check_audio

    del sha256  # part of the cache key: a changed file is read again
    return check_audio(path).data


def _reconcile(ledger: Ledger, client, say, *, only: int | None = None) -> str | None:
    """Match submits without an answer to tasks in the account's list that the ledger does not
    know. One submit, one such task: adopted. Otherwise left `unknown`, with the commands."""
    unsettled = [s for s in ledger.unsettled_submits() if only is None or s["submit_id"] == only]
    if not unsettled:
        return None
    listed = client.list_tasks(page_size=50).data
    known = ledger.known_task_ids()
    strangers = [t for t in listed if t.task_id not in known]
    if len(unsettled) == 1 and len(strangers) == 1:
        submit = unsettled[0]
        job = ledger.job(submit["job_id"])
        ledger.submit_created(submit["submit_id"], strangers[0].task_id, status=strangers[0].task_status,
                              cost_estimate=job.cost_estimate if job else None, how="found in task list")
        say(f"job {submit['job_id']}: its lost submit made task {strangers[0].task_id} (found in the task list)")
        return strangers[0].task_id
    for submit in unsettled:
        candidates = ", ".join(t.task_id for t in strangers) or "none"
        detail = (f"sent at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(submit['sent_at']))} without an "
                  f"answer; tasks not in the ledger: {candidates}. Settle with: emo-prep ledger --ledger "
                  f"{ledger.path} settle {submit['job_id']} --task TASK_ID (or --no-task)")
        ledger.submit_unknown(submit["submit_id"], detail)
        say(f"job {submit['job_id']}: unknown: {detail}")
    return None


def _download(ledger: Ledger, client, task_id: str, job_id: str, video_url: str, out: Path, say) -> None:
    """Download a finished video. A failure is this job's, recorded with its reason: an
    unwritable folder leaves it for the next run (`download_failed`); a result gone from the
    service (403/404) is asked for once more, then marked `expired`."""
    from .errors import APIError, APIStatusError

    job = ledger.job(job_id)
    name = Path(job.photo_path).name
    dest = out / "videos" / f"{Path(job.photo_path).stem}-{task_id[:8]}.mp4"
    for again in (False, True):
        ledger.download_started(task_id, str(dest))
        try:
            path = client.download(video_url, dest)
        except OSError as exc:
            reason = f"cannot write {dest}: {exc.strerror or exc}"
            ledger.download_failed(task_id, "download_failed", reason)
            say(f"{name}: {reason}; run again to download it")
            return
        except APIError as exc:
            gone = isinstance(exc, APIStatusError) and exc.status_code in (403, 404)
            if gone and not again:
                video_url = client.get_task(task_id).video_url or video_url  # the task may still answer
                continue
            if gone:
                ledger.download_failed(task_id, "expired", f"the video is gone from the service: {exc}")
                say(f"{name}: the video of task {task_id} has expired ({exc})")
            else:  # retries spent on a broken connection or a failing server: the next run tries again
                ledger.download_failed(task_id, "download_failed", str(exc))
                say(f"{name}: download failed: {exc}; run again to download it")
            return
        ledger.mark_downloaded(task_id, str(path), path.stat().st_size)
        say(f"{name}: video {path}")
        return


def _poll_one(ledger: Ledger, client, task_id: str, job_id: str, out: Path, say) -> bool:
    """Query a task, record it, download a finished video; True when the task needs no more."""
    task = client.get_task(task_id)
    status = task.output.task_status
    ledger.update_task(task_id, status, usage=task.usage.model_dump() if task.usage else None,
                       video_url=task.video_url, error=task.output.message)
    if status == "SUCCEEDED" and task.video_url:
        _download(ledger, client, task_id, job_id, task.video_url, out, say)
        return True
    if status in ("FAILED", "CANCELED", "UNKNOWN"):
        say(f"task {task_id}: {status} {task.output.message or ''}".rstrip())
        return True
    return False
