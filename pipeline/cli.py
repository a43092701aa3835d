"""The `emo-prep` command: a thin shell over the library.

Exit status: 0 all went well (every photo passed, the task made its video), 1 something was
rejected (a photo or clip by a check, unreadable files included; a task that ended without a
video; a batch with rejects, failures or unknowns), 2 usage error, network or service error, or
a failure of the tool itself (models, output folder). Data goes to stdout, everything else to
stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .config import (
    CALIBRATE_SAMPLES,
    FIX_OUT_DIR,
    RATIOS,
    SERVE_DEADLINE_S,
    SERVE_HOST,
    SERVE_IDLE_TIMEOUT_S,
    SERVE_MAX_CONNECTIONS,
    SERVE_PORT,
    SERVE_STOP_GRACE_S,
    STYLE_LEVELS,
)

__all__ = ["main"]

EXIT_OK, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2
#: What a shell reports for a writer ended by SIGPIPE (128 + 13), as `yes | head` does.
EXIT_BROKEN_PIPE = 141


def _geometry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--geometry", metavar="FILE",
                        help="box rules fitted by `emo-prep calibrate` (default: $EMO_PREP_GEOMETRY, else built in)")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="emo-prep", description="Prepare portrait photos for DashScope EMO (emo-v1).")
    parser.add_argument("--version", action="version", version=f"emo-prep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check", help="check photos and compute face_bbox / ext_bbox",
        description="Check portrait photos the way the EMO service will, and compute face_bbox and ext_bbox.",
        epilog="example: emo-prep check --ratio 1:1 --preview previews/ samples/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("paths", nargs="+", metavar="PATH|URL", help="photos, folders of photos, or http(s) URLs")
    check.add_argument("--ratio", choices=list(RATIOS), default="1:1",
                       help="1:1 head portrait (512x512) or 3:4 half body (512x704); default 1:1")
    check.add_argument("--json", action="store_true", help="print one JSON object per photo (JSON lines)")
    check.add_argument("--preview", metavar="DIR", help="write a preview picture per photo into DIR")
    _geometry_option(check)
    check.set_defaults(run=_cmd_check)

    fix = sub.add_parser(
        "fix", help="turn rejected photos into passing ones where an honest change can (crop, downscale)",
        description="Check each photo; when it fails for a reason a crop around the main face (other faces, a "
                    "small face), a downscale (past 7000 px) or, with --light, an exposure curve can mend, write "
                    "OUT/<name>.fixed.<jpg|png> and check that file again: only an output that passes is kept. "
                    "A photo that passes is left alone; blur, pose, a covered or cut-off face, no face and hips "
                    "outside a 3:4 frame are refused with the reason.",
        epilog="example: emo-prep fix --ratio auto --out fixed/ --preview previews/ group.jpg",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    fix.add_argument("paths", nargs="+", metavar="PATH|URL", help="photos, folders of photos, or http(s) URLs")
    fix.add_argument("--ratio", choices=[*RATIOS, "auto"], default="1:1",
                     help="1:1, 3:4, or auto: 3:4 when the photo passes (or can be fixed) as a half-body shot, "
                          "else 1:1; default 1:1")
    fix.add_argument("--json", action="store_true", help="print one JSON object per photo (JSON lines)")
    fix.add_argument("--out", metavar="DIR", default=FIX_OUT_DIR, help=f"where fixed photos go ({FIX_OUT_DIR}/)")
    fix.add_argument("--preview", metavar="DIR", help="write a before/after picture per photo into DIR")
    fix.add_argument("--light", action="store_true",
                     help="also correct a dark or overexposed face (changes how the person looks)")
    _geometry_option(fix)
    fix.set_defaults(run=_cmd_fix)

    audio = sub.add_parser(
        "check-audio", help="check audio clips for emo-v1 (wav/mp3, < 15 MB, < 60 s, not silent)",
        description="Check audio clips the way the EMO service will: format sniffed from the bytes (other "
                    "formats are converted to WAV, reported as a fix), size, duration by decoding, level.",
        epilog="example: emo-prep check-audio --json samples/speech.wav",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    audio.add_argument("paths", nargs="+", metavar="FILE|URL")
    audio.add_argument("--json", action="store_true", help="print one JSON object per clip (JSON lines)")
    audio.set_defaults(run=_cmd_check_audio)

    submit = sub.add_parser(
        "submit", help="check a photo and an audio clip, upload them, submit an emo-v1 task",
        description="Check PHOTO and AUDIO, upload them (unless URLs are given), build the emo-v1 request, "
                    "submit it, and with --wait poll and download the video. The API key comes from "
                    "DASHSCOPE_API_KEY, the endpoint from DASHSCOPE_HTTP_BASE_URL (default: Beijing).",
        epilog="example: emo-prep submit samples/astronaut.png samples/speech.wav --wait -o astronaut.mp4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("photo", metavar="PHOTO")
    submit.add_argument("audio", metavar="AUDIO")
    submit.add_argument("--ratio", choices=list(RATIOS), default="1:1")
    submit.add_argument("--style", choices=list(STYLE_LEVELS), default="normal",
                        help="motion amplitude (parameters.style_level)")
    submit.add_argument("--image-url", help="use this http(s)/oss:// URL of PHOTO instead of uploading it")
    submit.add_argument("--audio-url", help="use this http(s)/oss:// URL of AUDIO instead of uploading it")
    submit.add_argument("--boxes", choices=["local", "remote"], default="local",
                        help="compute the boxes here (default) or ask emo-detect-v1 (CNY 0.004) and compare")
    submit.add_argument("--force", action="store_true", help="submit even when a check found an error")
    submit.add_argument("--dry-run", action="store_true",
                        help="check, estimate the cost, print the request; send nothing")
    submit.add_argument("--wait", action="store_true", help="wait for the task and download the video")
    submit.add_argument("-o", "--output", metavar="OUT.mp4", help="where to write the video (default: PHOTO name .mp4)")
    _geometry_option(submit)
    _api_options(submit)
    submit.set_defaults(run=_cmd_submit)

    task = sub.add_parser(
        "task", help="show, wait for and download a task; or list recent tasks",
        description="Query an emo-v1 task by id; --wait polls until it ends, -o downloads its video. "
                    "--list shows the account's recent tasks instead.",
        epilog="example: emo-prep task 0f1c2d3e-... --wait -o out.mp4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    task.add_argument("task_id", nargs="?", metavar="TASK_ID")
    task.add_argument("--wait", action="store_true")
    task.add_argument("-o", "--output", metavar="OUT.mp4")
    task.add_argument("--list", action="store_true", help="list recent tasks (newest first)")
    _api_options(task)
    task.set_defaults(run=_cmd_task)

    batch = sub.add_parser(
        "batch", help="check a folder or manifest of photos; with --submit make the videos",
        description="Check every photo of a folder (recursive) or of a manifest (.csv/.jsonl with columns photo, "
                    "audio, ratio, style) in worker processes and write OUT/report.html and OUT/report.jsonl. "
                    "With --submit, upload, submit, wait for and download the passing ones. Every step is kept "
                    "in a SQLite ledger: run the same command again to continue after any stop.",
        epilog="example: emo-prep batch photos/ --audio speech.wav --submit --max-cost 20 --out run1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("input", metavar="INPUT", help="a folder of photos, or a .csv / .jsonl manifest")
    batch.add_argument("--audio", metavar="FILE", help="the audio for every photo (a manifest row may override)")
    batch.add_argument("--manifest", metavar="FILE", help="a .csv / .jsonl manifest (paths relative to it)")
    batch.add_argument("--ratio", choices=list(RATIOS), default="1:1")
    batch.add_argument("--style", choices=list(STYLE_LEVELS), default="normal")
    batch.add_argument("--submit", action="store_true", help="upload, submit, wait and download the passing photos")
    batch.add_argument("--workers", type=int, help="check processes, or Ray actors (default: the cores, or the "
                                                  "Ray cluster's CPUs)")
    batch.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="check in local processes (default) or on Ray Data (check only; needs emo-prep[ray]); "
                            "with ray, INPUT may also be a URI pyarrow reads, such as s3://bucket/photos/")
    batch.add_argument("--address", metavar="ADDR", help="with --engine ray: join this Ray cluster (default: a "
                                                         "local Ray)")
    batch.add_argument("--ledger", metavar="FILE", help="SQLite ledger (default OUT/ledger.sqlite)")
    batch.add_argument("--out", metavar="DIR", default="emo-batch", help="report, thumbnails and videos (emo-batch/)")
    batch.add_argument("--max-cost", type=float, metavar="CNY", help="stop submitting before this would be passed")
    batch.add_argument("--retry-failed", action="store_true", help="submit again the jobs whose task failed")
    batch.add_argument("--force", action="store_true", help="submit again even what was already made")
    batch.add_argument("--poll-interval", type=float, default=2.0, metavar="S",
                       help="seconds between task queries (the account allows 20 a second)")
    _geometry_option(batch)
    batch.add_argument("--fix", action="store_true",
                       help="fix what a crop or a downscale can (see `emo-prep fix`) into OUT/fixed/ and submit that")
    batch.add_argument("--wait-lock", action="store_true",
                       help="with --submit: wait while another process submits from the same ledger (default: exit 2)")
    _api_options(batch)
    batch.set_defaults(run=_cmd_batch)

    ledger = sub.add_parser(
        "ledger", help="look into a batch ledger; settle an unknown submit",
        description="status: counts and money; show JOB: everything about one job; export: one JSON line per "
                    "job; settle JOB --task ID | --no-task: record what an unanswered submit did.",
        epilog="example: emo-prep ledger --ledger run1/ledger.sqlite status",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ledger.add_argument("--ledger", metavar="FILE", default="emo-batch/ledger.sqlite")
    ledger.add_argument("action", nargs="?", choices=["status", "show", "export", "settle"], default="status")
    ledger.add_argument("job_id", nargs="?", metavar="JOB")
    settle = ledger.add_mutually_exclusive_group()
    settle.add_argument("--task", metavar="TASK_ID", help="with settle: the submit made this task")
    settle.add_argument("--no-task", action="store_true", help="with settle: the submit made no task")
    ledger.set_defaults(run=_cmd_ledger)

    sandbox = sub.add_parser(
        "sandbox", help="run a local DashScope-compatible EMO API on loopback",
        description="Serve the EMO API of the spec on loopback: uploads, face-detect (our own checks), "
                    "video-synthesis with validation, tasks, and a framing-preview MP4 as the result. "
                    "Stop with Ctrl-C.",
        epilog="example: emo-prep sandbox --port 8765 --api-key sk-test",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sandbox.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    sandbox.add_argument("--api-key", default="sk-sandbox", help="the key clients must send")
    sandbox.add_argument("--pending-s", type=float, default=2.0, help="seconds a task waits in PENDING")
    sandbox.add_argument("--running-s", type=float, default=3.0, help="seconds a task spends RUNNING")
    sandbox.add_argument("--fault-429", type=float, default=0.0, metavar="SHARE", help="share of calls answered 429")
    sandbox.add_argument("--fault-500", type=float, default=0.0, metavar="SHARE", help="share of calls answered 500")
    sandbox.add_argument("--latency", type=float, default=0.0, metavar="S", help="seconds added to every call")
    sandbox.add_argument("--drop-submits", type=int, default=0, metavar="N",
                         help="drop the connection after creating the task, for the first N submits")
    sandbox.add_argument("--expire-after", type=float, default=None, metavar="S",
                         help="forget tasks S seconds after creation")
    sandbox.add_argument("--detect-reject-status", type=int, choices=[200, 400], default=200,
                         help="answer a face-detect rejection as 200 check_pass=false or 400 InvalidFile.*")
    sandbox.add_argument("--detect-geometry", metavar="FILE",
                         help="answer face-detect with these box rules instead of emo-prep's defaults")
    sandbox.add_argument("--task-list-shape", choices=["data", "tasks"], default="data",
                         help="list tasks as data/task_status (default) or tasks/status (as SDK 2.x reads them)")
    sandbox.set_defaults(run=_cmd_sandbox)

    serve = sub.add_parser(
        "serve", help="serve the checks over HTTP: emo-detect-compatible, a box-filling emo-v1 gateway, a web page",
        description="Answer emo-detect-v1's requests locally (the same boxes as `check`), native POST /v1/check, "
                    "/v1/preview and /v1/fix, and a gateway that takes emo-v1 requests with the boxes optional: "
                    "it refuses failing photos (nothing is sent) and forwards the rest, with the caller's own key, "
                    "to --upstream. A web page at /, Prometheus metrics at /metrics, the API at /docs. The detect "
                    "and check endpoints need no key: it listens on 127.0.0.1 unless told otherwise.",
        epilog="example: emo-prep serve --port 8000 --workers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default=SERVE_HOST, help=f"address to listen on (default {SERVE_HOST})")
    serve.add_argument("--port", type=int, default=SERVE_PORT, help=f"port (default {SERVE_PORT}; 0: any free one)")
    serve.add_argument("--workers", type=int, metavar="N", help="check worker processes (default: the cores)")
    serve.add_argument("--max-queue", type=int, metavar="N",
                       help="requests that may wait for a worker before 429 (default: 4 per worker)")
    serve.add_argument("--deadline", type=float, default=SERVE_DEADLINE_S, metavar="S",
                       help=f"seconds a checking request may take in all, its body, URL and check included, "
                            f"before 504 (default {SERVE_DEADLINE_S:g})")
    serve.add_argument("--upstream", metavar="URL",
                       help="DashScope API base the gateway forwards to (default: $DASHSCOPE_HTTP_BASE_URL, "
                            "$DASHSCOPE_BASE_URL, else Beijing)")
    serve.add_argument("--allow-private-urls", action="store_true",
                       help="also fetch photo URLs on loopback and private networks (never link-local/metadata)")
    _geometry_option(serve)
    serve.set_defaults(run=_cmd_serve)

    calibrate = sub.add_parser(
        "calibrate", help="fit the box geometry to a few paid emo-detect-v1 answers (CNY 0.004 a photo)",
        description="Check the photos, send up to N that pass to emo-detect-v1 (on a plain canvas when their "
                    "box would touch an edge), fit the face transform and the ext rule to the answers by least "
                    "squares, and write the geometry to FILE (merged into FILE if it exists; the answers and "
                    "what was sent go to FILE.record/). Then use it with --geometry FILE or EMO_PREP_GEOMETRY.",
        epilog="example: emo-prep calibrate --ratio 1:1 --samples 12 --max-cost 0.1 -o geometry.json photos/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    calibrate.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders of photos")
    calibrate.add_argument("--ratio", choices=list(RATIOS), required=True)
    calibrate.add_argument("--samples", type=int, default=CALIBRATE_SAMPLES, metavar="N",
                           help=f"photos to send (default {CALIBRATE_SAMPLES})")
    calibrate.add_argument("--max-cost", type=float, metavar="CNY", help="never spend more than this")
    calibrate.add_argument("--yes", action="store_true", help="do not ask before spending")
    calibrate.add_argument("-o", "--output", metavar="FILE", required=True, help="the geometry file to write")
    _api_options(calibrate)
    calibrate.set_defaults(run=_cmd_calibrate)
    return parser


def _api_options(command: argparse.ArgumentParser) -> None:
    """Options of the commands that talk to the API."""
    command.add_argument("-v", "--verbose", action="store_true",
                         help="say on stderr each retry, its reason and its wait (never the key)")


def _missing(paths: Sequence[str]) -> int | None:
    """A usage error (exit 2) for paths that do not exist; URLs are left to the fetch."""
    missing = [p for p in paths if "://" not in p and not os.path.exists(p)]
    if not missing:
        return None
    _say(f"Error: no such file or folder: {', '.join(missing)}")
    return EXIT_ERROR


def _talking_to(client) -> None:
    _say(f"endpoint: {client.endpoint}")


def _row(report) -> str:
    verdict = "PASS" if report.ok else "REJECT"
    size = f"{report.image.width}x{report.image.height}" if report.image else "-"
    boxes = f"face {list(report.face_bbox)} ext {list(report.ext_bbox)}" if report.ext_bbox else (
        f"face {list(report.face_bbox)}" if report.face_bbox else "")
    reasons = "; ".join(f"{f.code}: {f.message}" if f.severity == "error" else f"({f.code}: {f.message})"
                        for f in report.findings)
    return f"{verdict:6s}  {report.source}  {size}  {boxes}\n        {reasons or 'no findings'}" + (
        f"\n        hint: {report.errors[0].hint}" if report.errors else "")


def _cmd_check(args: argparse.Namespace) -> int:
    from .ingest import expand_sources
    from .preview import write_preview
    from .verdict import Checker

    if (status := _missing(args.paths)) is not None:
        return status
    sources = list(expand_sources(args.paths))
    if not sources:
        print("Error: no photos found in the given folders", file=sys.stderr)
        return EXIT_ERROR
    rejected = passed = 0
    with Checker(geometry=args.geometry) as checker:
        _say_geometry(checker.geometry)
        for source in sources:
            report = checker.check(source, ratio=args.ratio)
            if args.json:
                print(json.dumps(report.to_dict(), ensure_ascii=False), flush=True)
            else:
                print(_row(report), flush=True)
            if args.preview:
                write_preview(report, args.preview)
            passed += report.ok
            rejected += not report.ok
    if not args.json:
        print(f"{passed} passed, {rejected} rejected", file=sys.stderr)
        if args.preview:
            print(f"previews written to {args.preview}", file=sys.stderr)
    return EXIT_REJECTED if rejected else EXIT_OK


def _fix_row(result) -> str:
    if result.fixed:
        report = result.report
        kept = f"kept {list(result.crop)}" if "crop" in result.operations else "whole photo"
        return (f"FIXED    {result.source} -> {result.output}  {' + '.join(result.operations)}: "
                f"{kept} at scale {result.scale:.3f}\n         now {report.image.width}x"
                f"{report.image.height}  face {list(report.face_bbox)} ext {list(report.ext_bbox)}"
                f"  (was: {', '.join(f.code for f in result.source_report.errors)})")
    word = "PASS" if result.status == "pass" else "REFUSED"
    return f"{word:8s} {result.source}  {result.reason}"


def _cmd_fix(args: argparse.Namespace) -> int:
    from .fix import fix
    from .ingest import expand_sources
    from .preview import write_fix_preview
    from .verdict import Checker

    sources = list(expand_sources(args.paths))
    if not sources:
        _say("Error: no photos found in the given folders")
        return EXIT_ERROR
    counts = {"pass": 0, "fixed": 0, "refused": 0}
    with Checker(geometry=args.geometry) as checker:
        for source in sources:
            result = fix(source, args.ratio, out_dir=args.out, light=args.light, checker=checker)
            counts[result.status] += 1
            if args.json:
                print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)
            else:
                print(_fix_row(result) + (f"\n         ratio {result.ratio_reason}" if result.ratio_reason else ""),
                      flush=True)
            if args.preview:
                write_fix_preview(result, args.preview)
    if not args.json:
        _say(f"{counts['fixed']} fixed, {counts['pass']} passed as they are, {counts['refused']} not fixed"
             + (f"; fixed photos in {args.out}" if counts["fixed"] else ""))
        if args.preview:
            _say(f"previews written to {args.preview}")
    return EXIT_REJECTED if counts["refused"] else EXIT_OK


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _say_geometry(geometry) -> None:
    """Name the geometry file in use (the built-in rules go unsaid; --json records say both)."""
    if geometry.source is not None:
        _say(f"geometry: {geometry.source} (sha256 {geometry.sha256})")


def _print_findings(what: str, findings) -> None:
    for f in findings:
        _say(f"{what}: {f.severity}: {f.code}: {f.message}" + (f" (hint: {f.hint})" if f.severity == "error" else ""))


def _cmd_check_audio(args: argparse.Namespace) -> int:
    from .audio import check_audio

    if (status := _missing(args.paths)) is not None:
        return status
    rejected = 0
    for path in args.paths:
        report = check_audio(path)
        rejected += not report.ok
        if args.json:
            print(json.dumps(report.to_dict(), ensure_ascii=False), flush=True)
            continue
        duration = f"{report.duration_s:.2f} s" if report.duration_s is not None else "-"
        reasons = "; ".join(f"{f.code}: {f.message}" if f.severity == "error" else f"({f.code}: {f.message})"
                            for f in report.findings)
        print(f"{'PASS' if report.ok else 'REJECT':6s}  {path}  {report.format or '-'}  {duration}"
              + (f"  fixes: {', '.join(report.fixes)}" if report.fixes else "")
              + f"\n        {reasons or 'no findings'}"
              + (f"\n        hint: {report.errors[0].hint}" if report.errors else ""), flush=True)
    return EXIT_REJECTED if rejected else EXIT_OK


def _cmd_submit(args: argparse.Namespace) -> int:
    from .audio import check_audio
    from .geometry import boxes_for_upload
    from .ingest import upload_form
    from .payload import VideoInput, VideoParameters, VideoSynthesisRequest, estimate_cost
    from .verdict import Checker

    if (status := _missing([args.photo, args.audio])) is not None:
        return status
    with Checker(geometry=args.geometry) as checker:
        _say_geometry(checker.geometry)
        report = checker.check(args.photo, ratio=args.ratio)
    audio = check_audio(args.audio)
    _print_findings("photo", report.findings)
    _print_findings("audio", audio.findings)
    if report.face_bbox is None or report.ext_bbox is None or report.loaded is None:
        _say("Error: no usable face boxes for this photo; nothing to submit")
        return EXIT_REJECTED
    if (not report.ok or not audio.ok) and not args.force:
        _say("Refused: fix the errors above, or pass --force to submit anyway")
        return EXIT_REJECTED
    cost = estimate_cost(audio.duration_s or 0.0, args.ratio)
    _say(f"estimated cost: CNY {cost:.2f} ({audio.duration_s or 0:.2f} s of video at ratio {args.ratio})")
    form = upload_form(report.loaded)
    boxes = boxes_for_upload(report.face_bbox, report.ext_bbox, form.scale, (form.width, form.height), args.ratio,
                             report.geometry)
    if boxes is None:
        _say("Error: the downscaled photo leaves no room for the crop box")
        return EXIT_REJECTED
    face, ext = boxes
    if form.fixes:
        _say(f"uploading a fixed copy of the photo: {', '.join(form.fixes)}")

    def request(image_url: str, audio_url: str, face_bbox, ext_bbox) -> VideoSynthesisRequest:
        return VideoSynthesisRequest(
            input=VideoInput(image_url=image_url, audio_url=audio_url, face_bbox=list(face_bbox),
                             ext_bbox=list(ext_bbox)),
            parameters=VideoParameters(style_level=args.style))

    if args.dry_run:
        planned = request(args.image_url or f"oss://<upload of {args.photo}>",
                          args.audio_url or f"oss://<upload of {args.audio}>", face, ext)
        print(json.dumps({"request": planned.model_dump(), "estimated_cost_cny": cost}, ensure_ascii=False))
        return EXIT_OK
    output = args.output or str(Path(args.photo).with_suffix(".mp4").name)
    problem = _unwritable(output) if args.wait else None
    if problem:  # found out before anything is uploaded or paid for
        _say(f"Error: {problem}; choose another -o")
        return EXIT_ERROR
    from .client import EmoClient
    from .errors import PortraitRejected

    with EmoClient() as client:
        _talking_to(client)
        image_url = args.image_url or client.upload(form.data, filename=Path(args.photo).with_suffix(
            "." + ("jpg" if form.format == "jpeg" else form.format)).name)
        audio_url = args.audio_url or client.upload(audio.data, filename=Path(args.audio).with_suffix(
            "." + audio.upload_format).name)
        if args.boxes == "remote":
            from .boxes import iou

            detect_url = args.image_url or client.upload(form.data, model="emo-detect-v1", filename="photo.jpg")
            try:
                remote = client.face_detect(detect_url, ratio=args.ratio).output
            except PortraitRejected as exc:
                _say(f"emo-detect rejected the photo: {exc.message} (our check code: {exc.finding_code})")
                return EXIT_REJECTED
            if remote.face_bbox is None or remote.ext_bbox is None:
                _say("Error: emo-detect passed the photo but returned no boxes")
                return EXIT_ERROR
            _say(f"emo-detect boxes: face {remote.face_bbox} ext {remote.ext_bbox}; IoU with ours: face "
                 f"{iou(face, remote.face_bbox):.2f}, ext {iou(ext, remote.ext_bbox):.2f}")
            face, ext = remote.face_bbox, remote.ext_bbox
        body = request(image_url, audio_url, face, ext)
        print(json.dumps({"request": body.model_dump()}, ensure_ascii=False), flush=True)
        created = client.submit(body)
        task_id = created.output.task_id
        print(json.dumps({"task_id": task_id, "task_status": created.output.task_status,
                          "estimated_cost_cny": cost}), flush=True)
        if not args.wait:
            _say(f"submitted; follow it with: emo-prep task {task_id} --wait -o OUT.mp4")
            return EXIT_OK
        return _wait_and_download(client, task_id, output)


def _unwritable(path: str) -> str | None:
    """Why the video could not be written to `path` (None when it can), by writing a probe."""
    import tempfile

    target = Path(path)
    if target.is_dir():
        return f"{path} is a folder, not a file name"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


def _wait_and_download(client, task_id: str, output: str | None) -> int:
    from .errors import TaskFailed

    started = time.monotonic()
    last = [""]

    def progress(task) -> None:
        status = task.output.task_status
        if status != last[0]:
            _say(f"task {task_id}: {status} ({time.monotonic() - started:.0f} s)")
            last[0] = status

    try:
        done = client.wait(task_id, on_update=progress)
    except TaskFailed as exc:
        _say(f"Error: {exc.message}")
        return EXIT_REJECTED
    print(json.dumps({"task_id": task_id, "task_status": done.output.task_status,
                      "usage": done.usage.model_dump() if done.usage else None}), flush=True)
    if output and done.video_url:
        path = client.download(done.video_url, output)
        _say(f"video written to {path} ({path.stat().st_size} bytes)")
    return EXIT_OK


def _cmd_task(args: argparse.Namespace) -> int:
    from .client import EmoClient

    if not args.list and not args.task_id:
        _say("Error: give a TASK_ID or --list")
        return EXIT_ERROR
    with EmoClient() as client:
        _talking_to(client)
        if args.list:
            for item in client.list_tasks(page_size=20).data:
                print(json.dumps(item.model_dump(exclude_none=True)), flush=True)
            return EXIT_OK
        if args.wait:
            return _wait_and_download(client, args.task_id, args.output)
        task = client.get_task(args.task_id)
        print(json.dumps(task.model_dump(exclude_none=True), ensure_ascii=False), flush=True)
        if args.output:
            if not task.video_url:
                _say(f"Error: task {args.task_id} is {task.output.task_status}; no video to download yet")
                return EXIT_REJECTED
            path = client.download(task.video_url, args.output)
            _say(f"video written to {path} ({path.stat().st_size} bytes)")
        return EXIT_OK if task.output.task_status not in ("FAILED", "CANCELED", "UNKNOWN") else EXIT_REJECTED


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_sandbox(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .serve.sandbox import Sandbox, SandboxOptions

    if not _loopback(args.host):
        _say(f"Error: --host must be a loopback address, not {args.host}")
        return EXIT_ERROR
    from .geometry import load_geometry

    options = SandboxOptions(api_key=args.api_key, pending_s=args.pending_s, running_s=args.running_s,
                             fault_429=args.fault_429, fault_500=args.fault_500, latency_s=args.latency,
                             drop_submits=args.drop_submits, expire_after_s=args.expire_after,
                             detect_reject_status=args.detect_reject_status,
                             task_list_shape=args.task_list_shape,
                             detect_geometry=load_geometry(args.detect_geometry) if args.detect_geometry else None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Sandbox(options, host=args.host, port=args.port) as sandbox:
        _say(f"sandbox listening on {sandbox.base_url}; use DASHSCOPE_HTTP_BASE_URL={sandbox.api_base}")
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .client import resolve_base_url
    from .geometry import resolve_geometry
    from .serve.app import ServeOptions, create_app
    from .serve.sockets import IdleClosingProtocol, listen

    if (args.workers is not None and args.workers < 1) or (args.max_queue is not None and args.max_queue < 0) \
            or not args.deadline > 0:
        _say("Error: --workers must be at least 1, --max-queue at least 0 and --deadline above 0")
        return EXIT_ERROR
    upstream, origin = resolve_base_url(args.upstream)
    options = ServeOptions(upstream=upstream, max_queue=args.max_queue, allow_private_urls=args.allow_private_urls,
                           deadline_s=args.deadline, geometry=resolve_geometry(args.geometry),
                           **({"workers": args.workers} if args.workers else {}))
    if not _loopback(args.host):
        _say(f"WARNING: listening on {args.host}: the detect and check endpoints need no key, so anyone who can "
             f"reach this port can use them (and your CPU). Put a proxy with authentication in front of it "
             f"(README, 'Serving').")
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        _say(f"Error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_ERROR
    host = f"[{args.host}]" if ":" in args.host else args.host
    port = sock.getsockname()[1]

    def ready(pids: list[int]) -> None:
        _say(f"emo-prep serve listening on http://{host}:{port} ({len(pids)} check workers, queue "
             f"{options.queue}); gateway upstream {upstream} ({origin}); page /, API /docs, metrics /metrics")

    server = uvicorn.Server(uvicorn.Config(create_app(options, on_ready=ready), log_level="info",
                                           http=IdleClosingProtocol, timeout_keep_alive=SERVE_IDLE_TIMEOUT_S,
                                           limit_concurrency=SERVE_MAX_CONNECTIONS,
                                           timeout_graceful_shutdown=SERVE_STOP_GRACE_S))
    with sock:
        server.run(sockets=[sock])
    return EXIT_OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import BatchOptions, run_batch

    if args.workers is not None and args.workers < 1:
        _say("Error: --workers must be at least 1")
        return EXIT_ERROR
    if args.address and args.engine != "ray":
        _say("Error: --address is for --engine ray")
        return EXIT_ERROR
    options = BatchOptions(input=args.input, audio=args.audio, manifest=args.manifest, ratio=args.ratio,
                           style=args.style, submit=args.submit, workers=args.workers or os.cpu_count() or 1,
                           ledger=args.ledger, out=args.out, max_cost=args.max_cost, retry_failed=args.retry_failed,
                           force=args.force, poll_interval_s=args.poll_interval, geometry=args.geometry,
                           fix=args.fix, wait_lock=args.wait_lock)
    if args.engine == "ray":
        from .raybatch import run_ray_batch

        summary = run_ray_batch(options, address=args.address, workers=args.workers, say=_say)
    else:
        summary = run_batch(options, say=_say)
    reasons = ", ".join(f"{code} {n}" for code, n in summary.reasons.items())
    fixed = f" ({summary.fixed} of them fixed)" if args.fix else ""
    print(f"{summary.jobs} photos: {summary.passed} passed{fixed}, {summary.rejected} rejected"
          + (f" ({reasons})" if reasons else "") + f"; {summary.seconds:.1f} s")
    if args.submit:
        print(f"tasks {summary.submitted}, videos {summary.downloaded}, failed {summary.failed}, "
              f"unknown {summary.unknown}; committed cost CNY {summary.cost_cny:.2f}"
              + ("; stopped by --max-cost" if summary.stopped_by_budget else ""))
    print(f"report: {Path(args.out) / 'report.html'}")
    incomplete = summary.rejected or summary.failed or summary.unknown or summary.stopped_by_budget
    return EXIT_REJECTED if incomplete else EXIT_OK


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate

    def confirm(samples, cost: float) -> bool:
        canvas = sum(s.canvas is not None for s in samples)
        _say(f"{len(samples)} photos to send to emo-detect-v1 ({canvas} on a plain canvas, "
             f"{sum(not s.free for s in samples)} whose box will touch an edge): CNY {cost:.3f}")
        if args.yes:
            return True
        if not sys.stdin.isatty():
            _say("Error: not asking on a non-interactive input; pass --yes to spend it")
            return False
        return input("send them? [y/N] ").strip().lower() in ("y", "yes")

    result = calibrate(args.paths, ratio=args.ratio, output=args.output, samples=args.samples,
                       max_cost=args.max_cost, confirm=confirm, say=_say)
    if result is None:
        _say("nothing sent")
        return EXIT_OK if sys.stdin.isatty() else EXIT_ERROR  # a person said no / nobody could be asked
    for a in result.answers:
        shown = f"{a.sample.source}{' (canvas)' if a.sample.canvas else ''}"
        if a.rejection is not None:
            print(f"MISMATCH  {shown}: we pass it, the service refused it: {a.rejection.code} "
                  f"(our code {a.rejection.finding_code})")
        elif a.iou_before is not None and a.iou_after is not None:
            print(f"{shown}: IoU face {a.iou_before[0]:.3f} -> {a.iou_after[0]:.3f}, "
                  f"ext {a.iou_before[1]:.3f} -> {a.iou_after[1]:.3f}")
        else:
            print(f"{shown}: the answer held no boxes")
    if result.fit is None:
        _say(f"Error: no usable answer; nothing written (spent CNY {result.spent_cny:.3f}; record {result.record})")
        return EXIT_ERROR
    for p in result.fit.params:
        if p.determined:
            spread = f" +- {p.spread:.4f}" if p.spread is not None else ""
            print(f"{p.name} = {p.value:.4f}{spread} (was {p.prior:g}; from {p.n} photos)")
        else:
            lower = "-inf" if p.lower is None else f"{p.lower:g}"
            upper = "inf" if p.upper is None else f"{p.upper:g}"
            bounds = f" (the answers allow {lower} .. {upper})" if p.lower is not None or p.upper is not None else ""
            print(f"{p.name} = {p.value:.4f}: NOT DETERMINED by these photos, kept{bounds}")
    print(f"edges fitted to {result.fit.rms_px:.2f} px rms; spent CNY {result.spent_cny:.3f}"
          + ("; stopped by --max-cost" if result.stopped_by_cap else "")
          + (f"; stopped by an error: {result.interrupted}" if result.interrupted else ""))
    print(f"geometry written to {result.output}; answers kept in {result.record}")
    return EXIT_REJECTED if result.fit.undetermined or result.stopped_by_cap or result.interrupted else EXIT_OK


def _cmd_ledger(args: argparse.Namespace) -> int:
    from .ledger import Ledger
    from .report import job_record

    if not Path(args.ledger).is_file():
        _say(f"Error: no ledger at {args.ledger}")
        return EXIT_ERROR
    with Ledger(args.ledger) as ledger:
        if args.action == "status":
            tasks = ledger.tasks()
            print(json.dumps({"jobs": ledger.counts(), "tasks": dict(sorted(
                {s: sum(t["status"] == s for t in tasks) for s in {t["status"] for t in tasks}}.items())),
                "videos": sum(1 for t in tasks if t["downloaded_at"]),
                "unsettled_submits": len(ledger.unsettled_submits()),
                "committed_cost_cny": round(ledger.committed_cost(), 4)}))
            return EXIT_OK
        if args.action == "export":
            out = Path(args.ledger).parent
            for job in ledger.jobs():
                print(json.dumps(job_record(job, ledger.tasks(job.job_id), out), ensure_ascii=False))
            return EXIT_OK
        job = ledger.job(args.job_id) if args.job_id else None
        if job is None:
            _say(f"Error: give the id of a job in this ledger ({args.job_id or 'none given'})")
            return EXIT_ERROR
        if args.action == "show":
            print(json.dumps({"job": job.__dict__, "tasks": ledger.tasks(job.job_id),
                              "submits": ledger.submits(job.job_id), "events": ledger.events(job.job_id)},
                             ensure_ascii=False, indent=2, default=str))
            return EXIT_OK
        if not args.task and not args.no_task:
            _say("Error: settle needs --task TASK_ID or --no-task")
            return EXIT_ERROR
        try:
            ledger.settle(job.job_id, args.task)
        except ValueError as exc:
            _say(f"Error: {exc}")
            return EXIT_ERROR
        _say(f"job {job.job_id}: settled" + (f" with task {args.task}" if args.task else " as no task"))
        return EXIT_OK


def _log_to_stderr(verbose: bool) -> None:
    """The library's log lines (retries with -v; warnings always) go to stderr, one per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("pipeline")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `emo-prep` console script."""
    args = _parser().parse_args(argv)
    from .errors import EmoPrepError

    _log_to_stderr(getattr(args, "verbose", False))
    try:
        return int(args.run(args))
    except BrokenPipeError:  # the reader left (`| head`): what was written stays written; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except EmoPrepError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug of ours: one line, never a traceback, never the key
        key = os.environ.get("DASHSCOPE_API_KEY")
        text = f"{type(exc).__name__}: {exc}"
        print(f"Error: internal error, please report it: {text.replace(key, '***') if key else text}",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
