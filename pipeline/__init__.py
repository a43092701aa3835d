"""emo-prep: get portrait photos through DashScope's EMO video API on the first try.

    >>> import pipeline
    >>> report = pipeline.check("photo.jpg", ratio="1:1")
    >>> report.ok, report.face_bbox, report.ext_bbox

The submission side (`EmoClient`, `AsyncEmoClient`, `check_audio`) is imported on first use,
so that checking photos does not pay for httpx, pydantic and FFmpeg.
"""

from typing import Any

from .config import CheckConfig
from .errors import EmoPrepError, InputError, ModelError, UsageError
from .findings import Finding
from .fix import FixResult, fix
from .geometry import crop_box
from .ingest import load_image, upload_form
from .verdict import Checker, Report, check

__all__ = ["check", "check_audio", "fix", "FixResult", "Checker", "Report", "Finding", "CheckConfig", "load_image",
           "upload_form", "crop_box", "EmoClient", "AsyncEmoClient", "EmoPrepError", "InputError", "ModelError",
           "UsageError"]
__version__ = "0.1.0"

_LAZY = {"EmoClient": "client", "AsyncEmoClient": "client", "check_audio": "audio"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
