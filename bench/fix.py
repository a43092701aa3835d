"""fix over the labelled dev photos: per reject class, how many were fixed, and whether any
fixed output fails a fresh check (it must not: 0).

    .venv/bin/python bench/fix.py [--data ../shared]

Every photo of data/ (1:1 and 3:4 labels), data2/ and data34/ goes through `pipeline.fix`
(--light on, so dark photos count too); each written output is checked again by a second,
independent Checker. Beside it, a baseline: crop the source to its own ext_bbox and nothing
else (the naive fix), checked the same way. Figures: fixed / refused per class, outputs failing
the fresh check, share of the source's area kept (median), labelled-face IoU of the fixed
photo's face mapped back to the source (min), time per photo (median). Writes the FIX section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402  (bench/results.py)

from pipeline import Checker, fix  # noqa: E402
from pipeline.boxes import iou  # noqa: E402
from pipeline.config import FIX_MIN_FACE_PX  # noqa: E402
from pipeline.ingest import full_image  # noqa: E402


def _rows(shared: Path) -> list[tuple[Path, dict, str, str]]:
    """(folder, label row, ratio, class) for every labelled photo and ratio."""
    out = []
    for name, ratios in (("data", ("1:1", "3:4")), ("data2", ("1:1",)), ("data34", ("3:4",))):
        folder = shared / name
        for line in (folder / "labels.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for ratio in ratios:
                cls = (row["reject_reason"] or "pass") if ratio == "1:1" else (row["expected_34"]["reason"] or "pass")
                out.append((folder, row, ratio, cls))
    return out


def _why(reason: str) -> str:
    """A refusal's reason in a few words: the first finding code, or what kind of limit."""
    if reason.startswith("the face is") and "px" in reason:
        return f"face under the {FIX_MIN_FACE_PX} px floor"
    for start, short in (("another face lies inside", "another face inside the ext box"),
                         ("no change passes", "no crop passed its fresh check"),
                         ("the face is too dark", "too dark to brighten")):
        if reason.startswith(start):
            return short
    return reason.split(":")[0]


def _baseline(checker: Checker, path: Path, ratio: str, out: Path) -> tuple[bool, float]:
    """The naive fix: crop to the source's ext_bbox. (passes a fresh check, area share kept)."""
    report = checker.check(path, ratio)
    if report.ok or report.ext_bbox is None or report.loaded is None or report.image is None:
        return False, 1.0
    x1, y1, x2, y2 = report.ext_bbox
    target = out / f"{path.stem}.baseline.png"
    full_image(report.loaded).crop(report.ext_bbox).save(target)
    share = (x2 - x1) * (y2 - y1) / (report.image.width * report.image.height)
    return checker.check(target, ratio).ok, share


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    rows = _rows(args.data)
    per = defaultdict(lambda: {"photos": 0, "pass": 0, "fixed": 0, "refused": 0, "bad": 0, "base_fixed": 0,
                               "base_bad": 0})
    shares, overlaps, seconds, reasons = [], [], [], defaultdict(int)
    base_shares: dict[tuple[str, str], float | None] = {}
    with Checker() as checker, Checker() as judge, tempfile.TemporaryDirectory() as tmp:
        for folder, row, ratio, cls in rows:
            key = (ratio, cls)
            cell = per[key]
            cell["photos"] += 1
            started = time.perf_counter()
            result = fix(folder / row["file"], ratio, out_dir=tmp, light=True, checker=checker)
            seconds.append(time.perf_counter() - started)
            cell[result.status] += 1
            if result.status == "refused" and cls != "pass":
                reasons[_why(result.reason)] += 1
            if result.fixed:
                fresh = judge.check(result.output, ratio)
                cell["bad"] += not fresh.ok
                x1, y1, x2, y2 = result.crop
                if "crop" in result.operations:
                    shares.append((row["file"], ratio, (x2 - x1) * (y2 - y1) / (row["width"] * row["height"])))
                fx1, fy1, fx2, fy2 = fresh.face_bbox
                back = (fx1 / result.scale + x1, fy1 / result.scale + y1, fx2 / result.scale + x1,
                        fy2 / result.scale + y1)
                overlaps.append((max(iou(back, f) for f in row["faces"]), row["file"]))
                Path(result.output).unlink()
            if cls != "pass":
                ok, share = _baseline(judge, folder / row["file"], ratio, Path(tmp))
                cell["base_fixed"] += ok
                base_shares[(row["file"], ratio)] = share if ok else None
    lines = ["## Fix (bench/fix.py)", "",
             "`.venv/bin/python bench/fix.py` (data/ at 1:1 and 3:4; data2/ at 1:1; "
             "data34/ at 3:4; `--light` on). *fixed outputs failing* = written outputs that a second, independent "
             "Checker rejects (must be 0). Baseline: crop to the source's own ext_bbox, nothing else.", "",
             "| ratio | class (label) | photos | passed as is | fixed | refused | fixed outputs failing a fresh check "
             "| baseline fixed |", "|---|---|---|---|---|---|---|---|"]
    for (ratio, cls), c in sorted(per.items()):
        lines.append(f"| {ratio} | {cls} | {c['photos']} | {c['pass']} | {c['fixed']} | {c['refused']} | {c['bad']} "
                     f"| {c['base_fixed'] if cls != 'pass' else '-'} |")
    total = {k: sum(c[k] for c in per.values()) for k in ("photos", "fixed", "bad", "base_fixed")}
    lines += ["", f"Totals: {total['photos']} photo-ratio pairs, {total['fixed']} fixed, {total['bad']} fixed outputs "
              f"failing a fresh check; baseline {total['base_fixed']} fixed."]
    if shares:
        lines += ["", "Crops: share of the source's area kept (the baseline's ext_bbox crop, when it passes):", "",
                  "| photo | ratio | kept by fix | kept by baseline |", "|---|---|---|---|"]
        for file, ratio, share in shares:
            base = base_shares.get((file, ratio))
            lines.append(f"| {file} | {ratio} | {share:.2f} | {f'{base:.2f}' if base is not None else 'fails'} |")
        lines.append("")
    if overlaps:
        worst = min(overlaps)
        lines.append(f"IoU of a fixed photo's face (mapped back) with a labelled face: min {worst[0]:.3f} "
                     f"({worst[1]}), median {statistics.median(o for o, _ in overlaps):.3f}.")
    lines.append("Refusals of rejected photos by reason: " + ", ".join(
        f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])) + ".")
    lines.append(f"Time per photo-ratio pair (fix, all checks included): median "
                 f"{statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms (2 shared cores).")
    write_section("FIX", "\n".join(lines))


if __name__ == "__main__":
    main()
