"""Pixels within the limits: a non-JPEG past the service's 7000 px is refused from its header
(no pixel decoded), a JPEG past it is still checked at reduced size, and a large 16-bit RGBA
image is reduced strip by strip without losing its one transparent pixel."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline import CheckConfig, Checker, load_image
from pipeline.errors import InputError


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return buf.tobytes()


def test_a_png_past_7000_px_is_image_too_large_from_its_header(checker):
    data = io.BytesIO()
    Image.new("RGB", (7200, 500), (120, 110, 100)).save(data, "PNG")
    report = checker.check_bytes(data.getvalue(), "wide.png")
    assert report.image is None and [f.code for f in report.findings] == ["image_too_large"]
    finding = report.findings[0]
    assert finding.value == 7200 and finding.limit == 7000 and "from the header" in finding.message
    with pytest.raises(InputError, match="longer side is 7200 px") as caught:
        load_image(data.getvalue())
    assert "Downscale" in caught.value.hint
    with Checker(CheckConfig(max_side=8000)) as wider:
        assert wider.check_bytes(data.getvalue(), "wide.png").image.width == 7200


def test_a_jpeg_past_7000_px_is_still_checked_at_reduced_size(checker):
    data = io.BytesIO()
    Image.new("RGB", (7200, 900), (120, 110, 100)).save(data, "JPEG", quality=70)
    report = checker.check_bytes(data.getvalue(), "wide.jpg")
    assert report.image.width == 7200 and "image_too_large" in [f.code for f in report.findings]


def test_a_large_16_bit_rgba_png_is_reduced_by_strips_and_keeps_its_transparent_pixel():
    h, w = 3000, 2600
    ramp = np.linspace(0, 65535, w, dtype=np.uint16)
    array = np.dstack([np.tile(ramp, (h, 1))] * 3 + [np.full((h, w), 65535, np.uint16)])
    array[h - 1, w - 1, 3] = 0  # one transparent pixel, in the last strip
    image = load_image(_png(array))
    assert (image.info.width, image.info.height) == (w, h)
    assert max(image.pixels.shape[:2]) <= 1536 and image.pixels.dtype == np.uint8
    assert {"alpha_flattened", "16bit_to_8bit"} <= set(image.fixes)
    # the ramp survives reduction: left dark, right bright
    assert image.pixels[:, :10].mean() < 20 and image.pixels[:, -10:].mean() > 235


def test_a_png_keeps_its_exif_orientation_without_a_second_decode():
    data = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (600, 400), (90, 80, 70)).save(data, "PNG", exif=exif.tobytes())  # eXIf before the pixels
    image = load_image(data.getvalue())
    assert image.info.exif_orientation == 6 and (image.info.width, image.info.height) == (400, 600)
    assert image.pixels.shape[:2] == (600, 400)
