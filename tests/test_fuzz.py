"""One bad input is one bad record: damaged bytes of every container become an `unreadable`
finding (never an exception, never decoder chatter on stderr), and the run goes on to the
next photo or clip. A fast hypothesis fuzz here; bench/fuzz.py runs the same for minutes."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

from conftest import EMO_PREP, ROOT, SAMPLES
from fuzzing import audio_seeds, image_seeds, mutants
from hypothesis import HealthCheck, given, settings

from pipeline.audio import check_audio
from pipeline.findings import CODES

CORRUPT_AVIF = ROOT / "tests" / "data" / "corrupt.avif"  # libavif: "Decoding of color planes failed" (RuntimeError)
_FUZZ = settings(max_examples=100, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _zero_bit_wav(path):
    """A WAV whose format chunk says 0 bits per sample (PyAV: AttributeError on main)."""
    pcm = b"\x00\x10" * 16000
    header = (b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + b"fmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 0) + b"data" + struct.pack("<I", len(pcm)))
    path.write_bytes(header + pcm)
    return path


@_FUZZ
@given(mutants(image_seeds()))
def test_damaged_images_of_every_container_are_one_bad_record(checker, capfd, mutant):
    name, data = mutant
    report = checker.check_bytes(data, f"fuzz.{name}")
    assert report.source == f"fuzz.{name}"
    assert all(f.code in CODES for f in report.findings)
    if report.image is None:  # not decoded: exactly one finding says why
        assert [f.code for f in report.findings] in (["unreadable"], ["unsupported_format"], ["image_too_large"])
    assert capfd.readouterr().err == ""


@_FUZZ
@given(mutants(audio_seeds()))
def test_damaged_audio_of_every_container_is_one_bad_record(capfd, mutant):
    name, data = mutant
    report = check_audio(data, source_id=f"fuzz.{name}")
    assert all(f.code in CODES for f in report.findings)
    if report.duration_s is None:
        assert [f.code for f in report.findings] in (["audio_unreadable"], ["audio_unsupported_format"])
    assert capfd.readouterr().err == ""


def test_check_goes_on_past_a_corrupt_photo(tmp_path):
    proc = subprocess.run([EMO_PREP, "check", "--json", str(CORRUPT_AVIF), str(SAMPLES / "astronaut.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    bad, good = (json.loads(line) for line in proc.stdout.splitlines())
    assert [f["code"] for f in bad["findings"]] == ["unreadable"]
    assert "damaged" in bad["findings"][0]["message"] and "color planes" in bad["findings"][0]["message"]
    assert good["ok"] is True


def test_check_audio_goes_on_past_a_zero_bit_wav(tmp_path):
    proc = subprocess.run([EMO_PREP, "check-audio", "--json", str(_zero_bit_wav(tmp_path / "zero.wav")),
                           str(SAMPLES / "speech.wav")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    bad, good = (json.loads(line) for line in proc.stdout.splitlines())
    assert [f["code"] for f in bad["findings"]] == ["audio_unreadable"] and good["ok"] is True


def test_a_batch_with_a_corrupt_photo_and_a_broken_clip_finishes_and_reruns(tmp_path):
    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(CORRUPT_AVIF, photos / "a_corrupt.avif")
    shutil.copy(SAMPLES / "astronaut.png", photos / "b_astronaut.png")
    out = tmp_path / "out"
    args = [EMO_PREP, "batch", str(photos), "--audio", str(_zero_bit_wav(tmp_path / "zero.wav")), "--out", str(out),
            "--workers", "1"]
    for _ in range(2):  # the rerun reads the ledger and finishes the same way
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and "2 photos: 0 passed, 2 rejected" in proc.stdout, proc.stderr
        records = {r["source"].rsplit("/", 1)[-1]: r for r in
                   (json.loads(line) for line in (out / "report.jsonl").read_text().splitlines())}
        assert set(records) == {"a_corrupt.avif", "b_astronaut.png"}
