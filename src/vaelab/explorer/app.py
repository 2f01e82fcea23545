"""The latent-space explorer's web app: decodes points of a run's latent space live.

`create_app(run_dir)` builds the FastAPI app (the page under `/`, its assets under `/static`, the
JSON API under `/api`); `serve(run_dir, host, port)` runs it on uvicorn. Every model call happens on
the event loop: one decode is far cheaper than a thread hand-off, and it keeps the model
single-threaded without a lock.

How the server defends itself is `vaelab.explorer.guard`; what a request may hold is
`vaelab.explorer.requests`.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vaelab._extras import require_extra

require_extra("serve", "fastapi", "uvicorn", "PIL")

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from vaelab.config import DataConfig
from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.explorer.core import Explorer, load_explorer, png_data_url
from vaelab.explorer.guard import (
    HEADER_TIMEOUT_S,
    KEEP_ALIVE_S,
    MAX_HEADER_BYTES,
    Guard,
    HostCheck,
    check_token,
    connection_budget,
    guarded_protocol,
    is_loopback,
    rate_limited_logs,
)
from vaelab.explorer.requests import (
    MAX_ABS_LATENT,
    MAX_BODY_BYTES,
    MAX_VECTORS,
    ApiError,
    check_fields,
    image_format,
    int_field,
    latent_vector,
    latent_vectors,
    optional_seed,
    read_json_object,
)

STATIC_DIR = Path(__file__).parent / "static"


log = logging.getLogger("vaelab.explorer")


def points_payload(explorer: Explorer) -> dict[str, Any]:
    """What `GET /api/points` answers: the scatter, the view, the limits."""
    view = explorer.view
    xy = view.project(explorer.latents)
    return {
        "run": explorer.run_name,
        "source": explorer.source,
        "latent_dim": explorer.latent_dim,
        "image_shape": list(explorer.image_shape),
        "channels": explorer.channels,
        "labelled": explorer.labels is not None,
        "class_names": list(explorer.class_names),
        "conditional": explorer.conditional,
        "classes": explorer.model.config.classes if explorer.conditional else 0,
        "prior": explorer.model.config.prior,
        "view": {
            "kind": view.kind,
            "mean": _rounded(view.mean),
            "components": _rounded(view.components),
            "explained_variance": view.explained_variance,
        },
        "x": _rounded(xy[:, 0]),
        "y": _rounded(xy[:, 1]),
        "labels": None if explorer.labels is None else explorer.labels.tolist(),
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


def images_payload(
    explorer: Explorer, z: np.ndarray, fmt: str, label: int | None = None
) -> dict[str, Any]:
    """Decoded images (as class `label` for a conditional model) as PNG data URLs, or as raw
    uint8 rows (see `pixels_payload`)."""
    return pixels_payload(explorer.decode_pixels(z, label), fmt)


def class_field(explorer: Explorer, body: dict[str, Any]) -> int | None:
    """The class a conditional model decodes as (`class`, default 0); refused for others."""
    if not explorer.conditional:
        if "class" in body:
            raise ApiError(400, "class is for conditional models; this model takes none")
        return None
    return int_field(body, "class", 0, 0, explorer.model.config.classes - 1)


def pixels_payload(pixels: np.ndarray, fmt: str) -> dict[str, Any]:
    """uint8 images (N x H x W, or N x H x W x 3 for RGB) as PNG data URLs (greyscale or RGB),
    or as raw rows: H*W values each, or H*W*3 (R, G, B of each pixel in turn), row-major."""
    if fmt == "raw":
        return {"shape": list(pixels.shape), "pixels": pixels.reshape(len(pixels), -1).tolist()}
    return {"images": [png_data_url(image) for image in pixels]}


# What each POST answers, from its JSON body; the notebook widget answers the same requests.


def decode_answer(explorer: Explorer, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /api/decode`: the images of `z`, a list of latent vectors."""
    check_fields(body, ("z", "format", "class"))
    z = latent_vectors(body.get("z"), explorer.latent_dim, "z")
    return images_payload(explorer, z, image_format(body), class_field(explorer, body))


def interpolate_answer(explorer: Explorer, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /api/interpolate`: `steps` codes on the line from `start` to `end`, imaged."""
    check_fields(body, ("start", "end", "steps", "format", "class"))
    start = np.asarray(latent_vector(body.get("start"), explorer.latent_dim, "start"))
    end = np.asarray(latent_vector(body.get("end"), explorer.latent_dim, "end"))
    steps = int_field(body, "steps", 10, 2, MAX_VECTORS)
    weights = np.linspace(0.0, 1.0, steps)[:, None]
    z = ((1 - weights) * start + weights * end).astype(np.float32)
    label = class_field(explorer, body)
    return {"z": z.tolist(), **images_payload(explorer, z, image_format(body), label)}


def sample_answer(explorer: Explorer, body: dict[str, Any]) -> dict[str, Any]:
    """`POST /api/sample`: `count` codes from the prior (from `seed`, else a random one), imaged."""
    check_fields(body, ("count", "seed", "format", "class"))
    count = int_field(body, "count", 8, 1, MAX_VECTORS)
    seed = optional_seed(body)
    seed = secrets.randbits(63) if seed is None else seed
    z, pixels = explorer.prior_samples(count, seed, class_field(explorer, body))
    return {"z": z.tolist(), "seed": seed, **pixels_payload(pixels, image_format(body))}


def create_app(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    *,
    token: str | None = None,
    hosts: HostCheck | None = None,
    data: DataConfig | None = None,
) -> FastAPI:
    """The explorer app for one run; loads the model and encodes the test set once, here.

    With `token`, every /api request must carry it (`Authorization: Bearer TOKEN`); with `hosts`,
    a request whose Host header it does not accept is refused (`serve` passes both).
    """
    explorer = load_explorer(run_dir, data_dir=data_dir, dataset=dataset, data=data)
    points = json.dumps(points_payload(explorer), separators=(",", ":")).encode()
    app = FastAPI(title="vaelab explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = explorer
    _add_error_handlers(app)
    app.add_middleware(Guard, token=token, hosts=hosts)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/points")
    async def get_points() -> Response:
        return Response(points, media_type="application/json")

    @app.post("/api/decode")
    async def decode(request: Request) -> JSONResponse:
        return JSONResponse(decode_answer(explorer, await read_json_object(request)))

    @app.post("/api/interpolate")
    async def interpolate(request: Request) -> JSONResponse:
        return JSONResponse(interpolate_answer(explorer, await read_json_object(request)))

    @app.post("/api/sample")
    async def sample(request: Request) -> JSONResponse:
        return JSONResponse(sample_answer(explorer, await read_json_object(request)))

    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc}"}, status_code=400)

    async def refused(_request: Request, exc: Exception) -> JSONResponse:
        # a request the library refuses (images beyond the free memory): the client's to change
        return JSONResponse({"error": str(exc)}, status_code=400)

    app.add_exception_handler(VaelabError, refused)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


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


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | Path | None = None,
    threads: int = 1,
    announce: Callable[[str], None] = print,
    token: str | None = None,
    data: DataConfig | None = None,
) -> None:
    """Serve the explorer for `run_dir` until interrupted; `announce` gets its URL.

    The test set is the one `data` names, else Fashion-MNIST from `data_dir`, else the run's own.

    With a `token`, or on a host that is not loopback (which then gets a random one), every /api
    request must carry it; the announced URL holds it, and the page sends it on.
    """
    import uvicorn  # only the server needs it; the app and its tests do not

    if token is not None:
        check_token(token)
    elif not is_loopback(host):
        token = secrets.token_urlsafe(24)
    torch.set_num_threads(threads)
    with listening_socket(host, port) as sock:  # first, so a bad host or port fails at once
        bound, actual_port = sock.getsockname()[:2]
        hosts = HostCheck(host, actual_port, bound)
        app = create_app(run_dir, data_dir=data_dir, data=data, token=token, hosts=hosts)
        budget, backlog = connection_budget()
        url = server_url(sock) + ("" if token is None else f"?token={quote(token, safe='')}")
        announce(f"latent explorer for {Path(run_dir)}: {url}  (Ctrl+C to stop)")
        if not is_loopback(host):
            announce(
                f"note: {host} is not a loopback address; anyone who can reach it and has the "
                "token in that URL can use it"
            )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            http=guarded_protocol(budget, HEADER_TIMEOUT_S),
            # uvicorn answers 503 once its connections or requests in flight reach this; the
            # protocol keeps connections at `budget` by closing the longest-idle one, so this
            # is the backstop, not the everyday bound.
            limit_concurrency=budget + 1,
            timeout_keep_alive=KEEP_ALIVE_S,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            backlog=backlog,
        )
        with rate_limited_logs():
            uvicorn.Server(config).run(sockets=[sock])
