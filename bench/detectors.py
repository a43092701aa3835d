"""Which MediaPipe face detector: full range, short range, on the labelled dev photos.

    .venv/bin/python bench/detectors.py

For each model, one plain detection per photo on emo-prep's working copy (score >= 0.5):
recall of the labelled faces (IoU >= 0.3), detections on the photos labelled no_face,
median IoU of the pass photos' face box with the label, median time per detection.
The section between the DETECTORS markers of RESULTS.md is replaced.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

DATA = ROOT.parent / "shared" / "data"

from pipeline.ingest import load_image  # noqa: E402
from pipeline.modelfiles import model_path  # noqa: E402
from pipeline.nativelog import quiet_native_stderr  # noqa: E402

MODELS = {"full range (sparse)": "face_detection_full_range_sparse.tflite",
          "short range": "face_detection_short_range.tflite"}


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def main() -> int:
    with quiet_native_stderr():
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    labels = [json.loads(line) for line in (DATA / "labels.jsonl").read_text().splitlines() if line]
    images = {row["file"]: load_image(DATA / row["file"]) for row in labels}
    rows = []
    for name, file in MODELS.items():
        with quiet_native_stderr():
            detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=model_path(file)), min_detection_confidence=0.5))
        found = total = false_on_empty = 0
        pass_ious, times = [], []
        for row in labels:
            image = images[row["file"]]
            rgb = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image.pixels[:, :, ::-1]))
            with quiet_native_stderr():
                t0 = time.perf_counter()
                detections = detector.detect(rgb).detections
                times.append(time.perf_counter() - t0)
            sx, sy = image.scale
            boxes = [(d.bounding_box.origin_x * sx, d.bounding_box.origin_y * sy,
                      (d.bounding_box.origin_x + d.bounding_box.width) * sx,
                      (d.bounding_box.origin_y + d.bounding_box.height) * sy) for d in detections]
            total += len(row["faces"])
            found += sum(any(iou(face, b) >= 0.3 for b in boxes) for face in row["faces"])
            if row["reject_reason"] == "no_face":
                false_on_empty += len(boxes)
            if row["expected"] == "pass":
                pass_ious.append(max((iou(row["faces"][0], b) for b in boxes), default=0.0))
        with quiet_native_stderr():
            detector.close()
        rows.append(f"| {name} | {found}/{total} = {found / total:.2f} | {false_on_empty} | "
                    f"{statistics.median(pass_ious):.2f} (min {min(pass_ious):.2f}) | "
                    f"{statistics.median(times) * 1000:.1f} |")
    body = "\n".join([
        "## Face detector choice (bench/detectors.py)", "",
        "Command: `.venv/bin/python bench/detectors.py`; one plain pass per photo on the working copy, score >= 0.5.",
        "",
        "| model | labelled faces found | detections on no_face photos | pass-photo face IoU, median "
        "| ms per detection |",
        "|---|---|---|---|---|", *rows, "",
        "emo-prep uses the full-range model (twice: plain and inside a 25 % margin, see faces.py)."])
    write_section("DETECTORS", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
