"""NumPy files are mapped, not read: a .npy file and the stored arrays of an .npz file stay on
disk, their headers checked before anything is mapped; arrays the user mapped stay mapped."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import as_dataset, load_dataset
from vaelab.data.npyfile import read_npy, read_npz
from vaelab.errors import VaelabError
from vaelab.training import train


def grey(n: int, side: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8)


def shares(tensor: torch.Tensor, array: np.memmap) -> bool:
    """Whether `tensor` reads the memory of the mapped `array`."""
    start = array.ctypes.data
    return start <= tensor.untyped_storage().data_ptr() < start + array.nbytes


def test_a_npy_file_is_mapped_and_a_run_reads_it_in_place(tmp_path):
    np.save(tmp_path / "x.npy", grey(40))
    array = read_npy(tmp_path / "x.npy")
    assert isinstance(array, np.memmap) and not array.flags.writeable
    dataset = load_dataset(DataConfig(source=str(tmp_path / "x.npy"), test_split=8))
    assert dataset.train_images.mapped and dataset.test_images.mapped
    assert dataset.train_images.file == tmp_path / "x.npy"
    assert torch.equal(dataset.test_images.tensor() * 255, dataset.test_images.stored().float())
    config = RunConfig(
        model=ModelConfig(hidden=(8,)), train=TrainConfig(epochs=1, batch_size=8, device="cpu")
    )
    assert len(train(config, dataset, log=None).history) == 1


def test_the_stored_arrays_of_an_npz_are_mapped_the_compressed_ones_read(tmp_path):
    np.savez(tmp_path / "plain.npz", images=grey(20), labels=np.arange(20) % 3)
    np.savez_compressed(tmp_path / "packed.npz", images=grey(20), labels=np.arange(20) % 3)
    plain, packed = read_npz(tmp_path / "plain.npz"), read_npz(tmp_path / "packed.npz")
    assert isinstance(plain["images"], np.memmap) and not isinstance(packed["images"], np.memmap)
    assert np.array_equal(plain["images"], packed["images"])
    assert np.array_equal(plain["labels"], np.arange(20) % 3)
    dataset = load_dataset(DataConfig(source=str(tmp_path / "plain.npz"), test_split=4))
    assert dataset.train_images.mapped and dataset.labelled


def test_a_member_stored_with_an_extra_field_is_found_at_its_offset(tmp_path):
    path = tmp_path / "x.npz"
    np.save(tmp_path / "m.npy", grey(6))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        info = zipfile.ZipInfo("images.npy")
        info.extra = b"\xfe\xca\x04\x00abcd"  # an unknown extra field, 8 bytes
        archive.writestr(info, (tmp_path / "m.npy").read_bytes())
    assert np.array_equal(read_npz(path)["images"], grey(6))


def test_bytes_past_the_array_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", grey(5))
    with open(tmp_path / "x.npy", "ab") as handle:
        handle.write(b"\0" * 7)
    with pytest.raises(VaelabError, match=r"x\.npy: 7 bytes past the array its header declares"):
        read_npy(tmp_path / "x.npy")


def test_a_truncated_file_is_refused_before_mapping(tmp_path):
    np.save(tmp_path / "x.npy", grey(5))
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(raw[:-3])
    with pytest.raises(VaelabError, match=r"truncated: its header declares \[5, 4, 4\]"):
        read_npy(tmp_path / "x.npy")


@pytest.mark.parametrize("order", ["big-endian", "fortran"])
def test_other_byte_orders_and_layouts_read_the_same_images(tmp_path, order):
    values = np.random.default_rng(2).random((10, 3, 3)).astype(np.float32)
    stored = values.astype(">f4") if order == "big-endian" else np.asfortranarray(values)
    np.save(tmp_path / "x.npy", stored)
    dataset = load_dataset(DataConfig(source=str(tmp_path / "x.npy"), test_split=2))
    every = torch.cat([dataset.train_images.tensor(), dataset.test_images.tensor()])
    assert sorted(every.flatten().tolist()) == sorted(values.flatten().tolist())


def test_an_array_the_user_mapped_stays_mapped(tmp_path):
    np.save(tmp_path / "x.npy", grey(30))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    dataset = as_dataset(mapped, DataConfig(test_split=5))
    assert dataset.train_images.mapped and shares(dataset.train_images.pixels, mapped)


def test_channels_last_rgb_stays_one_mapping(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (12, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", rgb)
    dataset = load_dataset(DataConfig(source=str(tmp_path / "x.npy"), test_split=2))
    assert dataset.shape == (3, 6, 5)
    assert dataset.train_images.mapped and not dataset.train_images.pixels.is_contiguous()
    flat = torch.from_numpy(rgb.transpose(0, 3, 1, 2).reshape(12, -1) / 255).float()
    every = torch.cat([dataset.train_images.tensor(), dataset.test_images.tensor()])
    assert sorted(map(tuple, every.tolist())) == sorted(map(tuple, flat.tolist()))


def test_compressed_arrays_beyond_free_memory_are_refused_in_one_line(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "x.npz", images=grey(50))
    monkeypatch.setattr("vaelab._resources.available_memory", lambda: 99)
    with pytest.raises(
        VaelabError, match=r"x\.npz: decompressing its arrays needs \d+ bytes .* 99 bytes"
    ):
        read_npz(tmp_path / "x.npz")


def test_a_run_on_a_mapped_file_opens_reading_its_test_images_only(tmp_path):
    from vaelab.data.splits import split_indices
    from vaelab.evaluation import evaluate
    from vaelab.rundir import open_run

    values = np.random.default_rng(5).random((40, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    config = RunConfig(
        model=ModelConfig(hidden=(8,)), data=DataConfig(test_split=8),
        train=TrainConfig(epochs=1, batch_size=8, device="cpu", precision="32"),
    )  # fmt: skip
    train(config, data=str(tmp_path / "x.npy"), run_dir=tmp_path / "run", log=None)
    kept, _ = split_indices(40, 8, 0, "test_split")
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r+")
    mapped[kept.numpy()] = 7.0  # training images no run may use, left for opening to trip on
    mapped.flush()
    run = open_run(tmp_path / "run")
    assert evaluate(run.model, run.dataset.test_images).images == 8
    with pytest.raises(VaelabError, match="pixel values must lie in"):
        run.dataset.train_images.check()
