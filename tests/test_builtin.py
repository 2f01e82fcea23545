"""The built-in datasets: where each is looked for, the verified downloads (offline, from a server
on loopback serving small synthetic files), and CIFAR-10's archive read in place."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import synthetic_images, write_idx
from vaelab.config import DataConfig
from vaelab.data import builtin_datasets, load_builtin, load_dataset
from vaelab.data.builtin import BUILTINS, KMNIST_CLASSES
from vaelab.data.cifar10 import BATCHES, CIFAR10_CLASSES, RECORD, read_archive
from vaelab.data.download import Remote
from vaelab.errors import VaelabError

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # fmt: skip


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """No dataset anywhere on disk: an empty cache, no $VAELAB_DATA, no system folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setattr("vaelab.data.builtin.SYSTEM_DATASETS_DIR", tmp_path / "system")
    return tmp_path / "cache" / "vaelab"


def idx_quartet(folder: Path, side: int = 28) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = synthetic_images(8, side=side)
    for name, array in zip(IDX_NAMES, (images, labels, images[:4], labels[:4]), strict=True):
        write_idx(folder / name, array, compress=True)


def batch(records: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, size=(records, RECORD), dtype=np.uint8)
    rows[:, 0] = rng.integers(0, 10, size=records)
    return rows.tobytes()


def cifar_archive(path: Path, spoil: str = "") -> dict[str, bytes]:
    """A small cifar-10-binary.tar.gz (4 records a batch); `spoil` names what to break."""
    contents = {name: batch(4, seed) for seed, name in enumerate(BATCHES)}
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "cifar-10-batches-bin/batches.meta.txt", b"airplane\n")
        for name, data in contents.items():
            member = f"cifar-10-batches-bin/{name}"
            if spoil == "symlink" and name == "test_batch.bin":
                link = tarfile.TarInfo(member)
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                archive.addfile(link)
            elif spoil == "truncated" and name == "data_batch_3.bin":
                _add(archive, member, data[:-5])
            elif spoil == "missing" and name == "data_batch_5.bin":
                continue
            else:
                _add(archive, member, data)
    return contents


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def serve_as(monkeypatch, name: str, served: Path, url: str) -> None:
    """Point the built-in `name` at the server, with the served files' own checksums."""
    files = {
        p.name: Remote(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
        for p in served.iterdir()
    }
    monkeypatch.setitem(BUILTINS, name, dataclasses.replace(BUILTINS[name], url=url, files=files))


class TestDownload:
    @pytest.mark.parametrize("name", ["mnist", "kmnist", "fashion-mnist"])
    def test_idx_dataset_downloads_verified_then_loads(self, name, file_server, no_local_data,
                                                       monkeypatch):  # fmt: skip
        served, url = file_server
        idx_quartet(served)
        serve_as(monkeypatch, name, served, url)
        data = load_builtin(name, DataConfig())
        assert sorted(p.name for p in (no_local_data / name).iterdir()) == sorted(IDX_NAMES)
        assert len(data.train_images) == 8 and data.format == "idx"
        if name == "kmnist":
            assert data.class_names == KMNIST_CLASSES
        if name == "mnist":
            assert data.class_names == tuple("0123456789")
        (served / IDX_NAMES[0]).unlink()  # found in the cache now: not downloaded again
        assert len(load_builtin(name, DataConfig()).test_images) == 4

    def test_cifar10_downloads_verified_then_loads(self, file_server, no_local_data, monkeypatch):
        served, url = file_server
        contents = cifar_archive(served / "cifar-10-binary.tar.gz")
        serve_as(monkeypatch, "cifar10", served, url)
        data = load_dataset(DataConfig(dataset="cifar10"))
        assert data.shape == (3, 32, 32) and data.class_names == CIFAR10_CLASSES
        assert len(data.train_images) == 20 and len(data.test_images) == 4
        first = np.frombuffer(contents["data_batch_1.bin"], np.uint8)[:RECORD]
        assert int(data.train_labels[0]) == first[0]
        assert torch.equal(data.train_images[0], torch.from_numpy(first[1:] / 255).float())

    @pytest.mark.parametrize("name", ["mnist", "kmnist", "cifar10"])
    def test_checksum_mismatch_is_refused_and_nothing_kept(self, name, file_server, no_local_data,
                                                          monkeypatch):  # fmt: skip
        served, url = file_server
        idx_quartet(served)
        cifar_archive(served / "cifar-10-binary.tar.gz")
        spec = BUILTINS[name]
        monkeypatch.setitem(BUILTINS, name, dataclasses.replace(spec, url=url))
        with pytest.raises(VaelabError, match="SHA-256 mismatch.*discarded"):
            load_builtin(name, DataConfig())
        assert list((no_local_data / name).iterdir()) == []

    def test_download_larger_than_published_is_refused(
        self, file_server, no_local_data, monkeypatch
    ):
        served, url = file_server
        idx_quartet(served)
        serve_as(monkeypatch, "mnist", served, url)
        spec = BUILTINS["mnist"]
        files = {n: Remote(r.sha256, r.size - 1) for n, r in spec.files.items()}
        monkeypatch.setitem(BUILTINS, "mnist", dataclasses.replace(spec, files=files))
        with pytest.raises(VaelabError, match="larger than the .* bytes expected"):
            load_builtin("mnist", DataConfig())
        assert list((no_local_data / "mnist").iterdir()) == []

    def test_offline_says_where_to_put_the_files(self, no_local_data):
        def offline(url):
            raise OSError("Network is unreachable")

        with pytest.raises(VaelabError, match="mnist was not found locally") as info:
            load_builtin("mnist", DataConfig(), opener=offline)
        assert "/usr/share/datasets/mnist" in str(info.value)


class TestLocate:
    def test_data_dir_is_the_named_datasets_folder(self, tmp_path, no_local_data):
        idx_quartet(tmp_path / "mine")
        data = load_dataset(DataConfig(dataset="kmnist", data_dir=str(tmp_path / "mine")))
        assert data.class_names == KMNIST_CLASSES

    def test_labels_false_drops_a_builtins_labels_and_classes(self, tmp_path, no_local_data):
        idx_quartet(tmp_path / "mine")
        config = DataConfig(dataset="mnist", data_dir=str(tmp_path / "mine"), labels=False)
        data = load_dataset(config)
        assert data.train_labels is None and data.test_labels is None
        assert data.class_names == () and not data.labelled
        assert len(data.train_images) == 8

    def test_class_names_with_labels_false_is_refused(self):
        with pytest.raises(VaelabError, match="labels that labels=False ignores"):
            DataConfig(labels=False, class_names=("a", "b"))

    def test_data_dir_lacking_a_file(self, tmp_path, no_local_data):
        idx_quartet(tmp_path / "mine")
        (tmp_path / "mine" / IDX_NAMES[3]).unlink()
        with pytest.raises(VaelabError, match="lacks t10k-labels-idx1-ubyte.gz"):
            load_builtin("mnist", DataConfig(data_dir=str(tmp_path / "mine")))

    def test_vaelab_data_holds_a_folder_per_dataset(self, tmp_path, no_local_data, monkeypatch):
        idx_quartet(tmp_path / "all" / "mnist")
        monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "all"))
        assert "all/mnist" in load_builtin("mnist", DataConfig()).source
        found = {info.name: info.found for info in builtin_datasets()}
        assert found["mnist"] == str(tmp_path / "all" / "mnist")
        assert found["kmnist"].startswith("download from http://codh.rois.ac.jp/")

    def test_system_folder_then_cache(self, tmp_path, no_local_data):
        idx_quartet(tmp_path / "system" / "mnist")
        assert "system/mnist" in load_builtin("mnist", DataConfig()).source
        idx_quartet(no_local_data / "mnist")
        assert "cache/vaelab/mnist" in load_builtin("mnist", DataConfig()).source

    def test_cifar10_extracted_folder(self, tmp_path, no_local_data):
        archive = tmp_path / "a.tar.gz"
        contents = cifar_archive(archive)
        folder = tmp_path / "c" / "cifar-10-batches-bin"
        folder.mkdir(parents=True)
        for name, data in contents.items():
            (folder / name).write_bytes(data)
        data = load_builtin("cifar10", DataConfig(data_dir=str(tmp_path / "c")))
        assert len(data.train_images) == 20

    def test_unknown_name(self):
        with pytest.raises(VaelabError, match="unknown dataset 'svhn'; built in: fashion-mnist"):
            load_dataset(DataConfig(dataset="svhn"))

    def test_datasets_command_lists_every_builtin(self, cli, no_local_data):
        code, out, _ = cli("datasets")
        assert code == 0
        for name in BUILTINS:
            assert name in out
        assert "download from https://ossci-datasets.s3.amazonaws.com/mnist/" in out


class TestCifarArchive:
    @pytest.mark.parametrize(
        ("spoil", "message"),
        [
            ("symlink", r"member cifar-10-batches-bin/test_batch.bin is a symbolic link"),
            ("truncated", r"data_batch_3.bin: 12287 bytes is not a whole number of CIFAR-10"),
            ("missing", "the archive lacks data_batch_5.bin"),
        ],
    )
    def test_bad_archive_is_one_line(self, tmp_path, spoil, message):
        path = tmp_path / "cifar-10-binary.tar.gz"
        cifar_archive(path, spoil)
        with pytest.raises(VaelabError, match=message) as info:
            load_builtin("cifar10", DataConfig(data_dir=str(tmp_path)))
        assert str(path) in str(info.value)

    def test_truncated_gzip(self, tmp_path):
        path = tmp_path / "cifar-10-binary.tar.gz"
        cifar_archive(path)
        path.write_bytes(path.read_bytes()[:-200])
        with pytest.raises(VaelabError, match="not a readable tar archive"):
            read_archive(path)

    def test_label_outside_0_9(self, tmp_path):
        path = tmp_path / "cifar-10-binary.tar.gz"
        contents = cifar_archive(path)
        spoilt = bytearray(contents["test_batch.bin"])
        spoilt[RECORD] = 10
        with tarfile.open(path, "w:gz") as archive:
            for name, data in contents.items():
                _add(archive, name, bytes(spoilt) if name == "test_batch.bin" else data)
        with pytest.raises(VaelabError, match="record 2 has label 10; CIFAR-10's labels are 0-9"):
            load_builtin("cifar10", DataConfig(data_dir=str(tmp_path)))

    def test_member_declaring_too_much_is_refused_before_reading(self, tmp_path, monkeypatch):
        path = tmp_path / "cifar-10-binary.tar.gz"
        cifar_archive(path)
        monkeypatch.setenv("VAELAB_MAX_READ_BYTES", "1000")
        with pytest.raises(VaelabError, match="members declare .* more than"):
            read_archive(path)
