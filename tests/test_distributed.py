"""torchrun + DDP (gloo, CPU): two ranks follow a single process, resume, and fail loudly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import finish, start_vaelab, synthetic_images, write_idx
from vaelab.errors import VaelabError
from vaelab.training.distributed import (
    SINGLE_PROCESS,
    World,
    check_divisible,
    init_world,
    local_rows,
    rank_device,
)

TINY_MODEL = ["--hidden", "32,16", "--latent-dim", "2", "--precision", "32", "--no-plots"]


def test_ranks_take_contiguous_equal_shares_of_a_batch():
    shares = [local_rows(12, World(rank=r, size=3)) for r in range(3)]
    assert shares == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert local_rows(12, SINGLE_PROCESS) == slice(0, 12)


def test_a_batch_that_does_not_divide_among_ranks_is_refused():
    check_divisible(12, World(rank=0, size=3))
    with pytest.raises(VaelabError, match="must divide evenly among 5 ranks"):
        check_divisible(12, World(rank=0, size=5))


def test_without_torchrun_the_world_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_world(torch.device("cpu")) is SINGLE_PROCESS
    assert not SINGLE_PROCESS.distributed and SINGLE_PROCESS.is_main


def test_each_rank_trains_on_its_local_gpu_and_cpu_ranks_stay_on_the_cpu():
    assert rank_device(torch.device("cuda"), World(rank=3, size=4, local_rank=1)) == torch.device(
        "cuda", 1
    )
    assert rank_device(torch.device("cpu"), World(rank=1, size=2, local_rank=1)).type == "cpu"


@pytest.mark.parametrize("device, backend", [("cuda", "nccl"), ("cpu", "gloo")])
def test_torchrun_ranks_join_with_nccl_on_gpus_and_gloo_on_cpus(monkeypatch, device, backend):
    import vaelab.training.distributed as distributed

    joined, gpus = [], []
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda name, timeout: joined.append((name, timeout))
    )
    monkeypatch.setattr(distributed.torch.cuda, "set_device", gpus.append)
    world = init_world(torch.device(device), timeout_s=42)
    assert world == World(rank=3, size=4, local_rank=1)
    assert [(name, timeout.total_seconds()) for name, timeout in joined] == [(backend, 42)]
    assert gpus == ([1] if device == "cuda" else [])


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    """A small 8x8 dataset in the four Fashion-MNIST IDX files."""
    folder = tmp_path_factory.mktemp("idx")
    train_x, train_y = synthetic_images(800, side=8, seed=3)
    test_x, test_y = synthetic_images(100, side=8, seed=4)
    write_idx(folder / "train-images-idx3-ubyte", train_x)
    write_idx(folder / "train-labels-idx1-ubyte", train_y)
    write_idx(folder / "t10k-images-idx3-ubyte", test_x)
    write_idx(folder / "t10k-labels-idx1-ubyte", test_y)
    return folder


# One thread per rank, and no torchrun variables inherited from a surrounding job.
ENV = {"OMP_NUM_THREADS": "1", "RANK": None, "WORLD_SIZE": None, "LOCAL_RANK": None}


def _vaelab(args: list[str], ranks: int = 1, **popen) -> subprocess.Popen:
    return start_vaelab(*args, env=ENV, ranks=ranks, **popen)


def _run(args: list[str], ranks: int = 1) -> subprocess.CompletedProcess:
    done = finish(_vaelab(args, ranks), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _train_args(idx_dir: Path, runs: Path, name: str, epochs: int = 2) -> list[str]:
    return [
        "train", "--data-dir", str(idx_dir), "--runs-dir", str(runs), "--name", name,
        "--epochs", str(epochs), "--batch-size", "40", *TINY_MODEL,
    ]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def _assert_close(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batch(idx_dir, tmp_path):
    _run(_train_args(idx_dir, tmp_path, "single"))
    two = _run(_train_args(idx_dir, tmp_path, "ddp"), ranks=2)
    _assert_close(_weights(tmp_path / "single"), _weights(tmp_path / "ddp"))
    single_metrics = (tmp_path / "single" / "metrics.csv").read_text().splitlines()
    ddp_metrics = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    assert len(single_metrics) == len(ddp_metrics) == 3
    assert two.stdout.count("epoch 01 - ") == 1, "only rank 0 prints"
    assert "2 ranks" in two.stdout


def _wait_for_the_first_epoch(run: Path, process: subprocess.Popen) -> None:
    """Until `run` has its metrics.csv; fails when the job ends first or takes over 120 s."""
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{run}: no epoch done within 120 s"
        time.sleep(0.05)


def _stopped_two_rank_run(idx_dir: Path, runs: Path, name: str, epochs: int) -> Path:
    """Start a 2-rank run, SIGTERM it once epoch 1 is written; returns the run directory."""
    run = runs / name
    process = _vaelab(
        [*_train_args(idx_dir, runs, name, epochs), "--checkpoint-every", "3"],
        ranks=2, start_new_session=True,
    )  # fmt: skip
    _wait_for_the_first_epoch(run, process)
    os.killpg(process.pid, signal.SIGTERM)
    err = finish(process, timeout=120).stderr
    assert process.returncode != 0, "the run ended before it could be stopped"
    assert "resume with: vaelab train --resume" in err, err[-3000:]
    assert (run / "metrics.csv").read_text().count("\n") - 1 < epochs
    return run


@pytest.mark.slow
def test_a_stopped_two_rank_run_resumes_to_the_uninterrupted_result(idx_dir, tmp_path):
    _run(_train_args(idx_dir, tmp_path, "whole", epochs=6), ranks=2)
    run = _stopped_two_rank_run(idx_dir, tmp_path, "cut", epochs=6)
    _run(["train", "--resume", str(run)], ranks=2)
    _assert_close(_weights(tmp_path / "whole"), _weights(run))
    assert (run / "metrics.csv").read_text().count("\n") - 1 == 6


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(idx_dir, tmp_path):
    _run(_train_args(idx_dir, tmp_path, "whole", epochs=6))
    run = _stopped_two_rank_run(idx_dir, tmp_path, "cut", epochs=6)
    _run(["train", "--resume", str(run)])
    _assert_close(_weights(tmp_path / "whole"), _weights(run))


def _worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun started under `parent`."""
    workers = {}
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"RANK="):
                workers[int(entry[5:])] = int(child)
    return workers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_killed_rank_stops_the_job_and_the_checkpoint_still_resumes(idx_dir, tmp_path):
    run = tmp_path / "killed"
    args = [*_train_args(idx_dir, tmp_path, "killed", epochs=6), "--dist-timeout", "20"]
    process = _vaelab(args, ranks=2)
    _wait_for_the_first_epoch(run, process)
    os.kill(_worker_pids(process.pid)[1], signal.SIGKILL)
    err = finish(process, timeout=90).stderr  # a job that hangs after a rank died fails here
    assert process.returncode != 0
    assert "rank 1" in err or "lost contact with the other ranks" in err, err[-3000:]
    _run(["train", "--resume", str(run)], ranks=2)
    assert (run / "metrics.csv").read_text().count("\n") - 1 == 6
