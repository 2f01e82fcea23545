"""The explorer API's requests: bodies read with a bound, every field checked, one line
for each refusal (`ApiError`, answered as `{"error": message}` with its status)."""

from __future__ import annotations

import json
import logging
from typing import Any

from vaelab._extras import require_extra

require_extra("serve", "fastapi", "uvicorn", "PIL")

import numpy as np
from fastapi import Request
from starlette.requests import ClientDisconnect

MAX_VECTORS = 256  # latent vectors (or images) per request


MAX_BODY_BYTES = 1 << 20


MAX_ABS_LATENT = 1000.0  # far outside any posterior; beyond it float32 layers can overflow


log = logging.getLogger("vaelab.explorer")


class ApiError(Exception):
    """A request the API refuses: answered as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


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
