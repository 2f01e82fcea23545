"""Latency and load benchmark of the latent explorer (`vaelab serve`).

Starts `vaelab serve RUN --port 0` in its own process, then
1. one client decodes one point at a time (the page's live decode) and reports p50/p95/p99, once
   through httpx (an ordinary client; the target is judged on it) and once through a bare socket;
2. CLIENTS clients decode one point each, back to back, for SECONDS seconds, and report the
   latency percentiles, the throughput and every error (a client that got no answer is one).
Exits 1 when a request failed or the one-client p95 is 20 ms or more.

    python benchmarks/bench_serve.py [RUN] [--clients 50] [--seconds 30]

Without RUN it serves a model of the tutorial's shape (784-400-200-100-20-2, seeded, untrained)
on the Fashion-MNIST test set: the decode cost depends on the model's shape, not its training.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from vaelab import rundir
from vaelab.config import RunConfig
from vaelab.explorer.core import png_data_url
from vaelab.latent import decode
from vaelab.models import VAE
from vaelab.viz.images import to_uint8

TARGET_P95_MS = 20.0


def tutorial_shaped_run(directory: Path) -> Path:
    run_dir = rundir.prepare_run_dir(directory / "tutorial-shape")
    torch.manual_seed(0)
    config = RunConfig()
    rundir.save_config(run_dir, config, {"note": "untrained, for bench_serve.py"})
    rundir.save_weights(run_dir, VAE(config.model))
    return run_dir


def in_process(run_dir: Path, requests: int) -> list[float]:
    """Seconds to decode one point and encode its PNG, without HTTP, on one torch thread."""
    torch.set_num_threads(1)
    model = rundir.load_model(run_dir)
    side = math.isqrt(model.config.input_dim)
    rng = np.random.default_rng(0)
    latencies = []
    for _ in range(requests):
        z = rng.standard_normal((1, model.config.latent_dim)).astype(np.float32)
        started = time.perf_counter()
        png_data_url(to_uint8(decode(model, z).numpy()).reshape(side, side))
        latencies.append(time.perf_counter() - started)
    return latencies


def start_server(run_dir: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "vaelab", "serve", str(run_dir), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline() if server.stdout else ""
    match = re.search(r"http://\S+/", line)
    if not match:
        server.kill()
        sys.exit(f"bench_serve: the server did not print its URL (got {line!r})")
    return server, match.group(0)


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms, max {ms.max():.2f} ms"


def one_client(url: str, requests: int, latent_dim: int) -> list[float]:
    rng = np.random.default_rng(0)
    latencies = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for index in range(requests + 50):
            body = {"z": [rng.standard_normal(latent_dim).tolist()]}
            started = time.perf_counter()
            answer = http.post("/api/decode", json=body)
            elapsed = time.perf_counter() - started
            answer.raise_for_status()
            if index >= 50:  # the first 50 warm up the connection and the allocator
                latencies.append(elapsed)
    return latencies


async def post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    path: str,
    body: bytes,
    host: str,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection; the server always sends Content-Length.

    `host` is the Host header, the server's host:port: it answers no other (421)."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def many_clients(
    url: str, clients: int, seconds: float, latent_dim: int
) -> tuple[list[float], list[str]]:
    """`clients` connections decoding one point each, back to back, for `seconds`.

    A client that never got a good answer counts as an error. A bare asyncio client: on two
    cores httpx's async client tops out near 60 requests/s and would measure itself, not the
    server.
    """
    host, port = re.match(r"http://\[?([^\]/]+?)\]?:(\d+)/", url).groups()
    netloc = url.split("/")[2]
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        reader, writer = await asyncio.open_connection(host, int(port))
        answered = 0
        while time.perf_counter() < stop:
            body = json.dumps({"z": [rng.standard_normal(latent_dim).tolist()]}).encode()
            started = time.perf_counter()
            try:
                status, answer = await post(reader, writer, "/api/decode", body, netloc)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
                continue
            if status != 200 or not answer.startswith(b'{"images":["data:image/png;base64,'):
                errors.append(f"HTTP {status}: {answer[:80]!r}")
                continue
            latencies.append(time.perf_counter() - started)
            answered += 1
        writer.close()
        if not answered:
            errors.append(f"client {seed} got no answer in {seconds:g} s")

    await asyncio.gather(*(client(seed) for seed in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="a run directory to serve")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--single", type=int, default=1000, help="one-client requests")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run or tutorial_shaped_run(Path(scratch))
        latent_dim = rundir.load_config(run_dir).model.latent_dim
        server, url = start_server(run_dir)
        try:
            print(f"serving {run_dir} at {url}")
            compute = in_process(run_dir, args.single)
            print(f"in process, no HTTP: decode + PNG of one point: {percentiles(compute)}")
            single = one_client(url, args.single, latent_dim)
            print(f"1 client (httpx), {len(single)} one-point decodes: {percentiles(single)}")
            bare, bare_errors = asyncio.run(many_clients(url, 1, 3.0, latent_dim))
            print(f"1 client (bare socket), {len(bare)} one-point decodes: {percentiles(bare)}")
            started = time.perf_counter()
            loaded, errors = asyncio.run(many_clients(url, args.clients, args.seconds, latent_dim))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(
        f"{args.clients} clients for {elapsed:.1f} s: {len(loaded)} decodes "
        f"({len(loaded) / elapsed:.0f}/s), {percentiles(loaded)}; errors: {len(errors)}"
    )
    errors += bare_errors
    for error in sorted(set(errors))[:10]:
        print(f"  error: {error}")
    p95 = float(np.percentile(single, 95)) * 1000
    verdict = "met" if p95 < TARGET_P95_MS else "MISSED"
    print(f"target: one-point decode p95 < {TARGET_P95_MS:g} ms: {verdict} ({p95:.2f} ms)")
    if errors or p95 >= TARGET_P95_MS:
        sys.exit(1)


if __name__ == "__main__":
    main()
