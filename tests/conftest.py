"""Shared fixtures: the dev photo sets (read-only, beside the repo) and one Checker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
DATA34 = ROOT.parent / "shared" / "data34"
SAMPLES = ROOT / "samples"
EMO_PREP = str(ROOT / ".venv" / "bin" / "emo-prep") if (ROOT / ".venv" / "bin" / "emo-prep").exists() else "emo-prep"


def labels(folder: Path) -> list[dict]:
    path = folder / "labels.jsonl"
    if not path.is_file():
        pytest.skip(f"labelled photos not found at {folder} (../shared/ beside the repo)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def checker():
    from pipeline import Checker

    with Checker() as c:
        yield c


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Tests never see the caller's emo-prep or DashScope settings."""
    for name in list(os.environ):
        if name.startswith(("DASHSCOPE_", "EMO_PREP_")):
            monkeypatch.delenv(name, raising=False)
