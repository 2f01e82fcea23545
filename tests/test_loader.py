"""Training batches read in the training process or by DataLoader workers: the same batches in the
same order, each rank its rows only; the choice is automatic and said at the start; runs and
checkpoints recorded with the earlier float32 fingerprints still open and resume."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import signal
import threading

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_dataset
from vaelab import rundir
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import load_dataset
from vaelab.data import loader as loader_module
from vaelab.data.images import Images
from vaelab.data.loader import Feed, make_feed
from vaelab.rundir import CHECKPOINT_FILE, open_run, read_safetensors
from vaelab.training import TrainingInterrupted, train
from vaelab.training.checkpoint import METADATA_KEY, run_identity
from vaelab.training.guard import RunGuard


def tiny_config(epochs: int = 2, data: DataConfig | None = None) -> RunConfig:
    return RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        data=data or DataConfig(),
        train=TrainConfig(epochs=epochs, batch_size=8, test_batch_size=64, precision="32"),
    )


def numbered(n: int, dim: int = 4) -> Images:
    """Images whose first value is their row number (uint8), so a batch tells its rows."""
    pixels = torch.zeros((n, 1, 1, dim), dtype=torch.uint8)
    pixels[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return Images(pixels)


def rows_read(batches) -> list[list[int]]:
    return [(batch[:, 0] * 255).round().int().tolist() for batch in batches]


class TestFeed:
    def test_batches_follow_the_permutation_from_the_step_given(self):
        order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
        feed = Feed(numbered(20), torch.device("cpu"))
        got = rows_read(feed.epoch(order, slice(0, 5), 5, 1, 4))
        assert got == [order[5 * s : 5 * s + 5].tolist() for s in (1, 2, 3)]

    def test_each_rank_reads_its_rows_of_every_batch_only(self):
        order = torch.randperm(12, generator=torch.Generator().manual_seed(2))
        feed = Feed(numbered(12), torch.device("cpu"))
        second_rank = rows_read(feed.epoch(order, slice(3, 6), 6, 0, 2))
        assert second_rank == [order[3:6].tolist(), order[9:12].tolist()]

    @pytest.mark.slow
    def test_workers_read_the_same_batches(self):
        order = torch.randperm(40, generator=torch.Generator().manual_seed(3))
        in_process = Feed(numbered(40), torch.device("cpu"))
        workers = Feed(numbered(40), torch.device("cpu"), workers=2)
        expected = rows_read(in_process.epoch(order, slice(0, 4), 4, 2, 10))
        assert rows_read(workers.epoch(order, slice(0, 4), 4, 2, 10)) == expected

    @pytest.mark.slow
    def test_the_workers_serve_every_epoch_after_a_stop_and_end_on_close(self):
        feed = Feed(numbered(40), torch.device("cpu"), workers=2).start()
        workers = [p for p in multiprocessing.active_children() if p.is_alive()]
        assert len(workers) == 2
        batches = feed.epoch(torch.arange(40), slice(0, 4), 4, 0, 10)
        next(batches)
        batches.close()  # stopped mid-epoch: the next epoch reads its own batches from the start
        order = torch.randperm(40, generator=torch.Generator().manual_seed(4))
        again = rows_read(feed.epoch(order, slice(0, 4), 4, 0, 10))
        assert again == [order[4 * s : 4 * s + 4].tolist() for s in range(10)]
        assert [p for p in multiprocessing.active_children() if p.is_alive()] == workers
        feed.close()
        assert not [p for p in multiprocessing.active_children() if p.is_alive()]

    @pytest.mark.slow
    def test_starting_workers_draws_nothing_from_the_runs_random_numbers(self):
        torch.manual_seed(5)
        expected = torch.rand(3)
        torch.manual_seed(5)
        feed = Feed(numbered(8), torch.device("cpu"), workers=1).start()
        try:
            assert torch.equal(torch.rand(3), expected)
        finally:
            feed.close()


class TestChoice:
    def test_auto_streams_mapped_images_the_page_cache_cannot_keep(self, tmp_path, monkeypatch):
        np.save(tmp_path / "x.npy", np.zeros((30, 4, 4), dtype=np.uint8))
        images = load_dataset(DataConfig(source=str(tmp_path / "x.npy"), test_split=5)).train_images
        cpu = torch.device("cpu")
        assert make_feed(images, cpu).workers == 0
        monkeypatch.setattr(loader_module, "total_memory", lambda: images.nbytes)
        assert make_feed(images, cpu).workers >= 1
        assert make_feed(images, cpu, "stream", workers=3).workers == 3
        assert make_feed(images, cpu, "memory").workers == 0
        in_memory = Images(torch.zeros((30, 1, 4, 4), dtype=torch.uint8))
        assert make_feed(in_memory, cpu).workers == 0

    def test_a_run_on_mapped_images_says_how_it_reads_them(self, tmp_path):
        np.save(tmp_path / "x.npy", np.zeros((40, 4, 4), dtype=np.uint8))
        lines: list[str] = []
        config = tiny_config(epochs=1)
        train(config, data=str(tmp_path / "x.npy"), log=lines.append)
        assert lines[1] == (
            f"data: 36 training images (576 bytes of uint8) mapped from {tmp_path / 'x.npy'}, "
            "read in this process"
        )

    @pytest.mark.slow
    def test_streaming_trains_the_same_run_as_reading_in_process(self, tmp_path):
        dataset = make_tiny_dataset()
        runs = {}
        for loader in ("memory", "stream"):
            config = tiny_config(epochs=2, data=DataConfig(loader=loader, workers=2))
            runs[loader] = train(config, dataset, run_dir=tmp_path / loader, log=None)
        memory, stream = runs["memory"], runs["stream"]
        assert [r.train_loss for r in memory.history] == [r.train_loss for r in stream.history]
        for name, value in memory.model.state_dict().items():
            assert torch.equal(value, stream.model.state_dict()[name])


class TestEarlierFingerprints:
    def test_a_run_that_recorded_the_float32_test_fingerprint_opens(self, tmp_path):
        dataset = make_tiny_dataset()
        train(tiny_config(epochs=1), dataset, run_dir=tmp_path / "r", log=None)
        digest = hashlib.sha256(dataset.test_images.tensor().numpy().tobytes())
        digest.update(dataset.test_labels.numpy().tobytes())
        config_path = tmp_path / "r" / rundir.CONFIG_FILE
        saved = json.loads(config_path.read_text())
        saved["dataset"]["test_sha256"] = digest.hexdigest()
        config_path.write_text(json.dumps(saved))
        assert open_run(tmp_path / "r", dataset=dataset).dataset.source == dataset.source
        saved["dataset"]["test_sha256"] = "0" * 64
        config_path.write_text(json.dumps(saved))
        with pytest.raises(Exception, match="are not those this run was tested on"):
            open_run(tmp_path / "r", dataset=dataset)

    def test_a_checkpoint_with_the_float32_data_fingerprint_resumes(self, tmp_path, monkeypatch):
        dataset = make_tiny_dataset()
        original = RunGuard.after_step

        def stop_at_third(self, epoch, progress):
            if progress.step == 3:
                signal.raise_signal(signal.SIGINT)
            return original(self, epoch, progress)

        monkeypatch.setattr(RunGuard, "after_step", stop_at_third)
        with pytest.raises(TrainingInterrupted):
            train(tiny_config(epochs=1), dataset, run_dir=tmp_path / "r", log=None)
        monkeypatch.undo()
        path = tmp_path / "r" / CHECKPOINT_FILE
        tensors, metadata = read_safetensors(path)
        meta = json.loads(metadata[METADATA_KEY])
        floats = hashlib.sha256()
        for images in (dataset.train_images, dataset.test_images):
            floats.update(images.tensor().numpy().tobytes())
        meta["identity"]["data"] = floats.hexdigest()
        from safetensors.torch import save_file

        save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
        train(tiny_config(epochs=1), dataset, run_dir=tmp_path / "r", resume=True, log=None)

    def test_how_data_is_read_is_not_part_of_a_runs_identity(self):
        dataset = make_tiny_dataset()
        config = tiny_config().to_dict()
        streamed = json.loads(json.dumps(config))
        streamed["data"].update(loader="stream", workers=3)
        images = (dataset.train_images, dataset.test_images)
        cpu = torch.device("cpu")
        assert run_identity(config, images, cpu, "32") == run_identity(streamed, images, cpu, "32")
        del config["data"]["loader"], config["data"]["workers"]  # a config of earlier versions
        assert run_identity(config, images, cpu, "32") == run_identity(streamed, images, cpu, "32")


class TestFingerprintInTheBackground:
    def test_a_checkpoint_of_the_start_does_not_wait_for_it_later_ones_do(self):
        from concurrent.futures import Future

        from vaelab.training.checkpoint import resolved_identity

        pending: Future[str] = Future()
        identity = {"config": "c", "data": pending}
        assert resolved_identity(identity, at_start=True)["data"] is None
        threading.Timer(0.05, pending.set_result, ("d",)).start()
        assert resolved_identity(identity, at_start=False)["data"] == "d"
        assert resolved_identity(identity, at_start=True)["data"] == "d"  # ready: recorded

    def test_the_hash_starts_when_asked_or_when_its_result_is(self):
        from vaelab.training.checkpoint import LaterFingerprint, fingerprint

        images = make_tiny_dataset().train_images
        later = LaterFingerprint(images)
        assert not later.done() and later.future is None
        assert later.result() == fingerprint(images) and later.done()
        started = LaterFingerprint(images)
        started.start()
        assert started.result() == fingerprint(images)

    def test_only_a_checkpoint_of_the_start_may_lack_it(self, tmp_path):
        from vaelab.errors import VaelabError
        from vaelab.training.checkpoint import compare_identity

        current = {"config": "c", "data": "d", "device": "cpu", "precision": "32", "threads": 2}
        saved = {**current, "data": None}
        assert compare_identity(tmp_path / "ckpt", saved, current, at_start=True) == []
        with pytest.raises(VaelabError, match="identity.data must be str"):
            compare_identity(tmp_path / "ckpt", saved, current, at_start=False)

    def test_a_run_writes_the_data_fingerprint_into_its_checkpoints(self, tmp_path):
        dataset = make_tiny_dataset()
        train(tiny_config(epochs=1), dataset, run_dir=tmp_path / "r", log=None)
        _, metadata = read_safetensors(tmp_path / "r" / CHECKPOINT_FILE)
        saved = json.loads(metadata[METADATA_KEY])["identity"]["data"]
        images = (dataset.train_images, dataset.test_images)
        expected = run_identity({}, images, torch.device("cpu"), "32")["data"]
        assert saved == expected
