"""Speed and memory of the check stage, side by side with baselines in one run.

    .venv/bin/python bench/speed.py [--repeat 7]

1. Per photo (3-12 MP: the dev set's large photos and a 12 MP JPEG made from a sample),
   interleaved, median of --repeat runs each:
     check   pipeline Checker.check(path) (decode reduced, detect, mesh, all rules)
     imread  a plain full-resolution cv2.imread of the same file (the yardstick)
     naive   full imread + detection at full resolution + mesh (what a naive pipeline does)
     haar    full imread + OpenCV's Haar cascade on the full-resolution grey image
   Reported as medians in ms and as ratios to imread.
2. Cold start: `emo-prep check --json one.jpg` as a whole process, median of 5.
3. Peak RSS of `emo-prep check` on a 7000 x 7000 JPEG (os.wait4's ru_maxrss).
4. Batch throughput over the dev photos with 1 and 2 worker processes, one Checker each.
The section between the SPEED markers of RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

DATA = ROOT.parent / "shared" / "data"
EMO_PREP = str(ROOT / ".venv" / "bin" / "emo-prep")


def make_jpeg(path: Path, size: tuple[int, int]) -> Path:
    """A photo-like JPEG of `size` from the astronaut sample: upscaled, with sensor-like noise
    so that it does not compress (and decode) unrealistically fast."""
    src = cv2.imread(str(ROOT / "samples" / "astronaut.png"))
    big = cv2.resize(src, size, interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).normal(0, 6, big.shape).astype(np.int16)
    big = np.clip(big.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def per_photo(photos: list[Path], repeat: int) -> list[dict]:
    from pipeline import Checker
    from pipeline.faces import FaceFinder
    from pipeline.ingest import ImageInfo, LoadedImage

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    results = []
    with Checker() as checker, FaceFinder() as finder:
        def run_check(p: Path) -> None:
            checker.check(p)

        def run_imread(p: Path) -> None:
            cv2.imread(str(p))

        def run_naive(p: Path) -> None:
            full = cv2.imread(str(p))
            h, w = full.shape[:2]
            image = LoadedImage(str(p), ImageInfo(w, h, "jpeg", 1, 0), full, (1.0, 1.0), (), b"")
            faces = finder.detect(image)
            if faces:
                finder.mesh(image, faces[0])

        def run_haar(p: Path) -> None:
            full = cv2.imread(str(p))
            cascade.detectMultiScale(cv2.cvtColor(full, cv2.COLOR_BGR2GRAY), 1.1, 5, minSize=(40, 40))

        runners = {"check": run_check, "imread": run_imread, "naive": run_naive, "haar": run_haar}
        for photo in photos:
            times: dict[str, list[float]] = {k: [] for k in runners}
            for fn in runners.values():  # warm the page cache and each path once
                fn(photo)
            for _ in range(repeat):
                for name, fn in runners.items():  # interleaved: drift hits all alike
                    t0 = time.perf_counter()
                    fn(photo)
                    times[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1000 for k, v in times.items()}
            results.append({"photo": photo.name, "med": med})
    return results


def cold_start(photo: Path, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([EMO_PREP, "check", "--json", str(photo)], capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_RSS_PROBE = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, "
              "stderr=subprocess.DEVNULL); print(os.wait4(p.pid, 0)[2].ru_maxrss)")


def peak_rss_mb(photo: Path) -> float:
    """ru_maxrss of `emo-prep check` started by a small probe process: a child forked from
    this (large) process would inherit its high-water mark across exec."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, EMO_PREP, "check", "--json", str(photo)],
                         capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


_worker = None


def _init() -> None:
    global _worker
    from pipeline import Checker

    _worker = Checker()


def _check(path: str) -> bool:
    return _worker.check(path).ok


def throughput(paths: list[str], workers: int) -> float:
    with mp.get_context("spawn").Pool(workers, initializer=_init) as pool:
        pool.map(_check, paths[:workers * 2])  # models loaded and warm in every worker
        t0 = time.perf_counter()
        pool.map(_check, paths, chunksize=2)
        return len(paths) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        twelve = make_jpeg(Path(tmp) / "made_12mp.jpg", (4000, 3000))
        huge = make_jpeg(Path(tmp) / "made_7000x7000.jpg", (7000, 7000))
        photos = [DATA / f for f in ("dv015.jpg", "dv039.jpg", "dv022.jpg", "dv023.jpg")] + [twelve]
        photos = [p for p in photos if p.exists()]
        rows = per_photo(photos, args.repeat)
        cold = cold_start(DATA / "dv001.jpg" if (DATA / "dv001.jpg").exists() else twelve)
        rss = peak_rss_mb(huge)
        dev = sorted(str(p) for p in DATA.glob("dv*")) * 2
        one = throughput(dev, 1)
        two = throughput(dev, 2)
        sizes = {p.name: cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_2).shape for p in photos}

    lines = ["## Speed and memory (bench/speed.py)", "",
             f"Command: `.venv/bin/python bench/speed.py --repeat {args.repeat}` on {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}), Python {platform.python_version()}.", "",
             "Per photo, median ms of interleaved runs; ratio = time / plain full-resolution `cv2.imread`:", "",
             "| photo | size | check | imread | naive (full decode + full-res detect) | Haar baseline "
             "| check / imread |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        h2, w2 = sizes[row["photo"]]
        m = row["med"]
        lines.append(f"| {row['photo']} | ~{w2 * 2}x{h2 * 2} ({w2 * h2 * 4 / 1e6:.1f} MP) | {m['check']:.1f} | "
                     f"{m['imread']:.1f} | {m['naive']:.1f} | {m['haar']:.1f} | **{m['check'] / m['imread']:.2f}** |")
    lines += ["", f"- Cold start, `emo-prep check --json dv001.jpg` as a whole process: median of 5 = **{cold:.2f} s** "
              "(target < 1.0 s).",
              f"- Peak RSS of `emo-prep check` on a 7000 x 7000 JPEG: **{rss:.0f} MB** (target < 300 MB).",
              f"- Batch over {len(dev)} dev photos, one Checker per worker process: 1 worker {one:.1f} photos/s, "
              f"2 workers {two:.1f} photos/s, **{two / one:.2f}x** (target >= 1.8x)."]
    write_section("SPEED", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
