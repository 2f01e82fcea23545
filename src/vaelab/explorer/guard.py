"""Who may ask the explorer, and for how long: `Guard` refuses a foreign Host header (DNS
rebinding), a cross-origin POST and, when a token is set, an /api request without it, and bounds
the time a request's body may take; the connection protocol from `guarded_protocol` bounds the
connections held and the time a request's headers may take; `OncePerWindow` keeps any one kind
of problem to one log line a minute (docs/explorer.md, "Security").
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

from vaelab._extras import require_extra

require_extra("serve", "fastapi", "uvicorn", "PIL")

from fastapi.responses import JSONResponse

from vaelab.errors import VaelabError
from vaelab.explorer.requests import ApiError

# What one client may hold of the server (see `serve` and `guarded_protocol`).
MAX_CONNECTIONS = 100  # open connections; past it the longest-idle one is closed


HEADER_TIMEOUT_S = 5.0  # from connecting (or the last answer) to a request's complete headers


BODY_TIMEOUT_S = 10.0  # from the headers to the end of the body


KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this


MAX_HEADER_BYTES = 16 * 1024  # a request line and headers longer than this get a 400


LOG_WINDOW_S = 60.0  # one log line per kind of problem per window


log = logging.getLogger("vaelab.explorer")


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


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
