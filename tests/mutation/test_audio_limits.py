"""The audio limits at their boundaries as the README states them: under 60 s, under 15 MB, a
warning below -45 dBFS; formats sniffed from the bytes. Clips are made in memory."""

from __future__ import annotations

import io
import math
import struct
import wave

import numpy as np
import pytest

from pipeline.audio import _wav_claimed_seconds, check_audio
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


def test_an_adts_aac_clip_is_aac_and_converted_not_taken_for_an_mp3():
    """ADTS frames start 0xFFF1, which an MPEG-audio sync test (11 bits set) also matches: the
    clip was called mp3 and uploaded unconverted, for the service to refuse."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="adts") as dst:
        stream = dst.add_stream("aac", rate=44100)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            dst.mux(packet)
    data = out.getvalue()
    assert data[:2] == b"\xff\xf1"
    report = check_audio(data, source_id="tone.aac")
    assert (report.format, report.fixes, report.ok) == ("aac", ("converted_from_aac",), True)
    assert report.data[:4] == b"RIFF" and report.data[8:12] == b"WAVE"


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


def _container(fmt: str, *, audio: bool = True, video: bool = False) -> bytes:
    """A short file in `fmt` made by PyAV: 0.5 s of 16-bit PCM audio and/or one video frame."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as dst:
        if video:
            vs = dst.add_stream("mpeg4", rate=5)
            vs.width, vs.height = 32, 32
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in vs.encode(frame):
                dst.mux(packet)
            for packet in vs.encode(None):
                dst.mux(packet)
        if audio:
            codec = "pcm_s16be" if fmt == "aiff" else "pcm_s16le"
            stream = dst.add_stream(codec, rate=8000, layout="mono")
            samples = (0.3 * 32767 * np.sin(np.arange(4000) / 8000 * 2 * np.pi * 200)).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                dst.mux(packet)
            for packet in stream.encode(None):
                dst.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("make,code,message", [
    (lambda: b"", "audio_unreadable", "clip: empty file"),
    (lambda: b"RIFF\x00\x00\x00\x00WAVEjunk", "audio_unreadable", "clip: not decodable audio (InvalidDataError)"),
    (lambda: wav(0), "audio_unreadable", "clip: the audio stream holds no samples"),
    (lambda: _container("aiff"), "audio_unsupported_format", "clip: unknown audio container"),
    (lambda: _container("matroska", audio=False, video=True), "audio_unreadable", "clip: no audio stream"),
])
def test_each_unusable_clip_says_why_with_its_name_and_size(make, code, message):
    data = make()
    report = check_audio(data, source_id="clip")
    assert (report.source, report.size, report.format, report.duration_s) == ("clip", len(data), None, None)
    assert [(f.code, f.severity, f.message) for f in report.findings] == [(code, "error", message)]


def test_bytes_without_a_name_and_a_missing_file(tmp_path):
    assert check_audio(b"").source == "<bytes>"
    report = check_audio(tmp_path / "gone.wav")
    assert (report.source, report.size) == (str(tmp_path / "gone.wav"), 0)
    assert report.findings[0].code == "audio_unreadable" and "No such file" in report.findings[0].message


def _riff(*chunks: tuple[bytes, bytes]) -> bytes:
    """A RIFF/WAVE file of the given (id, payload) chunks, each padded to an even length."""
    body = b"".join(cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1) for cid, data in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def _fmt(byte_rate: int) -> tuple[bytes, bytes]:
    return b"fmt ", struct.pack("<HHIIHH", 1, 1, byte_rate // 2, byte_rate, 2, 16)


@pytest.mark.parametrize("data,seconds", [
    (_riff(_fmt(88200), (b"data", b"\0" * 88200)), 1.0),
    # an odd-sized chunk before the data is followed by its pad byte
    (_riff(_fmt(88200), (b"LIST", b"abc"), (b"data", b"\0" * 44100)), 0.5),
    (_riff(_fmt(88200), (b"LIST", b"abcde"), (b"data", b"\0" * 44100)), 0.5),
    # a byte rate past 2**31 is unsigned, never a negative duration
    (_riff(_fmt(2**31), (b"data", b"\0" * 8)), 8 / 2**31),
], ids=["plain", "odd-chunk-3", "odd-chunk-5", "huge-byte-rate"])
def test_the_wav_header_is_walked_chunk_by_chunk(data, seconds):
    assert _wav_claimed_seconds(data) == pytest.approx(seconds)


def test_a_data_header_at_the_very_end_is_still_read():
    data = _riff(_fmt(88200)) + b"data" + struct.pack("<I", 88200 * 30)  # the header, no samples
    assert _wav_claimed_seconds(data) == pytest.approx(30.0)


@pytest.mark.parametrize("data", [
    _riff((b"data", b"\0" * 100), _fmt(88200)),  # no byte rate known when the data chunk comes
    _riff(_fmt(88200), (b"LIST", b"ab")),  # no data chunk at all
    _riff(_fmt(88200)) + b"LIST" + struct.pack("<I", 10**6),  # a chunk claiming past the end
], ids=["data-before-fmt", "no-data", "chunk-past-the-end"])
def test_no_claim_is_read_where_the_header_gives_none(data):
    assert _wav_claimed_seconds(data) is None
