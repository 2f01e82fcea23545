"""The latent-space explorer's web app: decodes points of a run's latent space live.

`create_app(run_dir)` builds the FastAPI app (the page under `/`, its assets under `/static`, the
JSON API under `/api`); `serve(run_dir, host, port)` runs it on uvicorn. Every model call happens on
the event loop: one decode is far cheaper than a thread hand-off, and it keeps the model
single-threaded without a lock.

The server defends itself (docs/explorer.md, "Security"): `Guard` refuses a foreign Host header
(DNS rebinding), a cross-origin POST and, when a token is set, an /api request without it, and
bounds the time a request's body may take; the connection protocol from `guarded_protocol` bounds
the connections held and the time a request's headers may take; `OncePerWindow` keeps any one
kind of problem to one log line a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
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
from starlette.requests import ClientDisconnect

from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.explorer.core import Explorer, load_explorer, png_data_url

STATIC_DIR = Path(__file__).parent / "static"
MAX_VECTORS = 256  # latent vectors (or images) per request
MAX_BODY_BYTES = 1 << 20
MAX_ABS_LATENT = 1000.0  # far outside any posterior; beyond it float32 layers can overflow

# What one client may hold of the server (see `serve` and `guarded_protocol`).
MAX_CONNECTIONS = 100  # open connections; past it the longest-idle one is closed
HEADER_TIMEOUT_S = 5.0  # from connecting (or the last answer) to a request's complete headers
BODY_TIMEOUT_S = 10.0  # from the headers to the end of the body
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this
MAX_HEADER_BYTES = 16 * 1024  # a request line and headers longer than this get a 400
LOG_WINDOW_S = 60.0  # one log line per kind of problem per window

log = logging.getLogger("vaelab.explorer")


class ApiError(Exception):
    """A request the API refuses: answered as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


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
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body is over the limit of {limit} bytes")
    except ClientDisconnect:  # the client left mid-body: one log line, and a 400 nobody reads
        expected = f"its Content-Length of {declared}" if declared else "its end"
        log.warning(
            "a client disconnected %d bytes into a request body, before %s", len(body), expected
        )
        raise ApiError(
            400, f"request body ended after {len(body)} bytes, before {expected}"
        ) from None
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
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    *,
    token: str | None = None,
    hosts: HostCheck | None = None,
) -> FastAPI:
    """The explorer app for one run; loads the model and encodes the test set once, here.

    With `token`, every /api request must carry it (`Authorization: Bearer TOKEN`); with `hosts`,
    a request whose Host header it does not accept is refused (`serve` passes both).
    """
    explorer = load_explorer(run_dir, data_dir=data_dir, dataset=dataset)
    points = json.dumps(points_payload(explorer), separators=(",", ":")).encode()
    dim = explorer.latent_dim
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
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc}"}, status_code=400)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


# ---------------------------------------------------------------- who may ask, and for how long

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class HostCheck:
    """Which Host headers a server bound to `host` (as given) on `port` accepts.

    A DNS-rebinding page reaches the server under the attacker's own name, so the check is on
    the name: the one the server was started on, the address it is bound to, and on loopback
    `localhost`, `127.0.0.1` and `[::1]`. Bound to every interface (0.0.0.0, ::) any IP address
    is accepted too (an address cannot be rebound), and this machine's host name. The port must
    be the server's; a Host without one means port 80.
    """

    def __init__(self, host: str, port: int, bound: str | None = None) -> None:
        self.port = port
        names = {_host_name(host)}
        if bound is not None:
            names.add(_host_name(bound))
        self.any_address = _host_name(host) in WILDCARDS
        if self.any_address:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        if self.any_address or any(is_loopback(name) for name in names):
            names |= LOOPBACK_NAMES
        self.names = frozenset(names - WILDCARDS)

    def accepts(self, header: str) -> bool:
        """Whether a request with this Host header is for this server."""
        match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?", header.strip())
        if match is None:
            return False
        name, port = _host_name(match.group(1)), int(match.group(2) or 80)
        if port != self.port:
            return False
        return name in self.names or (self.any_address and _is_address(name))


def _host_name(name: str) -> str:
    return name.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_token(token: str) -> str:
    """`token` if it can travel in a URL and a header: 1-256 visible ASCII characters."""
    if not re.fullmatch(r"[\x21-\x7e]{1,256}", token):
        raise VaelabError(
            "token must be 1 to 256 visible ASCII characters (no spaces)", parameters=("token",)
        )
    return token


class Guard:
    """ASGI middleware: refuses what is not for this server before the app sees it.

    - a Host header `hosts` does not accept: 421 (DNS rebinding);
    - a POST (any method but GET, HEAD, OPTIONS) whose Origin is not this server's: 403;
    - with a token, an /api request without `Authorization: Bearer TOKEN`: 401;
    - a request body that takes over BODY_TIMEOUT_S from the headers to its end: 400 and the
      connection closed (each read is bounded with asyncio.wait_for on the deadline).
    The page and /static are served without the token: they hold nothing of the run.
    """

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str | None = None,
        hosts: HostCheck | None = None, body_timeout: float = BODY_TIMEOUT_S,
    ) -> None:  # fmt: skip
        self.app = app
        self.token = None if token is None else check_token(token)
        self.hosts = hosts
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, message, extra = refusal
            response = JSONResponse({"error": message}, status_code=status, headers=extra)
            await response(scope, receive, send)
            return
        await self.app(scope, self.timed(receive, headers.get("content-length")), send)

    def refusal(
        self, scope: Scope, headers: dict[str, str]
    ) -> tuple[int, str, dict[str, str] | None] | None:
        """(status, message, headers) of the answer refusing this request, or None."""
        host = headers.get("host", "")
        if self.hosts is not None and not self.hosts.accepts(host):
            shown = json.dumps(host[:100])
            return 421, f"this server does not answer for Host {shown}", None
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            own = f"{scope.get('scheme', 'http')}://{host}".lower()
            if origin.lower() != own:
                shown = json.dumps(origin[:100])
                return 403, f"cross-origin requests are refused (Origin {shown})", None
        path: str = scope["path"]
        if self.token is not None and (path == "/api" or path.startswith("/api/")):
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                message = "this server needs its token: send Authorization: Bearer TOKEN"
                return 401, message, {"WWW-Authenticate": "Bearer"}
        return None

    def timed(self, receive: Receive, declared: str | None) -> Receive:
        """`receive`, refusing with ApiError(400) a body that outlasts the body deadline.

        Once the body is complete, `receive` only waits for the client to leave (as starlette
        does while it sends a file), which may take as long as it takes: no deadline then.
        """
        deadline = time.monotonic() + self.body_timeout
        got = 0
        complete = False

        async def timed_receive() -> MutableMapping[str, Any]:
            nonlocal got, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            except asyncio.TimeoutError:
                expected = f" of its Content-Length of {declared}" if declared else ""
                log.warning("a request body stalled for %gs; refused", self.body_timeout)
                raise ApiError(
                    400,
                    f"request body incomplete after {self.body_timeout:g} s "
                    f"({got} bytes{expected})",
                    headers={"Connection": "close"},
                ) from None
            got += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed_receive


class OncePerWindow(logging.Filter):
    """Lets one record per kind of problem through per `window` seconds, as one line.

    A kind is the logger and the message's first line with its numbers blanked (so the same
    accept error on other sockets counts once); a traceback is cut to its last line, where it
    was raised; the next line of a kind says how many were held back since the last.
    """

    def __init__(self, window: float = LOG_WINDOW_S) -> None:
        super().__init__()
        self.window = window
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else ""
        kind = record.name + ":" + re.sub(r"0x[0-9a-f]+|\d+", "#", first)
        now = time.monotonic()
        if now - self.last.get(kind, -self.window) < self.window:
            self.held[kind] = self.held.get(kind, 0) + 1
            return False
        self.last[kind] = now
        line = first
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            where = traceback.extract_tb(exc.__traceback__)[-1:]
            at = f" at {Path(where[0].filename).name}:{where[0].lineno}" if where else ""
            line += f" ({type(exc).__name__}: {str(exc)[:200]}{at})"
        held = self.held.pop(kind, 0)
        if held:
            line += f" [{held} more like this in the last {self.window:g} s]"
        record.msg, record.args = line, None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


RATE_LIMITED_LOGGERS = ("uvicorn.error", "uvicorn.access", "asyncio", log.name)


def guarded_protocol(
    max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT_S
) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a bound on the connections held and on header time.

    uvicorn (0.54 when written; h11 is the protocol here, httptools or not) has no header
    timeout: its keep-alive timer runs only after an answer, so a connection that never sends a
    full request is held for ever, and enough of them use up the descriptors (then asyncio's
    accept fails and logs in a loop, ~19,000 tracebacks a second at 300 idle connections). This
    subclass starts a timer whenever a connection waits for a request (on connecting and after
    each answer) and closes the connection if the headers are not complete by then; and when a
    new connection makes more than `max_connections`, it closes the one that has waited longest
    (or, with none waiting, the new one). Only uvicorn's documented `http=` protocol-class hook
    and the H11Protocol attributes `cycle`, `transport`, `connections`, `loop` are used.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        waiting_since: float | None = None
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.await_request()
            if len(self.connections) > max_connections:
                waiting = [
                    other for other in self.connections
                    if isinstance(other, GuardedH11Protocol) and other is not self
                    and other.waiting_since is not None
                ]  # fmt: skip
                oldest = min(waiting, key=lambda other: other.waiting_since or 0.0, default=self)
                oldest.transport.close()  # its socket closes on the next turn of the loop,
                self.connections.discard(oldest)  # but it counts no more for limit_concurrency

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.await_request()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_timer()
            super().connection_lost(exc)

        def await_request(self) -> None:
            """Time the wait for a request's headers while there is no request in progress."""
            waiting = self.cycle is None or self.cycle.response_complete
            if not waiting or self.transport.is_closing():
                self.stop_timer()
            elif self.header_timer is None:
                self.waiting_since = time.monotonic()
                self.header_timer = self.loop.call_later(header_timeout, self.drop)

        def stop_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
            self.header_timer = self.waiting_since = None

        def drop(self) -> None:
            self.header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def connection_budget(wanted: int = MAX_CONNECTIONS) -> tuple[int, int]:
    """How many connections to hold (at most `wanted`) and the listen backlog, so that both fit
    in the descriptor limit (RLIMIT_NOFILE) beside the descriptors in use and a reserve of 48.

    asyncio accepts up to `backlog` connections per wake-up, and it takes a few more turns of
    the loop before the protocol sees one (and may close it to keep to the budget) and before a
    closed one frees its descriptor; so room is kept for the connections held plus five
    backlogs, and the backlog is small (at most 128) when the limit is.
    """
    try:
        import resource  # POSIX only
    except ImportError:
        return wanted, 128
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    if soft == resource.RLIM_INFINITY:
        return wanted, 128
    free = soft - in_use - 48
    connections = max(4, min(wanted, free // 3))
    return connections, max(4, min(128, (free - connections) // 5))


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
    token: str | None = None,
) -> None:
    """Serve the explorer for `run_dir` until interrupted; `announce` gets its URL.

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
        app = create_app(run_dir, data_dir=data_dir, token=token, hosts=hosts)
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


@contextlib.contextmanager
def rate_limited_logs(window: float = LOG_WINDOW_S) -> Iterator[OncePerWindow]:
    """One line per kind of problem per `window` from uvicorn's, asyncio's and our loggers."""
    once = OncePerWindow(window)
    loggers = [logging.getLogger(name) for name in RATE_LIMITED_LOGGERS]
    for logger in loggers:
        logger.addFilter(once)
    try:
        yield once
    finally:
        for logger in loggers:
            logger.removeFilter(once)
