"""Do the light rules treat every skin tone alike? The dark rule's measure, old and new, on the
same faces made darker step by step, and the blur rule on small, soft copies.

    .venv/bin/python bench/fairness.py

Faces: every labelled pass of data/, data34/ and data2/ (data2 labels skin tone: light, medium,
dark; data/ and data34/ passes are not labelled and are shown as "unlabelled"). The face region
is the one the checker measures (the mesh's bounding box on the original photo); only the light
is changed, in linear light (exposure x k), so the face itself stays where it is.

  mean < 35   the face's mean grey level (the dark rule before this change)
  p90 < 45    the 90th percentile of the face's grey levels (lit skin, eye whites, highlights)

For each face: the smallest exposure factor k at which it still passes (lower = more
tolerant). A rule that depends on skin tone shows it as a higher k for darker skin.
The section between the FAIRNESS markers of RESULTS.md is replaced.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

from pipeline import Checker, checks  # noqa: E402
from pipeline.config import DEFAULT_CONFIG  # noqa: E402
from pipeline.faces import primary_index  # noqa: E402
from pipeline.ingest import load_image  # noqa: E402

SHARED = ROOT.parent / "shared"
EXPOSURES = [round(0.9 ** i, 3) for i in range(45)]  # 1.0 down to ~0.01
#: The mean rule as it was before (min_face_luma 35), beside the rule `check` applies now.
RULES = {"mean < 35": lambda g: checks.face_luma(g) < 35,
         f"p90 < {DEFAULT_CONFIG.min_face_highlights:g}":
             lambda g: checks.face_highlights(g) < DEFAULT_CONFIG.min_face_highlights}


def darkened(bgr: np.ndarray, k: float) -> np.ndarray:
    linear = (bgr.astype(np.float32) / 255.0) ** 2.2
    return np.clip(255.0 * (linear * k) ** (1 / 2.2), 0, 255).astype(np.uint8)


def main() -> int:
    tolerance: dict[str, dict[str, list[float]]] = {rule: defaultdict(list) for rule in RULES}
    soft: dict[str, list[bool]] = defaultdict(list)
    with Checker() as checker:
        finder = checker._finder()
        for folder in ("data", "data34", "data2"):
            for line in (SHARED / folder / "labels.jsonl").read_text().splitlines():
                row = json.loads(line)
                if (row.get("expected") or row["expected_34"]["expected"]) != "pass":
                    continue
                group = row.get("skin_tone") or "unlabelled"
                image = load_image(SHARED / folder / row["file"])
                faces = finder.detect(image)
                face = faces[primary_index(faces, image.info.width, image.info.height)]
                pts = finder.mesh(image, face).points[:, :2] / image.scale
                x1, y1 = np.floor(pts.min(axis=0)).astype(int).clip(0)
                x2, y2 = np.ceil(pts.max(axis=0)).astype(int)
                crop = image.pixels[y1:y2, x1:x2]
                for rule, is_dark in RULES.items():
                    passing = [k for k in EXPOSURES
                               if not is_dark(cv2.cvtColor(darkened(crop, k), cv2.COLOR_BGR2GRAY).astype(np.float32))]
                    tolerance[rule][group].append(min(passing) if passing else 1.0)
                # a small, slightly soft copy: 450 px on the short side, Gaussian sigma 0.8 px
                bgr = cv2.imread(str(SHARED / folder / row["file"]))
                f = 450 / min(bgr.shape[:2])
                small = cv2.GaussianBlur(cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA), (0, 0), 0.8)
                report = checker.check_bytes(cv2.imencode(".png", small)[1].tobytes(), row["file"])
                soft[group].append(not any(x.code == "blur" for x in report.errors))
    groups = sorted(tolerance[next(iter(RULES))], key=lambda g: ("light", "medium", "dark", "unlabelled").index(g))
    lines = ["| skin tone | faces | " + " | ".join(f"{r}: median k still passing (worst)" for r in RULES)
             + " | 450 px, sigma 0.8: not blur |", "|---|---|" + "---|" * (len(RULES) + 1)]
    for g in groups:
        cells = [f"{statistics.median(tolerance[r][g]):.3f} ({max(tolerance[r][g]):.3f})" for r in RULES]
        lines.append(f"| {g} | {len(tolerance[next(iter(RULES))][g])} | " + " | ".join(cells)
                     + f" | {sum(soft[g])}/{len(soft[g])} |")
    body = ("## Light and sharpness across skin tones (bench/fairness.py)\n\n"
            "Command: `.venv/bin/python bench/fairness.py`. k = exposure factor in linear light "
            "(1 = the photo as taken); lower = the rule tolerates a darker photo.\n\n" + "\n".join(lines) + "\n")
    write_section("FAIRNESS", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
