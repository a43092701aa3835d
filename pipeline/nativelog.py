"""Native libraries (MediaPipe, LiteRT, libjpeg) write to file descriptor 2 directly; this
keeps their known chatter off the user's terminal while letting anything else through."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["quiet_native_stderr"]

_LOCK = threading.RLock()

#: Known chatter: MediaPipe/LiteRT INFO and WARNING lines, and the image decoders' complaints
#: about damaged files (which the check reports as `unreadable`, or decodes anyway).
_NOISE = re.compile(r"^(?:[IW]\d{4} |INFO: |WARNING: All log messages before absl|WARNING: Logging before InitGoogle|"
                    r".*Sparsity tensors may not yet be fully supported|Corrupt JPEG data: |"
                    r"Premature end of JPEG file|libpng (?:error|warning): |\[(?:ERROR| WARN):\d+@[\d.]+\] global |"
                    r"\s*$)")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hide the native runtime's start-up chatter on fd 2 while keeping real errors.

    GLOG/TF variables do not silence MediaPipe (DESIGN), so fd 2 goes to a temporary file
    for the duration; afterwards every line that is not known noise is written back.
    """
    fd = 2  # where native code writes, whatever sys.stderr is (pytest, notebooks) replaced by
    with _LOCK:  # fd 2 is process-wide: one thread at a time may swap it
        try:
            sys.stderr.flush()
            saved = os.dup(fd)
        except (OSError, ValueError):  # no fd 2 at all (a daemon with closed descriptors)
            yield
            return
        with _swapped(fd, saved):
            yield


@contextlib.contextmanager
def _swapped(fd: int, saved: int) -> Iterator[None]:
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _NOISE.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
