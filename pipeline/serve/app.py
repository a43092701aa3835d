"""`emo-prep serve`: the check stage over HTTP, in the shapes DashScope clients already speak.

    POST /api/v1/services/aigc/image2video/face-detect     emo-detect-v1's request and answer
    POST /api/v1/services/aigc/image2video/video-synthesis the gateway (gateway.py)
    GET  /api/v1/tasks[/ID], POST /api/v1/tasks/ID/cancel  passed through to the upstream
    POST /v1/check, /v1/preview, /v1/fix                   native: raw body, multipart `file` or {"url"}
    GET  /  /healthz  /metrics  /docs                      the page, liveness, Prometheus, OpenAPI

Checks run in a pool of worker processes (pool.py); the event loop only reads, fetches and
answers. URLs are fetched with reach "public" (module pipeline.fetch) unless private URLs are
allowed. Nothing here logs a header, a body or a key.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from .. import __version__
from ..config import (
    DETECT_MODEL,
    MAX_INPUT_BYTES,
    RATIOS,
    SERVE_DEADLINE_S,
    SERVE_LATENCY_BUCKETS,
    SERVE_MAX_JSON_BYTES,
    SERVE_QUEUE_PER_WORKER,
    SERVE_RETRY_AFTER_S,
    URL_TIMEOUT_S,
)
from ..errors import InputError
from ..fetch import Reach, fetch_url, redact_url
from ..fix import FIX_RATIOS
from ..payload import FaceDetectRequest
from . import gateway
from .answers import Reply, detect_answer, error_body, rejection
from .pool import CheckPool, PoolBusy, PoolFailed, PoolTimeout, check_record, fix_record, preview_png

__all__ = ["ServeOptions", "create_app"]

API = "/api/v1"
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeOptions:
    """How `emo-prep serve` runs; every default is in pipeline/config.py."""

    upstream: str
    """The DashScope API base the gateway forwards to (e.g. https://dashscope.aliyuncs.com/api/v1)."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Worker processes, each with its own Checker."""
    max_queue: int | None = None
    """Requests that may wait for a worker (None: SERVE_QUEUE_PER_WORKER per worker); past it, 429."""
    allow_private_urls: bool = False
    """Fetch photo URLs on loopback and private networks too (never link-local / metadata)."""
    deadline_s: float = SERVE_DEADLINE_S
    geometry: Any = None
    """A Geometry or a geometry file for the box rules (None: $EMO_PREP_GEOMETRY, else built in)."""

    @property
    def queue(self) -> int:
        return SERVE_QUEUE_PER_WORKER * self.workers if self.max_queue is None else self.max_queue

    @property
    def reach(self) -> Reach:
        return "private" if self.allow_private_urls else "public"


class _Metrics:
    def __init__(self, pool_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("emo_prep_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.check_seconds = Histogram("emo_prep_check_seconds", "Seconds a worker spent checking one photo",
                                       buckets=SERVE_LATENCY_BUCKETS, registry=self.registry)
        Gauge("emo_prep_queue_depth", "Requests waiting for a worker", registry=self.registry).set_function(pool_depth)


def create_app(options: ServeOptions, *, on_ready: Callable[[list[int]], None] | None = None) -> FastAPI:
    """The ASGI app; its worker pool starts with the app (lifespan) and `on_ready` gets the
    workers' pids once every Checker is loaded."""
    pool = CheckPool(options.workers, options.queue, geometry=options.geometry)
    upstream = gateway.Upstream(options.upstream)
    metrics = _Metrics(lambda: pool.queued)
    # URL fetches wait on the network in threads of their own, one per request admitted
    fetches = concurrent.futures.ThreadPoolExecutor(pool.workers + pool.max_queue, thread_name_prefix="serve-fetch")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pids = await asyncio.to_thread(pool.start)
        if on_ready is not None:
            on_ready(pids)
        try:
            yield
        finally:
            await upstream.close()
            fetches.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(pool.close)

    app = FastAPI(title="emo-prep serve", version=__version__, lifespan=lifespan,
                  description="emo-detect-v1 compatible checks, a gateway that fills emo-v1's boxes, native checks.")

    app.add_middleware(_Edge, requests=metrics.requests)

    @app.exception_handler(Reply)
    async def reply_handler(_: Request, reply: Reply) -> JSONResponse:
        return _json_error(reply)

    capacity, admitted = pool.workers + pool.max_queue, [0]

    def _late() -> Reply:
        return Reply(504, "RequestTimeOut", f"not answered within {options.deadline_s:g} s",
                     hint="Send the whole request at once and try again later, or with a smaller photo.")

    def gated(endpoint: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        """At most workers + queue requests inside the endpoints that fetch or check (a slow URL
        holds its place too); one more is answered 429 before its body is read. Each has the
        request deadline from here on, reading its body included."""
        @functools.wraps(endpoint)
        async def gate(*args: Any, **kwargs: Any) -> Response:
            if admitted[0] >= capacity:
                raise _throttled()
            admitted[0] += 1
            try:
                async with asyncio.timeout(options.deadline_s):  # also a body that stops arriving
                    return await endpoint(*args, **kwargs)
            except TimeoutError:
                raise _late() from None
            finally:
                admitted[0] -= 1

        return gate

    async def run(fn: Callable[..., Any], *args: Any, started: float) -> Any:
        try:
            result, seconds = await pool.run(fn, *args, deadline_s=options.deadline_s - (time.monotonic() - started))
        except PoolBusy:
            raise _throttled() from None
        except PoolTimeout:
            raise _late() from None
        except PoolFailed:
            raise Reply(500, "InternalError", "a check worker ended unexpectedly and was restarted; try again") \
                from None
        metrics.check_seconds.observe(seconds)
        return result

    async def fetch(url: str, started: float) -> bytes:
        deadline = min(URL_TIMEOUT_S, options.deadline_s - (time.monotonic() - started))
        try:
            return await asyncio.get_running_loop().run_in_executor(
                fetches, functools.partial(fetch_url, url, MAX_INPUT_BYTES, deadline_s=deadline, reach=options.reach))
        except InputError as exc:
            raise Reply(400, "InvalidURL", exc.message, hint=exc.hint) from exc

    async def photo(request: Request, started: float) -> tuple[bytes, str]:
        """The photo of a native request: raw body, multipart `file`, or JSON {"url": ...}."""
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype == "multipart/form-data":
            _declared_length(request, MAX_INPUT_BYTES)
            async with request.form(max_files=1) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise Reply(400, "InvalidParameter", "the multipart form has no `file` part",
                                hint="Send the photo as the form field `file`.")
                return await upload.read(), upload.filename or "upload"
        if ctype == "application/json":
            body = await _json(request)
            url = body.get("url") if isinstance(body, dict) else None
            if not isinstance(url, str):
                raise Reply(400, "InvalidParameter", 'a JSON body must be {"url": "https://..."}',
                            hint="Or send the photo itself as the request body.")
            return await fetch(url, started), redact_url(url)
        data = await _read(request, MAX_INPUT_BYTES)
        if not data:
            raise Reply(400, "InvalidParameter", "the request has no photo",
                        hint="Send the photo as the body, as the multipart field `file`, or {\"url\": ...}.")
        return data, request.query_params.get("name") or "upload"

    # --- emo-detect-v1 ----------------------------------------------------------------------
    @app.post(API + "/services/aigc/image2video/face-detect", tags=["DashScope"])
    @gated
    async def face_detect(request: Request) -> JSONResponse:
        """emo-detect-v1's request (`model`, `input.image_url`, `parameters.ratio`) and answer."""
        started = time.monotonic()
        if request.headers.get("x-dashscope-async", "").lower() == "enable":
            raise Reply(403, "AccessDenied", "Current user api does not support asynchronous calls.")
        body = await _json(request)
        try:
            req = FaceDetectRequest.model_validate(body)
        except ValidationError:
            raise Reply(400, "InvalidParameter",
                        "The request parameter is invalid, please check the request parameter.") from None
        if req.model != DETECT_MODEL:
            raise Reply(400, "InvalidParameter", f"The request parameter is invalid: model must be {DETECT_MODEL}.")
        url = req.input.image_url
        if url.startswith("oss://"):
            raise Reply(400, "InvalidURL", "oss:// files can only be read by DashScope itself",
                        hint="Send an http(s) URL of the photo, or the photo itself to POST /v1/check.")
        record = await run(check_record, await fetch(url, started), redact_url(url), req.parameters.ratio,
                           started=started)
        return JSONResponse(detect_answer(record))

    # --- the gateway ------------------------------------------------------------------------
    @app.post(API + "/services/aigc/image2video/video-synthesis", tags=["DashScope"])
    @gated
    async def video_synthesis(request: Request) -> Response:
        """emo-v1's request with face_bbox / ext_bbox optional: checked, boxes filled, forwarded."""
        started = time.monotonic()
        submit = gateway.plan(await _json(request))
        body = submit.body
        if submit.check:
            record = await run(check_record, await fetch(submit.image_url, started), redact_url(submit.image_url),
                               submit.ratio, started=started)
            if not record["ok"]:
                raise rejection(record)
            body = gateway.complete(submit, record)
        answer = await upstream.send("POST", "/services/aigc/image2video/video-synthesis", headers=request.headers,
                                     body=json.dumps(body).encode())
        return _passed(answer)

    @app.get(API + "/tasks", tags=["DashScope"])
    async def task_list(request: Request) -> Response:
        """The account's task list, from the upstream as it is."""
        return _passed(await upstream.send("GET", "/tasks", headers=request.headers, query=request.url.query))

    @app.get(API + "/tasks/{task_id}", tags=["DashScope"])
    async def task(task_id: str, request: Request) -> Response:
        """A task, from the upstream as it is."""
        return _passed(await upstream.send("GET", f"/tasks/{_task_id(task_id)}", headers=request.headers))

    @app.post(API + "/tasks/{task_id}/cancel", tags=["DashScope"])
    async def cancel(task_id: str, request: Request) -> Response:
        """Cancel a PENDING task upstream."""
        return _passed(await upstream.send("POST", f"/tasks/{_task_id(task_id)}/cancel", headers=request.headers))

    # --- native -----------------------------------------------------------------------------
    @app.post("/v1/check", tags=["native"])
    @gated
    async def check(request: Request, ratio: str = "1:1") -> JSONResponse:
        """The `check --json` record of the photo (raw body, multipart `file` or {"url": ...})."""
        started = time.monotonic()
        _ratio(ratio, RATIOS)
        data, name = await photo(request, started)
        return JSONResponse(await run(check_record, data, name, ratio, started=started))

    @app.post("/v1/preview", tags=["native"], response_class=Response)
    @gated
    async def preview(request: Request, ratio: str = "1:1") -> Response:
        """The preview picture (PNG): boxes drawn, the crop as EMO animates it, the findings."""
        started = time.monotonic()
        _ratio(ratio, RATIOS)
        data, name = await photo(request, started)
        record, png = await run(preview_png, data, name, ratio, started=started)
        return Response(png, media_type="image/png", headers={"X-Emo-Prep-Ok": str(record["ok"]).lower()})

    @app.post("/v1/fix", tags=["native"])
    @gated
    async def fix(request: Request, ratio: str = "1:1", light: bool = False) -> JSONResponse:
        """`emo-prep fix` on the photo: the fix record, and the fixed photo (base64) when fixed."""
        started = time.monotonic()
        _ratio(ratio, FIX_RATIOS)
        data, name = await photo(request, started)
        record, fixed = await run(fix_record, data, name, ratio, light, started=started)
        record["image_base64"] = base64.b64encode(fixed).decode() if fixed is not None else None
        return JSONResponse(record)

    # --- operations and the page ------------------------------------------------------------
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """Alive, with the pool's size and load."""
        return {"status": "ok", "version": __version__, "workers": pool.workers, "max_queue": pool.max_queue,
                "admitted": admitted[0], "checking_or_queued": pool.in_flight, "queued": pool.queued}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format: requests by route and status, check latency, queue depth."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class _Edge:
    """Plain ASGI middleware (not BaseHTTPMiddleware, which costs a task and a copy per request):
    every answer counted by route and status, and a bug of ours answered with one line, never a
    traceback on the wire or in the log with request data."""

    def __init__(self, app: Any, *, requests: Counter) -> None:
        self.app, self.requests = app, requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [0]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if status[0]:  # the answer had begun: nothing more can be said on the wire
                raise
            await _json_error(Reply(500, "InternalError", f"emo-prep serve error: {type(exc).__name__}"))(
                scope, receive, sending)
        finally:
            self.requests.labels(getattr(scope.get("route"), "path", "unmatched"), str(status[0])).inc()


def _json_error(reply: Reply) -> JSONResponse:
    return JSONResponse(error_body(reply), status_code=reply.status, headers=reply.headers)


def _passed(answer: Any) -> Response:
    """An upstream answer unchanged: status, body and content type."""
    return Response(answer.content, status_code=answer.status_code,
                    media_type=answer.headers.get("content-type", "application/json"))


def _ratio(ratio: str, allowed: tuple[str, ...] | dict[str, Any]) -> None:
    if ratio not in allowed:
        raise Reply(400, "InvalidParameter", f"ratio must be one of {list(allowed)}, got {ratio!r}",
                    hint="Use ?ratio=1:1 for a head portrait or ?ratio=3:4 for a half-body shot.")


def _throttled() -> Reply:
    """DashScope's own answer to too many requests (spec 3.2), with when to try again."""
    return Reply(429, "Throttling", "Requests throttling triggered.", headers={"Retry-After": str(SERVE_RETRY_AFTER_S)})


def _task_id(task_id: str) -> str:
    """A task id as the service makes them (letters, digits, - _ .), never a path of its own."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", task_id):
        raise Reply(400, "InvalidParameter", f"not a task id: {task_id!r}")
    return task_id


def _too_large(cap: int) -> Reply:
    return Reply(413, "EntityTooLarge", f"request body over {cap} bytes", hint="Use a smaller photo.")


def _declared_length(request: Request, cap: int) -> None:
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise Reply(411, "InvalidParameter", "a multipart upload needs a Content-Length")
    if int(raw) > cap:
        raise _too_large(cap)


async def _read(request: Request, cap: int) -> bytes:
    """The whole body, refused (413) as soon as it passes `cap` bytes, declared or not."""
    raw = request.headers.get("content-length")
    if raw is not None and raw.isdigit() and int(raw) > cap:
        raise _too_large(cap)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise _too_large(cap)
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await _read(request, SERVE_MAX_JSON_BYTES) or b"{}")
    except ValueError:
        raise Reply(400, "InvalidParameter",
                    "The request is missing required parameters or in a wrong format.") from None
