"""The audio check: sniffed formats, conversions, measured duration and level, limits."""

from __future__ import annotations

import io
import struct
import wave

import av
import numpy as np
import pytest
from conftest import SAMPLES

from pipeline.audio import check_audio


def _wav(seconds: float, *, rate: int = 16000, channels: int = 1, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (amplitude * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(tone, channels).tobytes())
    return buf.getvalue()


def _encode(data: bytes, fmt: str, codec: str) -> bytes:
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(out, "w", format=fmt) as dst:
        stream = dst.add_stream(codec, rate=src.streams.audio[0].rate)
        for frame in src.decode(src.streams.audio[0]):
            frame.pts = None
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def test_sample_speech_passes_with_measured_duration():
    report = check_audio(SAMPLES / "speech.wav")
    assert report.ok and report.format == "wav" and report.fixes == ()
    assert report.duration_s == pytest.approx(7.35, abs=0.05)
    assert -30 < report.rms_dbfs < -10
    assert report.data == (SAMPLES / "speech.wav").read_bytes()


def test_mp3_is_taken_as_it_is():
    mp3 = _encode((SAMPLES / "speech.wav").read_bytes(), "mp3", "libmp3lame")
    report = check_audio(mp3, source_id="s.mp3")
    assert report.ok and report.format == "mp3" and report.data == mp3
    assert report.duration_s == pytest.approx(7.35, abs=0.1)


@pytest.mark.parametrize("fmt,codec,name", [("mp4", "aac", "m4a"), ("flac", "flac", "flac")])
def test_other_formats_are_converted_to_wav(fmt, codec, name):
    data = _encode((SAMPLES / "speech.wav").read_bytes(), fmt, codec)
    report = check_audio(data, source_id=f"s.{name}")
    assert report.ok and report.format == name and report.fixes == (f"converted_from_{name}",)
    assert report.upload_format == "wav" and report.data[:4] == b"RIFF"
    assert check_audio(report.data).duration_s == pytest.approx(7.35, abs=0.1)


def test_too_long():
    report = check_audio(_wav(61))
    assert [f.code for f in report.errors] == ["audio_too_long"]
    assert 60 <= report.errors[0].value < 61 and "more than 60 s" in report.errors[0].message


def test_decoding_stops_at_the_limit_and_a_long_clip_is_not_converted():
    data = _encode(_wav(600, rate=8000, amplitude=0.0), "flac", "flac")  # 10 minutes of silence
    report = check_audio(data, source_id="long.flac")
    assert [f.code for f in report.errors] == ["audio_too_long"] and 60 <= report.duration_s < 61
    assert report.fixes == () and report.data == data  # nothing converted for a clip that cannot be sent


def test_a_wav_header_announcing_more_than_the_file_holds_is_flagged():
    one_second = bytearray(_wav(1.0))
    data_at = one_second.index(b"data")
    one_second[data_at + 4:data_at + 8] = struct.pack("<I", 2**31)  # 2^31 bytes: 18.6 hours at 16 kHz
    report = check_audio(bytes(one_second), source_id="liar.wav")
    assert [f.code for f in report.errors] == ["audio_unreadable"]
    assert "announces 67108.9 s" in report.errors[0].message and "holds 1.00 s" in report.errors[0].message
    assert check_audio(_wav(1.0)).ok  # an honest header is not flagged


def test_too_large():
    report = check_audio(_wav(45, rate=96000, channels=2))  # 17 MB, under 60 s
    assert [f.code for f in report.errors] == ["audio_too_large"]


def test_near_silence_is_a_warning():
    report = check_audio(_wav(3, amplitude=0.001))
    assert report.ok and [(f.code, f.severity) for f in report.findings] == [("audio_silent", "warning")]


@pytest.mark.parametrize("data", [b"", b"ID3 but nothing else", b"plain text, not audio" * 10,
                                  (SAMPLES / "speech.wav").read_bytes()[:40]])
def test_unreadable(data):
    report = check_audio(data)
    assert not report.ok and report.errors[0].code == "audio_unreadable" and report.errors[0].hint


def test_a_photo_is_not_audio():
    report = check_audio(SAMPLES / "coffee.jpg")
    assert not report.ok and report.errors[0].code in ("audio_unreadable", "audio_unsupported_format")


def test_missing_file():
    report = check_audio(SAMPLES / "nope.wav")
    assert report.errors[0].code == "audio_unreadable" and "No such file" in report.errors[0].message


def test_cli_check_audio_exit_codes_and_json(tmp_path):
    import json
    import subprocess

    from conftest import EMO_PREP

    (tmp_path / "long.wav").write_bytes(_wav(61))
    ok = subprocess.run([EMO_PREP, "check-audio", str(SAMPLES / "speech.wav")], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("PASS") and "wav  7.35 s" in ok.stdout
    bad = subprocess.run([EMO_PREP, "check-audio", "--json", str(SAMPLES / "speech.wav"), str(tmp_path / "long.wav")],
                         capture_output=True, text=True, timeout=60)
    records = [json.loads(line) for line in bad.stdout.splitlines()]
    assert bad.returncode == 1 and [r["ok"] for r in records] == [True, False]
    assert records[1]["findings"][0]["code"] == "audio_too_long" and records[1]["findings"][0]["hint_zh"]
