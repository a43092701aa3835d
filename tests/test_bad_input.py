"""Bad input: one record with a code and a hint each, exit status 1, no traceback, bounded."""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import zlib

import pytest
from conftest import EMO_PREP, SAMPLES
from PIL import Image

from pipeline.errors import InputError
from pipeline.ingest import decode_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (480, 480), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _one_pixel() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


JPEG = (SAMPLES / "astronaut_pair.jpg").read_bytes()
CASES = {  # file name -> (bytes, expected error code)
    "empty.jpg": (b"", "unreadable"),
    "truncated.jpg": (JPEG[: len(JPEG) // 2], "unreadable"),
    "random.jpg": (random.Random(7).randbytes(50_000), "unreadable"),
    "notes.txt": (b"just some text, not a photo\n" * 20, "unreadable"),
    "page.html": (b"<!doctype html><html><body><img src=x></body></html>", "unreadable"),
    "bomb_pillow.png": (_png_header_only(20_000, 20_000), "image_too_large"),
    "bomb_ours.png": (_png_header_only(11_000, 10_000), "image_too_large"),
    "one_pixel.png": (_one_pixel(), "image_too_small"),
    "animated.gif": (_animated("GIF"), "unsupported_format"),
    "animated.webp": (_animated("WEBP"), "unsupported_format"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_reports_a_code(checker, name):
    data, code = CASES[name]
    report = checker.check_bytes(data, name)
    assert not report.ok
    assert report.errors[0].code == code, report.findings
    assert report.errors[0].hint


def test_decoder_raises_typed_error_with_hint():
    with pytest.raises(InputError) as info:
        decode_image(b"GIF89a garbage", "x.gif")
    assert info.value.code == "unreadable" and "x.gif" in info.value.message


def test_cli_gives_one_record_per_bad_input(tmp_path):
    paths = []
    for name, (data, _) in CASES.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    paths += ["http://127.0.0.1:9/nothing.jpg", "ftp://127.0.0.1/x.jpg"]  # a missing path: test_conventions
    proc = subprocess.run([EMO_PREP, "check", "--json", *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["source"] for r in records] == paths
    expected = [code for _, code in CASES.values()] + ["unreadable"] * 2
    for record, code in zip(records, expected, strict=False):
        assert record["ok"] is False
        first = record["findings"][0]
        assert first["code"] == code and first["hint"] and first["api_code"], record


def test_directory_without_photos_is_a_usage_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no photos here")
    proc = subprocess.run([EMO_PREP, "check", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: no photos found in the given folders"


def test_damaged_files_give_records_and_a_quiet_terminal(tmp_path):
    """Seeded mutations and cuts of real files: every one gets a record, nothing leaks from the
    native decoders onto stderr."""
    rng = random.Random(11)
    seeds = [(SAMPLES / name).read_bytes() for name in ("astronaut_exif6.jpg", "astronaut.png", "coffee.jpg")]
    paths = []
    for i in range(40):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 3 == 0:
            data = data[: rng.randrange(1, len(data))]
        path = tmp_path / f"damaged{i}.img"
        path.write_bytes(bytes(data))
        paths.append(str(path))
    proc = subprocess.run([EMO_PREP, "check", "--json", *paths], capture_output=True, text=True, timeout=180)
    assert proc.returncode in (0, 1) and proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 40
