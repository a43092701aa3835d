"""The 3:4 hips rule on data34's half-body passes, cut lower and lower: where does it flip?

    .venv/bin/python bench/hips.py [--data ../shared/data34]

Each labelled pass is cut at k face sides below its labelled hip joints (k < 0: the hips are
outside) and the body rule alone is asked (face from the detector, hips from the pose model,
checks.body_cut_off). A rule that follows the labels flips at one small k on every photo.
Baseline: DESIGN's first ROI guess (7 F square, 2.2 F below the face centre) with the
margin it needed to separate the dev labels (1.8 F) and no visibility test. Also: how far
the predicted hips lie from the labelled ones on the uncut photos. Writes the HIPS section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

from pipeline import checks  # noqa: E402
from pipeline.body import ROI_DROP_FACES, ROI_FACES, BodyFinder  # noqa: E402
from pipeline.config import DEFAULT_CONFIG, CheckConfig  # noqa: E402
from pipeline.faces import FaceFinder, primary_index  # noqa: E402
from pipeline.ingest import decode_image  # noqa: E402

CUTS = (-0.8, -0.4, -0.1, 0.2, 0.5, 0.8, 1.2)
BASELINE = {"roi": (7.0, 2.2), "config": CheckConfig(hip_margin_faces=1.8, hip_min_visibility=0.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data34")
    args = ap.parse_args()
    rows = [json.loads(line) for line in (args.data / "labels.jsonl").read_text().splitlines() if line.strip()]
    passes = [r for r in rows if r["expected_34"]["expected"] == "pass" and r.get("hips")]
    variants = {"emo-prep": (BodyFinder(), DEFAULT_CONFIG),
                "baseline": (BodyFinder(*BASELINE["roi"]), BASELINE["config"])}
    table: dict[str, list[str]] = {name: [] for name in variants}
    errors: dict[str, list[float]] = {name: [] for name in variants}
    with FaceFinder() as finder:
        for row in passes:
            pixels = cv2.imread(str(args.data / row["file"]))
            hip_y = max(y for _, y in row["hips"])
            cells: dict[str, list[str]] = {name: [] for name in variants}
            for k in (None, *CUTS):
                side = max(row["faces"][0][2] - row["faces"][0][0], row["faces"][0][3] - row["faces"][0][1])
                bottom = pixels.shape[0] if k is None else int(hip_y + k * side)
                if bottom > pixels.shape[0]:
                    for name in variants:
                        cells[name].append("-")
                    continue
                image = decode_image(cv2.imencode(".png", pixels[:bottom])[1].tobytes(), row["file"])
                faces = [f for f in finder.detect(image) if f.score >= DEFAULT_CONFIG.min_face_score]
                face = faces[primary_index(faces, image.info.width, image.info.height)]
                for name, (body, cfg) in variants.items():
                    hips = body.hips(image, face)
                    if k is None:
                        errors[name].append(abs(max(y for _, y in hips.points) - hip_y) / face.side)
                        continue
                    cells[name].append("R" if checks.body_cut_off(hips, face, image.info, cfg) else "P")
            for name in variants:
                table[name].append(f"| {row['file']} | {name} | " + " | ".join(cells[name]) + " |")
    for body, _ in variants.values():
        body.close()
    lines = [
        "## 3:4 hips rule (bench/hips.py)",
        "",
        "Command: `.venv/bin/python bench/hips.py`. Each data34 pass cut k face sides below its labelled",
        "hips; P = the body rule passes, R = body_cut_off (ideal: R for k <= 0, P from a small k on).",
        f"emo-prep: ROI {ROI_FACES:g} F centred {ROI_DROP_FACES:g} F below the face, hips >= "
        f"{DEFAULT_CONFIG.hip_margin_faces:g} F above the bottom, visibility >= {DEFAULT_CONFIG.hip_min_visibility:g}.",
        f"Baseline: ROI {BASELINE['roi'][0]:g} F centred {BASELINE['roi'][1]:g} F below, hips >= "
        f"{BASELINE['config'].hip_margin_faces:g} F above the bottom.",
        "",
        "| photo | rule | " + " | ".join(f"k={k:g}" for k in CUTS) + " |",
        "|---|---|" + "---|" * len(CUTS),
    ]
    for name in variants:
        lines += table[name]
    lines.append("")
    for name in variants:
        e = errors[name]
        lines.append(f"- {name}: predicted vs labelled lower hip on the uncut photos, in face sides: median "
                     f"{statistics.median(e):.2f}, max {max(e):.2f}.")
    write_section("HIPS", "\n".join(lines))


if __name__ == "__main__":
    main()
