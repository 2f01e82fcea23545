import importlib.util
import io
import os
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from tests.helpers import run_python, synthetic_images, write_csv
from vaelab import latent
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset, to_unit_float
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.rundir import FIGURE_FILES
from vaelab.training import train
from vaelab.viz import images, plots
from vaelab.viz.describe import selected_epoch

ROOT = Path(__file__).resolve().parents[1]


def tiny_run(dataset, run_dir, latent_dim=2, epochs=2):
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4), latent_dim=latent_dim),
        train=TrainConfig(epochs=epochs, batch_size=32, test_batch_size=64, device="cpu"),
    )
    train(config, dataset, run_dir=run_dir, log=None)
    return plots.open_run(run_dir, dataset)


@pytest.fixture
def run(tiny_dataset, tmp_path):
    return tiny_run(tiny_dataset, tmp_path / "run")


def tile(fig_or_ax, row, col, size=4, pad=1):
    """Tile (row, col) of the first image drawn on an Axes or a Figure's first Axes."""
    ax = fig_or_ax.axes[0] if isinstance(fig_or_ax, Figure) else fig_or_ax
    mosaic = np.ma.getdata(ax.images[0].get_array())
    top, left = row * (size + pad), col * (size + pad)
    return mosaic[top : top + size, left : left + size]


def decoded(model, z):
    with torch.no_grad():
        return model.decode(torch.tensor(z, dtype=torch.float32)).numpy().reshape(-1, 4, 4)


def png_pixels(payload: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(payload), format="png")


class TestLearningCurves:
    def test_six_curves_in_the_tutorial_styles(self, run):
        fig = plots.learning_curves(run.history)
        ax = fig.axes[0]
        styles = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in ax.lines}
        assert styles == {
            "train loss": ("tab:blue", "-"), "train MSE": ("tab:blue", ":"),
            "train KLD": ("tab:blue", "--"), "test loss": ("tab:red", "-"),
            "test MSE": ("tab:red", ":"), "test KLD": ("tab:red", "--"),
        }  # fmt: skip
        test_loss = next(line for line in ax.lines if line.get_label() == "test loss")
        assert list(test_loss.get_ydata()) == [row["test_loss"] for row in run.history]
        assert ax.get_xlabel() == "Epoch" and ax.get_ylabel() and ax.get_title()
        assert ax.get_legend() is not None

    def test_accepts_a_train_result_history(self, tiny_dataset):
        config = RunConfig(model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1))
        result = train(config, tiny_dataset, log=None)
        assert len(plots.learning_curves(result.history).axes[0].lines) == 6

    def test_empty_or_foreign_metrics_are_refused(self):
        with pytest.raises(VaelabError, match="no epochs"):
            plots.learning_curves([])
        with pytest.raises(VaelabError, match="'train_loss'"):
            plots.learning_curves([{"epoch": 1.0}])


class TestImageFigures:
    def test_reconstructions_sit_under_their_inputs_and_use_the_posterior_mean(self, run):
        images = run.dataset.test_images
        fig = plots.reconstructions(run.model, images, (4, 4), count=12, cols=5)
        assert len(fig.axes) == 3  # 12 images in rows of 5: three input/reconstruction pairs
        with torch.no_grad():
            expected = decoded(run.model, run.model.encode(images[:12])[0].numpy())
        np.testing.assert_allclose(tile(fig, 0, 0), images[0].reshape(4, 4).numpy())
        np.testing.assert_allclose(tile(fig, 1, 0), expected[0], atol=1e-6)
        np.testing.assert_allclose(tile(fig.axes[2], 1, 1), expected[11], atol=1e-6)
        assert np.isnan(tile(fig.axes[2], 1, 2)).all()  # the short last row is padded
        assert "posterior mean" in fig.get_suptitle()

    def test_manifold_top_row_is_y_plus_span_left_column_x_minus_span(self, run):
        fig = plots.manifold(run.model, (4, 4), grid=5, span=1.5)
        corners = decoded(run.model, [[-1.5, 1.5], [1.5, -1.5], [0.0, 0.75]])
        np.testing.assert_allclose(tile(fig, 0, 0, pad=0), corners[0], atol=1e-6)
        np.testing.assert_allclose(tile(fig, 4, 4, pad=0), corners[1], atol=1e-6)
        np.testing.assert_allclose(tile(fig, 1, 2, pad=0), corners[2], atol=1e-6)
        ax = fig.axes[0]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2")
        assert ax.get_xlim()[0] < -1.5 < 1.5 < ax.get_xlim()[1]

    def test_latent_grid_runs_left_to_right_then_top_to_bottom(self):
        x, y = latent.latent_grid(3, 2.0)
        assert list(x) == [-2, 0, 2] * 3
        assert list(y) == [2, 2, 2, 0, 0, 0, -2, -2, -2]

    @pytest.mark.parametrize("grid, span", [(1, 2.0), (101, 2.0), (20, 0.0), (20, float("nan"))])
    def test_bad_grid_or_span_is_refused(self, run, grid, span):
        with pytest.raises(VaelabError, match="grid|span"):
            plots.manifold(run.model, (4, 4), grid=grid, span=span)

    def test_samples_are_the_decoded_prior_draws(self, run):
        fig = plots.samples(run.model, (4, 4), count=9, seed=3)
        z = torch.randn(9, 2, generator=torch.Generator().manual_seed(3))
        np.testing.assert_allclose(tile(fig, 2, 2), decoded(run.model, z.numpy())[8], atol=1e-6)
        assert "N(0, I)" in fig.axes[0].get_title()

    def test_interpolation_joins_images_of_different_classes(self, run):
        labels = run.dataset.test_labels.numpy()
        pairs = latent.interpolation_pairs(labels, 3)
        assert all(labels[a] != labels[b] for a, b in pairs)
        assert len({index for pair in pairs for index in pair}) == 6
        fig = plots.interpolation(
            run.model, run.dataset.test_images, labels, ("top", "bottom"), (4, 4), pairs=3
        )
        a, b = pairs[0]
        np.testing.assert_allclose(tile(fig, 0, 0), run.dataset.test_images[a].reshape(4, 4))
        np.testing.assert_allclose(tile(fig, 0, 11), run.dataset.test_images[b].reshape(4, 4))
        with torch.no_grad():
            ends = run.model.encode(run.dataset.test_images[[a, b]])[0].numpy()
        np.testing.assert_allclose(tile(fig, 0, 10), decoded(run.model, ends[1:])[0], atol=1e-6)
        names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert names[0] in ("top \u2192 bottom", "bottom \u2192 top")

    def test_interpolation_of_a_one_class_test_set_pairs_distinct_images(self):
        assert latent.interpolation_pairs(np.zeros(5, dtype=int), 3) == [(0, 1), (2, 3), (4, 0)]
        with pytest.raises(VaelabError, match="at least two test images"):
            latent.interpolation_pairs(np.zeros(1, dtype=int), 2)


class TestLatentScatter:
    def test_one_colour_and_marker_per_class_with_a_legend(self, run):
        fig = plots.latent_scatter(
            run.model, run.dataset.test_images, run.dataset.test_labels, ("top", "bottom")
        )
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["top", "bottom"]
        first, second = ax.collections
        assert not np.allclose(first.get_facecolor()[0], second.get_facecolor()[0])
        shapes = [c.get_paths()[0].vertices for c in (first, second)]
        assert shapes[0].shape != shapes[1].shape or not np.allclose(*shapes)
        counts = np.bincount(run.dataset.test_labels.numpy())
        assert [len(c.get_offsets()) for c in ax.collections] == list(counts)
        assert "posterior mean" in ax.get_xlabel()

    def test_more_than_two_dims_shows_principal_components(self, tiny_dataset, tmp_path):
        run = tiny_run(tiny_dataset, tmp_path / "z3", latent_dim=3)
        fig = plots.latent_scatter(
            run.model, run.dataset.test_images, run.dataset.test_labels, ("top", "bottom")
        )
        ax = fig.axes[0]
        assert "principal component 1" in ax.get_xlabel()
        assert "principal component 2" in ax.get_ylabel()
        manifold = plots.manifold(run.model, (4, 4), grid=4, images=run.dataset.test_images)
        means = latent.posterior(run.model, run.dataset.test_images)[0].numpy()
        first, second = latent.most_active_dims(means)
        assert f"z{first + 1} and z{second + 1}" in manifold.axes[0].get_title()
        with pytest.raises(VaelabError, match="needs images"):
            plots.manifold(run.model, (4, 4))

    def test_most_active_dims_are_those_whose_means_vary_most(self):
        rng = np.random.default_rng(0)
        means = rng.normal(size=(500, 4)) * np.array([0.1, 5.0, 0.01, 3.0])
        assert latent.most_active_dims(means) == (1, 3)

    def test_a_one_dimensional_latent_space_gets_a_1d_scatter_and_a_manifold(
        self, tiny_dataset, tmp_path
    ):
        run = tiny_run(tiny_dataset, tmp_path / "z1", latent_dim=1, epochs=1)
        figures = plots.draw_figures(run, grid=6)
        assert "1-D" in figures["latent.png"].axes[0].get_title()
        assert tile(figures["manifold.png"], 0, 5, pad=0).shape == (4, 4)


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestWriteFigures:
    def test_writes_six_pngs_atomically_and_small_copies_for_the_docs(self, run, tmp_path):
        written = plots.write_figures(run.run_dir, dataset=run.dataset)
        folder = run.run_dir / "figures"
        assert [p.name for p in written] == list(FIGURE_FILES)
        assert sorted(os.listdir(folder)) == sorted(FIGURE_FILES)  # no temporary left
        for path in written:
            pixels = png_pixels(path.read_bytes())
            assert pixels.shape[0] > 200 and pixels.shape[1] > 200
            assert pixels[..., :3].std() > 0.05, f"{path.name} looks blank"
        docs = load_script("docs_figures")
        out = tmp_path / "docs"
        assert docs.main([str(run.run_dir), str(out), "--max-kb", "8"]) == 0
        for name in FIGURE_FILES:
            payload = (out / name).read_bytes()
            assert len(payload) <= 8000
            assert png_pixels(payload)[..., :3].std() > 0.05
        assert docs.main([str(tmp_path), str(out)]) == 2  # a folder without figures

    def test_data_of_another_size_is_refused(self, run):
        images, labels = synthetic_images(8, side=3)
        other = Dataset(
            to_unit_float(images), torch.from_numpy(labels.astype(np.int64)),
            to_unit_float(images), torch.from_numpy(labels.astype(np.int64)),
            (3, 3), ("top", "bottom"), "synthetic",
        )  # fmt: skip
        with pytest.raises(VaelabError, match="expects 16 values per image"):
            plots.write_figures(run.run_dir, dataset=other)


@pytest.mark.slow
def test_drawing_never_imports_pyplot():
    """Figures are plain matplotlib Figures, so a notebook's pyplot backend is left alone."""
    code = (
        "import sys, torch\n"
        "from vaelab.viz import plots\n"
        "from vaelab.config import ModelConfig\n"
        "from vaelab.models import VAE\n"
        "torch.manual_seed(0)\n"
        "model = VAE(ModelConfig(input_dim=16, hidden=(8,), latent_dim=3)).eval()\n"
        "images, labels = torch.rand(30, 16), torch.arange(30) % 3\n"
        "plots.figure_png(plots.latent_scatter(model, images, labels, 'abc'))\n"
        "plots.figure_png(plots.manifold(model, (4, 4), 5, images=images))\n"
        "plots.figure_png(plots.interpolation(model, images, labels, 'abc', (4, 4)))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    probe = run_python(code)
    assert probe.returncode == 0, probe.stderr


@pytest.fixture
def csv_args(tmp_path):
    train_x, train_y = synthetic_images(200, seed=1)
    test_x, test_y = synthetic_images(60, seed=2)
    train_csv = write_csv(tmp_path / "train.csv", train_x.reshape(200, -1), train_y)
    test_csv = write_csv(tmp_path / "test.csv", test_x.reshape(60, -1), test_y)
    return [
        "--epochs", "1", "--batch-size", "50", "--test-batch-size", "30", "--hidden", "8,4",
        "--train-csv", train_csv, "--test-csv", test_csv, "--device", "cpu",
        "--runs-dir", tmp_path / "runs",
    ]  # fmt: skip


class TestCommandLine:
    def test_train_draws_the_figures(self, tmp_path, csv_args, cli):
        status, out, err = cli("train", *csv_args, "--name", "with")
        assert status == 0, err
        figures = tmp_path / "runs" / "with" / "figures"
        assert sorted(os.listdir(figures)) == sorted(FIGURE_FILES)
        assert f"wrote {figures / 'manifold.png'}" in out

    def test_no_plots_then_the_plot_command_and_its_errors(self, tmp_path, csv_args, cli):
        status, _, err = cli("train", *csv_args, "--no-plots", "--name", "r")
        assert status == 0, err
        run_dir = tmp_path / "runs" / "r"
        assert not (run_dir / "figures").exists()
        status, out, err = cli("plot", run_dir, "--grid", "7", "--span", "3")
        assert status == 0, err
        assert sorted(os.listdir(run_dir / "figures")) == sorted(FIGURE_FILES)
        assert "figures drawn in" in out
        status, _, err = cli("plot", run_dir, "--grid", "1")
        assert (status, err) == (2, "vaelab: error: --grid must be between 2 and 100, got 1\n")
        status, _, err = cli("plot", tmp_path / "nope")
        assert (status, err) == (
            2,
            f"vaelab: error: {tmp_path / 'nope'}: run directory not found\n",
        )


def test_models_of_any_latent_size_decode_to_images():
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_dim=16, hidden=(8,), latent_dim=5)).eval()
    fig = plots.samples(model, (4, 4), count=4)
    assert tile(fig, 1, 1).shape == (4, 4)


# ---------------------------------------------------------------- colour, any size, no labels

RGB_SHAPE = (3, 8, 6)  # channels, height, width: non-square on purpose


def rgb_dataset(labels_per_split=None, class_names=()) -> Dataset:
    """3x8x6 RGB images, 64 to train and 32 to test; unlabelled unless labels are given."""
    generator = torch.Generator().manual_seed(0)
    train_labels, test_labels = labels_per_split or (None, None)
    return Dataset(
        torch.rand(64, *RGB_SHAPE, generator=generator), train_labels,
        torch.rand(32, *RGB_SHAPE, generator=generator), test_labels,
        RGB_SHAPE[1:], class_names, "synthetic-rgb", channels=3, format="arrays",
    )  # fmt: skip


def one_epoch_run(dataset, run_dir):
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        train=TrainConfig(epochs=1, batch_size=32, device="cpu"),
    )
    train(config, dataset, run_dir=run_dir, log=None)
    return plots.open_run(run_dir, dataset)


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    return one_epoch_run(rgb_dataset(), tmp_path_factory.mktemp("rgb") / "run")


def shown(fig) -> np.ndarray:
    return np.ma.getdata(fig.axes[0].images[0].get_array())


def cell(fig, row, col, height=8, width=6, pad=1):
    """Tile (row, col) of a figure's mosaic of height x width tiles."""
    top, left = row * (height + pad), col * (width + pad)
    return shown(fig)[top : top + height, left : left + width]


def rgb_tiles(flat: torch.Tensor) -> np.ndarray:
    """Channel-major images as the H x W x 3 tiles a figure shows."""
    return flat.reshape(-1, *RGB_SHAPE).permute(0, 2, 3, 1).numpy()


class TestColourImagesOfAnySize:
    def test_every_figure_of_an_unlabelled_rgb_run_is_written(self, rgb_run):
        written = plots.write_figures(rgb_run.run_dir, dataset=rgb_run.dataset)
        assert [p.name for p in written] == list(FIGURE_FILES)
        for path in written:
            with Image.open(path) as image:
                assert image.format == "PNG" and min(image.size) > 200
                assert np.asarray(image.convert("RGB")).std() > 5, f"{path.name} looks blank"

    def test_image_figures_show_rgb_tiles_of_the_images_height_and_width(self, rgb_run):
        model, images = rgb_run.model, rgb_run.dataset.test_images
        fig = plots.reconstructions(model, images, RGB_SHAPE, count=4, cols=4)
        mosaic = shown(fig)
        assert mosaic.shape == (2 * 8 + 1, 4 * 6 + 3, 3)
        np.testing.assert_allclose(cell(fig, 0, 1), rgb_tiles(images[1])[0])
        with torch.no_grad():
            expected = rgb_tiles(model.decode(model.encode(images[:1])[0]))[0]
        np.testing.assert_allclose(mosaic[9:17, :6], expected, atol=1e-6)
        gap = mosaic[8, 0]  # between the input and reconstruction rows
        np.testing.assert_allclose(gap, plots.GAP_RGB)
        samples = shown(plots.samples(model, RGB_SHAPE, count=6))
        assert samples.shape == (2 * 8 + 1, 3 * 6 + 2, 3)
        manifold = shown(plots.manifold(model, RGB_SHAPE, grid=3))
        assert manifold.shape == (3 * 8, 3 * 6, 3)
        assert np.isfinite(manifold).all() and manifold.min() >= 0 and manifold.max() <= 1

    def test_the_manifold_keeps_the_pixels_proportions(self, rgb_run):
        ax = plots.manifold(rgb_run.model, RGB_SHAPE, grid=4).axes[0]
        assert ax.get_aspect() == pytest.approx(8 / 6)

    def test_grey_images_of_any_size_stay_grey(self):
        torch.manual_seed(0)
        model = VAE(ModelConfig(input_dim=15, hidden=(8,), latent_dim=2)).eval()
        for shape in ((5, 3), (1, 5, 3)):
            assert shown(plots.samples(model, shape, count=4)).shape == (11, 7)
        fig = plots.reconstructions(model, torch.rand(3, 15), (5, 3), count=3, cols=3)
        assert shown(fig).shape == (11, 11)

    def test_unlabelled_latent_scatter_has_one_colour_and_no_legend(self, rgb_run):
        data = rgb_run.dataset
        fig = plots.latent_scatter(rgb_run.model, data.test_images, None, data.class_names)
        ax = fig.axes[0]
        assert len(ax.collections) == 1 and ax.get_legend() is None
        assert len(ax.collections[0].get_offsets()) == len(data.test_images)
        assert "unlabelled" in ax.get_title()

    def test_unlabelled_interpolation_pairs_consecutive_images_named_by_index(self, rgb_run):
        images = rgb_run.dataset.test_images
        fig = plots.interpolation(rgb_run.model, images, None, (), RGB_SHAPE, pairs=2, steps=3)
        names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert names == ["image 0 \u2192 image 1", "image 2 \u2192 image 3"]
        assert "different classes" not in fig.axes[0].get_title()
        np.testing.assert_allclose(cell(fig, 1, 4), rgb_tiles(images[3])[0])

    def test_many_classes_get_a_colour_scale_instead_of_a_legend(self, rgb_run):
        labels = torch.arange(32) % 30
        fig = plots.latent_scatter(rgb_run.model, rgb_run.dataset.test_images, labels, ())
        ax = fig.axes[0]
        assert ax.get_legend() is None and len(ax.collections) == 1
        assert len(fig.axes) == 2 and "of 30 classes" in fig.axes[1].get_ylabel()

    def test_classes_past_the_named_ones_are_named_by_index(self, rgb_run):
        labels = torch.arange(32) % 12
        fig = plots.latent_scatter(rgb_run.model, rgb_run.dataset.test_images, labels, ("a", "b"))
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert texts == ["a", "b", *(str(i) for i in range(2, 12))]
        pairs = plots.interpolation(
            rgb_run.model, rgb_run.dataset.test_images, labels, ("a", "b"), RGB_SHAPE, pairs=2
        )
        assert [t.get_text() for t in pairs.axes[0].get_yticklabels()] == [
            "a \u2192 b",
            "2 \u2192 3",
        ]

    def test_labelled_rgb_data_draws_a_legend(self, tmp_path):
        labels = (torch.arange(64) % 3, torch.arange(32) % 3)
        run = one_epoch_run(rgb_dataset(labels, ("r", "g", "b")), tmp_path / "run")
        figures = plots.draw_figures(run, grid=3)
        legend = figures["latent.png"].axes[0].get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["r", "g", "b"]
        assert shown(figures["interpolation.png"]).shape[-1] == 3


NAN = float("nan")


def history_rows(epochs=4, validation=True, tested=(4,)):
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": float(epoch), "seconds": 1.0}
        for split in ("train", "val", "test"):
            measured = {"train": True, "val": validation, "test": epoch in tested}[split]
            for term, value in (("loss", 10.0), ("reconstruction", 8.0), ("kld", 2.0)):
                row[f"{split}_{term}"] = value / epoch if measured else NAN
        rows.append(row)
    return rows


class TestCurvesOfValidationAndUnmeasuredEpochs:
    def test_validation_is_drawn_in_green_and_an_unmeasured_split_is_left_out(self):
        fig = plots.learning_curves(history_rows(tested=()))
        labels = {line.get_label(): line.get_color() for line in fig.axes[0].lines}
        assert labels == {
            "train loss": "tab:blue", "train MSE": "tab:blue", "train KLD": "tab:blue",
            "validation loss": "tab:green", "validation MSE": "tab:green",
            "validation KLD": "tab:green",
        }  # fmt: skip
        assert "final validation loss 2.50" in fig.axes[0].get_title()

    def test_a_split_measured_in_some_epochs_has_gaps(self):
        fig = plots.learning_curves(history_rows(validation=False, tested=(2, 4)))
        test_loss = next(line for line in fig.axes[0].lines if line.get_label() == "test loss")
        assert np.isnan(test_loss.get_ydata()[[0, 2]]).all()
        assert list(test_loss.get_ydata()[[1, 3]]) == [5.0, 2.5]
        assert "final test loss 2.50" in fig.axes[0].get_title()
        assert not any("validation" in line.get_label() for line in fig.axes[0].lines)

    def test_a_split_measured_once_is_drawn_as_a_marker(self):
        lines = plots.learning_curves(history_rows(tested=(4,))).axes[0].lines
        markers = {line.get_label(): line.get_marker() for line in lines}
        assert markers["test loss"] == "o" and markers["validation loss"] in ("None", None, "")

    def test_rows_without_validation_columns_and_the_kept_epoch(self):
        rows = [{k: v for k, v in row.items() if not k.startswith("val")} for row in history_rows()]
        fig = plots.learning_curves(rows, selected_epoch=2)
        kept = [line for line in fig.axes[0].lines if "weights kept" in line.get_label()]
        assert len(kept) == 1 and list(kept[0].get_xdata()) == [2, 2]
        assert len(fig.axes[0].lines) == 7

    def test_the_kept_epoch_comes_from_config_json(self, rgb_run):
        info = {"selection": {"weights": "best-validation", "best_epoch": 3, "epochs_run": 5,
                              "stopped_early": True}}  # fmt: skip
        assert selected_epoch(info) == 3
        assert selected_epoch({"selection": {"weights": "last", "epochs_run": 5}}) is None
        assert selected_epoch({}) is None and selected_epoch({"selection": []}) is None


class TestImageFiles:
    def test_rgb_png_bytes_are_an_rgb_png_of_width_by_height(self):
        pixels = np.random.default_rng(0).integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
        with Image.open(io.BytesIO(images.png_bytes(pixels))) as image:
            assert image.mode == "RGB" and image.size == (6, 8)
            assert np.array_equal(np.asarray(image), pixels)
        with pytest.raises(VaelabError, match="H x W x 3"):
            images.png_bytes(np.zeros((4, 4, 2), dtype=np.uint8))

    def test_channel_major_images_become_tiles_to_show(self):
        flat = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, -1)
        rgb = images.displayable(flat, (3, 2, 4))
        assert rgb.shape == (2, 2, 4, 3)
        assert list(rgb[0, 1, 2]) == [6.0, 14.0, 22.0]  # the pixel's three channel planes
        assert images.displayable(flat[:, :8], (2, 4)).shape == (2, 2, 4)
        side_by_side = images.displayable(flat[:, :16], (2, 2, 4))  # neither grey nor RGB
        assert side_by_side.shape == (2, 2, 8) and side_by_side[0, 0, 4] == 8.0
        assert images.tile(rgb, cols=2).shape == (2, 9, 3)

    def test_write_samples_writes_rgb_grids_and_channel_major_arrays(self, tmp_path):
        samples = np.random.default_rng(0).random((5, *RGB_SHAPE), dtype=np.float32)
        images.write_samples(samples, tmp_path / "s.png")
        with Image.open(tmp_path / "s.png") as image:
            assert image.mode == "RGB" and image.size == (3 * 7 - 1, 2 * 9 - 1)
            grid = np.asarray(image)
        assert np.array_equal(grid[:8, 7:13], images.to_uint8(samples[1].transpose(1, 2, 0)))
        assert (grid[8] == 255).all()  # white lines between the images
        images.write_samples(samples, tmp_path / "s.npy")
        assert np.load(tmp_path / "s.npy").shape == (5, *RGB_SHAPE)

    def test_the_sample_command_writes_rgb_images_of_the_runs_size(self, rgb_run, tmp_path, cli):
        result = cli("sample", rgb_run.run_dir, "--n", 6, "--out", tmp_path / "s.png")
        assert result.code == 0, result.err
        with Image.open(tmp_path / "s.png") as image:
            assert image.mode == "RGB" and image.size == (3 * 7 - 1, 2 * 9 - 1)
        result = cli("sample", rgb_run.run_dir, "--n", 6, "--out", tmp_path / "s.npy")
        assert result.code == 0, result.err
        expected = latent.sample(rgb_run.model, 6, 0).numpy().reshape(6, *RGB_SHAPE)
        assert np.array_equal(np.load(tmp_path / "s.npy"), expected)
