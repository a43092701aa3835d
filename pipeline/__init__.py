"""emo-prep: get portrait photos through DashScope's EMO video API on the first try.

    >>> import pipeline
    >>> report = pipeline.check("photo.jpg", ratio="1:1")
    >>> report.ok, report.face_bbox, report.ext_bbox
"""

from .findings import Finding
from .config import CheckConfig
from .errors import EmoPrepError, InputError, ModelError, UsageError
from .geometry import crop_box
from .ingest import load_image, upload_form
from .verdict import Checker, Report, check

__all__ = ["check", "Checker", "Report", "Finding", "CheckConfig", "load_image", "upload_form",
           "crop_box", "EmoPrepError", "InputError", "ModelError", "UsageError"]
__version__ = "0.1.0"
