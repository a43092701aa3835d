"""The check-only batch on Ray Data, for photo sets past one machine.

`emo-prep batch INPUT --engine ray [--address ADDR] [--workers N]`: the driver lists the photos
(a folder, a .csv/.jsonl manifest, or a filesystem URI pyarrow reads, such as
`s3://bucket/photos/`), Ray Data streams them through a pool of actors that each hold one
`Checker` (models loaded once per actor), and the driver records every result in the batch
ledger as it arrives. OUT/report.jsonl and OUT/report.html are written by the batch's own report
code, so the records are the local batch's. A rerun with the same OUT skips the photos already
checked there. Without `address` a local Ray starts; with it the driver joins that cluster, whose
nodes need emo-prep installed and the photos readable (a shared folder or a URI).

Submitting stays with the local batch (the account runs one EMO task at a time): check here,
then `emo-prep batch --manifest` the passes with `--submit`. Nothing Ray-specific enters the
stages: the actor is a thin shell around `Checker`, like the process pool's worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .batch import (
    BatchOptions,
    BatchSummary,
    Row,
    _sha256_of,
    _summary,
    check_audio_once,
    read_rows,
    record_problems,
    record_result,
    register_job,
    thumbnail_jpeg,
    write_thumbnail,
)
from .config import MAX_INPUT_BYTES, PYARROW_SCHEMES, RAY_BATCH_ROWS, RAY_CRASH_RETRIES
from .errors import InputError, UsageError
from .findings import Finding
from .geometry import Geometry, resolve_geometry
from .ingest import IMAGE_SUFFIXES
from .ledger import Ledger
from .preview import render_preview

__all__ = ["run_ray_batch", "list_photos", "PhotoChecker"]


def _is_pyarrow_uri(source: str) -> bool:
    return "://" in source and source.split("://", 1)[0].lower() in PYARROW_SCHEMES


def list_photos(uri: str) -> list[str]:
    """The photos under a filesystem URI pyarrow understands (recursive, sorted), as URIs."""
    from pyarrow import fs as pafs

    scheme = uri.split("://", 1)[0]
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File:
            return [uri]
        if info.type != pafs.FileType.Directory:
            raise UsageError(f"{uri}: no such file or folder")
        found = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as exc:  # pyarrow's errors for unknown schemes, no access, no bucket
        raise UsageError(f"{uri}: cannot list it ({exc})") from exc
    return sorted(f"{scheme}://{f.path}" for f in found if f.type == pafs.FileType.File
                  and Path(f.path).suffix.lower() in IMAGE_SUFFIXES and not Path(f.path).name.startswith("."))


def _read_uri(uri: str) -> bytes:
    """A photo's bytes through pyarrow, refusing more than the check reads from any source."""
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as stream:
            data = stream.read(MAX_INPUT_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise InputError("unreadable", f"{uri}: {exc}") from exc
    return data


def _unreadable(photo: str, ratio: str, message: str) -> dict[str, Any]:
    from .verdict import Report

    return Report(source=photo, ratio=ratio, image=None,
                  findings=(Finding("unreadable", "error", message),)).to_dict()


class PhotoChecker:
    """A Ray Data callable class: one Checker per actor, a batch of rows in, results out. A photo
    whose check raises becomes an `unreadable` record, never a failed job."""

    def __init__(self, geometry: Geometry | None = None) -> None:
        from .verdict import Checker

        self._checker = Checker(geometry=geometry)

    def _check(self, photo: str, ratio: str) -> tuple[dict[str, Any], bytes]:
        try:
            if _is_pyarrow_uri(photo):
                report = self._checker.check_bytes(_read_uri(photo), photo, ratio=ratio)
            else:
                report = self._checker.check(photo, ratio=ratio)
        except InputError as exc:
            return _unreadable(photo, ratio, exc.message), b""
        except Exception as exc:  # a photo that breaks the check must not end the run
            return _unreadable(photo, ratio, f"{photo}: the check failed ({type(exc).__name__}: {exc})"), b""
        return report.to_dict(), thumbnail_jpeg(render_preview(report)) or b""

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"index": [], "report": [], "thumb": [], "photo_sha256": []}
        for index, photo, ratio in zip(batch["index"], batch["photo"], batch["ratio"], strict=True):
            report, thumb = self._check(str(photo), str(ratio))
            out["index"].append(int(index))
            out["report"].append(json.dumps(report, ensure_ascii=False))
            out["thumb"].append(thumb)
            out["photo_sha256"].append(_sha256_of(str(photo)) or "")
        return out


def _rows(options: BatchOptions) -> list[Row]:
    if options.manifest is None and _is_pyarrow_uri(options.input):
        return [Row(i, uri, options.audio, options.ratio, options.style)
                for i, uri in enumerate(list_photos(options.input))]
    return read_rows(options)


def run_ray_batch(options: BatchOptions, *, address: str | None = None, workers: int | None = None,
                  actor: type[PhotoChecker] = PhotoChecker,
                  say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> BatchSummary:
    """Check every photo of `options.input` on Ray (a local one unless `address` names a cluster)
    with `workers` actors (default: the cluster's CPUs) of class `actor` (PhotoChecker or a
    subclass); write the batch report into options.out."""
    if options.submit or options.fix:
        raise UsageError("--engine ray only checks: fix and submit the passes with the local batch "
                         "(emo-prep batch --manifest PASSES --submit)")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise UsageError("the Ray engine needs the ray extra: pip install 'emo-prep[ray]'") from exc
    from .report import write_report

    started = time.monotonic()
    options = replace(options, geometry=resolve_geometry(options.geometry))  # the driver's, sent to every actor
    out = Path(options.out)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    rows = _rows(options)
    ledger = Ledger(options.ledger or out / "ledger.sqlite")
    try:
        checked = {job.photo_path for job in ledger.jobs() if job.state != "new"}
        todo = [row for row in rows if row.photo not in checked]
        problems = [row for row in todo if row.problem]
        record_problems(ledger, [(row, register_job(ledger, row, options, None)) for row in problems])
        work = [row for row in todo if not row.problem]
        if len(rows) > len(todo):
            say(f"{len(rows) - len(todo)} photo(s) already checked in {out}: skipped")
        if work:
            audio_reports = check_audio_once(work)
            _check_on_ray(ray, ledger, work, audio_reports, options, out, address, workers, actor, say)
        seconds = time.monotonic() - started
        write_report(ledger, out, seconds=seconds)
        return _summary(ledger, ledger.jobs(), False, seconds)
    finally:
        ledger.close()


def _check_on_ray(ray, ledger: Ledger, work: list[Row], audio_reports: dict[str, dict[str, Any]],
                  options: BatchOptions, out: Path, address: str | None, workers: int | None,
                  actor: type[PhotoChecker], say: Callable[[str], None]) -> None:
    # Ray prints its workers' deaths on sys.stdout, which carries our data: to stderr with them,
    # until Ray (and its thread that prints them) is shut down
    with contextlib.redirect_stdout(sys.stderr):
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        context = ray.data.DataContext.get_current()
        settings = context.max_errored_blocks, context.enable_progress_bars
        context.max_errored_blocks = -1  # a batch whose actor keeps crashing is given up, not the run
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            _run_actors(ray, ledger, work, audio_reports, options, out, address, workers, actor, say)
        finally:
            context.max_errored_blocks, context.enable_progress_bars = settings
            if started_here:
                ray.shutdown()


def _run_actors(ray, ledger: Ledger, work: list[Row], audio_reports: dict[str, dict[str, Any]],
                options: BatchOptions, out: Path, address: str | None, workers: int | None,
                actor: type[PhotoChecker], say: Callable[[str], None]) -> None:
    size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    say(f"ray: checking {len(work)} photo(s) with {size} actor(s) on "
        f"{'the cluster at ' + address if address else 'a local Ray'}")
    left = set(range(len(work)))
    for batch_rows in (RAY_BATCH_ROWS, 1):  # rows lost with a crashing batch: again, one by one
        if not left:
            break
        if batch_rows == 1:
            say(f"ray: {len(left)} photo(s) were in batches whose actor crashed; checking them one by one")
        items = [{"index": i, "photo": work[i].photo, "ratio": work[i].ratio} for i in sorted(left)]
        results = ray.data.from_items(items).map_batches(
            actor, fn_constructor_kwargs={"geometry": options.geometry},
            compute=ray.data.ActorPoolStrategy(size=min(size, len(items))), num_cpus=1,
            batch_size=batch_rows, max_restarts=RAY_CRASH_RETRIES, max_task_retries=RAY_CRASH_RETRIES)
        for result in results.iter_rows():
            index = int(result["index"])
            left.discard(index)
            _record(ledger, work[index], options, result["photo_sha256"] or None, json.loads(result["report"]),
                    bytes(result["thumb"]), audio_reports, out)
    for index in sorted(left):
        row = work[index]
        _record(ledger, row, options, _sha256_of(row.photo), _unreadable(
            row.photo, row.ratio, f"{row.photo}: checking it ended the worker process, "
            f"{RAY_CRASH_RETRIES + 1} times alone (a crash in native code)"), b"", audio_reports, out)


def _record(ledger: Ledger, row: Row, options: BatchOptions, photo_sha: str | None, report: dict[str, Any],
            thumb: bytes, audio_reports: dict[str, dict[str, Any]], out: Path) -> None:
    key = register_job(ledger, row, options, photo_sha)
    record_result(ledger, key, row, report, write_thumbnail(out / "thumbs", key, thumb), audio_reports, options)
