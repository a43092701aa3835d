"""Locate the bundled model files and verify them against models/MANIFEST.json.

Nothing is ever downloaded: the files are committed under models/ (taken from the
mediapipe 0.10.21 wheel, see the MANIFEST). An installed wheel carries them as
`pipeline/models/`, a source checkout keeps them at its top level; `EMO_PREP_MODELS` points
elsewhere if needed.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from .errors import ModelError

__all__ = ["models_dir", "model_path"]

_ENV = "EMO_PREP_MODELS"


def models_dir() -> Path:
    """The folder holding the model files: $EMO_PREP_MODELS; else pipeline/models/ (an installed
    wheel or sdist); else models/ beside the package (a source checkout)."""
    env = os.environ.get(_ENV)
    package = Path(__file__).resolve().parent
    candidates = [Path(env)] if env else [package / "models", package.parent / "models"]
    for path in candidates:
        if (path / "MANIFEST.json").is_file():
            return path
    raise ModelError(f"no MANIFEST.json in {' or '.join(map(str, candidates))}; reinstall emo-prep (its wheel "
                     f"carries the models), run `make models` in a checkout, or set {_ENV} to the models folder")


@lru_cache(maxsize=None)
def _verified(folder: str, name: str) -> str:
    root = Path(folder)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    entry = manifest["files"].get(name)
    if entry is None:
        raise ModelError(f"{name} is not listed in {root / 'MANIFEST.json'}")
    path = root / name
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc.strerror}; "
                         f"rebuild it with the recipe in MANIFEST.json") from exc
    if digest != entry["sha256"]:
        raise ModelError(f"model file {path} has sha256 {digest}, MANIFEST.json expects "
                         f"{entry['sha256']}; rebuild it with the recipe in MANIFEST.json")
    return str(path)


def model_path(name: str) -> str:
    """Path of a verified model file (hashed once per process)."""
    return _verified(str(models_dir()), name)
