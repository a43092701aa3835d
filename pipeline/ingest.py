"""Read a photo from a path, URL or bytes into a small BGR working copy, safely.

The header is read first (Pillow, which sniffs the format from the bytes, never the name):
size, format, EXIF orientation and frame count decide whether and how to decode. JPEGs are
decoded at reduced scale by libjpeg's DCT scaling, so a 12 MP photo never exists at full
resolution in memory. Pixel coordinates everywhere downstream are those of the full-size
image as displayed (EXIF orientation applied); `LoadedImage.scale` maps the working copy to
them.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import (
    ALPHA_BACKGROUND_BGR,
    DEFAULT_CONFIG,
    MAX_INPUT_BYTES,
    MAX_PIXELS,
    MIN_DECODE_LONG_SIDE,
    SERVICE_FORMATS,
    UPLOAD_JPEG_QUALITY,
    WORK_LONG_SIDE,
)
from .errors import InputError
from .fetch import fetch_url, source_name
from .nativelog import captured_native_stderr

__all__ = ["ImageInfo", "LoadedImage", "UploadForm", "load_image", "decode_image",
           "read_source", "expand_sources", "upload_form", "full_image", "downscale", "IMAGE_SUFFIXES"]

#: File name endings picked up when a directory is given (explicit paths are always read).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".heic", ".heif", ".avif",
                  ".tif", ".tiff", ".gif")
_EXIF_ORIENTATION_TAG = 0x0112
#: Rows per strip (times the reduction) when Pillow's pixels are converted and reduced.
_STRIP_ROWS = 256
_PIL_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "BMP": "bmp", "DIB": "bmp",
                "WEBP": "webp", "HEIF": "heic", "AVIF": "avif", "TIFF": "tiff", "GIF": "gif"}


@dataclass(frozen=True)
class ImageInfo:
    """What the file is, as the JSON contract reports it."""

    width: int
    """Width in pixels as displayed (EXIF orientation applied)."""
    height: int
    """Height in pixels as displayed."""
    format: str
    """Sniffed from the bytes: jpeg, png, bmp, webp, heic, avif, tiff or gif."""
    exif_orientation: int
    """EXIF Orientation tag, 1 when absent."""
    bytes: int
    """Size of the file as read."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo: header facts, a reduced BGR working copy, and what upload needs."""

    source: str
    info: ImageInfo
    pixels: np.ndarray = field(repr=False)
    """BGR uint8 working copy in displayed orientation, long side about WORK_LONG_SIDE."""
    scale: tuple[float, float]
    """(sx, sy): full displayed pixels per working pixel, from the true sizes."""
    fixes: tuple[str, ...]
    """Normalisations the upload form needs (empty: the original bytes are uploaded)."""
    data: bytes = field(repr=False)
    """The original bytes, kept so the upload form can be made without reading again."""

    def to_full(self, xy: np.ndarray) -> np.ndarray:
        """Map working-copy (x, y) points, shape (..., 2), to full displayed pixels."""
        return np.asarray(xy, dtype=np.float64) * np.array(self.scale)


@dataclass(frozen=True)
class UploadForm:
    """The bytes to upload and how their pixels relate to the displayed image."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    scale: float
    """Upload pixels per displayed pixel (1.0 unless downscaled to the service's limit)."""
    fixes: tuple[str, ...]


def read_source(source: str | os.PathLike[str], *, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """Bytes of a local file or an http(s) URL, refusing more than `max_bytes`."""
    text = os.fspath(source)
    if "://" in text:
        return fetch_url(text, max_bytes)
    path = Path(text)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError("unreadable", f"{text}: {size} bytes, more than the {max_bytes} accepted",
                             hint="Use a smaller file.", value=size, limit=max_bytes)
        with path.open("rb") as fh:
            return fh.read(max_bytes + 1)
    except IsADirectoryError as exc:
        raise InputError("unreadable", f"{text}: is a directory") from exc
    except OSError as exc:
        raise InputError("unreadable", f"{text}: {exc.strerror or exc}") from exc


def expand_sources(items: list[str]) -> Iterator[str]:
    """Paths and URLs as given, with each directory replaced by its images (recursive, sorted)."""
    for item in items:
        if "://" not in item and os.path.isdir(item):
            for path in sorted(Path(item).rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES \
                        and not path.name.startswith("."):
                    yield str(path)
        else:
            yield item


def load_image(source: str | os.PathLike[str] | bytes, *, source_id: str | None = None) -> LoadedImage:
    """Read and decode a photo from a path, an http(s) URL or raw bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), source_id or "<bytes>")
    return decode_image(read_source(source), source_id or source_name(source))


def _header(data: bytes, source: str) -> tuple[Image.Image, str, int]:
    if not data:
        raise InputError("unreadable", f"{source}: empty file")
    if len(data) > MAX_INPUT_BYTES:
        raise InputError("unreadable", f"{source}: more than {MAX_INPUT_BYTES} bytes",
                         hint="Use a smaller file.", value=len(data), limit=MAX_INPUT_BYTES)
    _register_plugins()
    try:
        with warnings.catch_warnings():
            # bomb warnings are our own limit's business; format quirks (a malformed MPO
            # read as JPEG) are not the user's
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InputError("image_too_large", f"{source}: {exc}", value=None, limit=MAX_PIXELS) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError("unreadable", f"{source}: not an image the decoders know") from exc
    fmt = _PIL_FORMATS.get(im.format or "")
    if fmt is None:
        raise InputError("unsupported_format", f"{source}: {im.format} images are not supported")
    try:  # a PNG's getexif() decodes every pixel to look for an eXIf chunk after them: only
        # one before the pixels (where Pillow and cameras write it) is read
        no_exif = fmt == "png" and "exif" not in im.info
        orientation = 1 if no_exif else int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # a broken EXIF block is not worth refusing the photo for
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    return im, fmt, orientation


_plugins_registered = False


def _register_plugins() -> None:
    global _plugins_registered
    if not _plugins_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _plugins_registered = True


def decode_image(data: bytes, source: str, *, max_side: int = DEFAULT_CONFIG.max_side) -> LoadedImage:
    """Decode bytes into a LoadedImage; raises InputError with a check code on bad input.

    An image whose longer side passes `max_side` (the service's limit) is decoded only where
    the format allows a reduced decode (JPEG's DCT scaling); any other is `image_too_large`
    from its header, without a pixel decoded.

    The bytes are untrusted: whatever a decoder raises (RuntimeError from libheif, IndexError
    or struct.error from a damaged TIFF directory, ...) becomes `unreadable` for this photo,
    and what the native decoders and Pillow say about the damage is kept off stderr and
    quoted in the message.
    """
    said: list[str] = []
    try:
        with captured_native_stderr(said), warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            return _decode(data, source, max_side)
    except InputError as exc:
        if exc.code != "unreadable" or not (said or warned):
            raise
        raise InputError(exc.code, f"{exc.message} ({_decoder_words(said, warned)})", hint=exc.hint, value=exc.value,
                         limit=exc.limit) from exc
    except MemoryError as exc:
        raise InputError("image_too_large", f"{source}: not enough memory to decode this image",
                         hint=f"Use a photo at most {max_side} px on the longer side.") from exc
    except Exception as exc:  # untrusted bytes: any decoder failure is this photo's
        words = _decoder_words(said, warned) if (said or warned) else str(exc)[:200]
        raise InputError("unreadable", f"{source}: the image data is damaged ({type(exc).__name__}: {words})"
                         ) from exc


def _decoder_words(said: list[str], warned: list[warnings.WarningMessage]) -> str:
    """The first thing the decoders said about the damage, one short line."""
    first = said[0] if said else str(warned[0].message)
    return f"decoder: {first.strip()[:200]}"


def _decode(data: bytes, source: str, max_side: int) -> LoadedImage:
    im, fmt, orientation = _header(data, source)
    sw, sh = im.size
    if sw < 1 or sh < 1:
        raise InputError("unreadable", f"{source}: image has no pixels")
    if sw * sh > MAX_PIXELS:
        raise InputError("image_too_large",
                         f"{source}: {sw}x{sh} = {sw * sh} pixels, more than the {MAX_PIXELS} decoded",
                         value=sw * sh, limit=MAX_PIXELS)
    if fmt != "jpeg" and max(sw, sh) > max_side:
        raise InputError("image_too_large",
                         f"{source}: longer side is {max(sw, sh)} px; the service accepts at most {max_side} "
                         f"(refused from the header: a {fmt} image cannot be decoded at reduced size)",
                         hint=f"Downscale the photo to at most {max_side} px on the longer side, or save it as "
                              f"JPEG: emo-prep checks a large JPEG at reduced size and downscales it on upload.",
                         value=max(sw, sh), limit=max_side)
    if getattr(im, "is_animated", False) and getattr(im, "n_frames", 1) > 1:
        raise InputError("unsupported_format",
                         f"{source}: animated {fmt} with {im.n_frames} frames; EMO needs a still photo",
                         hint="Export one frame as a JPEG or PNG photo.")
    fixes: list[str] = []
    if orientation != 1:
        fixes.append("exif_orientation_applied")
    if fmt not in SERVICE_FORMATS:
        fixes.append(f"converted_from_{fmt}")
    if im.mode == "CMYK":
        fixes.append("cmyk_to_rgb")
    if fmt == "jpeg":
        pixels = _decode_jpeg_reduced(data, sw, sh, source)
    elif fmt in ("png", "bmp", "webp") and max(sw, sh) <= WORK_LONG_SIDE * 1.5:
        pixels, more = _decode_opencv(data, source)
        fixes += more
    else:  # Pillow, strip by strip: a large photo never exists twice at full size
        pixels, more = _decode_pillow(im, source)
        fixes += more
        if fmt == "png" and data[24:25] == b"\x10" and "16bit_to_8bit" not in fixes:  # IHDR bit depth 16
            fixes.append("16bit_to_8bit")  # Pillow reads 16-bit RGB(A) as 8-bit
    pixels = _shrink(_apply_orientation(pixels, orientation))
    width, height = (sh, sw) if orientation in (5, 6, 7, 8) else (sw, sh)
    info = ImageInfo(width=width, height=height, format=fmt, exif_orientation=orientation, bytes=len(data))
    scale = (width / pixels.shape[1], height / pixels.shape[0])
    return LoadedImage(source=source, info=info, pixels=np.ascontiguousarray(pixels), scale=scale,
                       fixes=tuple(fixes), data=data)


def _reduction(long_side: int) -> int:
    """Largest libjpeg DCT scale 1/k that keeps the long side at or above MIN_DECODE_LONG_SIDE."""
    for k in (8, 4, 2):
        if math.ceil(long_side / k) >= MIN_DECODE_LONG_SIDE:
            return k
    return 1


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def _decode_jpeg_reduced(data: bytes, sw: int, sh: int, source: str) -> np.ndarray:
    # libjpeg pads a truncated scan with grey and reports success. A complete file has an
    # end-of-image marker after its first start-of-scan (an EXIF thumbnail's comes before).
    if data.rfind(b"\xff\xd9") < data.find(b"\xff\xda"):
        raise InputError("unreadable", f"{source}: JPEG data is truncated (no end-of-image marker)")
    k = _reduction(max(sw, sh))
    buf = np.frombuffer(data, dtype=np.uint8)
    pixels = cv2.imdecode(buf, _REDUCED_FLAGS[k] | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise InputError("unreadable", f"{source}: JPEG could not be decoded")
    if pixels.shape[:2] != (math.ceil(sh / k), math.ceil(sw / k)):
        raise InputError("unreadable", f"{source}: decoded size does not match the header")
    return pixels


def _decode_opencv(data: bytes, source: str) -> tuple[np.ndarray, list[str]]:
    buf = np.frombuffer(data, dtype=np.uint8)
    pixels = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise InputError("unreadable", f"{source}: image data could not be decoded (truncated or corrupt)")
    return _normalise(pixels)


def _decode_pillow(im: Image.Image, source: str) -> tuple[np.ndarray, list[str]]:
    try:
        im.seek(0)
        arr, transparent = _pillow_pixels(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError("unreadable", f"{source}: image data could not be decoded") from exc
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    elif arr.ndim == 3 and arr.shape[2] == 2:  # LA
        arr = np.dstack([arr[:, :, 0]] * 3 + [arr[:, :, 1]])
    return _normalise(np.ascontiguousarray(arr), transparent)


def _pillow_pixels(im: Image.Image) -> tuple[np.ndarray, bool]:
    """The pixels at 1/k of full size (k an integer that keeps the long side at or above
    WORK_LONG_SIDE), converted and reduced strip by strip: besides Pillow's own buffer only a
    strip ever exists at full size. Also whether any pixel is transparent (at full size)."""
    mode = im.mode if im.mode in ("RGB", "RGBA", "L", "LA", "I;16", "I") else (
        "RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    w, h = im.size
    k = max(1, max(w, h) // WORK_LONG_SIDE) if max(w, h) > WORK_LONG_SIDE * 1.5 else 1
    step = k * _STRIP_ROWS
    parts: list[np.ndarray] = []
    transparent = False
    for y in range(0, h, step):
        strip = im.crop((0, y, w, min(h, y + step))) if (k > 1 or mode != im.mode) and h > step else im
        arr = np.asarray(strip if strip.mode == mode else strip.convert(mode))
        if arr.dtype.kind == "i":  # 32-bit integer pixels: cv2.resize takes float
            arr = arr.astype(np.float32)
        if arr.ndim == 3 and arr.shape[2] in (2, 4):
            transparent |= bool(arr[:, :, -1].min() < np.iinfo(arr.dtype).max)
        if k > 1:
            arr = cv2.resize(arr, (math.ceil(w / k), math.ceil(arr.shape[0] / k)), interpolation=cv2.INTER_AREA)
        parts.append(arr)
        if strip is im:
            break
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), transparent


def _shrink(pixels: np.ndarray) -> np.ndarray:
    """The working copy: a long side past 1.5 x WORK_LONG_SIDE is resized to WORK_LONG_SIDE."""
    long_side = max(pixels.shape[:2])
    if long_side <= WORK_LONG_SIDE * 1.5:
        return pixels
    f = WORK_LONG_SIDE / long_side
    return cv2.resize(pixels, (max(1, round(pixels.shape[1] * f)), max(1, round(pixels.shape[0] * f))),
                      interpolation=cv2.INTER_AREA)


def _normalise(pixels: np.ndarray, transparent: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """Any decoded array to 8-bit BGR: 16-bit scaled down, grey expanded, alpha flattened.

    The array is shrunk to the working size first, in its own depth, so the float work of
    flattening alpha never runs at full resolution (a 16-bit RGBA photo is 8 bytes a pixel
    as decoded; the float copies of old took 5.7 GB at 100 MP). Transparency is looked for
    before shrinking (or told, by a decoder that shrank already), so one transparent pixel
    still counts.
    """
    fixes: list[str] = []
    has_alpha = pixels.ndim == 3 and pixels.shape[2] == 4
    if transparent is None:
        top = np.iinfo(pixels.dtype).max if pixels.dtype.kind in "iu" else 1.0
        transparent = has_alpha and bool(pixels[:, :, 3].min() < top)
    if transparent:
        fixes.append("alpha_flattened")
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        pixels = pixels.astype(np.float32)
    pixels = _shrink(pixels)
    if pixels.dtype != np.uint8:
        if pixels.dtype == np.uint16:
            pixels = (pixels >> 8).astype(np.uint8)
        else:
            pixels = cv2.normalize(pixels, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        fixes.append("16bit_to_8bit")
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), fixes
    if has_alpha:
        alpha = pixels[:, :, 3:4].astype(np.float32) / 255.0
        bg = np.array(ALPHA_BACKGROUND_BGR, dtype=np.float32)
        flat = pixels[:, :, :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
        return np.clip(flat + 0.5, 0, 255).astype(np.uint8), fixes
    return pixels[:, :, :3], fixes


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into displayed pixels for EXIF Orientation 1-8."""
    if orientation == 2:
        return cv2.flip(pixels, 1)
    if orientation == 3:
        return cv2.rotate(pixels, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(pixels, 0)
    if orientation == 5:
        return cv2.transpose(pixels)
    if orientation == 6:
        return cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(pixels), -1)
    if orientation == 8:
        return cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return pixels


def full_image(image: LoadedImage) -> Image.Image:
    """The photo at full resolution as displayed: RGB, EXIF orientation applied, alpha
    flattened on ALPHA_BACKGROUND_BGR. Decodes the original bytes again, in full."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in _header
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(image.data)))
    if "A" in im.getbands() or "transparency" in im.info:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, tuple(reversed(ALPHA_BACKGROUND_BGR)))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def downscale(im: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """`im` with its long side brought down to `max_side` (Lanczos), and the scale used
    (new pixels per old pixel; 1.0 and the same image when it already fits)."""
    long_side = max(im.width, im.height)
    if long_side <= max_side:
        return im, 1.0
    scale = max_side / long_side
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                     Image.Resampling.LANCZOS), scale


def upload_form(image: LoadedImage, *, max_side: int = 7000) -> UploadForm:
    """The bytes to upload: the original when it needs no fix, else a normalised JPEG/PNG.

    Fixes baked in: EXIF rotation, alpha flattening, conversion to a service format, 16-bit
    to 8-bit, and a downscale to `max_side` on the long side. Decodes at full resolution,
    so it is only called for photos that are about to be uploaded.
    """
    info = image.info
    fixes = list(image.fixes)
    if max(info.width, info.height) > max_side:
        fixes.append(f"downscaled_to_{max_side}")
    if not fixes:
        return UploadForm(image.data, info.format, info.width, info.height, 1.0, ())
    im, scale = downscale(full_image(image), max_side)
    out = io.BytesIO()
    fmt = "png" if info.format == "png" else "jpeg"
    if fmt == "png":
        im.save(out, format="PNG", optimize=False)
    else:
        im.save(out, format="JPEG", quality=UPLOAD_JPEG_QUALITY)
    return UploadForm(out.getvalue(), fmt, im.width, im.height, scale, tuple(fixes))
