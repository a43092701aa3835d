"""How many emo-detect answers does calibration need? Against the sandbox, whose box rules
differ from ours in every parameter, on the dev passes.

    .venv/bin/python bench/calibrate.py [--data ../shared/data] [--data34 ../shared/data34]

The sandbox answers face-detect with a foreign geometry (face scale 1.12, dx 0.04, dy -0.06;
1:1 scale 2.2, shift 0.08; 3:4 width 3.0, face top 0.10). Each dev pass is sent twice: as it
is, and as `emo-prep calibrate` sends it (on a plain canvas when its box would touch an edge).
The fit (calibrate.fit_geometry) on the first N answers is compared with the truth (largest
parameter error, and which parameters stayed undetermined), and `check`'s boxes under the
fitted geometry with the sandbox's answers on the held-out passes (IoU). Baseline: the same N
photos sent as they are. Writes the CALIBRATE section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

from pipeline.boxes import iou  # noqa: E402
from pipeline.calibrate import Observation, choose_samples, fit_geometry, predict_boxes  # noqa: E402
from pipeline.client import EmoClient  # noqa: E402
from pipeline.config import DETECT_MODEL, DETECT_PRICE_CNY  # noqa: E402
from pipeline.geometry import DEFAULT_GEOMETRY, Geometry  # noqa: E402
from pipeline.ingest import upload_form  # noqa: E402
from pipeline.serve.sandbox import Sandbox, SandboxOptions  # noqa: E402
from pipeline.verdict import Checker  # noqa: E402

TRUTH = Geometry(face_scale=1.12, face_dx=0.04, face_dy=-0.06, scale_11=2.2, shift_up_11=0.08, width_34=3.0,
                 face_top_34=0.10)
PARAMS = {"1:1": ("face_scale", "face_dx", "face_dy", "scale_11", "shift_up_11"),
          "3:4": ("face_scale", "face_dx", "face_dy", "width_34", "face_top_34")}


def _passes(folder: Path, ratio: str) -> list[Path]:
    rows = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines() if line.strip()]
    if ratio == "1:1":
        return [folder / r["file"] for r in rows if r["expected"] == "pass"]
    return [folder / r["file"] for r in rows if r["expected_34"]["expected"] == "pass"]


def _ask(client: EmoClient, data: bytes, report, ratio: str) -> Observation:
    url = client.upload(data, model=DETECT_MODEL, filename="photo.png")
    out = client.face_detect(url, ratio=ratio).output
    return Observation(tuple(report.detector_xyxy), (report.image.width, report.image.height),
                       tuple(out.face_bbox), tuple(out.ext_bbox))


def _observe(client: EmoClient, checker: Checker, photos: list[Path], ratio: str):
    """Per photo: the answer on the photo as it is, and on the copy calibrate would send."""
    plain, chosen = [], []
    for photo in photos:
        report = checker.check(photo, ratio=ratio)
        plain.append(_ask(client, upload_form(report.loaded).data, report, ratio))
        sample = choose_samples(checker, [str(photo)], ratio, 1)[0]
        chosen.append((_ask(client, sample.data, sample.report, ratio), sample.canvas is not None))
    return plain, chosen


def _score(fit, ratio: str, held: list[Observation]) -> tuple[float, list[str], float, float]:
    error = max(abs(getattr(fit.geometry, p) - getattr(TRUTH, p)) for p in PARAMS[ratio])
    ious = []
    for obs in held:
        face, ext = predict_boxes(obs, ratio, fit.geometry)
        ious.append(min(iou(face, obs.face_bbox), iou(ext, obs.ext_bbox) if ext else 0.0))
    return error, list(fit.undetermined), min(ious), statistics.median(ious)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--data34", type=Path, default=ROOT.parent / "shared" / "data34")
    args = ap.parse_args()
    lines = ["## Calibration against a foreign geometry (bench/calibrate.py)", "",
             "Command: `.venv/bin/python bench/calibrate.py`. The sandbox answers face-detect with face scale "
             "1.12, dx 0.04, dy -0.06; 1:1 scale 2.2, shift 0.08; 3:4 width 3.0, face top 0.10. The fit uses the "
             "first N dev passes; IoU is min(face, ext) of `check`'s boxes under the fitted geometry against "
             "the sandbox's answers on the held-out passes (as they are). 'canvas' = as `emo-prep calibrate` "
             "sends them; 'as is' = the same photos sent unchanged.", "",
             "The remaining error is the rounding of the service's integer face box (x1, y1 down, x2, y2 up, as "
             "ours): it makes the face scale up to 1/F too large (0.006-0.008 on these 150-400 px faces), and the "
             "ext parameters, fitted on that face, absorb it (their product with it stays right). The sandbox's "
             "face detector is ours, so the face transform fits to rounding; the real service's detector is not, "
             "so expect its spread (printed by `emo-prep calibrate`) to be wider.", ""]
    key = "sk-bench"
    with Sandbox(SandboxOptions(api_key=key, detect_geometry=TRUTH)) as sandbox, \
            EmoClient(api_key=key, base_url=sandbox.api_base) as client, Checker(geometry=DEFAULT_GEOMETRY) as checker:
        for ratio, folder, fit_counts, n_fit in (("1:1", args.data, (1, 2, 3, 6, 12), 12),
                                                 ("3:4", args.data34, (1, 2, 3), 3)):
            photos = _passes(folder, ratio)
            plain, chosen = _observe(client, checker, photos, ratio)
            held = plain[n_fit:]
            base_ious = [min(iou(f, o.face_bbox), iou(e, o.ext_bbox) if e else 0.0)
                         for o in held for f, e in [predict_boxes(o, ratio, DEFAULT_GEOMETRY)]]
            lines += [f"### {ratio}: {len(photos)} dev passes, fit on the first N, {len(held)} held out", "",
                      f"{sum(c for _, c in chosen[:n_fit])} of the first {n_fit} were sent on a canvas. Default "
                      f"geometry on the held-out photos: IoU min {min(base_ious):.3f}, median "
                      f"{statistics.median(base_ious):.3f}.", "",
                      "| N | CNY | sent | largest parameter error | undetermined | held-out IoU min | median |",
                      "|---|---|---|---|---|---|---|"]
            for n in fit_counts:
                for label, obs in (("canvas", [o for o, _ in chosen[:n]]), ("as is", plain[:n])):
                    error, undetermined, low, mid = _score(fit_geometry(obs, ratio), ratio, held)
                    lines.append(f"| {n} | {n * DETECT_PRICE_CNY:.3f} | {label} | {error:.4f} | "
                                 f"{', '.join(undetermined) or '-'} | {low:.3f} | {mid:.3f} |")
            lines.append("")
    write_section("CALIBRATE", "\n".join(lines))


if __name__ == "__main__":
    main()
