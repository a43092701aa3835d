"""The dev passes remade into rejects with the labels' own recipes: does each get rejected?

    .venv/bin/python bench/derived.py [--data ../shared/data]

The held-out photos include derived images (labels README: Gaussian blur of sigma 0.06 x face
height, pixels x 0.1, Lanczos downscaling, tight crops, faces pushed past the border, two
portraits side by side, 90/180/270-degree rotations). Each of the 21 dev passes is put through
each recipe and checked by emo-prep and by the Haar baseline of bench/accuracy.py. Every
variant should be a reject; the tables give the first reason. Writes the DERIVED section.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from accuracy import confusion, haar_verdict  # noqa: E402  (bench/accuracy.py)
from results import write_section  # noqa: E402

from pipeline import Checker  # noqa: E402


def variants(pixels: np.ndarray, face: list[int]) -> dict[str, np.ndarray]:
    """Recipe name (the reason it should give) -> image; recipes that do not fit are left out."""
    h, w = pixels.shape[:2]
    x1, y1, x2, y2 = face
    fh, fw, cx, cy = y2 - y1, x2 - x1, (x1 + x2) / 2, (y1 + y2) / 2
    k = 399 / min(h, w)
    out = {
        "blur": cv2.GaussianBlur(pixels, (0, 0), 0.06 * fh),
        "dark": (pixels.astype(np.float32) * 0.1).astype(np.uint8),
        "image_too_small": cv2.resize(pixels, (round(w * k), round(h * k)), interpolation=cv2.INTER_LANCZOS4),
        "face_cut_off": pixels[:, int(x1 + 0.3 * fw):],  # 30 % of the face width past the left edge
        "multiple_faces": np.hstack([pixels, pixels]),
        "pose (90)": cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE),
        "pose (180)": cv2.rotate(pixels, cv2.ROTATE_180),
        "pose (270)": cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }
    side = int(fh / 0.7)  # a square crop the face fills 70 % of the height of
    if side <= min(h, w):
        x, y = int(min(max(cx - side / 2, 0), w - side)), int(min(max(cy - side / 2, 0), h - side))
        out["face_too_large"] = pixels[y:y + side, x:x + side]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    folder = Path(args.data)
    rows = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines() if line]
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    ours, base = [], []
    passes = [row for row in rows if row["expected"] == "pass"]
    with Checker() as checker:
        for row in passes:
            pixels = cv2.imread(str(folder / row["file"]))
            for recipe, image in variants(pixels, row["faces"][0]).items():
                report = checker.check_bytes(cv2.imencode(".png", image)[1].tobytes(), row["file"])
                ours.append((recipe, report.errors[0].code if report.errors else "pass"))
                base.append((recipe, haar_verdict(image, cascade)))
    sections = []
    for name, results in (("emo-prep", ours), ("Haar baseline", base)):
        table, correct, accepted, n = confusion(results)
        sections.append(f"### {name} ({n} variants of the {len(passes)} passes)\n\n"
                        f"Rejected {correct}/{n}; passed (false accepts) {accepted}.\n\n{table}\n")
    write_section("DERIVED", "## Dev passes remade with the labels' recipes (bench/derived.py)\n\n"
                  "Command: `.venv/bin/python bench/derived.py`; rows: the recipe (the reason the labels would "
                  "give), columns: the first reason found.\n\n" + "\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
