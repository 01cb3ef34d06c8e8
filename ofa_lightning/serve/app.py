"""The FastAPI app of ``ofa-serve``: the web page, the JSON API, health and model info.

Endpoints::

    GET  /          the web page (static/index.html)
    GET  /health    {"status": "ok", "waiting": n, "batches": n}
    GET  /info      parameters, model shape, tokenizer, trained tasks (image size, prompt type), usable tasks
    POST /predict   multipart form (image file, task, instruction, region) or JSON (image_base64, task,
                    instruction, region) -> {"task", "prompt", "text", "box", "image_png_base64", "warning",
                    "latency_ms", "batch_size"}

Bad input is a 4xx with ``{"detail": message}``: 400 not an image / empty instruction / unknown task / missing
field, 413 an upload over ``max_upload_mb``, an image over ``max_image_pixels`` (a decompression bomb) or an
over-long instruction, 429 with ``Retry-After`` when ``max_queue`` requests are already waiting. Each request is
logged as one line (method, path, status, task, batch size, latency).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import time
import warnings
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from .batching import DynamicBatcher, QueueFull
from .engine import BadRequest, ServeEngine, ServeRequest

log = logging.getLogger("ofa_lightning.serve")

__all__ = ["create_app", "decode_image"]

PAGE = Path(__file__).parent / "static" / "index.html"


def decode_image(data: bytes, max_pixels: int):
    """Bytes → RGB PIL image; a 4xx :class:`BadRequest` for anything that is no image or is too large."""
    if not data:
        raise BadRequest("empty image upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise BadRequest(
                    f"image too large: {width}x{height} = {width * height} pixels, at most "
                    f"{max_pixels} (max_image_pixels)",
                    413,
                )
            image.load()
            return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadRequest(f"image too large (decompression bomb): {exc}", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(f"not an image that PIL can read: {type(exc).__name__}: {exc}") from None


def _region(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        region = [float(v) for v in value]
    except (TypeError, ValueError, json.JSONDecodeError):
        raise BadRequest(f"region must be 4 numbers x0,y0,x1,y1 (pixels), got {value!r}") from None
    if len(region) != 4:
        raise BadRequest(f"region must be 4 numbers x0,y0,x1,y1 (pixels), got {len(region)}")
    return region


def create_app(
    engine: ServeEngine,
    max_batch: int = 8,
    wait_ms: float = 10.0,
    max_queue: int = 64,
    max_upload_mb: float = 20.0,
    max_image_pixels: int = 40_000_000,
    request_timeout_s: float = 300.0,
) -> FastAPI:
    batcher = DynamicBatcher(engine.run_batch, max_batch=max_batch, wait_ms=wait_ms, max_queue=max_queue)
    max_upload = int(max_upload_mb * 1024 * 1024)
    Image.MAX_IMAGE_PIXELS = max_image_pixels  # PIL's own guard for any later open in this process

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="ofa-serve", summary="OFA checkpoint: web page and JSON API", lifespan=lifespan)
    app.state.engine, app.state.batcher = engine, batcher

    @app.middleware("http")
    async def log_request(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        extra = getattr(request.state, "log_extra", "")
        log.info(
            "%s %s %d %.1f ms%s",
            request.method,
            request.url.path,
            response.status_code,
            1000 * (time.perf_counter() - start),
            extra,
        )
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        request.state.log_extra = f" ({exc})"
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "waiting": batcher.pending, "batches": batcher.batches}

    @app.get("/info")
    async def info():
        return {
            **engine.info(),
            "batching": {
                "max_batch": batcher.max_batch,
                "wait_ms": batcher.wait_s * 1000,
                "max_queue": batcher.max_queue,
            },
        }

    async def read_fields(request: Request) -> tuple[dict[str, Any], bytes | None]:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload:
            raise BadRequest(f"request too large: {int(length)} bytes, at most {max_upload} (max_upload_mb)", 413)
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/json"):
            try:
                fields = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadRequest("the JSON body does not parse") from None
            if not isinstance(fields, dict):
                raise BadRequest("the JSON body must be an object")
            data = None
            if fields.get("image_base64"):
                encoded = str(fields["image_base64"]).split(",", 1)[-1]  # a data: URL works too
                try:
                    data = base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequest("image_base64 is not valid base64") from None
            return fields, data
        if kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form(max_part_size=max_upload)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            upload = form.get("image")
            data = None
            if upload is not None and not isinstance(upload, str):
                data = await upload.read(max_upload + 1)
                if len(data) > max_upload:
                    raise BadRequest(f"image upload over {max_upload} bytes (max_upload_mb)", 413)
            return fields, data
        raise BadRequest("send multipart/form-data (image file + fields) or application/json (image_base64)", 415)

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        fields, data = await read_fields(request)
        task = str(fields.get("task") or "caption")
        region = _region(fields.get("region"))
        instruction, warning = engine.check(task, fields.get("instruction"), data is not None, region)
        image = await run_in_threadpool(decode_image, data, max_image_pixels) if data is not None else None
        if warning:
            log.warning("%s", warning)
        try:
            item = await run_in_threadpool(engine.prepare, ServeRequest(task, instruction, image, region))
            result, batch_size = await _with_timeout(batcher.submit(task, item), request_timeout_s)
        except BadRequest:
            raise
        except (ValueError, KeyError) as exc:  # the task refused this input (e.g. a region outside the image)
            raise BadRequest(f"the model could not take this request: {exc}", 422) from None
        latency = 1000 * (time.perf_counter() - start)
        request.state.log_extra = f" task={task} batch={batch_size}"
        return {
            "task": task,
            "prompt": item.prompt,
            "text": result.text,
            "box": result.box,
            "image_png_base64": result.image_png_base64,
            "warning": warning,
            "latency_ms": round(latency, 1),
            "batch_size": batch_size,
            **result.extra,
        }

    return app


async def _with_timeout(awaitable, seconds: float):
    import asyncio

    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise BadRequest(f"no answer within {seconds:g} s (request_timeout_s)", 504) from None
