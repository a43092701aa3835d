"""The `emo-prep` command: a thin shell over the library.

Exit status: 0 every photo passed, 1 some photo was rejected (unreadable files included),
2 usage error or a failure of the tool itself (models, output folder). Data goes to stdout,
everything else to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emo-prep", description="Prepare portrait photos for DashScope EMO (emo-v1).")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check", help="check photos and compute face_bbox / ext_bbox",
        description="Check portrait photos the way the EMO service will, and compute face_bbox and ext_bbox.",
        epilog="example: emo-prep check --ratio 1:1 --preview previews/ samples/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("paths", nargs="+", metavar="PATH|URL", help="photos, folders of photos, or http(s) URLs")
    check.add_argument("--ratio", choices=["1:1", "3:4"], default="1:1",
                       help="1:1 head portrait (512x512) or 3:4 half body (512x704); default 1:1")
    check.add_argument("--json", action="store_true", help="print one JSON object per photo (JSON lines)")
    check.add_argument("--preview", metavar="DIR", help="write a preview picture per photo into DIR")
    check.set_defaults(run=_cmd_check)
    return parser


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

    sources = list(expand_sources(args.paths))
    if not sources:
        print("Error: no photos found in the given folders", file=sys.stderr)
        return EXIT_ERROR
    rejected = passed = 0
    with Checker() as checker:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `emo-prep` console script."""
    args = _parser().parse_args(argv)
    from .errors import EmoPrepError

    try:
        return int(args.run(args))
    except EmoPrepError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"Error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
