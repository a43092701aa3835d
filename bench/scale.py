"""The check-only batch at scale: the process-pool batch (the baseline) beside the Ray batch,
on the same photos, in one run.

    .venv/bin/python bench/scale.py [--photos 200] [--repeat 3]

1. PHOTOS distinct files made from the dev photos (repeated; a unique trailer after each JPEG's
   end marker makes every copy a distinct job without changing what decodes).
2. Each engine at 1 and 2 workers, as whole `emo-prep batch` processes into a fresh OUT:
   the wall time for all PHOTOS, and for ONE photo (the fixed start-up cost: process, imports,
   worker processes or a local Ray with its actors, models, the report). Interleaved, medians.
   photos/s end to end = PHOTOS / wall; steady photos/s = (PHOTOS - 1) / (wall - one-photo wall).
3. What a cluster would meet next: listing (pyarrow, file://), the driver's share per photo
   (ledger write of a result), what each result carries back through Ray's object store, and the
   decode's share of one check.
The section between the SCALE markers of RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

DATA = ROOT.parent / "shared" / "data"
EMO_PREP = str(ROOT / ".venv" / "bin" / "emo-prep")


def make_photos(folder: Path, count: int) -> list[Path]:
    sources = sorted(p for p in DATA.glob("*.jpg"))
    if not sources:
        sys.exit(f"no dev photos in {DATA}")
    folder.mkdir(parents=True)
    made = []
    for i in range(count):
        src = sources[i % len(sources)]
        dest = folder / f"p{i:04d}-{src.name}"
        dest.write_bytes(src.read_bytes() + f"emo-prep bench copy {i}".encode())
        made.append(dest)
    return made


def run_batch(folder: Path, engine: str, workers: int, out: Path) -> float:
    args = [EMO_PREP, "batch", str(folder), "--workers", str(workers), "--out", str(out)]
    if engine == "ray":
        args += ["--engine", "ray"]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    shutil.rmtree(out)
    return wall


def bottlenecks(folder: Path, photos: list[Path]) -> dict[str, float]:
    """Per-photo costs that do not shrink when actors are added."""
    from pipeline import Checker
    from pipeline.batch import BatchOptions, Row, record_result, register_job, thumbnail_jpeg
    from pipeline.ingest import load_image
    from pipeline.ledger import Ledger
    from pipeline.preview import render_preview
    from pipeline.raybatch import list_photos

    list_photos(f"file://{folder}")  # pyarrow's first call pays its import
    started = time.perf_counter()
    listed = list_photos(f"file://{folder}")
    list_s = time.perf_counter() - started
    sample = photos[:40]
    decode, check, sizes = [], [], []
    with Checker() as checker:
        checker.check(str(sample[0]))  # warm
        for path in sample:
            t0 = time.perf_counter()
            load_image(str(path))
            t1 = time.perf_counter()
            report = checker.check(str(path))
            t2 = time.perf_counter()
            decode.append(t1 - t0)
            check.append(t2 - t1)
            thumb = thumbnail_jpeg(render_preview(report)) or b""
            sizes.append(len(json.dumps(report.to_dict(), ensure_ascii=False).encode()) + len(thumb))
        reports = [checker.check(str(p)).to_dict() for p in sample]
    with tempfile.TemporaryDirectory() as tmp:
        options = BatchOptions(input=str(folder), out=tmp)
        ledger = Ledger(Path(tmp) / "ledger.sqlite")
        t0 = time.perf_counter()
        for i, (path, report) in enumerate(zip(sample, reports, strict=True)):
            row = Row(i, str(path), None, "1:1", "normal")
            key = register_job(ledger, row, options, f"{i:064x}")
            record_result(ledger, key, row, report, None, {}, options)
        record_s = (time.perf_counter() - t0) / len(sample)
        ledger.close()
    return {"listed": len(listed), "list_ms_per_1000": 1000 * list_s / len(listed) * 1000,
            "decode_ms": 1000 * statistics.median(decode), "check_ms": 1000 * statistics.median(check),
            "result_kb": statistics.median(sizes) / 1024, "record_ms": 1000 * record_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, one = Path(tmp) / "photos", Path(tmp) / "one"
        photos = make_photos(folder, args.photos)
        one.mkdir()
        shutil.copy2(photos[0], one / photos[0].name)
        cases = [(engine, workers) for engine in ("local", "ray") for workers in (1, 2)]
        walls: dict[tuple[str, int, str], list[float]] = {}
        for rep in range(args.repeat):
            for engine, workers in cases:
                for name, src in (("one", one), ("all", folder)):
                    wall = run_batch(src, engine, workers, Path(tmp) / "out")
                    walls.setdefault((engine, workers, name), []).append(wall)
                    print(f"[{rep + 1}/{args.repeat}] {engine} x{workers} {name}: {wall:.1f} s", flush=True)
        extra = bottlenecks(folder, photos)
    med = {k: statistics.median(v) for k, v in walls.items()}
    lines = [
        "## Scale-out: process-pool batch vs Ray batch (bench/scale.py)", "",
        f"Command: `.venv/bin/python bench/scale.py --photos {args.photos} --repeat {args.repeat}` on "
        f"{os.cpu_count()} cores (x86_64, shared with other work), Python {platform.python_version()}; "
        f"{args.photos} distinct files made from the {len(list(DATA.glob('*.jpg')))} dev JPEGs; whole "
        f"`emo-prep batch` processes (check only, report written), medians of {args.repeat} interleaved runs; "
        f"load average at the end {os.getloadavg()[0]:.1f}.", "",
        "| engine | workers | wall, all photos (s) | photos/s end to end | start-up: wall for 1 photo (s) | "
        "photos/s after start-up |",
        "|---|---|---|---|---|---|"]
    for engine, workers in cases:
        total, start = med[(engine, workers, "all")], med[(engine, workers, "one")]
        steady = (args.photos - 1) / max(1e-9, total - start)
        label = "process pool (baseline)" if engine == "local" else "Ray Data, local"
        lines.append(f"| {label} | {workers} | {total:.1f} | {args.photos / total:.1f} | {start:.1f} | {steady:.1f} |")
    lines.append("")
    for engine in ("local", "ray"):
        one_w, two_w = med[(engine, 1, "all")] - med[(engine, 1, "one")], med[(engine, 2, "all")] - med[(engine, 2,
                                                                                                         "one")]
        lines.append(f"- {engine}: 2 workers vs 1 after start-up: **{one_w / max(1e-9, two_w):.2f}x**.")
    ratio = ((args.photos - 1) / (med[("ray", 2, "all")] - med[("ray", 2, "one")])) / (
        (args.photos - 1) / (med[("local", 2, "all")] - med[("local", 2, "one")]))
    lines += [
        f"- Ray / process pool at 2 workers, photos/s after start-up: **{ratio:.2f}**; start-up "
        f"{med[('ray', 2, 'one')]:.1f} s vs {med[('local', 2, 'one')]:.1f} s.",
        f"- Per photo, in one process (median of 40): decode {extra['decode_ms']:.1f} ms of a "
        f"{extra['check_ms']:.1f} ms check; the result sent back through the object store (report JSON + "
        f"thumbnail) {extra['result_kb']:.1f} KB; the driver's ledger write {extra['record_ms']:.2f} ms; "
        f"listing with pyarrow (file://) {extra['list_ms_per_1000']:.1f} ms per 1000 photos."]
    write_section("SCALE", "\n".join(lines))


if __name__ == "__main__":
    main()
