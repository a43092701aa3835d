"""Model verification, option validation, and the pinned public API."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import EMO_PREP, ROOT, SAMPLES

import pipeline
from pipeline import CheckConfig, Checker, UsageError


def test_altered_model_file_is_refused_with_a_clear_error(tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    (models / "face_landmark.tflite").write_bytes(b"not the model")
    monkeypatch.setenv("EMO_PREP_MODELS", str(models))
    proc = subprocess.run([EMO_PREP, "check", str(SAMPLES / "astronaut.png")], capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ})
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: model file ") and "MANIFEST.json expects" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_models_folder_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_PREP_MODELS", str(tmp_path))
    with pytest.raises(pipeline.ModelError, match="EMO_PREP_MODELS"):
        Checker()


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="expected a number >= 0"):
        CheckConfig(min_face_score=-1)
    with pytest.raises(ValueError, match="min_side"):
        CheckConfig(min_side=8000)


def test_config_changes_the_verdict():
    with Checker(CheckConfig(min_side=600)) as strict:
        report = strict.check(SAMPLES / "astronaut.png")
    assert [f.code for f in report.errors] == ["image_too_small"]


def test_closed_checker_refuses_work():
    checker = Checker()
    checker.close()
    checker.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        checker.check(SAMPLES / "astronaut.png")


def test_unknown_ratio_is_refused(checker):
    with pytest.raises(ValueError, match="expected one of"):
        checker.check(SAMPLES / "astronaut.png", ratio="4:3")


def test_exported_members():
    assert sorted(pipeline.__all__) == sorted([
        "check", "check_audio", "fix", "FixResult", "Checker", "Report", "Finding", "CheckConfig", "load_image",
        "upload_form", "crop_box", "EmoClient", "AsyncEmoClient", "EmoPrepError", "InputError", "ModelError",
        "UsageError"])


def test_library_use_leaves_stderr_clean_at_exit():
    """The default Checker (and a forgotten open one) close before MediaPipe's pools stop."""
    code = ("import pipeline; pipeline.check('samples/astronaut.png');"
            "c = pipeline.Checker(); c.check('samples/coffee.jpg')")
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stderr == ""


def test_lint_is_clean():
    """The same ruff rules for everyone (pyproject.toml [tool.ruff])."""
    ruff = ROOT / ".venv" / "bin" / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed in .venv (make test installs it)")
    proc = subprocess.run([str(ruff), "check", "pipeline", "tests", "bench", "samples", "models"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
