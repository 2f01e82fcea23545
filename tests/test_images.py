"""Images keep their stored type and become float32 one batch at a time; splits are views; checks,
fingerprints and binarization stream over the stored pixels in blocks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_dataset
from vaelab.config import DataConfig
from vaelab.data import Dataset, load_dataset
from vaelab.data import dataset as dataset_module
from vaelab.data import images as images_module
from vaelab.data import pixels as pixels_module
from vaelab.data.dataset import float_test_fingerprint, to_unit_float
from vaelab.data.images import Images
from vaelab.data.model_data import binarized, draw_binary, drawn_binary
from vaelab.data.pixels import unit_float
from vaelab.errors import VaelabError


def rgb_last(n: int, side: int = 5, seed: int = 0) -> np.ndarray:
    """uint8 RGB images, N x H x W x 3."""
    return np.random.default_rng(seed).integers(0, 256, (n, side, side + 1, 3), dtype=np.uint8)


def channel_major(array: np.ndarray) -> torch.Tensor:
    """N x H x W x C uint8 as the float32 N x D rows vaelab reads (C x H x W order)."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2))).flatten(1) / 255


def as_images(array: np.ndarray, where: str = "x") -> Images:
    return Images(torch.from_numpy(array).permute(0, 3, 1, 2), where=where)


class TestStoredType:
    def test_uint8_stays_uint8_and_reads_as_floats_over_255(self):
        array = rgb_last(7)
        images = as_images(array)
        assert images.stored_dtype == torch.uint8 and images.nbytes == array.nbytes
        assert images.shape == (7, 3 * 5 * 6) and images.image_shape == (3, 5, 6)
        assert torch.equal(images.tensor(), channel_major(array))
        assert images[2].dtype == torch.float32

    def test_uint16_reads_over_65535_and_bool_as_0_or_1(self):
        wide = torch.tensor([[0, 65535], [257, 32768]], dtype=torch.uint16)
        images = Images.of(wide, (1, 1, 2), "wide")
        assert torch.equal(images.tensor(), wide.to(torch.float32) / 65535)
        flags = Images.of(torch.tensor([[True, False]]), (1, 1, 2), "flags")
        assert flags.tensor().tolist() == [[1.0, 0.0]]

    def test_a_channels_last_array_is_viewed_not_copied(self):
        array = rgb_last(4)
        images = as_images(array)
        assert images.pixels.untyped_storage().data_ptr() == array.ctypes.data

    def test_take_shares_the_pixels_and_reads_the_rows_chosen(self):
        array = rgb_last(9)
        images = as_images(array)
        part = images.take(torch.tensor([7, 2, 5]))
        assert part.pixels is images.pixels and len(part) == 3
        assert torch.equal(part.tensor(), channel_major(array)[[7, 2, 5]])
        assert torch.equal(part.take(torch.tensor([2, 0])).tensor(), channel_major(array)[[5, 7]])

    def test_without_lists_the_rows_it_keeps_only_when_read(self):
        array = rgb_last(9)
        rest = as_images(array).without(torch.tensor([1, 4, 8]))
        assert len(rest) == 6 and rest._rows is None
        assert torch.equal(rest.tensor(), channel_major(array)[[0, 2, 3, 5, 6, 7]])
        assert rest.rows.tolist() == [0, 2, 3, 5, 6, 7]
        assert torch.equal(
            rest.without(torch.tensor([0])).tensor(), channel_major(array)[[2, 3, 5, 6, 7]]
        )

    def test_indexing_reads_like_a_float_tensor(self):
        array = rgb_last(6)
        images, floats = as_images(array), channel_major(array)
        assert torch.equal(images[-1], floats[-1])
        assert torch.equal(images[1:5:2], floats[1:5:2])
        assert torch.equal(images[[4, -6]], floats[[4, 0]])
        assert torch.equal(images[np.array([3])], floats[[3]])
        assert len(images[10:]) == 0
        with pytest.raises(IndexError):
            images[6]
        with pytest.raises(IndexError):
            images[[0, 6]]

    def test_uint8_batches_are_the_floats_earlier_versions_held(self):
        dataset = make_tiny_dataset()
        raw = (dataset.train_images.tensor() * 255).round().to(torch.uint8)
        assert torch.equal(unit_float(raw), to_unit_float(raw.numpy()))


class TestChecks:
    def test_floats_outside_0_1_held_in_memory_are_refused_at_once(self):
        with pytest.raises(VaelabError, match=r"^x: pixel values must lie in \[0, 1\].*max 2"):
            Images.of(torch.tensor([[0.5, 2.0]]), (1, 1, 2), "x")
        with pytest.raises(VaelabError, match="^x: pixels hold NaN"):
            Images.of(torch.tensor([[0.5, float("nan")]]), (1, 1, 2), "x")

    def test_a_mapped_file_is_checked_on_first_use_in_blocks(self, tmp_path, monkeypatch):
        monkeypatch.setattr(images_module, "BLOCK_BYTES", 64)  # many blocks
        values = np.random.default_rng(0).random((50, 4, 4), dtype=np.float32)
        values[37, 2, 1] = -0.25
        np.save(tmp_path / "x.npy", values)
        dataset = load_dataset(DataConfig(source=str(tmp_path / "x.npy"), test_split=5))
        assert dataset.train_images.mapped  # nothing read yet
        with pytest.raises(VaelabError, match=r"x\.npy: pixel values must lie in \[0, 1\]"):
            dataset.check()

    def test_other_integer_types_are_not_pixels(self):
        with pytest.raises(VaelabError, match="int32 are not intensities"):
            Images.of(torch.zeros((2, 4), dtype=torch.int32), (1, 2, 2), "x")

    def test_a_gather_larger_than_free_memory_is_refused_in_one_line(self, monkeypatch):
        images = as_images(rgb_last(4))
        monkeypatch.setattr(pixels_module, "_CHECK_GATHER_BYTES", 0)
        monkeypatch.setattr("vaelab._resources.available_memory", lambda: 100)
        with pytest.raises(VaelabError, match=r"^x: reading .* needs .* of memory, .*available$"):
            images.tensor()


class TestFingerprints:
    def test_the_values_count_not_the_layout(self):
        array = rgb_last(5)
        contiguous = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
        assert as_images(array).fingerprint() == Images(contiguous).fingerprint()
        changed = array.copy()
        changed[3, 1, 1, 2] ^= 1
        assert as_images(changed).fingerprint() != as_images(array).fingerprint()

    def test_the_type_counts(self):
        pixels = torch.tensor([[0, 255]], dtype=torch.uint8)
        as_uint8 = Images.of(pixels, (1, 1, 2), "x").fingerprint()
        assert as_uint8 != Images.of(pixels / 255, (1, 1, 2), "x").fingerprint()

    def test_blocks_do_not_change_it(self, monkeypatch):
        images = as_images(rgb_last(9))
        whole = images.fingerprint()
        monkeypatch.setattr(images_module, "BLOCK_BYTES", 100)
        assert images.fingerprint() == whole

    def test_the_float_fingerprint_is_what_earlier_versions_recorded(self):
        dataset = make_tiny_dataset()
        digest = hashlib.sha256(dataset.test_images.tensor().numpy().tobytes())
        digest.update(dataset.test_labels.numpy().tobytes())
        assert float_test_fingerprint(dataset) == digest.hexdigest()
        assert dataset_module.test_fingerprint(dataset) != digest.hexdigest()


class TestBinarization:
    @pytest.mark.parametrize("block_bytes", [1, 37, 1 << 20])
    def test_blocks_draw_what_one_call_over_all_images_draws(self, monkeypatch, block_bytes):
        monkeypatch.setattr(images_module, "BLOCK_BYTES", block_bytes)
        images = as_images(rgb_last(11))
        drawn = drawn_binary(images, torch.Generator().manual_seed(3))
        whole = draw_binary(images.tensor(), torch.Generator().manual_seed(3))
        assert drawn.stored_dtype == torch.bool
        assert torch.equal(drawn.tensor(), whole)

    def test_static_draws_train_then_test_from_one_generator(self):
        dataset = make_tiny_dataset()
        drawn = binarized(dataset, DataConfig(binarize="static", split_seed=4))
        generator = torch.Generator().manual_seed(4)
        train = draw_binary(dataset.train_images.tensor(), generator)
        test = draw_binary(dataset.test_images.tensor(), generator)
        assert torch.equal(drawn.train_images.tensor(), train)
        assert torch.equal(drawn.test_images.tensor(), test)

    def test_the_test_images_alone_are_drawn_as_with_the_training_images(self, monkeypatch):
        monkeypatch.setattr(images_module, "BLOCK_BYTES", 50)
        dataset = make_tiny_dataset()
        config = DataConfig(binarize="static", split_seed=4)
        alone = binarized(dataset, config, train=False)
        assert alone.train_images is dataset.train_images
        assert torch.equal(
            alone.test_images.tensor(), binarized(dataset, config).test_images.tensor()
        )


def test_a_dataset_of_arrays_keeps_them_in_their_type():
    pixels = np.random.default_rng(1).integers(0, 256, (12, 2, 3), dtype=np.uint8)
    dataset = Dataset(pixels[:8], None, pixels[8:], None, (2, 3), (), "arrays")
    assert dataset.train_images.stored_dtype == torch.uint8
    assert torch.equal(
        dataset.test_images.tensor(), torch.from_numpy(pixels[8:] / 255).float().flatten(1)
    )
