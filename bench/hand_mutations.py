"""The hand mutations of issue 14: each one-line bug that the suite once let through, applied to
a scratch copy of the package, and the test that must now catch it.

    .venv/bin/python bench/hand_mutations.py [NAME ...]

For each mutation: copy pipeline/, tests/, samples/ and models/ to .hand-mutations/ (beside
this checkout's files, so ../shared is found as usual), apply the change there, run the named
tests with PYTHONPATH pointing at the copy (the emo-prep processes the tests start import it
too), and print CAUGHT (the tests failed) or MISSED. A control run first runs every named test on
an unchanged copy: they must pass there. The checkout itself is never changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".hand-mutations"

#: name -> (file, original text, mutated text, tests that must fail)
MUTATIONS: dict[str, tuple[str, str, str, list[str]]] = {
    "key sent to the OSS upload host": (
        "pipeline/client.py", 'files={"file": (filename, data, mime)}, authorised=False)',
        'files={"file": (filename, data, mime)}, authorised=True)',
        ["tests/mutation/test_client_wire.py::test_the_key_reaches_the_api_host_only",
         "tests/test_key_path.py::test_cli_batch_submit_and_download"]),
    "API error message not redacted": (
        "pipeline/client.py", 'message = self._redact(parsed.message or response.reason_phrase or "error")',
        'message = parsed.message or response.reason_phrase or "error"',
        ["tests/mutation/test_client_wire.py::test_error_answers_are_typed_and_free_of_the_key",
         "tests/mutation/test_client_wire.py::test_a_reason_phrase_that_echoes_the_key_is_redacted"]),
    "3:4 face top at 12 % of the width": (
        "pipeline/geometry.py", "cy - side / 2 - geometry.face_top_34 * bh",
        "cy - side / 2 - geometry.face_top_34 * bw",
        ["tests/mutation/test_geometry_rules.py"]),
    "face_box off by one at the right edge": (
        "pipeline/geometry.py", "x2 = max(min(w, math.ceil(xyxy[2])), x1 + 1)",
        "x2 = max(min(w - 1, math.ceil(xyxy[2])), x1 + 1)",
        ["tests/mutation/test_geometry_rules.py::test_face_box_rounds_outwards_and_clips"]),
    "face_too_small: <= becomes <": (
        "pipeline/checks.py", "if h_share <= small:", "if h_share < small:",
        ["tests/mutation/test_check_rules.py::test_face_height_limits"]),
    "audio_too_long: >= becomes >": (
        "pipeline/audio.py", "if samples / rate >= AUDIO_MAX_SECONDS:", "if samples / rate > AUDIO_MAX_SECONDS:",
        ["tests/mutation/test_audio_limits.py"]),
    "queue-ahead limit dropped": (
        "pipeline/batch.py", "while queue and len(active) < QUEUE_AHEAD + 1:", "while queue:",
        ["tests/test_batch_order.py::test_no_more_than_queue_ahead_tasks_wait_behind_the_running_one"]),
    "upload reused although about to expire": (
        "pipeline/batch.py", "valid_for_s=UPLOAD_REUSE_MARGIN_S)", "valid_for_s=0)",
        ["tests/test_batch_order.py::test_an_upload_about_to_expire_is_made_again"]),
    "a 3600 s Retry-After slept through": (
        "pipeline/client.py", "if hinted is not None and hinted > self.retry.retry_after_cap_s:",
        "if False:",
        ["tests/mutation/test_client_wire.py::test_a_retry_after_past_the_cap_is_raised_at_once"]),
    "submit sent before it is written down": (
        "pipeline/batch.py",
        "        submit_id = ledger.begin_submit(job.job_id, body, hashlib.sha256(json.dumps(body, sort_keys=True)"
        ".encode())\n                                        .hexdigest())\n        try:\n"
        "            created = client.submit(request)\n",
        "        try:\n            created = client.submit(request)\n"
        "            submit_id = ledger.begin_submit(job.job_id, body, hashlib.sha256(json.dumps(body, sort_keys=True)"
        ".encode()).hexdigest())\n",
        ["tests/test_batch_order.py::test_the_submit_is_written_down_before_it_is_sent"]),
    "job marked done before the video is written": (
        "pipeline/batch.py", "            path = client.download(video_url, dest)\n",
        "            ledger.mark_downloaded(task_id, str(dest), 0)\n"
        "            path = client.download(video_url, dest)\n",
        ["tests/test_batch_order.py::test_the_video_is_complete_before_the_job_is_marked_done"]),
    "reason shown is the last error, not the first": (
        "pipeline/report.py", 'primary = html.escape(errors[0]["code"]) if errors else ""',
        'primary = html.escape(errors[-1]["code"]) if errors else ""',
        ["tests/test_batch.py::test_batch_without_submit_gives_the_verdicts_of_check_and_a_report_that_opens"]),
}


def run(name: str | None, tests: list[str]) -> tuple[bool, float]:
    """Apply mutation `name` (None: none, the control run) to a fresh copy and run `tests`;
    True when they failed."""
    shutil.rmtree(SCRATCH, ignore_errors=True)
    for part in ("pipeline", "tests", "samples", "models"):
        shutil.copytree(ROOT / part, SCRATCH / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", SCRATCH / "pyproject.toml")
    if name is not None:
        path, original, mutated, _ = MUTATIONS[name]
        target = SCRATCH / path
        text = target.read_text()
        if text.count(original) != 1:
            raise SystemExit(f"{name}: the original text is not found exactly once in {path}")
        target.write_text(text.replace(original, mutated))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=SCRATCH, env={**os.environ, "PYTHONPATH": str(SCRATCH)}, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode not in (0, 1):
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{name}: pytest could not run (exit {proc.returncode})")
    return proc.returncode == 1, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="some of the mutations (default: all)")
    names = ap.parse_args().names or list(MUTATIONS)
    missed = 0
    try:
        everything = sorted({t for name in names for t in MUTATIONS[name][3]})
        failed, seconds = run(None, everything)
        print(f"control (no mutation): the {len(everything)} test selections {'FAIL' if failed else 'pass'} "
              f"({seconds:.0f} s)", flush=True)
        if failed:
            return 2
        for name in names:
            caught, seconds = run(name, MUTATIONS[name][3])
            missed += not caught
            print(f"{'CAUGHT' if caught else 'MISSED'}  {name}  ({seconds:.0f} s; {', '.join(MUTATIONS[name][3])})",
                  flush=True)
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
