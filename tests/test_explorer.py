"""The latent explorer: its API (validation included), its server, its page in a real browser."""

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import resource
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import start_vaelab, synthetic_images, write_csv
from vaelab import decode, encode, rundir
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.explorer.app import STATIC_DIR, create_app, listening_socket, server_url
from vaelab.explorer.guard import (
    Guard,
    HostCheck,
    OncePerWindow,
    check_token,
    connection_budget,
    guarded_protocol,
    is_loopback,
)
from vaelab.explorer.requests import MAX_BODY_BYTES, MAX_VECTORS
from vaelab.training import train
from vaelab.viz.images import png_bytes


def train_run(root: Path, latent_dim: int, conditional: bool = False) -> Path:
    """A run on 4x4 two-class CSV data, trained enough that its latents separate the classes."""
    train_x, train_y = synthetic_images(256, seed=1)
    test_x, test_y = synthetic_images(64, seed=2)
    data = DataConfig(
        train_csv=str(write_csv(root / "train.csv", train_x.reshape(256, -1), train_y)),
        test_csv=str(write_csv(root / "test.csv", test_x.reshape(64, -1), test_y)),
    )
    config = RunConfig(
        model=ModelConfig(hidden=(32, 16), latent_dim=latent_dim, conditional=conditional),
        data=data,
        train=TrainConfig(epochs=30, batch_size=32, lr=1e-2, device="cpu"),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread
    try:
        train(config, run_dir=root / "run", log=None)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("run2d"), latent_dim=2)


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("run3d"), latent_dim=3)


@pytest.fixture(scope="module")
def client(run_2d) -> TestClient:
    return TestClient(create_app(run_2d))


@pytest.fixture(scope="module")
def client_3d(run_3d) -> TestClient:
    return TestClient(create_app(run_3d))


def run_test_images(run_dir: Path) -> torch.Tensor:
    return load_dataset(rundir.load_config(run_dir).data).test_images


def png_pixels(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))))


def expected_pixels(run_dir: Path, z: list[list[float]]) -> np.ndarray:
    images = decode(rundir.load_model(run_dir), torch.tensor(z))
    return images.mul(255).round().to(torch.uint8).reshape(len(z), 4, 4).numpy()


class TestPoints:
    def test_scatter_is_the_test_sets_latent_means(self, client, run_2d):
        points = client.get("/api/points").json()
        means = encode(rundir.load_model(run_2d), run_test_images(run_2d)).numpy()
        assert points["latent_dim"] == 2 and points["image_shape"] == [4, 4]
        assert len(points["x"]) == len(points["y"]) == len(points["labels"]) == 64
        assert np.allclose(points["x"], means[:, 0], atol=1e-4)
        assert np.allclose(points["y"], means[:, 1], atol=1e-4)
        dataset_labels = load_dataset(rundir.load_config(run_2d).data).test_labels
        assert points["labels"] == dataset_labels.tolist()
        assert points["view"] == {
            "kind": "latent",
            "mean": [0.0, 0.0],
            "components": [[1.0, 0.0], [0.0, 1.0]],
            "explained_variance": None,
        }
        assert points["limits"]["max_vectors"] == MAX_VECTORS

    def test_classes_separate_in_the_trained_run(self, client):
        points = client.get("/api/points").json()
        x, labels = np.array(points["x"]), np.array(points["labels"])
        assert abs(x[labels == 0].mean() - x[labels == 1].mean()) > 0.5

    def test_more_than_two_dimensions_use_pca(self, client_3d, run_3d):
        points = client_3d.get("/api/points").json()
        view = points["view"]
        components = np.array(view["components"])
        assert view["kind"] == "pca" and components.shape == (2, 3)
        assert np.allclose(components @ components.T, np.eye(2), atol=1e-4)
        assert view["explained_variance"][0] >= view["explained_variance"][1] >= 0
        means = encode(rundir.load_model(run_3d), run_test_images(run_3d)).double().numpy()
        projected = (means - np.array(view["mean"])) @ components.T
        assert np.allclose(points["x"], projected[:, 0], atol=1e-3)
        assert np.allclose(points["y"], projected[:, 1], atol=1e-3)
        assert np.allclose(points["latent_min"], means.min(axis=0), atol=1e-4)
        assert np.allclose(points["latent_max"], means.max(axis=0), atol=1e-4)


class TestDecode:
    def test_png_images_are_the_decoders_output(self, client, run_2d):
        z = [[0.0, 0.0], [-0.8, 0.1], [0.8, -0.1]]
        answer = client.post("/api/decode", json={"z": z})
        assert answer.status_code == 200
        images = np.stack([png_pixels(url) for url in answer.json()["images"]])
        assert np.array_equal(images, expected_pixels(run_2d, z))
        assert not np.array_equal(images[1], images[2])  # the two classes' ends differ

    def test_raw_format_gives_the_same_pixels(self, client, run_2d):
        z = [[0.3, -0.2], [1.5, 2.0]]
        answer = client.post("/api/decode", json={"z": z, "format": "raw"}).json()
        assert answer["shape"] == [2, 4, 4]
        pixels = np.array(answer["pixels"], dtype=np.uint8).reshape(2, 4, 4)
        assert np.array_equal(pixels, expected_pixels(run_2d, z))

    def test_png_encoder_round_trips_through_pillow(self):
        pixels = np.random.default_rng(0).integers(0, 256, size=(3, 5), dtype=np.uint8)
        image = Image.open(io.BytesIO(png_bytes(pixels)))
        assert image.mode == "L" and image.size == (5, 3)
        assert np.array_equal(np.asarray(image), pixels)

    def test_interpolation_runs_from_start_to_end(self, client, run_2d):
        body = {"start": [-1.0, 0.5], "end": [1.0, -0.5], "steps": 5}
        answer = client.post("/api/interpolate", json=body).json()
        z = np.array(answer["z"])
        assert z.shape == (5, 2)
        assert np.allclose(z[0], body["start"]) and np.allclose(z[-1], body["end"])
        assert np.allclose(np.diff(z, axis=0), [0.5, -0.25])
        images = np.stack([png_pixels(url) for url in answer["images"]])
        assert np.array_equal(images, expected_pixels(run_2d, answer["z"]))

    def test_prior_samples_follow_the_seed(self, client):
        first = client.post("/api/sample", json={"count": 4, "seed": 7}).json()
        again = client.post("/api/sample", json={"count": 4, "seed": 7}).json()
        other = client.post("/api/sample", json={"count": 4, "seed": 8}).json()
        assert first == again and first["z"] != other["z"]
        assert np.array(first["z"]).shape == (4, 2) and len(first["images"]) == 4

    def test_three_dimensional_runs_decode_three_numbers(self, client_3d):
        assert client_3d.post("/api/decode", json={"z": [[0.1, 0.2, 0.3]]}).status_code == 200
        assert client_3d.post("/api/decode", json={"z": [[0.1, 0.2]]}).status_code == 400


def chunks(total: int):
    for _ in range(total // 65536 + 1):
        yield b" " * 65536


BAD_REQUESTS = [
    ("/api/decode", '{"z": [[0.0]]}', 400, "has 1 numbers; this run's latent space has 2"),
    ("/api/decode", '{"z": [[0, 1, 2]]}', 400, "has 3 numbers"),
    ("/api/decode", '{"z": [["a", 1]]}', 400, 'z[0][0] is "a", not a number'),
    ("/api/decode", '{"z": [[true, 1]]}', 400, "not a number"),
    ("/api/decode", '{"z": [[null, 1]]}', 400, "not a number"),
    ("/api/decode", '{"z": [[NaN, 1]]}', 400, "NaN is not allowed"),
    ("/api/decode", '{"z": [[Infinity, 1]]}', 400, "Infinity is not allowed"),
    ("/api/decode", '{"z": [[1, -Infinity]]}', 400, "-Infinity is not allowed"),
    ("/api/decode", '{"z": [[1e400, 1]]}', 400, "latent values must lie within"),
    ("/api/decode", '{"z": [[1e6, 1]]}', 400, "latent values must lie within"),
    ("/api/decode", '{"z": [[1' + "0" * 5000 + ", 1]]}", 400, "not valid JSON"),
    ("/api/decode", json.dumps({"z": [[0, 0]] * (MAX_VECTORS + 1)}), 413, "at most 256"),
    ("/api/decode", '{"z": []}', 400, "non-empty list"),
    ("/api/decode", '{"z": [0, 1]}', 400, "z[0] must be a list of 2 numbers"),
    ("/api/decode", "{}", 400, "non-empty list"),
    ("/api/decode", '{"z": [[0, 0]], "format": "jpeg"}', 400, "format must be"),
    ("/api/decode", '{"z": [[0, 0]], "zz": 1}', 400, "unknown field(s) zz"),
    ("/api/decode", "[[0, 0]]", 400, "must be a JSON object"),
    ("/api/decode", "{not json", 400, "not valid JSON"),
    ("/api/decode", b"\xff\xfe{", 400, "not valid JSON"),
    ("/api/decode", "[" * 100_000, 400, "nested too deeply"),
    ("/api/decode", " " * (MAX_BODY_BYTES + 1), 413, "limit"),
    ("/api/decode", chunks(MAX_BODY_BYTES), 413, "over the limit"),
    ("/api/interpolate", '{"start": [0, 0], "end": [1, 1], "steps": 1}', 400, "steps must"),
    ("/api/interpolate", '{"start": [0, 0], "end": [1, 1], "steps": "9"}', 400, "steps must"),
    ("/api/interpolate", '{"start": [0, 0], "end": [1, 1], "steps": 257}', 400, "steps must"),
    ("/api/interpolate", '{"start": [0], "end": [1, 1]}', 400, "start has 1 numbers"),
    ("/api/interpolate", '{"start": [0, 0]}', 400, "end must be a list"),
    ("/api/sample", '{"count": 0}', 400, "count must be an integer from 1 to 256"),
    ("/api/sample", '{"count": 2.5}', 400, "count must be"),
    ("/api/sample", '{"count": 2, "seed": -1}', 400, "seed must be"),
]


class TestValidation:
    @pytest.mark.parametrize("path,body,status,message", BAD_REQUESTS)
    def test_bad_requests_get_a_json_error(self, client, path, body, status, message):
        answer = client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status
        assert message in answer.json()["error"]

    def test_unknown_paths_and_methods_answer_json(self, client):
        assert client.get("/api/nothing").json() == {"error": "Not Found"}
        answer = client.get("/api/decode")
        assert answer.status_code == 405 and answer.json() == {"error": "Method Not Allowed"}

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
    )
    @given(
        path=st.sampled_from(["/api/decode", "/api/interpolate", "/api/sample"]),
        body=st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["z", "start", "end", "steps", "count", "seed", "format", "x"]),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ),
    )
    def test_no_json_body_causes_a_server_error(self, client, path, body):
        answer = client.post(
            path, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        assert answer.status_code in (200, 400, 413)
        assert ("error" in answer.json()) == (answer.status_code != 200)


class TestPage:
    def test_page_and_assets_are_served_without_external_urls(self, client):
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert referenced and all(ref.startswith(("/static/", "data:")) for ref in referenced)
        for ref in referenced:
            if ref.startswith("/static/"):
                assert client.get(ref).status_code == 200
        for asset in STATIC_DIR.iterdir():
            assert not re.search(r"https?://", asset.read_text()), asset.name


class TestLoading:
    def test_missing_run_is_a_user_error(self, tmp_path):
        with pytest.raises(VaelabError, match="run directory not found"):
            create_app(tmp_path / "absent")

    def test_data_of_another_size_is_refused(self, run_2d, tmp_path):
        x, y = synthetic_images(8, side=3)
        write_csv(tmp_path / "a.csv", x.reshape(8, -1), y)
        other = load_dataset(
            DataConfig(train_csv=str(tmp_path / "a.csv"), test_csv=str(tmp_path / "a.csv"))
        )
        with pytest.raises(VaelabError, match="expects 16 values per image"):
            create_app(run_2d, dataset=other)

    def test_port_in_use_is_a_user_error(self):
        with listening_socket("127.0.0.1", 0) as taken:
            port = taken.getsockname()[1]
            with pytest.raises(VaelabError, match=f"cannot listen on 127.0.0.1:{port}"):
                listening_socket("127.0.0.1", port)

    def test_listening_socket_says_tcp_so_asyncio_turns_off_nagle(self):
        with listening_socket("127.0.0.1", 0) as sock:
            assert sock.proto == socket.IPPROTO_TCP

    def test_only_loopback_addresses_count_as_loopback(self):
        assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
        assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


# ---------------------------------------------------------------- over a real socket


@contextmanager
def served(app, **config):
    """Run `app` on uvicorn in a background thread on a free loopback port; yield its URL."""
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield server_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def url_2d(run_2d):
    with served(create_app(run_2d)) as url:
        yield url


@pytest.fixture(scope="module")
def url_3d(run_3d):
    with served(create_app(run_3d)) as url:
        yield url


def test_concurrent_clients_each_get_the_images_of_their_own_points(url_2d, run_2d):
    """Four clients at once over a real socket (the load test is benchmarks/bench_serve.py)."""
    points = {
        client: [[0.2 * client - 0.3, 0.1 * step] for step in range(5)] for client in range(4)
    }
    barrier = threading.Barrier(len(points), timeout=10)

    def decode_one_at_a_time(client: int) -> list[np.ndarray]:
        with httpx.Client(base_url=url_2d, timeout=10) as http:
            barrier.wait()
            answers = [http.post("/api/decode", json={"z": [z]}) for z in points[client]]
        assert [answer.status_code for answer in answers] == [200] * len(answers)
        return [png_pixels(answer.json()["images"][0]) for answer in answers]

    with ThreadPoolExecutor(max_workers=len(points)) as pool:
        images = dict(zip(points, pool.map(decode_one_at_a_time, points)))
    for client, z in points.items():
        assert np.array_equal(np.stack(images[client]), expected_pixels(run_2d, z)), client


@pytest.mark.slow
def test_cli_prints_the_url_and_serves(run_2d):
    process = start_vaelab("serve", run_2d, "--port", 0)
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, f"no URL in the first line {line!r}"
        points = httpx.get(match.group(1) + "api/points", timeout=10)
        assert points.status_code == 200 and points.json()["latent_dim"] == 2
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cli_names_a_missing_run(tmp_path, cli):
    result = cli("serve", tmp_path / "nope")
    assert result.code == 2
    assert result.err.strip() == f"vaelab: error: {tmp_path / 'nope'}: run directory not found"


# ---------------------------------------------------------------- in a real browser


@contextmanager
def page_at(browser, url):
    """A fresh page at `url`, its console errors and uncaught exceptions collected."""
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=10_000)
    try:
        yield page, errors
    finally:
        page.close()


def decoded_after(page, previous: str | None) -> str:
    """The decoded image's source once it differs from `previous` (or within 2 s, as it is)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_function(
            "prev => document.getElementById('decoded').src !== prev", arg=previous, timeout=2000
        )
    return page.eval_on_selector("#decoded", "img => img.src")


@pytest.mark.slow
def test_browser_decodes_under_the_pointer_and_interpolates(chromium_browser, url_2d):
    with page_at(chromium_browser, url_2d) as (page, errors):
        box = page.locator("#scatter").bounding_box()
        assert page.locator("#legend li").count() == 2
        seen = [decoded_after(page, None)]
        for fraction in (0.05, 0.3, 0.5, 0.7, 0.95):
            page.mouse.move(box["x"] + fraction * box["width"], box["y"] + 0.5 * box["height"])
            seen.append(decoded_after(page, seen[-1]))
        assert len(set(seen)) >= 3, "the decoded image did not follow the pointer"
        assert page.eval_on_selector("#decoded", "img => img.naturalWidth") == 4

        page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + 0.5 * box["height"])
        page.mouse.click(box["x"] + 0.9 * box["width"], box["y"] + 0.5 * box["height"])
        page.wait_for_function(
            "document.querySelectorAll('#interpolation img').length === 10", timeout=5000
        )
        strip = page.locator("#interpolation img")
        page.wait_for_function(
            "[...document.querySelectorAll('#interpolation img')].every(i => i.naturalWidth > 0)"
        )
        sources = [strip.nth(i).get_attribute("src") for i in range(10)]
        assert sources[0] != sources[-1]
        current = page.eval_on_selector("#decoded", "img => img.src")
        assert current == sources[-1]  # the decoder shows B, where the pointer was clicked
        strip.nth(0).click()  # a strip image moves the decoder's z to its own
        assert decoded_after(page, current) == sources[0]

        page.click("#sample")
        page.wait_for_function("document.querySelectorAll('#samples img').length === 10")
        assert page.locator("#status").inner_text() == ""
        assert errors == []


@pytest.mark.slow
def test_browser_shows_a_slider_per_dimension_past_two(chromium_browser, url_3d):
    with page_at(chromium_browser, url_3d) as (page, errors):
        assert page.locator("#sliders input[type=range]").count() == 3
        assert page.locator("#x-label").inner_text().startswith("PC 1")
        points = httpx.get(url_3d + "api/points", timeout=10).json()
        spread = np.subtract(points["latent_max"], points["latent_min"])
        page.locator("#sliders input").nth(int(spread.argmax())).focus()
        page.keyboard.press("Home")
        low = decoded_after(page, decoded_after(page, None))
        page.keyboard.press("End")
        high = decoded_after(page, low)
        assert low != high, "moving a slider did not change the decoded image"
        assert errors == []


# ---------------------------------------------------------------- security: who may ask, how long


class TestHostAndOrigin:
    @pytest.fixture(scope="class")
    def guarded(self, run_2d):
        app = create_app(run_2d, hosts=HostCheck("127.0.0.1", 8000, "127.0.0.1"))
        return TestClient(app, base_url="http://127.0.0.1:8000")

    @pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"])
    def test_loopback_names_with_the_port_are_answered(self, guarded, host):
        assert guarded.get("/api/points", headers={"host": host}).status_code == 200

    @pytest.mark.parametrize(
        "host", ["evil.example:8000", "127.0.0.1:8001", "localhost", "127.0.0.1.evil:8000", ""]
    )
    def test_other_hosts_are_refused_in_json(self, guarded, host):
        for path in ("/api/points", "/", "/static/explorer.js"):
            answer = guarded.get(path, headers={"host": host})
            assert answer.status_code == 421, (path, host)
            assert "does not answer for Host" in answer.json()["error"]

    def test_cross_origin_posts_are_refused(self, guarded):
        body = {"z": [[0.0, 0.0]]}
        foreign = guarded.post("/api/decode", json=body, headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
        assert guarded.post("/api/decode", json=body, headers={"origin": "null"}).status_code == 403
        own = guarded.post("/api/decode", json=body, headers={"origin": "http://127.0.0.1:8000"})
        assert own.status_code == 200
        assert guarded.post("/api/decode", json=body).status_code == 200  # no Origin: not a page

    def test_bound_to_every_interface_any_address_is_a_host_but_no_other_name(self):
        check = HostCheck("0.0.0.0", 8000, "0.0.0.0")
        assert check.accepts("192.168.1.7:8000") and check.accepts("[fe80::1]:8000")
        assert check.accepts("localhost:8000") and check.accepts(f"{socket.gethostname()}:8000")
        assert not check.accepts("rebound.evil.example:8000")
        assert not check.accepts("192.168.1.7:8001")

    def test_a_named_host_accepts_its_name_and_address(self):
        check = HostCheck("box.lan", 80, "10.0.0.5")
        assert check.accepts("box.lan") and check.accepts("BOX.LAN.:80")
        assert check.accepts("10.0.0.5") and not check.accepts("localhost")


class TestToken:
    @pytest.fixture(scope="class")
    def locked(self, run_2d):
        return TestClient(create_app(run_2d, token="s3cret-token"))

    def test_api_needs_the_token(self, locked):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
            answer = locked.get("/api/points", headers=headers)
            assert answer.status_code == 401
            assert answer.text.count("\n") == 0 and "token" in answer.json()["error"]
            assert answer.headers["www-authenticate"] == "Bearer"
        answer = locked.post("/api/decode", json={"z": [[0, 0]]})
        assert answer.status_code == 401

    def test_the_token_opens_the_api(self, locked):
        headers = {"authorization": "Bearer s3cret-token"}
        assert locked.get("/api/points", headers=headers).status_code == 200
        answer = locked.post("/api/decode", json={"z": [[0, 0]]}, headers=headers)
        assert answer.status_code == 200 and len(answer.json()["images"]) == 1

    def test_page_and_assets_need_no_token(self, locked):
        assert locked.get("/").status_code == 200
        assert locked.get("/static/explorer.js").status_code == 200

    def test_page_sends_the_token_of_its_url(self):
        script = (STATIC_DIR / "explorer.js").read_text()
        assert 'get("token")' in script and "Authorization: `Bearer ${TOKEN}`" in script

    @pytest.mark.parametrize("token", ["", "has space", "tab\there", "é"])
    def test_tokens_that_cannot_travel_are_refused(self, token):
        with pytest.raises(VaelabError, match="token must be"):
            check_token(token)

    def test_cli_names_the_flag_of_a_bad_token(self, cli, run_2d):
        result = cli("serve", run_2d, "--token", "two words")
        assert result.code == 2 and "--token must be 1 to 256 visible" in result.err


def test_a_stalled_body_gets_a_400_and_a_closed_connection(client):
    """Guard bounds the whole body read; here 0.2 s against a client that never sends it."""
    guard = Guard(client.app, body_timeout=0.2)
    sent: list[dict] = []

    async def stalled_receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/api/decode", "raw_path": b"/api/decode",
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"100")],
    }  # fmt: skip
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:  # a loop of its own: Playwright may run one here
        pool.submit(asyncio.run, asyncio.wait_for(guard(scope, stalled_receive, send), 5)).result()
    assert time.monotonic() - started < 2
    assert sent[0]["status"] == 400 and (b"connection", b"close") in sent[0]["headers"]
    body = json.loads(sent[1]["body"])
    assert "incomplete after 0.2 s (0 bytes of its Content-Length of 100)" in body["error"]


class TestLogs:
    def test_one_line_per_kind_per_window_and_no_traceback(self):
        stream = io.StringIO()
        logger = logging.getLogger("vaelab.test_once")
        handler = logging.StreamHandler(stream)
        once = OncePerWindow(window=0.3)
        logger.addHandler(handler)
        logger.addFilter(once)
        logger.propagate = False
        try:
            for fd in range(200):
                try:
                    raise OSError(24, "Too many open files")
                except OSError:
                    logger.exception("socket.accept() out of system resource\nsocket: fd=%d", fd)
                logger.warning("Invalid HTTP request received.")
            time.sleep(0.35)
            logger.warning("Invalid HTTP request received.")
        finally:
            logger.removeHandler(handler)
            logger.removeFilter(once)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 3, lines
        assert lines[0].startswith("socket.accept() out of system resource (OSError: [Errno 24]")
        assert lines[1] == "Invalid HTTP request received."
        assert lines[2] == "Invalid HTTP request received. [199 more like this in the last 0.3 s]"

    def test_budget_fits_the_descriptor_limit(self):
        connections, backlog = connection_budget()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert 4 <= connections <= 100 and 4 <= backlog <= 128
        if soft != resource.RLIM_INFINITY:
            assert connections + 5 * backlog < soft


def raw_request(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a new connection and read the answer until the server closes or times out."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"connection: close" not in answer.lower():
                    break
        return answer


def open_idle(url: str, count: int) -> list[socket.socket]:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    return [socket.create_connection((host, int(port)), timeout=5) for _ in range(count)]


def crowd_then_ask(url: str, idle_count: int, within_s: float) -> tuple[list, socket.socket]:
    """Open `idle_count` idle connections and one stalled mid-headers, then check that a normal
    request is still answered within `within_s` seconds; the idle and stalled sockets."""
    idle = open_idle(url, idle_count)
    stalled = open_idle(url, 1)[0]
    stalled.sendall(b"GET /api/points HTTP/1.1\r\nHost: 127.")
    started = time.monotonic()
    answer = httpx.get(url + "api/points", timeout=5)
    assert answer.status_code == 200 and time.monotonic() - started < within_s
    return idle, stalled


def test_idle_and_stalled_connections_are_closed_and_others_answered(run_2d):
    """The guarded protocol over a real socket, in a thread: 8 connections at most, headers
    within 1 s; 30 idle connections and one stalled mid-headers do not keep a request out."""
    protocol = guarded_protocol(max_connections=8, header_timeout=1.0)
    with served(create_app(run_2d), http=protocol, limit_concurrency=9) as url:
        idle, stalled = crowd_then_ask(url, idle_count=30, within_s=2)
        stalled.settimeout(5)
        started = time.monotonic()
        assert stalled.recv(100) == b""  # closed, unanswered
        assert time.monotonic() - started < 2
        for sock in idle:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # evicted, or closed once its second was up
            sock.close()
        stalled.close()
        assert httpx.get(url + "api/points", timeout=5).status_code == 200


def start_serve(*args: object, descriptors: int | None = None) -> tuple[subprocess.Popen, str]:
    """`vaelab serve ARGS --port 0`, with its descriptor limit lowered in the child only."""

    def limit() -> None:
        if descriptors is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

    process = start_vaelab("serve", *args, "--port", 0, preexec_fn=limit)
    line = process.stdout.readline()
    match = re.search(r"http://\S+", line)
    if not match:
        process.kill()
        pytest.fail(f"no URL in {line!r}: {process.communicate()[1][-2000:]}")
    return process, match.group(0)


def stop(process: subprocess.Popen) -> str:
    """Stop the server; its stderr."""
    process.terminate()
    try:
        return process.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[1]


@pytest.mark.slow
def test_server_under_a_low_descriptor_limit_survives_idle_and_broken_clients(run_2d):
    process, url = start_serve(run_2d, descriptors=256)
    host_port = url.removeprefix("http://").rstrip("/")
    try:
        idle, stalled = crowd_then_ask(url, idle_count=300, within_s=3)
        short = (
            f"POST /api/decode HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json"
            '\r\nContent-Length: 100\r\n\r\n{"z": '
        ).encode()
        for _ in range(20):  # bodies shorter than their Content-Length, then gone
            with socket.create_connection(stalled.getpeername(), timeout=5) as sock:
                sock.sendall(short)
                time.sleep(0.02)
        waited = raw_request(url, short, timeout=15)  # one that stays: a 400 after 10 s
        assert waited.startswith(b"HTTP/1.1 400") and b"incomplete after 10 s" in waited
        stalled.settimeout(5)
        assert stalled.recv(100) == b""  # its 5 s were up long ago
        assert httpx.get(url + "api/points", timeout=5).status_code == 200
        assert process.poll() is None, "the server died"
        for sock in [*idle, stalled]:
            sock.close()
    finally:
        err = stop(process)
    lines = err.splitlines()
    assert "Traceback" not in err and len(lines) <= 6, err[-3000:]
    assert sum("disconnected" in line for line in lines) == 1, lines


@pytest.mark.slow
def test_every_interface_gets_a_token_in_the_url_and_the_api_needs_it(run_2d):
    process, url = start_serve(run_2d, "--host", "0.0.0.0")
    try:
        match = re.fullmatch(r"http://0\.0\.0\.0:(\d+)/\?token=([\w-]{20,})", url)
        assert match, url
        port, token = match.groups()
        base = f"http://127.0.0.1:{port}/"
        refused = httpx.get(base + "api/points", timeout=5)
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        auth = {"authorization": f"Bearer {token}"}
        assert httpx.get(base + "api/points", headers=auth, timeout=5).status_code == 200
        assert httpx.get(base, timeout=5).status_code == 200  # the page itself
        rebound = httpx.get(
            base + "api/points", headers={**auth, "host": f"rebind.evil.example:{port}"}, timeout=5
        )
        assert rebound.status_code == 421
    finally:
        stop(process)


@pytest.mark.slow
def test_loopback_with_a_token_flag_needs_it(run_2d):
    process, url = start_serve(run_2d, "--token", "my-token")
    try:
        assert url.endswith("/?token=my-token")
        base = url.split("?")[0]
        assert httpx.get(base + "api/points", timeout=5).status_code == 401
        auth = {"authorization": "Bearer my-token"}
        assert httpx.get(base + "api/points", headers=auth, timeout=5).status_code == 200
        foreign = httpx.get(base + "api/points", headers={**auth, "host": "x.example"}, timeout=5)
        assert foreign.status_code == 421
    finally:
        stop(process)


@pytest.mark.slow
def test_browser_sends_the_token_of_the_pages_url(chromium_browser, run_2d):
    app = create_app(run_2d, token="page-token")
    with served(app) as url, page_at(chromium_browser, url + "?token=page-token") as (page, errors):
        assert page.locator("#legend li").count() == 2
        page.click("#sample")
        page.wait_for_function("document.querySelectorAll('#samples img').length === 10")
        assert page.locator("#status").inner_text() == "" and errors == []


# ---------------------------------------------------------------- colour images, no labels

RGB_SHAPE = (3, 8, 6)  # channels, height, width: non-square on purpose


def rgb_dataset(labels: tuple[torch.Tensor, torch.Tensor] | None = None) -> Dataset:
    """3x8x6 RGB images, 64 to train and 32 to test; unlabelled unless `labels` are given."""
    generator = torch.Generator().manual_seed(0)
    train_labels, test_labels = labels or (None, None)
    return Dataset(
        torch.rand(64, *RGB_SHAPE, generator=generator), train_labels,
        torch.rand(32, *RGB_SHAPE, generator=generator), test_labels,
        RGB_SHAPE[1:], (), "synthetic-rgb", channels=3, format="arrays",
    )  # fmt: skip


def train_rgb_run(root: Path, dataset: Dataset) -> Path:
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1, batch_size=32, device="cpu")
    )
    train(config, dataset, run_dir=root / "run", log=None)
    return root / "run"


@pytest.fixture(scope="module")
def rgb_app(tmp_path_factory):
    """The explorer of an unlabelled RGB run: (run directory, dataset, app)."""
    dataset = rgb_dataset()
    run_dir = train_rgb_run(tmp_path_factory.mktemp("rgb"), dataset)
    return run_dir, dataset, create_app(run_dir, dataset=dataset)


@pytest.fixture(scope="module")
def many_classes_app(tmp_path_factory):
    """The explorer of an RGB run with 30 classes, none of them named."""
    dataset = rgb_dataset((torch.arange(64) % 30, torch.arange(32) % 30))
    return create_app(train_rgb_run(tmp_path_factory.mktemp("many"), dataset), dataset=dataset)


def expected_rgb(run_dir: Path, z: list[list[float]]) -> np.ndarray:
    """The decoder's images for z as H x W x 3 uint8, as the page gets them."""
    images = decode(rundir.load_model(run_dir), torch.tensor(z)).mul(255).round().to(torch.uint8)
    return images.reshape(len(z), *RGB_SHAPE).permute(0, 2, 3, 1).numpy()


class TestColourAndUnlabelled:
    def test_points_say_channels_size_and_no_labels(self, rgb_app):
        _, _, app = rgb_app
        points = TestClient(app).get("/api/points").json()
        assert points["image_shape"] == [8, 6] and points["channels"] == 3
        assert points["labelled"] is False and points["labels"] is None
        assert points["class_names"] == [] and len(points["x"]) == 32

    def test_decoded_pngs_are_rgb_of_the_runs_height_and_width(self, rgb_app):
        run_dir, _, app = rgb_app
        z = [[0.0, 0.0], [1.0, -1.0]]
        answer = TestClient(app).post("/api/decode", json={"z": z}).json()
        for url, expected in zip(answer["images"], expected_rgb(run_dir, z)):
            image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert image.mode == "RGB" and image.size == (6, 8)
            assert np.array_equal(np.asarray(image), expected)

    def test_raw_rgb_pixels_are_height_width_channel_rows(self, rgb_app):
        run_dir, _, app = rgb_app
        z = [[0.5, 0.5]]
        answer = TestClient(app).post("/api/decode", json={"z": z, "format": "raw"}).json()
        assert answer["shape"] == [1, 8, 6, 3] and len(answer["pixels"][0]) == 8 * 6 * 3
        pixels = np.array(answer["pixels"], dtype=np.uint8).reshape(1, 8, 6, 3)
        assert np.array_equal(pixels, expected_rgb(run_dir, z))

    def test_samples_and_interpolations_are_rgb_too(self, rgb_app):
        _, _, app = rgb_app
        client = TestClient(app)
        sampled = client.post("/api/sample", json={"count": 3, "seed": 1}).json()
        body = {"start": [0, 0], "end": [1, 1], "steps": 4, "format": "raw"}
        path = client.post("/api/interpolate", json=body).json()
        assert len(sampled["images"]) == 3 and path["shape"] == [4, 8, 6, 3]
        assert png_pixels(sampled["images"][0]).shape == (8, 6, 3)

    def test_classes_without_names_are_named_by_index(self, many_classes_app):
        points = TestClient(many_classes_app).get("/api/points").json()
        assert points["labelled"] is True
        assert points["class_names"] == [str(i) for i in range(30)]
        assert points["labels"] == [i % 30 for i in range(32)]


@pytest.mark.slow
def test_browser_shows_an_unlabelled_rgb_run_without_errors(chromium_browser, rgb_app):
    _, _, app = rgb_app
    with served(app) as url, page_at(chromium_browser, url) as (page, errors):
        assert page.locator("#legend li").count() == 0
        assert "RGB 8\u00d76" in page.locator("#run-info").inner_text()
        assert "unlabelled" in page.locator("#run-info").inner_text()
        page.wait_for_function("document.getElementById('decoded').naturalWidth > 0")
        size = page.eval_on_selector("#decoded", "i => [i.naturalWidth, i.naturalHeight]")
        assert size == [6, 8]
        shown = page.locator("#decoded").bounding_box()
        assert shown["height"] > shown["width"]  # drawn in the image's own proportions
        box = page.locator("#scatter").bounding_box()
        page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.6 * box["height"])
        page.click("#sample")
        page.wait_for_function("document.querySelectorAll('#samples img').length === 10")
        page.wait_for_function(
            "[...document.querySelectorAll('#samples img')].every(i => i.naturalWidth === 6)"
        )
        assert page.locator("#status").inner_text() == ""
        assert errors == []


@pytest.mark.slow
def test_browser_caps_the_legend_of_many_classes(chromium_browser, many_classes_app):
    with served(many_classes_app) as url, page_at(chromium_browser, url) as (page, errors):
        items = page.locator("#legend li")
        assert items.count() == 21
        assert items.nth(20).inner_text() == "and 10 more classes (10 images)"
        assert errors == []


# ---------------------------------------------------------------- a conditional model


@pytest.fixture(scope="module")
def run_conditional(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("runc"), latent_dim=2, conditional=True)


def test_a_conditional_model_decodes_as_the_class_asked_for(run_conditional, client):
    conditional = TestClient(create_app(run_conditional))
    points = conditional.get("/api/points").json()
    assert points["conditional"] is True and points["classes"] == 2
    z = {"z": [[0.0, 0.0]], "format": "raw"}
    first = conditional.post("/api/decode", json={**z, "class": 0}).json()["pixels"]
    second = conditional.post("/api/decode", json={**z, "class": 1}).json()["pixels"]
    assert first != second
    assert conditional.post("/api/decode", json=z).json()["pixels"] == first  # default class 0
    wrong = conditional.post("/api/sample", json={"count": 2, "class": 2})
    assert wrong.status_code == 400 and "class must be an integer from 0 to 1" in wrong.text
    strip = conditional.post(
        "/api/interpolate", json={"start": [0, 0], "end": [1, 1], "steps": 3, "class": 1}
    )
    assert strip.status_code == 200 and len(strip.json()["images"]) == 3
    plain = client.post("/api/decode", json={**z, "class": 0})
    assert plain.status_code == 400 and "class is for conditional models" in plain.text
    assert client.get("/api/points").json()["conditional"] is False


@pytest.mark.slow
def test_browser_class_selector_redecodes_as_the_chosen_class(chromium_browser, run_conditional):
    with (
        served(create_app(run_conditional)) as url,
        page_at(chromium_browser, url) as (
            page,
            errors,
        ),
    ):
        assert page.locator("#class option").count() == 2
        box = page.locator("#scatter").bounding_box()
        page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
        before = decoded_after(page, None)
        page.select_option("#class", "1")
        after = decoded_after(page, before)
        assert after != before, "changing the class did not decode the point again"
        page.click("#sample")
        page.wait_for_function("document.querySelectorAll('#samples img').length === 10")
        first = page.locator("#samples img").nth(0).get_attribute("src")
        page.select_option("#class", "0")
        page.wait_for_function(
            "prev => document.querySelector('#samples img').src !== prev", arg=first
        )
        assert errors == []
