"""Decoding: EXIF orientation (all 8 values), odd encodings, reduced decoding, upload form."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import DATA, SAMPLES, labels
from PIL import Image, ImageOps

from pipeline import load_image, upload_form
from pipeline.ingest import decode_image

# Pillow's exif_transpose applies these for tags 2-8; storing the inverse makes the
# displayed picture equal to the original.
_STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _with_orientation(displayed: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    op = _STORE[orientation]
    stored = displayed.transpose(op) if op is not None else displayed
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    # non-square so that a missed quarter turn shows in the size
    return Image.open(SAMPLES / "astronaut.png").convert("RGB").crop((40, 0, 472, 512))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_pixels_match_pillow(portrait, orientation):
    data = _with_orientation(portrait, orientation)
    image = decode_image(data, f"o{orientation}.jpg")
    assert image.info.exif_orientation == orientation
    assert (image.info.width, image.info.height) == portrait.size
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))[:, :, ::-1]
    assert image.pixels.shape == reference.shape
    assert np.abs(image.pixels.astype(int) - reference).mean() < 2.0
    assert ("exif_orientation_applied" in image.fixes) == (orientation != 1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_boxes_in_displayed_pixels(checker, portrait, orientation):
    upright = checker.check_bytes(_with_orientation(portrait, 1), "upright.jpg")
    turned = checker.check_bytes(_with_orientation(portrait, orientation), f"o{orientation}.jpg")
    assert upright.ok and turned.ok, turned.findings
    side = upright.face_bbox[2] - upright.face_bbox[0]
    assert max(abs(a - b) for a, b in zip(upright.face_bbox, turned.face_bbox, strict=False)) <= 0.06 * side
    assert turned.to_dict()["image"]["exif_orientation"] == orientation


def test_labelled_exif_photos_report_displayed_size(checker):
    for row in labels(DATA):
        if "exif_orientation" in row:
            report = checker.check(DATA / row["file"])
            assert (report.image.width, report.image.height) == (row["width"], row["height"]), row["file"]
            assert report.image.exif_orientation == row["exif_orientation"]


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("variant", ["cmyk_jpeg", "png16", "grey_png", "rgba_png", "png_named_jpg",
                                     "bmp", "webp", "tiff", "static_gif", "heic", "avif"])
def test_valid_portrait_in_odd_encodings_passes(checker, portrait, variant):
    rgb = portrait
    if variant == "cmyk_jpeg":
        data, name = _encode(rgb.convert("CMYK"), "JPEG", quality=95), "p.jpg"
    elif variant == "png16":
        arr = (np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        data, name = _encode(Image.fromarray(arr), "PNG"), "p.png"
    elif variant == "grey_png":
        data, name = _encode(rgb.convert("L"), "PNG"), "p.png"
    elif variant == "rgba_png":
        rgba = rgb.convert("RGBA")
        alpha = np.full(rgba.size[::-1], 255, np.uint8)
        alpha[:40] = 0  # a transparent band at the top, over the background
        rgba.putalpha(Image.fromarray(alpha))
        data, name = _encode(rgba, "PNG"), "p.png"
    elif variant == "png_named_jpg":
        data, name = _encode(rgb, "PNG"), "really_a_png.jpg"
    elif variant == "static_gif":
        data, name = _encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"), "p.gif"
    elif variant == "heic":
        from pillow_heif import register_heif_opener

        register_heif_opener()
        data, name = _encode(rgb, "HEIF", quality=90), "p.heic"
    else:
        data, name = _encode(rgb, variant.upper()), f"p.{variant}"
    report = checker.check_bytes(data, name)
    assert report.ok, [f.message for f in report.findings]
    expected_format = {"cmyk_jpeg": "jpeg", "png16": "png", "grey_png": "png", "rgba_png": "png",
                       "png_named_jpg": "png", "static_gif": "gif"}.get(variant, variant)
    assert report.image.format == expected_format
    if variant in ("tiff", "static_gif", "heic", "avif"):
        assert f"converted_from_{expected_format}" in report.fixes
    if variant == "rgba_png":
        assert "alpha_flattened" in report.fixes


def test_large_jpeg_is_decoded_reduced_and_mapped_back(portrait):
    big = portrait.resize((portrait.width * 8, portrait.height * 8), Image.Resampling.BICUBIC)
    image = decode_image(_encode(big, "JPEG", quality=85), "big.jpg")
    assert (image.info.width, image.info.height) == big.size
    assert max(image.pixels.shape[:2]) < 2048  # never a full-resolution copy
    assert image.scale == pytest.approx((big.width / image.pixels.shape[1], big.height / image.pixels.shape[0]))


def test_upload_form_is_the_file_itself_when_nothing_needs_fixing():
    data = (SAMPLES / "astronaut.png").read_bytes()
    form = upload_form(load_image(data))
    assert form.data == data and form.fixes == () and form.scale == 1.0


def test_upload_form_bakes_in_exif_rotation():
    image = load_image(SAMPLES / "astronaut_exif6.jpg")
    form = upload_form(image)
    uploaded = Image.open(io.BytesIO(form.data))
    assert uploaded.size == (image.info.width, image.info.height) == (form.width, form.height)
    assert uploaded.getexif().get(0x0112, 1) == 1
    assert "exif_orientation_applied" in form.fixes


def test_upload_form_downscales_past_the_service_limit():
    wide = Image.new("RGB", (7200, 480), (200, 180, 160))
    image = load_image(_encode(wide, "JPEG", quality=80))
    form = upload_form(image)
    assert (form.width, form.height) == (7000, 467) and form.scale == pytest.approx(7000 / 7200)
    assert Image.open(io.BytesIO(form.data)).size == (7000, 467)
