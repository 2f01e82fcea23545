"""The explorer as a notebook widget: what its Python side answers, the static fallback, and its
front end (the served page's explorer.js with widget.js) in headless Chromium."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("anywidget")

from tests.helpers import offline_page, synthetic_images
from tests.test_explorer import decoded_after
from vaelab import decode, open_run
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import MissingExtra, VaelabError
from vaelab.explorer.widget import ExplorerWidget, page_markup, scoped_css
from vaelab.notebook import StaticView, explore
from vaelab.training import train
from vaelab.viz.images import to_uint8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-D model of the tiny two-class data, saved as a run: (run directory, model, dataset)."""
    root = tmp_path_factory.mktemp("widget")
    train_x, train_y = synthetic_images(256, seed=1)
    test_x, test_y = synthetic_images(64, seed=2)
    data = root / "tiny.npz"  # a file, so that the run finds its data again
    np.savez(data, x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
    config = RunConfig(
        model=ModelConfig(hidden=(32, 16)),  # trained enough that the latents separate the classes
        train=TrainConfig(epochs=30, batch_size=32, lr=1e-2, device="cpu"),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread
    try:
        result = train(config, data=data, run_dir=root / "run", log=None)
    finally:
        torch.set_num_threads(threads)
    return root / "run", result.model.eval(), open_run(root / "run").dataset


@pytest.fixture(scope="module")
def widget(trained) -> ExplorerWidget:
    _, model, dataset = trained
    shown = explore(model, dataset)
    assert isinstance(shown, ExplorerWidget)
    return shown


def request(widget: ExplorerWidget, path: str, body: object = None, ident: int = 7) -> dict:
    reply = widget.answer({"id": ident, "path": path, "body": body})
    assert reply["id"] == ident
    json.dumps(reply)  # what goes over the comm must be JSON
    return reply


# ---------------------------------------------------------------- the Python side


def test_decode_is_the_models_decode(widget, trained):
    _, model, _ = trained
    z = np.array([[0.0, 0.0], [1.5, -0.7], [-2.0, 2.0]], dtype=np.float32)
    expected = to_uint8(decode(model, z).numpy()).reshape(3, 4, 4)
    np.testing.assert_array_equal(widget.decode(z), expected)
    reply = request(widget, "/api/decode", {"z": z.tolist(), "format": "raw"})
    assert reply["payload"]["shape"] == [3, 4, 4]
    np.testing.assert_array_equal(np.array(reply["payload"]["pixels"]), expected.reshape(3, -1))


def test_points_interpolation_and_samples_answer_as_the_server_does(widget, trained):
    _, model, dataset = trained
    points = request(widget, "/api/points")["payload"]
    assert points["latent_dim"] == 2 and len(points["x"]) == len(dataset.test_images)
    assert points["class_names"] == ["0", "1"]
    line = request(widget, "/api/interpolate", {"start": [-1, 0], "end": [1, 0], "steps": 5})
    assert [row[0] for row in line["payload"]["z"]] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert len(line["payload"]["images"]) == 5
    drawn = request(widget, "/api/sample", {"count": 4, "seed": 3, "format": "raw"})["payload"]
    z, pixels = widget.explorer.prior_samples(4, 3)
    np.testing.assert_allclose(drawn["z"], z)
    np.testing.assert_array_equal(np.array(drawn["pixels"]), pixels.reshape(4, -1))


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/decode", {"z": [[0.0]]}, "z[0] has 1 numbers; this run's latent space has 2"),
        ("/api/decode", {"z": [[0.0, float("nan")]]}, "z[0][1] is NaN"),
        ("/api/decode", {"z": [[1e9, 0.0]]}, "latent values must lie within"),
        ("/api/decode", {"z": []}, "z must be a non-empty list"),
        ("/api/decode", {"z": [[0, 0]], "colour": 1}, "unknown field(s) colour"),
        ("/api/interpolate", {"start": [0, 0], "end": [1, 1], "steps": 1}, "steps must be"),
        ("/api/sample", {"count": 0}, "count must be an integer from 1 to"),
        ("/api/decode", [[0, 0]], "request body must be a JSON object"),
        ("/api/nothing", {}, "no such request: /api/nothing"),
    ],
)
def test_bad_requests_get_one_line_errors(widget, path, body, error):
    reply = request(widget, path, body)
    assert "payload" not in reply
    assert error in reply["error"] and "\n" not in reply["error"]


@pytest.mark.parametrize(
    ("z", "error"),
    [
        ([[0.0, 0.0, 0.0]], "has 3 numbers"),
        ([[0.0, np.inf]], "latent values must lie within"),
        ([["a", 0.0]], "z must be a list of latent vectors"),
        (np.zeros((0, 2)), "z must be a non-empty list"),
    ],
)
def test_bad_latent_values_raise_vaelab_errors(widget, z, error):
    with pytest.raises(VaelabError, match="^.*" + error.replace("[", r"\[").replace("]", r"\]")):
        widget.decode(z)


def test_the_comm_answers_each_message(widget, monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(widget, "send", sent.append)
    widget._on_message(widget, {"id": 3, "path": "/api/decode", "body": {"z": [[0, 0]]}}, [])
    assert sent[0]["id"] == 3 and sent[0]["payload"]["images"][0].startswith("data:image/png")


def test_explore_takes_a_run_a_run_directory_or_a_model_with_data(trained):
    run_dir, model, dataset = trained
    for shown in (explore(run_dir), explore(open_run(run_dir)), explore(str(run_dir), dataset)):
        assert isinstance(shown, ExplorerWidget)
        assert len(shown.explorer.latents) == len(dataset.test_images)
    images = (dataset.test_images[:20].reshape(20, 4, 4).numpy() * 255).astype(np.uint8)
    shown = explore(model, images)
    assert len(shown.explorer.latents) == 20 and shown.explorer.labels is None


def test_images_given_to_explore_are_not_said_to_be_training_images(trained, caplog):
    _, model, dataset = trained
    images = (dataset.test_images[:20].reshape(20, 4, 4).numpy() * 255).astype(np.uint8)
    with caplog.at_level("WARNING", logger="vaelab.data"):
        explore(model, images)
    assert not [r for r in caplog.records if "also in the training set" in r.getMessage()]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("model",), "explore(model, data): a model needs the images"),
        ((42,), "model_or_run: int is not a VAE, a Run or a run directory"),
        (("model", "images-8x8"), "model: the model expects 16 values per image but"),
    ],
)
def test_explore_refuses_what_it_cannot_show(trained, args, error):
    _, model, _ = trained
    wrong_size = np.zeros((5, 8, 8), dtype=np.uint8)
    values = {"model": model, "images-8x8": wrong_size}
    with pytest.raises(VaelabError) as caught:
        explore(*[values.get(a, a) if isinstance(a, str) else a for a in args])
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_without_widgets_a_static_figure_with_a_one_line_note(trained, monkeypatch):
    _, model, dataset = trained
    monkeypatch.setitem(sys.modules, "anywidget", None)  # import anywidget now fails
    monkeypatch.delitem(sys.modules, "vaelab.explorer.widget")
    shown = explore(model, dataset)
    assert isinstance(shown, StaticView)
    bundle = shown._repr_mimebundle_()
    assert bundle["text/plain"].count("\n") == 0
    assert "pip install 'vaelab[notebook]'" in bundle["text/plain"]
    assert bundle["text/html"].count('<img alt="latent scatter" src="data:image/png;base64,') == 1
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtra, match=r"anywidget.*pip install 'vaelab\[notebook\]'$"):
        explore(model, dataset)


def test_the_widget_bundle_carries_the_static_figure_for_front_ends_without_widgets(widget):
    bundle = widget._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "needs a notebook front end with widgets" in data["text/html"]


def test_the_widget_is_the_served_page():
    markup = page_markup()
    for part in ('id="scatter"', 'id="decoded"', 'id="interpolation"', 'id="samples"'):
        assert part in markup
    assert "<script" not in markup and "<body" not in markup
    css = scoped_css(":root { --a: 1; }\nbody { margin: 0; }\n#x, .y img { b: 2;\n  c: 3; }\n")
    assert css == (
        ".vaelab-explorer { --a: 1; }\n.vaelab-explorer { margin: 0; }\n"
        ".vaelab-explorer #x, .vaelab-explorer .y img { b: 2;\n  c: 3; }\n"
    )


# ---------------------------------------------------------------- the front end in Chromium

# A stand-in for anywidget's model in the page: `send` goes to the Python widget (exposed by
# Playwright as window.vaelabAnswer) and its answer comes back as a "msg:custom" event.
BOOT = """async ({ module, markup }) => {
  const listeners = new Set();
  const model = {
    get: (name) => (name === "_markup" ? markup : undefined),
    send: (content) => {
      window.vaelabAnswer(content).then((reply) => listeners.forEach((cb) => cb(reply, [])));
    },
    on: (event, cb) => { if (event === "msg:custom") listeners.add(cb); },
    off: (event, cb) => { if (event === "msg:custom") listeners.delete(cb); },
  };
  const { default: widget } = await import(module);
  window.closeWidget = widget.render({ model, el: document.getElementById("cell") });
  window.listeners = listeners;
}"""


def notebook_page(tmp: Path, css: str) -> Path:
    """A page with one output cell and the widget's style sheet, as a notebook would have."""
    page = tmp / "notebook.html"
    page.write_text(
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<style>{css}</style></head><body><h2>a notebook</h2><div id=cell></div></body></html>"
    )
    return page


@pytest.mark.slow
def test_front_end_decodes_under_the_pointer_and_interpolates(chromium_browser, widget, tmp_path):
    module = "data:text/javascript;base64," + base64.b64encode(widget._esm.encode()).decode()
    with offline_page(chromium_browser, notebook_page(tmp_path, widget._css)) as (page, problems):
        page.expose_function("vaelabAnswer", widget.answer)
        page.evaluate(BOOT, {"module": module, "markup": widget._markup})
        page.wait_for_selector("#cell[data-ready=true]", timeout=10_000)
        assert page.locator("#cell #legend li").count() == 2
        # the page's own heading keeps its style: the widget's sheet stays inside the widget
        assert page.eval_on_selector("h2", "h => getComputedStyle(h).fontSize") == "24px"

        box = page.locator("#scatter").bounding_box()
        seen = [decoded_after(page, None)]
        for fraction in (0.1, 0.4, 0.6, 0.9):
            page.mouse.move(box["x"] + fraction * box["width"], box["y"] + 0.5 * box["height"])
            seen.append(decoded_after(page, seen[-1]))
        assert len(set(seen)) >= 3, "the decoded image did not follow the pointer"

        page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + 0.5 * box["height"])
        page.mouse.click(box["x"] + 0.9 * box["width"], box["y"] + 0.5 * box["height"])
        page.wait_for_function(
            "[...document.querySelectorAll('#interpolation img')]"
            ".filter(i => i.naturalWidth === 4).length === 10",
            timeout=5000,
        )
        strip = [page.locator("#interpolation img").nth(i).get_attribute("src") for i in (0, 9)]
        assert strip[0] != strip[1]

        page.click("#sample")
        page.wait_for_function("document.querySelectorAll('#samples img').length === 10")
        assert page.locator("#status").inner_text() == ""
        page.evaluate("window.closeWidget()")
        assert page.evaluate("window.listeners.size") == 0
        assert problems == []


@pytest.mark.slow
def test_import_vaelab_does_not_need_the_notebook_extra():
    code = (
        "import sys; sys.modules['anywidget'] = None; sys.modules['ipywidgets'] = None\n"
        "import vaelab, vaelab.notebook\n"
        "try:\n    vaelab.explore(None)\nexcept vaelab.VaelabError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "model_or_run: NoneType is not a VAE" in out.stdout
