"""The audio check: format read from the bytes by FFmpeg, duration and level measured by decoding.

EMO takes wav or mp3, under 15 MB and under 60 s, with a clear voice (spec section 2).
Other common formats (m4a/aac, ogg, flac, webm) are decoded with PyAV (FFmpeg) and converted
to 16-bit WAV, reported as a fix. Findings have the same shape as the photo's.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import AUDIO_MAX_BYTES, AUDIO_MAX_INPUT_BYTES, AUDIO_MAX_SECONDS, AUDIO_SILENT_DBFS
from .errors import InputError
from .fetch import source_name
from .findings import Finding, Verdict
from .ingest import read_source

__all__ = ["AudioReport", "check_audio"]

_CONTAINER_NAMES = {"mov,mp4,m4a,3gp,3g2,mj2": "m4a", "ogg": "ogg", "flac": "flac", "aac": "aac",
                    "matroska,webm": "webm", "wav": "wav", "mp3": "mp3"}


@dataclass(frozen=True)
class AudioReport(Verdict):
    """What the audio check found; `data` is what to upload (the file, or its WAV conversion)."""

    source: str
    format: str | None
    """The container FFmpeg finds in the bytes: wav, mp3, m4a, aac, ogg, flac or webm (None when
    unreadable); the file's name plays no part."""
    size: int
    """Bytes of the file as read."""
    duration_s: float | None
    """Seconds of audio, measured by decoding every frame."""
    rms_dbfs: float | None
    """Overall level in dB relative to full scale (-inf for digital silence)."""
    findings: tuple[Finding, ...]
    fixes: tuple[str, ...] = ()
    data: bytes = field(default=b"", repr=False)

    @property
    def upload_format(self) -> str:
        """Format of `data`: the source's when it is wav/mp3, else wav."""
        return self.format if self.format in ("wav", "mp3") else "wav"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ok": self.ok, "format": self.format, "bytes": self.size,
                "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
                "rms_dbfs": None if self.rms_dbfs is None or math.isinf(self.rms_dbfs) else round(self.rms_dbfs, 1),
                "findings": [f.to_dict() for f in self.findings], "fixes": list(self.fixes)}


def _failed(source: str, size: int, code: str, message: str) -> AudioReport:
    return AudioReport(source, None, size, None, None, (Finding(code, "error", message),))


def check_audio(source: str | os.PathLike[str] | bytes, *, source_id: str | None = None) -> AudioReport:
    """Check an audio file given as a path, an http(s) URL or bytes."""
    import av  # only audio work pays for FFmpeg

    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), source_id or "<bytes>"
    else:
        name = source_id or source_name(source)
        try:
            data = read_source(source, max_bytes=AUDIO_MAX_INPUT_BYTES)
        except InputError as exc:
            return _failed(name, 0, "audio_unreadable", exc.message)
    if not data:
        return _failed(name, 0, "audio_unreadable", f"{name}: empty file")
    try:
        with av.logging.Capture(), av.open(io.BytesIO(data), mode="r") as container:
            fmt = _CONTAINER_NAMES.get(container.format.name)  # FFmpeg reads the bytes, never the name
            if not container.streams.audio:
                return _failed(name, len(data), "audio_unreadable", f"{name}: no audio stream")
            samples, rate, square_sum, count, complete = _decode(container)
    except Exception as exc:  # untrusted bytes: whatever FFmpeg or PyAV raise is this clip's
        return _failed(name, len(data), "audio_unreadable", f"{name}: not decodable audio ({type(exc).__name__})")
    if fmt is None:
        return _failed(name, len(data), "audio_unsupported_format", f"{name}: unknown audio container")
    if count == 0:
        return _failed(name, len(data), "audio_unreadable", f"{name}: the audio stream holds no samples")
    duration = samples / rate
    claimed = _wav_claimed_seconds(data) if fmt == "wav" and complete else None
    if claimed is not None and claimed > duration * 1.01 + 0.1:
        return _failed(name, len(data), "audio_unreadable",
                       f"{name}: the WAV header announces {claimed:.1f} s of audio but the file holds "
                       f"{duration:.2f} s (truncated, or a damaged header the service would believe)")
    rms = math.sqrt(square_sum / count)
    dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    fixes: tuple[str, ...] = ()
    upload = data
    if fmt not in ("wav", "mp3") and complete:  # a clip too long is not worth converting
        try:
            upload = _to_wav(data)
        except Exception as exc:  # decoded once, but the conversion met what the measure let pass
            return _failed(name, len(data), "audio_unreadable", f"{name}: cannot be converted to WAV "
                                                                f"({type(exc).__name__})")
        fixes = (f"converted_from_{fmt}",)
    findings: list[Finding] = []
    if len(upload) >= AUDIO_MAX_BYTES:
        findings.append(Finding("audio_too_large", "error",
                                f"the audio to upload is {len(upload) / 2**20:.1f} MB; the service needs under "
                                f"{AUDIO_MAX_BYTES / 2**20:.0f} MB", len(upload), AUDIO_MAX_BYTES))
    if not complete:
        findings.append(Finding("audio_too_long", "error",
                                f"the audio lasts more than {AUDIO_MAX_SECONDS:g} s (decoding stopped there); the "
                                f"service needs under {AUDIO_MAX_SECONDS:g} s", duration, AUDIO_MAX_SECONDS))
    if dbfs < AUDIO_SILENT_DBFS:
        findings.append(Finding("audio_silent", "warning",
                                f"the audio level is {dbfs:.0f} dBFS; speech is usually around -20",
                                None if math.isinf(dbfs) else dbfs, AUDIO_SILENT_DBFS))
    return AudioReport(name, fmt, len(data), duration, dbfs, tuple(findings), fixes, upload)


def _decode(container) -> tuple[int, int, float, int, bool]:
    """Samples per channel, rate, the sum of squares and count of all samples (as floats), and
    whether the stream ended before the service's limit (decoding stops at AUDIO_MAX_SECONDS:
    a 3-hour clip costs what a 1-minute one does)."""
    stream = container.streams.audio[0]
    samples = square_sum = count = 0
    rate = stream.rate or stream.codec_context.sample_rate or 1
    for frame in container.decode(stream):
        rate = frame.sample_rate or rate
        arr = frame.to_ndarray()
        if arr.dtype.kind in "iu":
            scale = float(np.iinfo(arr.dtype).max)
            arr = arr.astype(np.float64) / scale
        else:
            arr = arr.astype(np.float64)
        samples += frame.samples
        square_sum += float(np.square(arr).sum())
        count += arr.size
        if samples / rate >= AUDIO_MAX_SECONDS:
            return samples, rate, square_sum, count, False
    return samples, rate, square_sum, count, True


def _wav_claimed_seconds(data: bytes) -> float | None:
    """Seconds of audio the WAV header's data chunk announces (None when it cannot be read)."""
    offset, byte_rate = 12, 0
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"fmt " and offset + 20 <= len(data):
            byte_rate = struct.unpack_from("<I", data, offset + 16)[0]
        elif chunk == b"data":
            return size / byte_rate if byte_rate else None
        offset += 8 + size + (size & 1)
    return None


def _to_wav(data: bytes) -> bytes:
    """Decode any audio PyAV reads and write it as 16-bit PCM WAV (mono or stereo)."""
    import av

    out = io.BytesIO()
    with av.logging.Capture(), av.open(io.BytesIO(data)) as src, av.open(out, mode="w", format="wav") as dst:
        stream = src.streams.audio[0]
        layout = "mono" if (stream.channels or 1) == 1 else "stereo"
        rate = stream.rate or 44100
        target = dst.add_stream("pcm_s16le", rate=rate, layout=layout)
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        for frame in src.decode(stream):
            for converted in resampler.resample(frame):
                for packet in target.encode(converted):
                    dst.mux(packet)
        for converted in resampler.resample(None):
            for packet in target.encode(converted):
                dst.mux(packet)
        for packet in target.encode(None):
            dst.mux(packet)
    return out.getvalue()
