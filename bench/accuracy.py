"""Per-class confusion on the labelled dev photos: emo-prep beside a Haar-cascade baseline.

    .venv/bin/python bench/accuracy.py [--data ../shared/data] [--data34 ...] [--data2 ...]

The baseline is what a developer writes in ten minutes with OpenCV alone: full-resolution
cv2.imread, the frontal-face Haar cascade shipped in cv2.data, the same size rules
(min side, face height and area shares from CheckConfig) and nothing for pose, blur, light.
Both verdicts are scored against `expected` (1:1) and `expected_34` (3:4) of labels.jsonl.
The tables replace the section between the ACCURACY markers of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

from pipeline import Checker  # noqa: E402
from pipeline.config import DEFAULT_CONFIG  # noqa: E402


def haar_verdict(image: np.ndarray | None, cascade: cv2.CascadeClassifier) -> str:
    """The baseline's first reason for a decoded photo (None: cv2 could not read it)."""
    cfg = DEFAULT_CONFIG
    if image is None:
        return "unreadable"
    h, w = image.shape[:2]
    if min(h, w) < cfg.min_side:
        return "image_too_small"
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    k = min(1.0, 1024 / max(h, w))
    small = cv2.resize(gray, (round(w * k), round(h * k))) if k < 1 else gray
    faces = cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        return "no_face"
    if len(faces) > 1:
        return "multiple_faces"
    fx, fy, fw, fh = (v / k for v in faces[0])
    if fh / h <= cfg.face_too_small_h_11:
        return "face_too_small"
    if fh / h >= cfg.face_too_large_h or fw * fh / (w * h) >= cfg.face_too_large_area:
        return "face_too_large"
    return "pass"


def confusion(rows: list[tuple[str, str]]) -> tuple[str, int, int, int]:
    """Markdown confusion table (labelled class x predicted class) and counts."""
    labelled = sorted({t for t, _ in rows}, key=lambda c: (c != "pass", c))
    predicted = sorted({p for _, p in rows}, key=lambda c: (c != "pass", c))
    counts = Counter(rows)
    head = "| labelled \\ predicted | " + " | ".join(predicted) + " | verdict right |"
    lines = [head, "|" + "---|" * (len(predicted) + 2)]
    for t in labelled:
        right = sum(n for (tt, p), n in counts.items() if tt == t and (p == "pass") == (t == "pass"))
        total = sum(n for (tt, _), n in counts.items() if tt == t)
        lines.append(f"| {t} | " + " | ".join(str(counts.get((t, p), "")) for p in predicted)
                     + f" | {right}/{total} |")
    correct = sum(n for (t, p), n in counts.items() if (p == "pass") == (t == "pass"))
    false_accepts = sum(n for (t, p), n in counts.items() if p == "pass" and t != "pass")
    return "\n".join(lines), correct, false_accepts, len(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data34", default=str(ROOT.parent / "shared" / "data34"))
    ap.add_argument("--data2", default=str(ROOT.parent / "shared" / "data2"))
    args = ap.parse_args()
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    sections = []
    with Checker() as checker:
        for folder, ratio in ((Path(args.data), "1:1"), (Path(args.data), "3:4"), (Path(args.data34), "3:4"),
                              (Path(args.data2), "1:1"), (Path(args.data2), "3:4")):
            labels = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines() if line]
            ours, base = [], []
            elapsed = 0.0
            for row in labels:
                if ratio == "1:1":
                    truth = row["reject_reason"] or "pass"
                else:
                    truth = row["expected_34"]["reason"] or "pass"
                t0 = time.perf_counter()
                report = checker.check(folder / row["file"], ratio=ratio)
                elapsed += time.perf_counter() - t0
                ours.append((truth, report.errors[0].code if report.errors else "pass"))
                if ratio == "1:1":
                    base.append((truth, haar_verdict(cv2.imread(str(folder / row["file"])), cascade)))
            for name, rows in (("emo-prep", ours), ("Haar baseline", base)):
                if not rows:
                    continue
                table, correct, fa, n = confusion(rows)
                sections.append(f"### {name}, ratio {ratio}, {folder.name}/ ({n} photos)\n\n"
                                f"Verdict accuracy {correct}/{n} = {correct / n:.3f}, false accepts {fa}."
                                + (f" emo-prep wall time {elapsed:.1f} s." if name == "emo-prep" else "")
                                + "\n\n" + table + "\n")
    body = ("## Accuracy (bench/accuracy.py)\n\n"
            "Command: `.venv/bin/python bench/accuracy.py` (first error code = predicted class; "
            "the baseline has no 3:4 rule and is shown for 1:1 only).\n\n"
            + "\n".join(sections))
    write_section("ACCURACY", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
