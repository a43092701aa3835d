"""Hostile inputs, made in memory. Seeds and byte mutations for fuzzing the decoders: one
small file of every container emo-prep reads (photos and audio) and a hypothesis strategy
that damages them the way real files get damaged (flipped bits, overwritten header fields, cut
and spliced ranges); and a gzip bomb. Used by tests/test_fuzz.py, tests/test_fetch_limits.py
(fast) and bench/fuzz.py, bench/limits.py (minutes)."""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib

import numpy as np
from hypothesis import strategies as st
from PIL import Image

#: Values that break size and offset fields: zero, one, all bits set, signed edges.
_INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x00\x00\x00\x00",
                b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x01\x00")


def _picture(mode: str = "RGB", size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.dstack([x * 255 // size[0], y * 255 // size[1], (x + y) % 256]).astype(np.uint8)
    base = np.clip(base + rng.integers(0, 24, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(base, "RGB").convert(mode)


def _save(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def image_seeds() -> dict[str, bytes]:
    """A small file per supported image container and its common variants."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    rgb = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6
    wide = np.asarray(_picture("L")).astype(np.uint16) * 257
    frames = [_picture(), _picture().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "jpeg": _save(rgb, "JPEG", quality=80, exif=exif.tobytes()),
        "jpeg_progressive": _save(rgb, "JPEG", quality=70, progressive=True),
        "png": _save(rgb, "PNG"),
        "png_rgba": _save(_picture("RGBA"), "PNG"),
        "png_16bit": _save(Image.fromarray(wide), "PNG"),
        "png_palette": _save(_picture("P"), "PNG"),
        "bmp": _save(rgb, "BMP"),
        "webp": _save(rgb, "WEBP", quality=70),
        "webp_lossless": _save(rgb, "WEBP", lossless=True),
        "gif": _save(_picture("P"), "GIF"),
        "gif_animated": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "tiff": _save(rgb, "TIFF"),
        "tiff_lzw": _save(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_deflate": _save(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff_jpeg": _save(rgb, "TIFF", compression="jpeg"),
        "heic": _save(rgb, "HEIF", quality=60),
        "avif": _save(rgb, "AVIF", quality=60),
    }


def _audio(container: str, codec: str, rate: int = 16000, seconds: float = 0.3) -> bytes:
    import av

    out = io.BytesIO()
    t = np.arange(int(rate * seconds)) / rate
    tone = (np.sin(2 * math.pi * 220 * t) * 12000).astype(np.int16)
    with av.open(out, mode="w", format=container) as dst:
        stream = dst.add_stream(codec, rate=rate, layout="mono")
        fmt = "s16" if codec in ("pcm_s16le", "flac") else stream.codec_context.format.name
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for converted in resampler.resample(frame):
            for packet in stream.encode(converted):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def audio_seeds() -> dict[str, bytes]:
    """A short clip per audio container the audio check reads."""
    return {"wav": _audio("wav", "pcm_s16le"), "mp3": _audio("mp3", "libmp3lame"), "flac": _audio("flac", "flac"),
            "ogg": _audio("ogg", "libopus", rate=48000),
            "m4a": _audio("ipod", "aac")}


@st.composite
def mutants(draw, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """(seed name, damaged bytes): 1-6 edits, most of them near the start where headers live."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[name])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        head = draw(st.booleans())
        pos = draw(st.integers(0, min(len(data), 256) - 1 if head else len(data) - 1))
        op = draw(st.sampled_from(("flip", "byte", "field", "cut", "dup", "truncate")))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "field":
            value = draw(st.sampled_from(_INTERESTING))
            data[pos:pos + len(value)] = value
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return name, bytes(data)


def gzip_of_zeros(mib: int) -> bytes:
    """A valid gzip stream of `mib` MiB of zeros, built in a blink: after a full flush the
    deflate block of each further MiB is the same bytes, so it is made once and repeated."""
    zeros = b"\0" * (1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + first + again * (mib - 1) + b"\x03\x00" + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


def gzip_bomb(mib: int) -> bytes:
    """`Content-Encoding: gzip, gzip` body: `mib` MiB of zeros gzipped twice (a few KB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(gzip_of_zeros(mib)) + packer.flush()
