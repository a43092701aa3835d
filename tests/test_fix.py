"""fix: rejected dev photos are fixed into photos whose fresh check passes (the same face) or
refused with a reason; what no change can mend is never fixed; a pass is never rewritten."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest
from conftest import DATA, DATA34, EMO_PREP, ROOT, SAMPLES, labels, loopback_http
from PIL import Image
from test_bad_input import _png_header_only

from pipeline import FixResult, fix
from pipeline.boxes import iou
from pipeline.config import FIX_MIN_FACE_PX
from pipeline.fix import NEVER_FIXED
from pipeline.ledger import Ledger
from pipeline.serve.sandbox import Sandbox, SandboxOptions

DATA2 = ROOT.parent / "shared" / "data2"
CROP_CLASSES = ("multiple_faces", "face_too_small")
NEVER_CLASSES = ("blur", "pose", "face_cut_off", "no_face", "face_too_large", "image_too_small")


def _back(box, result: FixResult) -> tuple[float, ...]:
    """A box of the output mapped into the source's displayed pixels."""
    x0, y0 = result.crop[:2]
    return (box[0] / result.scale + x0, box[1] / result.scale + y0, box[2] / result.scale + x0,
            box[3] / result.scale + y0)


def _assert_honest_fix(result: FixResult, checker, ratio: str = "1:1") -> None:
    assert result.fixed and result.reason is None and result.output and result.operations
    fresh = checker.check(result.output, ratio)  # the written file, checked again here
    assert fresh.ok, [f.message for f in fresh.errors]
    assert fresh.face_bbox == result.report.face_bbox and result.report.source == result.output
    with Image.open(result.output) as written:
        assert result.report.ok and result.report.to_dict()["image"]["width"] == written.width
    back = _back(result.report.face_bbox, result)
    assert iou(back, result.source_report.face_bbox) >= 0.5  # the source's main face, not another


def test_every_small_face_or_group_dev_photo_is_fixed_onto_a_labelled_face_or_refused(checker, tmp_path):
    rows = [r for r in labels(DATA) if r["reject_reason"] in CROP_CLASSES]
    assert len(rows) == 22
    fixed = []
    for row in rows:
        result = fix(DATA / row["file"], "1:1", out_dir=tmp_path, checker=checker)
        assert result.status in ("fixed", "refused"), row["file"]
        if result.status == "refused":
            assert result.reason and result.output is None, row["file"]
            continue
        _assert_honest_fix(result, checker)
        assert "crop" in result.operations
        x1, y1, x2, y2 = result.crop
        assert 0 <= x1 < x2 <= row["width"] and 0 <= y1 < y2 <= row["height"]
        back = _back(result.report.face_bbox, result)
        overlap = max(iou(back, face) for face in row["faces"])
        assert overlap >= 0.5, (row["file"], overlap)
        fixed.append(row["file"])
    # dv055 (two girls), dv057 (a small face); dv039's crop is refused (FIX_SAME_FACE_IOU); most
    # others have faces under FIX_MIN_FACE_PX or another face inside the ext box
    assert len(fixed) >= 2, fixed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{f.rsplit('.', 1)[0]}.fixed.jpg" for f in fixed)


def test_a_face_below_the_floor_is_refused_with_the_reason(checker, tmp_path):
    result = fix(DATA / "dv058.jpg", "1:1", out_dir=tmp_path, checker=checker)
    assert result.status == "refused" and f"at least {FIX_MIN_FACE_PX} px" in result.reason
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_what_no_change_can_mend_is_never_fixed(checker, tmp_path):
    rows = [(DATA, r, "1:1") for r in labels(DATA) if r["reject_reason"] in NEVER_CLASSES]
    rows += [(DATA2, r, "1:1") for r in labels(DATA2) if r["reject_reason"] == "face_occluded"]
    rows += [(folder, r, "3:4") for folder in (DATA, DATA34) for r in labels(folder)
             if r["expected_34"]["reason"] == "body_cut_off"]
    assert len(rows) == 44 + 20 + 21 + 1
    for folder, row, ratio in rows:
        result = fix(folder / row["file"], ratio, out_dir=tmp_path, checker=checker, light=True)
        assert result.status == "refused", (row["file"], ratio, result.operations)
        first = result.reason.split(":")[0]
        assert first in NEVER_FIXED or first.startswith("the face is") or first.startswith("no change"), result.reason
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_passing_photo_is_never_rewritten(checker, tmp_path):
    rows = [(folder, r, "1:1") for folder in (DATA, DATA2) for r in labels(folder) if r["expected"] == "pass"]
    rows += [(DATA34, r, "3:4") for r in labels(DATA34) if r["expected_34"]["expected"] == "pass"]
    assert len(rows) == 21 + 11 + 5
    for folder, row, ratio in rows:
        result = fix(folder / row["file"], ratio, out_dir=tmp_path, checker=checker, light=True)
        assert result.status == "pass" and result.output is None and result.crop is None, row["file"]
        assert result.report is result.source_report and result.report.ok
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_photo_past_7000_px_is_downscaled_with_the_upload_forms_downscale(checker, tmp_path):
    big = tmp_path / "big.jpg"
    canvas = Image.new("RGB", (7200, 1800), (235, 235, 230))  # a wide photo: the face's share of the height
    with Image.open(SAMPLES / "astronaut.png") as im:                # stays the sample's own
        canvas.paste(im.convert("RGB").resize((1800, 1800), Image.Resampling.LANCZOS), (2700, 0))
    canvas.save(big, quality=90)
    assert checker.check(big).errors[0].code == "image_too_large"
    result = fix(big, "1:1", out_dir=tmp_path / "out", checker=checker)
    _assert_honest_fix(result, checker)
    assert result.operations == ("downscale",) and result.crop == (0, 0, 7200, 1800)
    assert result.scale == pytest.approx(7000 / 7200)
    with Image.open(result.output) as written:
        assert written.size == (7000, 1750)


def test_light_is_opt_in_and_reported(checker, tmp_path):
    refused = fix(SAMPLES / "astronaut_dark.jpg", "1:1", out_dir=tmp_path, checker=checker)
    assert refused.status == "refused" and "--light" in refused.reason
    result = fix(SAMPLES / "astronaut_dark.jpg", "1:1", out_dir=tmp_path, checker=checker, light=True)
    _assert_honest_fix(result, checker)
    assert result.operations == ("light",) and result.scale == 1.0
    before = cv2.cvtColor(cv2.imread(str(SAMPLES / "astronaut_dark.jpg")), cv2.COLOR_BGR2GRAY)
    after = cv2.cvtColor(cv2.imread(result.output), cv2.COLOR_BGR2GRAY)
    assert after.mean() > before.mean() + 20

    washed = tmp_path / "washed.png"  # the sample blown out by a steep tone curve
    with Image.open(SAMPLES / "astronaut.png") as im:
        im.convert("RGB").point([min(255, round(255 * (v / 255) ** 0.12)) for v in range(256)] * 3).save(washed)
    assert checker.check(washed).errors[0].code == "overexposed"
    darker = fix(washed, "1:1", out_dir=tmp_path, checker=checker, light=True)
    _assert_honest_fix(darker, checker)
    assert darker.operations == ("light",) and darker.output.endswith("washed.fixed.png")


def test_lossless_in_lossless_out_and_the_record(checker, tmp_path):
    png = tmp_path / "pair.png"
    with Image.open(SAMPLES / "astronaut_pair.jpg") as im:
        im.save(png)
    result = fix(png, "1:1", out_dir=tmp_path / "out", checker=checker)
    _assert_honest_fix(result, checker)
    assert result.output == str(tmp_path / "out" / "pair.fixed.png")
    record = result.to_dict()
    assert set(record) == {"source", "status", "fixed", "ratio", "output", "operations", "crop", "scale", "reason",
                           "report"}
    assert record["report"]["source"] == result.output and record["report"]["image"]["format"] == "png"
    assert record["crop"] == list(result.crop) and all(isinstance(v, int) for v in record["crop"])
    assert json.loads(json.dumps(record)) == record


def test_auto_ratio_prefers_a_half_body_shot_and_says_why(checker, tmp_path):
    half = next(r for r in labels(DATA34) if r["expected_34"]["expected"] == "pass")
    result = fix(DATA34 / half["file"], "auto", out_dir=tmp_path, checker=checker)
    assert result.status == "pass" and result.ratio == "3:4" and "half-body" in result.ratio_reason
    head = fix(DATA / "dv001.jpg", "auto", out_dir=tmp_path, checker=checker)
    assert head.status == "pass" and head.ratio == "1:1" and "body_cut_off" in head.ratio_reason
    assert head.to_dict()["ratio_reason"] == head.ratio_reason


def test_bad_input_is_refused_not_raised(checker, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a photo")
    result = fix(junk, "1:1", out_dir=tmp_path / "out", checker=checker)
    assert result.status == "refused" and result.reason.startswith("unreadable")
    missing = fix(tmp_path / "missing.jpg", "auto", out_dir=tmp_path / "out", checker=checker)
    assert missing.status == "refused" and missing.report.errors[0].code == "unreadable"
    bomb = fix(_png_header_only(11_000, 10_000), "1:1", out_dir=tmp_path / "out", checker=checker, name="bomb.png")
    assert bomb.status == "refused" and bomb.reason.startswith("image_too_large") and "not decoded" in bomb.reason
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="ratio"):
        fix(junk, "16:9", checker=checker)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EMO_PREP, *args], capture_output=True, text=True, timeout=300)


def test_cli_fix_json_exit_codes_and_previews(tmp_path):
    out, previews = tmp_path / "fixed", tmp_path / "previews"
    proc = run("fix", "--json", "--out", str(out), "--preview", str(previews),
               str(SAMPLES / "astronaut.png"), str(SAMPLES / "astronaut_pair.jpg"))
    assert proc.returncode == 0 and proc.stderr == ""
    passed, fixed = (json.loads(line) for line in proc.stdout.splitlines())
    assert passed["status"] == "pass" and passed["output"] is None and passed["report"]["ok"]
    assert fixed["status"] == "fixed" and fixed["operations"] == ["crop"] and fixed["report"]["ok"]
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_pair.fixed.jpg"]
    assert sorted(p.name for p in previews.iterdir()) == ["astronaut.png.fix.jpg", "astronaut_pair.jpg.fix.jpg"]
    with Image.open(previews / "astronaut_pair.jpg.fix.jpg") as before_after, \
            Image.open(previews / "astronaut.png.fix.jpg") as before_only:
        assert before_after.width > 1.8 * before_only.width  # before and after side by side

    proc = run("fix", "--out", str(out), str(SAMPLES / "astronaut_blurred.jpg"), str(SAMPLES / "astronaut_pair.jpg"))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == (f"REFUSED  {SAMPLES / 'astronaut_blurred.jpg'}  "
                                           f"blur: {NEVER_FIXED['blur']}")
    assert proc.stdout.splitlines()[1].startswith(f"FIXED    {SAMPLES / 'astronaut_pair.jpg'} -> ")
    assert proc.stderr.splitlines() == [f"1 fixed, 0 passed as they are, 1 not fixed; fixed photos in {out}"]

    assert run("fix", "--ratio", "16:9", str(SAMPLES / "astronaut.png")).returncode == 2
    no_geometry = run("fix", "--geometry", str(tmp_path / "missing.json"), str(SAMPLES / "astronaut.png"))
    assert no_geometry.returncode == 2 and no_geometry.stderr.startswith("Error: geometry file")
    assert run("fix", str(tmp_path / "empty-folder-that-is-not-there")).returncode == 1


def test_batch_fix_submits_the_fixed_photo_and_a_rerun_fixes_nothing_twice(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "astronaut_pair.jpg", "astronaut_blurred.jpg"):
        shutil.copy(SAMPLES / name, photos / name)
    out = tmp_path / "out"
    key = "sk-fix-test"
    with Sandbox(SandboxOptions(api_key=key, pending_s=0.1, running_s=0.2, fps=5)) as sb:
        env = {**os.environ, "DASHSCOPE_API_KEY": key, "DASHSCOPE_HTTP_BASE_URL": sb.api_base}
        command = [EMO_PREP, "batch", str(photos), "--fix", "--audio", str(SAMPLES / "speech.wav"), "--submit",
                   "--workers", "1", "--poll-interval", "0.2", "--out", str(out)]
        first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert first.returncode == 1, first.stderr  # the blurred photo stays rejected
        assert first.stdout.startswith("3 photos: 2 passed (1 of them fixed), 1 rejected (blur 1)")
        fixed_files = list((out / "fixed").iterdir())
        assert len(fixed_files) == 1 and fixed_files[0].name.endswith("-astronaut_pair.fixed.jpg")
        stamp = fixed_files[0].stat().st_mtime_ns
        records = {Path(r["source"]).name: r for r in map(json.loads, (out / "report.jsonl").read_text().splitlines())}
        pair = records["astronaut_pair.jpg"]
        assert pair["ok"] and pair["fix"]["fixed"] and pair["fix"]["operations"] == ["crop"]
        assert pair["fix"]["output"] == str(fixed_files[0]) and not pair["fix"]["source_report"]["ok"]
        assert pair["image"]["width"] == 751 and pair["video"]  # the fixed photo's record, animated
        assert records["astronaut_blurred.jpg"]["fix"] == {"fixed": False, "reason": f"blur: {NEVER_FIXED['blur']}"}
        assert "fix" not in records["astronaut.png"]
        with Ledger(out / "ledger.sqlite") as ledger:
            job = next(j for j in ledger.jobs() if j.photo_path.endswith("astronaut_pair.jpg"))
            body = json.loads(ledger.submits(job.job_id)[0]["request_json"])
            sha = hashlib.sha256(fixed_files[0].read_bytes()).hexdigest()
            assert body["input"]["image_url"] == ledger.upload_url(sha, "emo-v1", valid_for_s=0)
            assert body["input"]["face_bbox"] == pair["face_bbox"] and body["input"]["ext_bbox"] == pair["ext_bbox"]
        html = (out / "report.html").read_text()
        assert f"fixed (crop): {fixed_files[0].name} is what is uploaded" in html

        again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert again.stdout.startswith("3 photos: 2 passed (1 of them fixed), 1 rejected (blur 1)"), again.stderr
        assert [p.stat().st_mtime_ns for p in (out / "fixed").iterdir()] == [stamp]
        assert len(sb.records()["submits"]) == 2  # nothing submitted twice either


def _planned(size_wh, face, ext, others=(), ratio="1:1"):
    from pipeline.config import DEFAULT_CONFIG
    from pipeline.fix import _crops
    from pipeline.ingest import ImageInfo
    from pipeline.verdict import Report

    image = ImageInfo(width=size_wh[0], height=size_wh[1], format="jpeg", exif_orientation=1, bytes=1)
    report = Report("t.jpg", ratio, image, (), face_bbox=face, ext_bbox=ext,
                    faces=((face, 0.9), *((box, 0.9) for box in others)))
    return _crops(report, ratio, DEFAULT_CONFIG)


def _holds(crop, box) -> bool:
    return crop[0] <= box[0] and crop[1] <= box[1] and crop[2] >= box[2] and crop[3] >= box[3]


@pytest.mark.parametrize(("size_wh", "face", "ext", "others", "ratio", "expect"), [
    # a second face to the left: the widest crop starts where it ends, and keeps the full height
    ((1600, 1000), (900, 300, 1100, 500), (750, 125, 1250, 625), [(300, 300, 500, 500)], "1:1",
     lambda crops: crops[0] == (500, 0, 1600, 1000)),
    # a second face below-left, apart both ways: the cut keeping more of the photo wins (above
    # it), then the width is brought back to the photo's own 1.6:1 around the ext box
    ((1600, 1000), (900, 100, 1100, 300), (750, 0, 1250, 450), [(300, 700, 500, 900)], "1:1",
     lambda crops: crops[0] == (440, 0, 1560, 700)),
    # a second face mostly inside the ext box: nothing to try
    ((1600, 1000), (700, 300, 900, 500), (550, 125, 1050, 625), [(900, 300, 1100, 500)], "1:1",
     lambda crops: crops == []),
    # a small face in a tall photo: the crop is at most face height / 0.18 high, centred on it
    ((2000, 6000), (900, 3000, 1100, 3200), (750, 2800, 1250, 3300), [], "1:1",
     lambda crops: all(c[3] - c[1] <= 200 / 0.18 + 1 for c in crops) and crops[0][3] - crops[0][1] >= 1100),
    # 3:4: the room left goes below the face first (the hips)
    ((2000, 6000), (900, 1000, 1100, 1200), (660, 900, 1340, 1807), [], "3:4",
     lambda crops: crops[0][1] == 900 and crops[0][3] == 900 + int(200 / 0.12)),
])
def test_crop_plans(size_wh, face, ext, others, ratio, expect):
    crops = _planned(size_wh, face, ext, others, ratio)
    assert expect(crops), crops
    for crop in crops:
        assert _holds(crop, ext) and min(crop[2] - crop[0], crop[3] - crop[1]) >= 400
        assert 0 <= crop[0] < crop[2] <= size_wh[0] and 0 <= crop[1] < crop[3] <= size_wh[1]
        assert not any(_holds(crop, other) for other in others)


class _Samples(http.server.SimpleHTTPRequestHandler):
    """Serves samples/ on loopback, quietly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(SAMPLES), **kwargs)

    def log_message(self, *args):
        pass


def test_a_url_is_fixed_and_named_after_its_path(checker, tmp_path):
    with loopback_http(_Samples) as base:
        url = f"{base}/astronaut_pair.jpg?size=full"
        result = fix(url, "1:1", out_dir=tmp_path, checker=checker)
        _assert_honest_fix(result, checker)
        assert result.source == url and result.output == str(tmp_path / "astronaut_pair.fixed.jpg")
        missing = fix(url.replace("astronaut_pair", "nothing"), "1:1", out_dir=tmp_path, checker=checker)
        assert missing.status == "refused" and missing.reason.startswith("unreadable")
