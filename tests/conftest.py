"""Shared fixtures: tiny synthetic data for unit tests, the real Fashion-MNIST where it matters."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from tests.helpers import make_tiny_dataset
from vaelab.cli import main
from vaelab.data import SYSTEM_DATA_DIR, Dataset, find_idx_file, load_fashion_mnist


@pytest.fixture(autouse=True, scope="session")
def prepared_sources_in_a_session_folder(tmp_path_factory):
    """Sources prepared by the tests (and by the vaelab processes they start) go to a folder of
    this session, not to the user's cache."""
    if "VAELAB_CACHE" not in os.environ:
        os.environ["VAELAB_CACHE"] = str(tmp_path_factory.mktemp("prepared"))
    yield


@contextlib.contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """Tiny models train fastest on one thread: no time lost to thread hand-offs on a busy CPU."""
    with torch_threads(1):
        yield


@pytest.fixture
def two_torch_threads():
    """Two intra-op threads, for what must hold on every thread of torch's pool."""
    with torch_threads(2):
        yield


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_tiny_dataset()


@pytest.fixture(scope="session")
def fashion_mnist() -> Dataset:
    """The real dataset from the Debian package; required (not skipped) when `make test` runs."""
    present = all(
        find_idx_file(SYSTEM_DATA_DIR, stem) is not None
        for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    )
    if not present:
        if os.environ.get("VAELAB_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"Fashion-MNIST is not installed in {SYSTEM_DATA_DIR}")
        pytest.skip(
            f"Fashion-MNIST is not installed in {SYSTEM_DATA_DIR} "
            "(apt-get install dataset-fashion-mnist)"
        )
    return load_fashion_mnist(SYSTEM_DATA_DIR)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_browser():
    """Headless Debian Chromium driven by Playwright; skipped, with the reason, when absent."""
    if not CHROMIUM.exists():
        if os.environ.get("VAELAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"browser test needs {CHROMIUM} (apt-get install chromium); not installed here")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


class CliResult(NamedTuple):
    """What a command printed and its exit status."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys) -> Callable[..., CliResult]:
    """Run `vaelab ARGS...` in this process: cli("train", "--epochs", 1) -> CliResult."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()  # what came before belongs to someone else
        threads = torch.get_num_threads()  # `vaelab serve` sets its own for the process
        try:
            main([str(arg) for arg in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            torch.set_num_threads(threads)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server on loopback serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
