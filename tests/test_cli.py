"""The CLI as a real subprocess: JSON contract, exit codes, clean stderr, previews, help."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import EMO_PREP, ROOT, SAMPLES
from PIL import Image


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EMO_PREP, *args], capture_output=True, text=True, timeout=timeout)


def test_json_contract_for_a_pass():
    proc = run("check", "--json", str(SAMPLES / "astronaut_exif6.jpg"))
    assert proc.returncode == 0
    assert proc.stderr == ""  # MediaPipe's native start-up chatter is kept off the terminal
    record = json.loads(proc.stdout)
    assert set(record) >= {"source", "ok", "ratio", "image", "face_bbox", "ext_bbox", "faces", "pose", "findings"}
    assert record["ok"] is True and record["ratio"] == "1:1"
    assert record["image"] == {"width": 512, "height": 512, "format": "jpeg", "exif_orientation": 6,
                               "bytes": (SAMPLES / "astronaut_exif6.jpg").stat().st_size}
    assert all(isinstance(v, int) for v in record["face_bbox"] + record["ext_bbox"])
    assert set(record["pose"]) == {"yaw", "pitch", "roll"}
    assert record["faces"][0]["bbox"] == record["face_bbox"] and 0.5 <= record["faces"][0]["score"] <= 1
    assert record["fixes"] == ["exif_orientation_applied"]


def test_json_findings_carry_code_hint_and_chinese():
    proc = run("check", "--json", "--ratio", "3:4", str(SAMPLES / "astronaut_dark.jpg"))
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert record["ratio"] == "3:4" and record["ok"] is False
    first = record["findings"][0]
    assert set(first) == {"code", "severity", "value", "limit", "message", "hint", "hint_zh", "api_code"}
    assert first["code"] == "dark" and first["api_code"] == "InvalidFile.Value"
    assert "人脸" in first["hint_zh"]  # written as UTF-8, not \u escapes
    # both boxes are present on a rejected photo too (the contract), the ext box exactly 3:4
    # around the face
    (fx1, fy1, fx2, fy2), (x1, y1, x2, y2) = record["face_bbox"], record["ext_bbox"]
    assert 4 * (x2 - x1) == 3 * (y2 - y1) and x1 <= fx1 < fx2 <= x2 and y1 <= fy1 < fy2 <= y2


def test_table_output_and_exit_status_for_a_mixed_folder(tmp_path):
    proc = run("check", "--preview", str(tmp_path / "prev"), str(SAMPLES))
    assert proc.returncode == 1
    assert proc.stdout.count("PASS") == 2 and proc.stdout.count("REJECT") == 6
    assert proc.stderr.splitlines() == ["2 passed, 6 rejected", f"previews written to {tmp_path / 'prev'}"]
    previews = sorted(p.name for p in (tmp_path / "prev").iterdir())
    assert len(previews) == 8 and "astronaut.png.preview.jpg" in previews
    with Image.open(tmp_path / "prev" / "astronaut.png.preview.jpg") as im:
        assert im.width > 720 and im.height > 300


def test_all_pass_exits_zero():
    assert run("check", str(SAMPLES / "astronaut.png")).returncode == 0


def test_usage_errors_exit_two():
    assert run("check", "--ratio", "16:9", "x.jpg").returncode == 2
    assert run().returncode == 2


def test_every_command_has_help_with_an_example_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    top = run("--help")
    assert top.returncode == 0
    commands = ["check", "check-audio", "fix", "submit", "task", "sandbox", "batch", "ledger", "calibrate"]
    for command in commands:
        proc = run(command, "--help")
        assert proc.returncode == 0 and "example: emo-prep " + command in proc.stdout
        assert f"emo-prep {command}" in readme


def test_module_entry_point_works():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", "--json", str(SAMPLES / "coffee.jpg")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and json.loads(proc.stdout)["findings"][0]["code"] == "no_face"


def test_overexposed_face_is_rejected_and_a_bright_one_warned(tmp_path):
    import numpy as np

    photo = np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB")).astype(np.float32) / 255
    expected = {0.1: ("overexposed", "error"), 0.2: ("overexposed", "warning"), 0.35: None}
    for gamma, want in expected.items():  # a strong gamma washes the face out but keeps it findable
        Image.fromarray((255 * photo ** gamma).astype(np.uint8)).save(tmp_path / f"g{gamma}.png")
        record = json.loads(run("check", "--json", str(tmp_path / f"g{gamma}.png")).stdout)
        got = [(f["code"], f["severity"]) for f in record["findings"]]
        assert got == ([want] if want else []), (gamma, got)


def test_readme_python_examples_run(tmp_path):
    """Every ```python block of the README runs as written (the client one against the sandbox)."""
    import os
    import re
    import shutil

    from pipeline.serve.sandbox import Sandbox, SandboxOptions

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    shutil.copytree(SAMPLES, tmp_path / "samples")
    with Sandbox(SandboxOptions(api_key="sk-readme", pending_s=0.1, running_s=0.1, fps=5)) as sandbox:
        env = {**os.environ, "DASHSCOPE_API_KEY": "sk-readme", "DASHSCOPE_HTTP_BASE_URL": sandbox.api_base}
        for block in blocks:
            proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == 0 and proc.stderr == "", (block, proc.stderr)
    assert (tmp_path / "astronaut.mp4").stat().st_size > 10_000


def test_the_cli_never_loads_the_web_stack():
    """`emo-prep check` must not pay for the server's framework: only `pipeline.serve.*` imports it."""
    code = ("import sys, pipeline.cli, pipeline.serve; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'fastapi', 'starlette', 'uvicorn', 'anyio', 'h11'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == "[]\n", proc.stdout + proc.stderr
