"""Native libraries (MediaPipe, LiteRT, the image decoders) write to file descriptor 2 directly.
`quiet_native_stderr` keeps the runtimes' known chatter off the user's terminal while letting
anything else through; `captured_native_stderr` keeps everything a decoder says about
untrusted bytes, for the finding that reports them."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["quiet_native_stderr", "captured_native_stderr"]

_LOCK = threading.RLock()

#: Known chatter: MediaPipe/LiteRT INFO and WARNING lines, OpenCV's own log lines.
_NOISE = re.compile(r"^(?:[IW]\d{4} |INFO: |WARNING: All log messages before absl|WARNING: Logging before InitGoogle|"
                    r".*Sparsity tensors may not yet be fully supported|\[(?:ERROR| WARN):\d+@[\d.]+\] global |"
                    r"\s*$)")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hide the native runtime's start-up chatter on fd 2 while keeping real errors.

    GLOG/TF variables do not silence MediaPipe (DESIGN), so fd 2 goes to a temporary file
    for the duration; afterwards every line that is not known noise is written back.
    """
    def write_back(lines: list[str]) -> None:
        kept = [line for line in lines if not _NOISE.match(line)]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")

    with _redirected(write_back):
        yield


@contextlib.contextmanager
def captured_native_stderr(lines: list[str]) -> Iterator[None]:
    """Whatever native code writes to fd 2 during the block goes into `lines` (on exit), not
    to the terminal: libtiff, libjpeg, libpng and libheif talking about a damaged file."""
    with _redirected(lines.extend):
        yield


@contextlib.contextmanager
def _redirected(sink) -> Iterator[None]:
    fd = 2  # where native code writes, whatever sys.stderr is (pytest, notebooks) replaced by
    with _LOCK:  # fd 2 is process-wide: one thread at a time may swap it
        try:
            sys.stderr.flush()
            saved = os.dup(fd)
        except (OSError, ValueError):  # no fd 2 at all (a daemon with closed descriptors)
            yield
            return
        with _swapped(fd, saved, sink):
            yield


@contextlib.contextmanager
def _swapped(fd: int, saved: int, sink) -> Iterator[None]:
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            sink([line for line in tmp.read().decode("utf-8", "replace").splitlines() if line.strip()])
