"""Verdicts on the labelled dev photos: the bar is accuracy >= 0.95 with <= 2 false accepts."""

from __future__ import annotations

import pytest
from conftest import DATA, DATA34, labels

from pipeline.boxes import iou


def _score(checker, folder, ratio, key):
    misses, false_accepts, rows = [], 0, labels(folder)
    for row in rows:
        report = checker.check(folder / row["file"], ratio=ratio)
        expected = key(row)
        got = "pass" if report.ok else "reject"
        if got != expected:
            false_accepts += got == "pass"
            misses.append(f"{row['file']}: expected {expected}, got {got} "
                          f"({', '.join(f.code for f in report.errors) or 'no errors'})")
    return len(rows), misses, false_accepts


@pytest.mark.parametrize("ratio", ["1:1", "3:4"])
def test_dev_set_verdicts(checker, ratio):
    key = (lambda r: r["expected"]) if ratio == "1:1" else (lambda r: r["expected_34"]["expected"])
    n, misses, false_accepts = _score(checker, DATA, ratio, key)
    accuracy = 1 - len(misses) / n
    assert accuracy >= 0.95 and false_accepts <= 2, "\n".join(misses)


def test_half_body_set_verdicts(checker):
    n, misses, false_accepts = _score(checker, DATA34, "3:4", lambda r: r["expected_34"]["expected"])
    assert 1 - len(misses) / n >= 0.9 and false_accepts <= 1, "\n".join(misses)


def test_reject_reason_matches_label(checker):
    """The first error names the labelled reason (or another listed one) on most rejects."""
    rows = [r for r in labels(DATA) if r["expected"] == "reject"]
    wrong = []
    for row in rows:
        report = checker.check(DATA / row["file"])
        codes = {f.code for f in report.errors}
        if not codes & set(row["reject_reasons_all"]):
            wrong.append(f"{row['file']}: labelled {row['reject_reasons_all']}, got {sorted(codes)}")
    assert len(wrong) <= 0.1 * len(rows), "\n".join(wrong)


def test_pass_face_boxes_match_labels(checker):
    """face_bbox overlaps the labelled box (MediaPipe style) on every pass: IoU >= 0.7 each,
    median >= 0.9."""
    ious = []
    for row in labels(DATA):
        if row["expected"] == "pass":
            report = checker.check(DATA / row["file"])
            assert report.face_bbox is not None, row["file"]
            ious.append((iou(report.face_bbox, row["faces"][0]), row["file"]))
    assert min(ious)[0] >= 0.7, min(ious)
    assert sorted(ious)[len(ious) // 2][0] >= 0.9
