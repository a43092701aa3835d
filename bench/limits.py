"""Hostile inputs against a baseline and this tree, side by side in one run: time, peak memory
and what each process made of the input.

    .venv/bin/python bench/limits.py [--base main] [--timeout 90]

The baseline is `git archive BASE` unpacked into a temporary folder and run by the same
interpreter (PYTHONPATH first), so only the code differs. Each case is one `emo-prep` process
(`python -m pipeline.cli ...`); peak memory is its ru_maxrss from os.wait4; a process still
running at --timeout is killed and reported as such. Loopback servers for the URL cases run
in this process. The section between the LIMITS markers of RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import platform
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fuzzing import gzip_bomb  # noqa: E402  (tests/fuzzing.py)
from results import write_section  # noqa: E402  (bench/results.py)

SAMPLES = ROOT / "samples"
CORRUPT_AVIF = ROOT / "tests" / "data" / "corrupt.avif"


def _serve(bomb: bytes) -> str:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path.startswith("/bomb"):
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip, gzip")
                self.send_header("Content-Length", str(len(bomb)))
                self.end_headers()
                self.wfile.write(bomb)
                return
            self.send_response(200)  # /slow: one byte a second of a 100 kB body
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                time.sleep(1.0)
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def _png16(path: Path, side: int) -> Path:
    ramp = np.linspace(0, 65535, side, dtype=np.uint16)
    array = np.dstack([np.tile(ramp, (side, 1))] * 3 + [np.full((side, side), 65535, np.uint16)])
    array[:64, :64, 3] = 0
    cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return path


def _silent_flac(path: Path, hours: float, rate: int = 8000) -> Path:
    with av.open(str(path), "w", format="flac") as dst:
        stream = dst.add_stream("flac", rate=rate, layout="mono")
        minute = np.zeros((1, rate * 60), np.int16)
        for _ in range(int(hours * 60)):
            frame = av.AudioFrame.from_ndarray(minute, format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return path


def _wav(path: Path, seconds: float, *, bits: int = 16, claim_bytes: int | None = None) -> Path:
    rate = 16000
    pcm = b"\x00\x10" * int(rate * seconds)
    size = len(pcm) if claim_bytes is None else claim_bytes
    path.write_bytes(b"RIFF" + struct.pack("<I", min(36 + size, 0xFFFFFFFF)) + b"WAVE" + b"fmt "
                     + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, bits) + b"data"
                     + struct.pack("<I", size) + pcm)
    return path


#: Runs one command and reports its peak memory. It is a fresh small process, so the figure is
#: the command's own: Linux hands a child the peak RSS of the process it was spawned from, and
#: this bench holds a 100 MP image in memory while it makes it.
_MEASURE = """
import json, os, subprocess, sys, time
timeout, out = float(sys.argv[1]), open(sys.argv[2], "wb")
started = time.monotonic()
proc = subprocess.Popen(sys.argv[3:], stdout=out, stderr=subprocess.STDOUT)
killed = False
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
        break
    if time.monotonic() - started > timeout and not killed:
        proc.kill()
        killed = True
    time.sleep(0.02)
print(json.dumps({"seconds": time.monotonic() - started, "peak_mb": usage.ru_maxrss / 1024,
                  "code": os.waitstatus_to_exitcode(status), "killed": killed}))
"""


def _run(code: Path, args: list[str], timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    with tempfile.NamedTemporaryFile() as out:
        measured = subprocess.run([sys.executable, "-c", _MEASURE, str(timeout), out.name, sys.executable, "-m",
                                   "pipeline.cli", *args], env=env, capture_output=True, text=True,
                                  cwd=tempfile.gettempdir(), check=True)
        result = json.loads(measured.stdout)
        result["output"] = Path(out.name).read_text(encoding="utf-8", errors="replace")
    return result


_OPEN_LEDGER = "import sys; from pipeline.ledger import Ledger; Ledger(sys.argv[1]).close()"


def _ledger_race(code: Path, tmp: Path, rounds: int = 5, processes: int = 8) -> str:
    """Processes started together onto a ledger file that does not exist yet (their imports
    stagger them by milliseconds, which is when one met another's half-made schema): how many fail."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    errors: list[str] = []
    for n in range(rounds):
        path = tmp / f"race-{code.name}-{n}.sqlite"
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_LEDGER, str(path)], env=env, stderr=subprocess.PIPE,
                                  text=True, cwd=tmp) for _ in range(processes)]  # cwd: no pipeline/ beside
        said = [p.communicate()[1] for p in procs]
        errors += [text.strip().splitlines()[-1] for p, text in zip(procs, said, strict=True) if p.returncode]
    kinds = sorted({e.split(":", 1)[-1].strip() for e in errors})
    return f"{len(errors)} of {rounds * processes} failed" + (f" ({'; '.join(kinds)})" if kinds else "")


def _findings(result: dict) -> str:
    """What the JSON lines said: the first error code per record, or the error line."""
    if result["killed"]:
        return "killed at the timeout"
    codes = []
    for line in result["output"].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        errors = [f["code"] for f in record.get("findings", []) if f["severity"] == "error"]
        codes.append(errors[0] if errors else "ok")
    error = next((line for line in result["output"].splitlines() if line.startswith("Error")), "")
    text = ", ".join(codes) or error[:70].replace("|", "/")
    return f"exit {result['code']}: {text}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="main", help="git revision of the baseline (default main)")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    here_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="limits-") as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "base"
        base.mkdir()
        archive = subprocess.run(["git", "archive", base_rev], cwd=ROOT, capture_output=True, check=True).stdout
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(base, filter="data")
        bomb = gzip_bomb(1024)
        url = _serve(bomb)
        good_wav = str(SAMPLES / "speech.wav")
        cases = [
            (f"URL, `Content-Encoding: gzip, gzip`, {len(bomb):,} bytes -> 1 GiB: check",
             ["check", "--json", f"{url}/bomb.jpg"]),
            ("same URL: check-audio", ["check-audio", "--json", f"{url}/bomb.wav"]),
            ("URL served at 1 byte/s (15 s limit): check", ["check", "--json", f"{url}/slow.jpg"]),
            ("corrupt AVIF, then a good PNG: check", ["check", "--json", str(CORRUPT_AVIF),
                                                      str(SAMPLES / "astronaut.png")]),
            ("WAV with 0 bits per sample, then a good WAV: check-audio",
             ["check-audio", "--json", str(_wav(tmp / "zero.wav", 1.0, bits=0)), good_wav]),
            ("WAV header announcing 2^31 bytes (18.6 h), 1 s inside: check-audio",
             ["check-audio", "--json", str(_wav(tmp / "liar.wav", 1.0, claim_bytes=2**31))]),
            ("3-hour silent FLAC (8 kHz): check-audio",
             ["check-audio", "--json", str(_silent_flac(tmp / "silence.flac", 3.0))]),
            ("7000 x 7000 16-bit RGBA PNG (49 MP): check", ["check", "--json", str(_png16(tmp / "49mp.png", 7000))]),
            ("10000 x 10000 16-bit RGBA PNG (100 MP): check",
             ["check", "--json", str(_png16(tmp / "100mp.png", 10000))]),
        ]
        race = (_ledger_race(base, tmp), _ledger_race(ROOT, tmp))
        rows = []
        for name, case in cases:
            before, after = _run(base, case, args.timeout), _run(ROOT, case, args.timeout)
            rows.append((name, before, after))
            print(name, json.dumps({k: v for k, v in before.items() if k != "output"}),
                  json.dumps({k: v for k, v in after.items() if k != "output"}), flush=True)

    def cell(r: dict) -> str:
        return f"{r['seconds']:.1f} s{'+' if r['killed'] else ''} | {r['peak_mb']:.0f} MB | {_findings(r)}"

    lines = [f"## Limits: hostile inputs, before ({base_rev}) and after ({here_rev})", "",
             f"`.venv/bin/python bench/limits.py --base {args.base} --timeout {args.timeout:g}` on {platform.node()} "
             f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}. One `emo-prep` process per cell (the baseline "
             "is `git archive` of the base run by the same interpreter); time is wall clock including the ~1-2 s "
             "start (models load for `check`), peak is the process's ru_maxrss; `+` = killed at the timeout.", "",
             "| hostile input | before: time | peak | outcome | after: time | peak | outcome |",
             "|---|---:|---:|---|---:|---:|---|"]
    lines += [f"| {name} | {cell(before)} | {cell(after)} |" for name, before, after in rows]
    lines += ["", f"Ledger opened by 8 processes started at once onto a new file, 5 times: before {race[0]}; "
                  f"after {race[1]}."]
    write_section("LIMITS", "\n".join(lines))


if __name__ == "__main__":
    main()
