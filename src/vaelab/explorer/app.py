"""The latent-space explorer's web app: decodes points of a run's latent space live.

`create_app(run_dir)` builds the FastAPI app (the page under `/`, its assets under `/static`, the
JSON API under `/api`); `serve(run_dir, host, port)` runs it on uvicorn. Every model call happens on
the event loop: one decode is far cheaper than a thread hand-off, and it keeps the model
single-threaded without a lock.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaelab._extras import require_extra

require_extra("serve", "fastapi", "uvicorn", "PIL")

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.explorer.core import Explorer, load_explorer, png_data_url

STATIC_DIR = Path(__file__).parent / "static"
MAX_VECTORS = 256  # latent vectors (or images) per request
MAX_BODY_BYTES = 1 << 20
MAX_ABS_LATENT = 1000.0  # far outside any posterior; beyond it float32 layers can overflow


class ApiError(Exception):
    """A request the API refuses: answered as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- the API


def points_payload(explorer: Explorer) -> dict[str, Any]:
    """What `GET /api/points` answers: the scatter, the view, the limits."""
    view = explorer.view
    xy = view.project(explorer.latents)
    return {
        "run": explorer.run_name,
        "source": explorer.source,
        "latent_dim": explorer.latent_dim,
        "image_shape": list(explorer.image_shape),
        "class_names": list(explorer.class_names),
        "view": {
            "kind": view.kind,
            "mean": _rounded(view.mean),
            "components": _rounded(view.components),
            "explained_variance": view.explained_variance,
        },
        "x": _rounded(xy[:, 0]),
        "y": _rounded(xy[:, 1]),
        "labels": explorer.labels.tolist(),
        "latent_min": _rounded(explorer.latents.min(axis=0, initial=0.0)),
        "latent_max": _rounded(explorer.latents.max(axis=0, initial=0.0)),
        "limits": {
            "max_vectors": MAX_VECTORS,
            "max_body_bytes": MAX_BODY_BYTES,
            "max_abs_latent": MAX_ABS_LATENT,
        },
    }


def _rounded(values: np.ndarray) -> list[Any]:
    return np.round(values.astype(np.float64), 5).tolist()


# ---------------------------------------------------------------- request validation


async def read_json_object(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object, refusing bodies over `limit` bytes before reading on."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of over 4300 digits
        raise ApiError(400, f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, "request body must be a JSON object")
    return value


def _refuse_constant(name: str) -> float:
    raise ApiError(400, f"{name} is not allowed; latent values must be finite numbers")


def latent_vector(value: Any, dim: int, where: str) -> list[float]:
    """One latent vector: a list of `dim` finite numbers within +-MAX_ABS_LATENT."""
    if not isinstance(value, list):
        raise ApiError(400, f"{where} must be a list of {dim} numbers")
    if len(value) != dim:
        raise ApiError(
            400, f"{where} has {len(value)} numbers; this run's latent space has {dim} dimensions"
        )
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ApiError(400, f"{where}[{index}] is {json.dumps(item)[:40]}, not a number")
        if not abs(item) <= MAX_ABS_LATENT:  # also false for NaN and infinity
            limit = f"latent values must lie within +-{MAX_ABS_LATENT:g}"
            raise ApiError(400, f"{where}[{index}] is {json.dumps(item)[:40]}; {limit}")
    return [float(item) for item in value]


def latent_vectors(value: Any, dim: int, where: str) -> np.ndarray:
    """A non-empty list of at most MAX_VECTORS latent vectors, as a float32 array."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"{where} must be a non-empty list of latent vectors")
    if len(value) > MAX_VECTORS:
        raise ApiError(
            413, f"{where} holds {len(value)} vectors; at most {MAX_VECTORS} per request"
        )
    rows = [latent_vector(item, dim, f"{where}[{index}]") for index, item in enumerate(value)]
    return np.asarray(rows, dtype=np.float32)


def int_field(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    """The integer field `name` of a request body, `default` when absent, within low-high."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return value


def optional_seed(body: dict[str, Any]) -> int | None:
    """The body's `seed` (0 to 2**63 - 1), or None when it gives none."""
    if body.get("seed") is None:
        return None
    return int_field(body, "seed", None, 0, 2**63 - 1)


def image_format(body: dict[str, Any]) -> str:
    """The body's `format`: 'png' (the default) or 'raw'."""
    value = body.get("format", "png")
    if value not in ("png", "raw"):
        raise ApiError(400, "format must be 'png' or 'raw'")
    return value


def check_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse a body with fields other than `allowed`."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; expected {', '.join(allowed)}")


# ---------------------------------------------------------------- the app


def images_payload(explorer: Explorer, z: np.ndarray, fmt: str) -> dict[str, Any]:
    """Decoded images as PNG data URLs, or as raw uint8 rows (H*W values each, row-major)."""
    return pixels_payload(explorer.decode_pixels(z), fmt)


def pixels_payload(pixels: np.ndarray, fmt: str) -> dict[str, Any]:
    """uint8 images (N x H x W) as PNG data URLs, or as raw rows (H*W values each)."""
    if fmt == "raw":
        return {"shape": list(pixels.shape), "pixels": pixels.reshape(len(pixels), -1).tolist()}
    return {"images": [png_data_url(image) for image in pixels]}


def create_app(
    run_dir: str | Path, data_dir: str | Path | None = None, dataset: Dataset | None = None
) -> FastAPI:
    """The explorer app for one run; loads the model and encodes the test set once, here."""
    explorer = load_explorer(run_dir, data_dir=data_dir, dataset=dataset)
    points = json.dumps(points_payload(explorer), separators=(",", ":")).encode()
    dim = explorer.latent_dim
    app = FastAPI(title="vaelab explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = explorer
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/points")
    async def get_points() -> Response:
        return Response(points, media_type="application/json")

    @app.post("/api/decode")
    async def decode(request: Request) -> JSONResponse:
        body = await read_json_object(request)
        check_fields(body, ("z", "format"))
        z = latent_vectors(body.get("z"), dim, "z")
        return JSONResponse(images_payload(explorer, z, image_format(body)))

    @app.post("/api/interpolate")
    async def interpolate(request: Request) -> JSONResponse:
        body = await read_json_object(request)
        check_fields(body, ("start", "end", "steps", "format"))
        start = np.asarray(latent_vector(body.get("start"), dim, "start"))
        end = np.asarray(latent_vector(body.get("end"), dim, "end"))
        steps = int_field(body, "steps", 10, 2, MAX_VECTORS)
        weights = np.linspace(0.0, 1.0, steps)[:, None]
        z = ((1 - weights) * start + weights * end).astype(np.float32)
        return JSONResponse({"z": z.tolist(), **images_payload(explorer, z, image_format(body))})

    @app.post("/api/sample")
    async def sample(request: Request) -> JSONResponse:
        body = await read_json_object(request)
        check_fields(body, ("count", "seed", "format"))
        count = int_field(body, "count", 8, 1, MAX_VECTORS)
        seed = optional_seed(body)
        seed = secrets.randbits(63) if seed is None else seed
        z, pixels = explorer.prior_samples(count, seed)
        payload = pixels_payload(pixels, image_format(body))
        return JSONResponse({"z": z.tolist(), "seed": seed, **payload})

    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc}"}, status_code=400)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


# ---------------------------------------------------------------- running it


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0 picks a free one) and listening."""
    if not 0 <= port <= 65535:
        raise VaelabError(f"port must be from 0 to 65535, got {port}", parameters=("port",))
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise VaelabError(
            f"host {host}: cannot resolve it ({exc.strerror})", parameters=("host",)
        ) from None
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it every
    # answer waits ~40 ms for the client's delayed ACK (socket.create_server leaves proto 0).
    sock = socket.socket(family, kind, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(256)
    except OSError as exc:
        sock.close()
        raise VaelabError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    return sock


def server_url(sock: socket.socket) -> str:
    """The http:// address a listening socket answers on."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | Path | None = None,
    threads: int = 1,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the explorer for `run_dir` until interrupted; `announce` gets its URL."""
    import uvicorn  # only the server needs it; the app and its tests do not

    torch.set_num_threads(threads)
    with listening_socket(host, port) as sock:  # first, so a bad host or port fails at once
        app = create_app(run_dir, data_dir=data_dir)
        announce(f"latent explorer for {Path(run_dir)}: {server_url(sock)}  (Ctrl+C to stop)")
        if not is_loopback(host):
            announce(f"note: {host} is not a loopback address; anyone who can reach it can use it")
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        uvicorn.Server(config).run(sockets=[sock])
