"""The audio limits at their boundaries as the README states them: under 60 s, under 15 MB, a
warning below -45 dBFS; formats sniffed from the bytes. Clips are made in memory."""

from __future__ import annotations

import io
import math
import wave

import numpy as np
import pytest

from pipeline.audio import check_audio
from pipeline.config import AUDIO_MAX_BYTES, AUDIO_MAX_SECONDS, AUDIO_SILENT_DBFS


def wav(frames: int, *, rate: int = 8000, amplitude: float = 0.3) -> bytes:
    t = np.arange(frames) / rate
    tone = (amplitude * 32767 * np.sin(2 * np.pi * 200 * t)).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone.tobytes())
    return buf.getvalue()


def codes(report) -> list[tuple[str, str]]:
    return [(f.code, f.severity) for f in report.findings]


def test_exactly_sixty_seconds_is_too_long_and_a_frame_less_is_not():
    assert AUDIO_MAX_SECONDS == 60.0
    at = check_audio(wav(60 * 8000), source_id="60s.wav")
    assert codes(at) == [("audio_too_long", "error")]
    f = at.findings[0]
    assert f.value == pytest.approx(60.0) and f.limit == 60.0
    assert f.message == "the audio lasts more than 60 s (decoding stopped there); the service needs under 60 s"
    under = check_audio(wav(60 * 8000 - 1), source_id="under.wav")
    assert under.ok and codes(under) == [] and under.duration_s == pytest.approx(60 - 1 / 8000)


def test_exactly_fifteen_megabytes_is_too_large_and_two_bytes_less_is_not():
    # 16-bit mono at 192 kHz: 44 header bytes + 2 per frame, 41 s (under the 60 s limit)
    frames = (AUDIO_MAX_BYTES - 44) // 2
    at = wav(frames, rate=192000)
    assert len(at) == AUDIO_MAX_BYTES
    report = check_audio(at, source_id="big.wav")
    assert codes(report) == [("audio_too_large", "error")]
    assert report.findings[0].value == AUDIO_MAX_BYTES and report.findings[0].limit == AUDIO_MAX_BYTES
    assert report.findings[0].message == "the audio to upload is 15.0 MB; the service needs under 15 MB"
    below = wav(frames - 1, rate=192000)
    assert len(below) == AUDIO_MAX_BYTES - 2 and check_audio(below, source_id="fits.wav").ok


@pytest.mark.parametrize("dbfs,warned", [(-44.0, False), (-46.0, True)])
def test_silence_warning_below_minus_45_dbfs(dbfs, warned):
    amplitude = math.sqrt(2) * 10 ** (dbfs / 20)  # a sine's rms is its amplitude / sqrt(2)
    report = check_audio(wav(16000, amplitude=amplitude), source_id="quiet.wav")
    assert report.ok and report.rms_dbfs == pytest.approx(dbfs, abs=0.2)
    assert codes(report) == ([("audio_silent", "warning")] if warned else [])
    if warned:
        assert report.findings[0].limit == AUDIO_SILENT_DBFS
        assert report.findings[0].value == pytest.approx(dbfs, abs=0.2)
        assert report.findings[0].message == \
            f"the audio level is {report.rms_dbfs:.0f} dBFS; speech is usually around -20"


def test_digital_silence_is_minus_infinity_with_no_value():
    report = check_audio(wav(8000, amplitude=0.0), source_id="zero.wav")
    assert report.rms_dbfs == -math.inf and codes(report) == [("audio_silent", "warning")]
    assert report.findings[0].value is None and report.to_dict()["rms_dbfs"] is None


def test_a_wav_is_measured_and_kept_as_it_is():
    data = wav(2 * 8000)
    report = check_audio(data, source_id="a.wav")
    assert (report.format, report.size, report.upload_format, report.fixes) == ("wav", len(data), "wav", ())
    assert report.data == data and report.duration_s == pytest.approx(2.0)
    assert report.rms_dbfs == pytest.approx(20 * math.log10(0.3 / math.sqrt(2)), abs=0.1)
    assert report.to_dict() == {"source": "a.wav", "ok": True, "format": "wav", "bytes": len(data), "duration_s": 2.0,
                                "rms_dbfs": round(report.rms_dbfs, 1), "findings": [], "fixes": []}


def test_a_header_announcing_a_little_more_is_tolerated_and_much_more_is_not():
    data = bytearray(wav(8000))
    at = data.index(b"data")
    honest = int.from_bytes(data[at + 4:at + 8], "little")
    data[at + 4:at + 8] = (honest + 1000).to_bytes(4, "little")  # 1000 bytes = 0.0625 s more: within 1 % + 0.1 s
    assert check_audio(bytes(data), source_id="ok.wav").ok
    data[at + 4:at + 8] = (honest + 4000).to_bytes(4, "little")  # 0.25 s more
    report = check_audio(bytes(data), source_id="liar.wav")
    assert codes(report) == [("audio_unreadable", "error")]
    assert report.findings[0].message.startswith("liar.wav: the WAV header announces 1.2 s of audio but the file "
                                                 "holds 1.00 s")


@pytest.mark.parametrize("data,message", [
    (b"", "x.bin: empty file"),
    (b"RIFF\x00\x00\x00\x00WAVEjunk", "x.bin: not decodable audio"),
])
def test_unreadable_messages(data, message):
    report = check_audio(data, source_id="x.bin")
    assert codes(report) == [("audio_unreadable", "error")] and report.findings[0].message.startswith(message)
    assert report.format is None and report.duration_s is None
