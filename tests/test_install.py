"""The package as a user gets it: sdist and wheel built from the checkout's files, the wheel
installed in a fresh venv outside the checkout, the installed command run with no settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES

import pipeline

MODEL_FILES = {"MANIFEST.json", "LICENSE-mediapipe", "face_detection_full_range_sparse.tflite",
               "face_detection_short_range.tflite", "face_landmark.tflite", "pose_landmark_full.tflite"}


def _checkout_files() -> list[str]:
    """The files a clean clone has (tracked, plus new files not ignored)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot tell which files a clean clone holds")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv outside the checkout holding only the built wheel; its dependencies come from the
    test venv through a .pth line (so mediapipe is not installed again), which does not run the
    test venv's editable-install hook."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "clone"
    for name in _checkout_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_PREP_", "PYTHON"))}
    build = [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
             "print(getattr(b, sys.argv[1])(sys.argv[2]))"]
    sdist = subprocess.run([*build, "build_sdist", str(tmp / "dist")], cwd=src, env=env, capture_output=True,
                           text=True, timeout=300)
    assert sdist.returncode == 0, sdist.stderr[-2000:]
    sdist_path = tmp / "dist" / sdist.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist_path) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    names = {Path(n).name for n in tarfile.open(sdist_path).getnames() if "/models/" in n}
    assert MODEL_FILES <= names
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = subprocess.run([*build, "build_wheel", str(tmp / "dist")], cwd=unpacked, env=env, capture_output=True,
                           text=True, timeout=300)  # the wheel from the sdist, as `python -m build` makes it
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    wheel_path = tmp / "dist" / wheel.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel_path) as zf:
        assert {f"pipeline/models/{n}" for n in MODEL_FILES} <= set(zf.namelist())
        assert {"pipeline/serve/__init__.py", "pipeline/serve/sandbox.py"} <= set(zf.namelist())  # the sub-package
        assert {f"pipeline/serve/static/{n}" for n in ("index.html", "page.js", "page.css")} <= set(zf.namelist())
        assert "emo_prep-" + pipeline.__version__ + ".dist-info/licenses/LICENSE" in zf.namelist()
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path"
                                "('purelib'))"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "test-venv-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--quiet", "--no-deps", "--no-index", str(wheel_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_PREP_", "PYTHON", "DASHSCOPE_"))}
    return subprocess.run([str(venv / "bin" / "emo-prep"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_installed_wheel_checks_photos_in_both_ratios_from_anywhere(installed, tmp_path):
    photo = tmp_path / "photo.png"
    shutil.copy2(SAMPLES / "astronaut.png", photo)
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import pipeline.modelfiles as m; "
                            "print(m.__file__); print(m.models_dir())"], cwd=tmp_path, capture_output=True, text=True)
    module, models = where.stdout.splitlines()
    assert module.startswith(str(installed)) and models.startswith(str(installed)), where.stdout
    for ratio in ("1:1", "3:4"):
        proc = _run(installed, "check", "--json", "--ratio", ratio, "photo.png", cwd=tmp_path)
        assert proc.returncode in (0, 1) and proc.stderr == "", proc.stderr
        record = json.loads(proc.stdout)
        in_checkout = pipeline.check(str(photo), ratio=ratio).to_dict()
        assert (record["ok"], record["face_bbox"], record["ext_bbox"]) == (
            in_checkout["ok"], in_checkout["face_bbox"], in_checkout["ext_bbox"])
    assert _run(installed, "--version", cwd=tmp_path).stdout == f"emo-prep {pipeline.__version__}\n"


def test_installed_wheel_still_verifies_the_model_hashes(installed, tmp_path):
    site = subprocess.run([str(installed / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path"
                           "('purelib'))"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    target = Path(site) / "pipeline" / "models" / "face_landmark.tflite"
    assert target.is_relative_to(installed)  # never the checkout's own copy
    good = target.read_bytes()
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    try:
        proc = _run(installed, "check", str(SAMPLES / "astronaut.png"), cwd=tmp_path)
    finally:
        target.write_bytes(good)
    assert proc.returncode == 2 and "MANIFEST.json expects" in proc.stderr and "Traceback" not in proc.stderr


def test_python_dash_m_pipeline_and_version():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == f"emo-prep {pipeline.__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "check", "--json", str(SAMPLES / "coffee.jpg")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and json.loads(proc.stdout)["findings"][0]["code"] == "no_face"


def test_dockerfile_is_slim_runs_as_a_user_and_starts_emo_prep():
    """The image cannot be built here (no Docker engine); its recipe is held to its promises."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(b.startswith("python:") and b.endswith("-slim") for b in bases)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["emo-prep"]' in lines
    assert "image:" in (ROOT / "Makefile").read_text() and "make image" in (ROOT / "README.md").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
