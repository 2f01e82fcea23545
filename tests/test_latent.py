"""The latent space seen everywhere the same way: one implementation of encoding, decoding, prior
samples and the 2-D plane, so `vaelab sample`, the report and the explorer agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from tests.helpers import synthetic_images, write_csv
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.explorer.app import create_app
from vaelab.latent import (
    decode,
    encode,
    interpolation_pairs,
    label_names,
    latent_plane,
    posterior,
    prior_codes,
    sample,
)
from vaelab.models import VAE, evaluating
from vaelab.rundir import load_model, open_run
from vaelab.training import train
from vaelab.viz import plots
from vaelab.viz.images import tile, to_uint8


def trained_run(work, latent_dim: int):
    """A one-epoch run on 4x4 CSV images with `latent_dim` dimensions, saved under `work`."""
    paths = {}
    for split, count, seed in (("train", 128, 1), ("test", 60, 2)):
        pixels, labels = synthetic_images(count, seed=seed)
        paths[split] = str(write_csv(work / f"{split}.csv", pixels.reshape(count, -1), labels))
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4), latent_dim=latent_dim),
        data=DataConfig(train_csv=paths["train"], test_csv=paths["test"]),
        train=TrainConfig(epochs=1, batch_size=32, test_batch_size=60, precision="32", seed=5),
    )
    return train(config, run_dir=work / "run", log=None).run_dir


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("latent3"), latent_dim=3)


def test_sample_report_and_explorer_draw_the_same_images_for_a_seed(run_3d, tmp_path, cli):
    model, count, seed = load_model(run_3d), 16, 7
    expected = sample(model, count, seed).numpy().reshape(count, 4, 4)

    out = tmp_path / "s.npy"
    assert cli("sample", run_3d, "--n", count, "--seed", seed, "--out", out).code == 0
    assert np.array_equal(np.load(out, allow_pickle=False), expected)

    figure = plots.samples(model, (4, 4), count=count, seed=seed)  # what the report embeds
    shown = figure.axes[0].images[0].get_array()
    assert np.array_equal(np.asarray(shown.filled(np.nan)), tile(expected), equal_nan=True)

    body = {"count": count, "seed": seed, "format": "raw"}
    answer = TestClient(create_app(run_3d)).post("/api/sample", json=body).json()
    assert answer["seed"] == seed
    assert np.allclose(answer["z"], prior_codes(count, 3, seed).numpy())
    pixels = np.array(answer["pixels"], dtype=np.uint8).reshape(count, 4, 4)
    assert np.array_equal(pixels, to_uint8(expected))


def test_explorer_samples_without_a_seed_say_which_seed_they_used(run_3d):
    client = TestClient(create_app(run_3d))
    first = client.post("/api/sample", json={"count": 2, "format": "raw"}).json()
    again = client.post("/api/sample", json={"count": 2, "seed": first["seed"], "format": "raw"})
    assert again.json()["pixels"] == first["pixels"]


@pytest.mark.parametrize("latent_dim", [2, 3])
def test_report_and_explorer_draw_the_latent_map_the_same_way_up(tmp_path, latent_dim):
    run_dir = trained_run(tmp_path, latent_dim)
    run = open_run(run_dir)
    data = run.dataset
    figure = plots.latent_scatter(run.model, data.test_images, data.test_labels, data.class_names)
    points = TestClient(create_app(run_dir)).get("/api/points").json()
    page = np.stack([points["x"], points["y"]], axis=1)
    labels = np.asarray(points["labels"])
    scatters = figure.axes[0].collections
    for label, scatter in zip(sorted(set(labels.tolist())), scatters):
        assert np.allclose(scatter.get_offsets(), page[labels == label], atol=1e-4)


def test_latent_plane_axes_have_a_fixed_sign():
    rng = np.random.default_rng(0)
    means = rng.standard_normal((300, 4)) * np.array([3.0, 1.0, 0.5, 0.1])
    for flipped in (means, -means):
        plane = latent_plane(flipped)
        assert (plane.components[:, 0] >= 0).all()
    assert np.allclose(latent_plane(means).components, latent_plane(-means).components)


def test_pca_plane_is_the_plane_of_largest_variance():
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((500, 4)) * np.array([0.1, 5.0, 0.2, 2.0]) + 3.0
    plane = latent_plane(latents)
    assert plane.kind == "pca"
    assert np.allclose(np.abs(plane.components[0]), [0, 1, 0, 0], atol=0.05)
    assert np.allclose(np.abs(plane.components[1]), [0, 0, 0, 1], atol=0.05)
    assert np.allclose(plane.mean, latents.mean(axis=0))
    assert plane.explained_variance is not None and plane.explained_variance[0] > 0.8


def test_one_and_two_dimensional_latents_are_drawn_on_their_own_axes():
    assert np.allclose(latent_plane(np.array([[0.5], [-1.0]])).project([[0.5]]), [[0.5, 0.0]])
    two = np.array([[0.5, 2.0], [-1.0, 3.0]])
    plane = latent_plane(two)
    assert plane.kind == "latent" and np.allclose(plane.project(two), two)


def test_batched_encode_and_decode_equal_one_pass_and_restore_the_mode():
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_dim=16, hidden=(8, 4), latent_dim=3)).train()
    images = torch.rand(50, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), evaluating(model):
        mu, logvar = model.encode(images)
        expected = model.decode(mu)
    means, logvars = posterior(model, images.reshape(50, 4, 4), batch_size=7)
    assert torch.allclose(means, mu, atol=1e-6) and torch.allclose(logvars, logvar, atol=1e-6)
    assert torch.allclose(decode(model, means.numpy(), batch_size=9), expected, atol=1e-6)
    assert torch.equal(encode(model, images), posterior(model, images)[0])
    assert model.training  # put back in the mode it was in


def test_prior_codes_are_float32_and_refuse_an_empty_or_huge_request():
    codes = prior_codes(5, 3, seed=2)
    assert codes.dtype == torch.float32 and codes.shape == (5, 3)
    assert torch.equal(codes, torch.randn(5, 3, generator=torch.Generator().manual_seed(2)))
    for bad in (0, 100_001):
        with pytest.raises(Exception, match="n .samples. must be between 1 and"):
            prior_codes(bad, 3)
    assert math.isfinite(float(codes.sum()))


def test_interpolation_pairs_without_labels_are_consecutive_images():
    assert interpolation_pairs(None, 3, count=5) == [(0, 1), (2, 3), (4, 0)]
    assert interpolation_pairs(None, 2, count=2) == [(0, 1), (0, 1)]
    with pytest.raises(VaelabError, match="at least two test images"):
        interpolation_pairs(None, 2, count=1)
    with pytest.raises(VaelabError, match="number of images"):
        interpolation_pairs(None, 2)


def test_interpolation_pairs_of_many_classes_join_different_classes():
    labels = np.arange(90) % 30
    pairs = interpolation_pairs(labels, 5)
    assert [(labels[a], labels[b]) for a, b in pairs] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def test_every_class_index_gets_a_name():
    assert label_names(np.array([0, 3, 1]), ("a", "b")) == ("a", "b", "2", "3")
    assert label_names(np.array([1]), ("a", "b", "c")) == ("a", "b", "c")
    assert label_names(None, ("a",)) == ()
    assert label_names(np.zeros(0, dtype=np.int64), ()) == ()


def test_an_rgb_unlabelled_run_samples_the_same_images_in_the_explorer_and_the_figures(tmp_path):
    generator = torch.Generator().manual_seed(0)
    shape = (3, 8, 6)
    dataset = Dataset(
        torch.rand(64, *shape, generator=generator), None,
        torch.rand(32, *shape, generator=generator), None,
        shape[1:], (), "synthetic-rgb", channels=3, format="arrays",
    )  # fmt: skip
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1, batch_size=32, device="cpu")
    )
    run_dir = train(config, dataset, run_dir=tmp_path / "run", log=None).run_dir
    model = load_model(run_dir)
    assert model.config.shape == shape
    expected = sample(model, 4, 3).numpy().reshape(4, *shape).transpose(0, 2, 3, 1)
    figure = plots.samples(model, shape, count=4, seed=3)
    shown = np.asarray(figure.axes[0].images[0].get_array())
    assert np.array_equal(shown[:8, :6], expected[0])
    body = {"count": 4, "seed": 3, "format": "raw"}
    answer = TestClient(create_app(run_dir, dataset=dataset)).post("/api/sample", json=body).json()
    pixels = np.array(answer["pixels"], dtype=np.uint8).reshape(4, 8, 6, 3)
    assert np.array_equal(pixels, to_uint8(expected))
