"""The check stage off the event loop: a pool of worker processes, each with its own Checker.

Checking is CPU work (decoding, three models), so the server's event loop never does it. Each
worker process loads one `Checker` when it starts and keeps it. The pool admits at most
`workers + max_queue` requests at a time; one more is refused at once (`PoolBusy`, answered
429), and a request still waiting or running at its deadline is answered 504 (`PoolTimeout`),
its queued work cancelled (work already running finishes in its worker and is dropped).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import signal
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

import cv2

from ..verdict import Checker

__all__ = ["CheckPool", "PoolBusy", "PoolTimeout", "PoolFailed"]


class PoolBusy(Exception):
    """Every worker is busy and the queue is full."""


class PoolTimeout(Exception):
    """The request's deadline passed while it waited or ran."""


class PoolFailed(Exception):
    """A worker process died (a crash in native code); the pool was restarted."""


# --- inside a worker process ------------------------------------------------------------------
_checker: Checker | None = None


def _start_worker(geometry: Any) -> None:
    global _checker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle: it stops the pool
    _checker = Checker(geometry=geometry)


def _ready(hold_s: float) -> int:
    time.sleep(hold_s)  # held, so that the other workers take the other calls
    return os.getpid()


def _timed(work: Callable[[Checker], Any]) -> tuple[Any, float]:
    assert _checker is not None, "the worker's initializer did not run"
    started = time.perf_counter()
    result = work(_checker)
    return result, time.perf_counter() - started


def check_record(data: bytes, source_id: str, ratio: str) -> tuple[dict[str, Any], float]:
    """The check JSON contract record of a photo's bytes, and the seconds the check took."""
    return _timed(lambda checker: checker.check_bytes(data, source_id, ratio).to_dict())


def preview_png(data: bytes, source_id: str, ratio: str) -> tuple[tuple[dict[str, Any], bytes], float]:
    """The check record and the preview picture (PNG) of a photo's bytes."""
    from ..preview import render_preview

    def work(checker: Checker) -> tuple[dict[str, Any], bytes]:
        report = checker.check_bytes(data, source_id, ratio)
        ok, png = cv2.imencode(".png", render_preview(report))
        if not ok:
            raise RuntimeError("the preview could not be encoded")
        return report.to_dict(), png.tobytes()

    return _timed(work)


def fix_record(data: bytes, name: str, ratio: str, light: bool) -> tuple[tuple[dict[str, Any], bytes | None], float]:
    """`emo-prep fix` on a photo's bytes: its record, and the fixed photo's bytes when fixed."""
    from ..fix import fix

    def work(checker: Checker) -> tuple[dict[str, Any], bytes | None]:
        with tempfile.TemporaryDirectory(prefix="emo-prep-serve-fix-") as out:
            result = fix(data, ratio, out_dir=out, light=light, checker=checker, name=name)
            fixed = Path(result.output).read_bytes() if result.output else None
            record = result.to_dict()
            if result.output:
                record["output"] = Path(result.output).name  # the temporary folder means nothing to a caller
                record["report"]["source"] = record["output"]
            return record, fixed

    return _timed(work)


# --- in the server process --------------------------------------------------------------------
class CheckPool:
    """`workers` processes with a Checker each; `run(fn, *args)` awaits one of the functions
    above in a worker, within `deadline_s` seconds, or raises PoolBusy / PoolTimeout / PoolFailed."""

    def __init__(self, workers: int, max_queue: int, *, geometry: Any = None) -> None:
        if workers < 1 or max_queue < 0:
            raise ValueError(f"workers must be >= 1 and max_queue >= 0, got {workers} and {max_queue}")
        self.workers, self.max_queue, self.geometry = workers, max_queue, geometry
        self.in_flight = 0
        self._executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        # spawn, not fork: the server process runs threads (the event loop's, httpx's), and a
        # forked copy of a lock held by one of them would never be released
        return concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=_start_worker, initargs=(self.geometry,))

    @property
    def queued(self) -> int:
        """Requests admitted and waiting for a worker."""
        return max(0, self.in_flight - self.workers)

    def start(self, timeout_s: float = 120.0) -> list[int]:
        """Start every worker and load its models now (not on the first request); their pids.
        Workers start one by one and a ready one may take several calls, so calls are sent in
        rounds until every worker has answered one."""
        pids: set[int] = set()
        give_up = time.monotonic() + timeout_s
        while len(pids) < self.workers and time.monotonic() < give_up:
            pids |= {f.result() for f in [self._executor.submit(_ready, 0.05) for _ in range(self.workers)]}
        return sorted(pids)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def run(self, fn: Callable[..., tuple[Any, float]], *args: Any, deadline_s: float) -> tuple[Any, float]:
        if self.in_flight >= self.workers + self.max_queue:  # work of requests that timed out still runs
            raise PoolBusy()
        loop, executor = asyncio.get_running_loop(), self._executor
        self.in_flight += 1
        try:
            future = executor.submit(fn, *args)
        except BrokenProcessPool:
            self.in_flight -= 1
            self._restart(executor)
            raise PoolFailed() from None
        # the slot is held until the work really ends, also after a timeout: the bound is real
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), max(0.0, deadline_s))
        except TimeoutError:
            future.cancel()  # a queued one never runs; a running one finishes and is dropped
            raise PoolTimeout() from None
        except BrokenProcessPool:
            self._restart(executor)
            raise PoolFailed() from None

    def _release(self) -> None:
        self.in_flight -= 1

    def _restart(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        if broken is self._executor:  # the first of the requests that saw it break replaces it
            self._executor = self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)
