"""CPU features and the opt-in MKL AVX-512 override."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import torch

from tests.helpers import run_python
from vaelab.config import ModelConfig, TrainConfig
from vaelab.models import VAE
from vaelab.training import cpu, epoch

AMD_ZEN4 = {
    "vendor_id": "AuthenticAMD",
    "flags": "sse avx2 avx512f avx512bw avx512dq avx512vl avx512_bf16",
}


def _pretend(monkeypatch, info: dict[str, str]) -> None:
    monkeypatch.setattr(cpu, "cpu_info", lambda: info)
    monkeypatch.setattr(cpu.sys, "platform", "linux")
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")


def test_native_bf16_follows_the_flags(monkeypatch):
    _pretend(monkeypatch, AMD_ZEN4)
    assert cpu.has_native_bf16()
    _pretend(monkeypatch, {"vendor_id": "GenuineIntel", "flags": "avx2 amx_bf16"})
    assert cpu.has_native_bf16()
    _pretend(monkeypatch, {"vendor_id": "AuthenticAMD", "flags": "avx2 avx512f"})
    assert not cpu.has_native_bf16()
    _pretend(monkeypatch, {})
    assert not cpu.has_native_bf16()


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"vendor_id": "GenuineIntel", "flags": AMD_ZEN4["flags"]}, "not an AMD CPU"),
        ({"vendor_id": "AuthenticAMD", "flags": "avx2 fma"}, "lacks AVX-512"),
        ({}, "not an AMD CPU"),
    ],
)
def test_the_override_says_why_it_does_not_apply(monkeypatch, info, reason):
    _pretend(monkeypatch, info)
    assert reason in cpu.mkl_override_blocker()


def test_the_override_applies_to_linux_x86_only(monkeypatch):
    _pretend(monkeypatch, AMD_ZEN4)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "aarch64")
    assert "x86-64 only" in cpu.mkl_override_blocker()


def test_without_the_opt_in_nothing_happens(monkeypatch):
    monkeypatch.delenv(cpu.OPT_IN, raising=False)
    monkeypatch.setattr(cpu.os, "execve", lambda *a: pytest.fail("must not re-exec"))
    cpu.maybe_reexec_with_mkl_override(["train"])


def test_a_blocked_override_prints_one_line_and_goes_on(monkeypatch):
    monkeypatch.setenv(cpu.OPT_IN, "1")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    _pretend(monkeypatch, {"vendor_id": "GenuineIntel", "flags": ""})
    monkeypatch.setattr(cpu.os, "execve", lambda *a: pytest.fail("must not re-exec"))
    lines: list[str] = []
    cpu.maybe_reexec_with_mkl_override(["train"], say=lines.append)
    assert len(lines) == 1 and "ignored: this CPU is not an AMD CPU" in lines[0]


def test_the_override_restarts_with_the_shim_preloaded(monkeypatch, tmp_path):
    monkeypatch.setenv(cpu.OPT_IN, "1")
    monkeypatch.setenv("LD_PRELOAD", "/other.so")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu, "mkl_override_blocker", lambda: None)
    monkeypatch.setattr(cpu, "build_shim", lambda: tmp_path / cpu._SHIM_NAME)
    calls = []
    monkeypatch.setattr(cpu.os, "execve", lambda *args: calls.append(args))
    cpu.maybe_reexec_with_mkl_override(["train", "--epochs", "1"])
    ((program, argv, env),) = calls
    assert program == sys.executable and argv[1:] == ["-m", "vaelab", "train", "--epochs", "1"]
    assert env["LD_PRELOAD"] == f"{tmp_path / cpu._SHIM_NAME} /other.so"


def test_without_the_shim_the_override_is_not_active():
    if cpu._SHIM_NAME in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("this test process runs with the shim preloaded")
    assert not cpu.mkl_override_active()


@pytest.mark.slow
@pytest.mark.skipif(cpu.mkl_override_blocker() is not None, reason="needs AMD + AVX-512 + MKL")
def test_on_this_cpu_the_shim_builds_and_mkl_runs_with_it(tmp_path):
    """A real re-exec: the child sees the shim preloaded and torch's matmul still agrees."""
    child = tmp_path / "child.py"
    child.write_text(
        textwrap.dedent(
            """
            import os, torch
            torch.manual_seed(0)
            a, b = torch.randn(300, 200, dtype=torch.float64), torch.randn(200, 100)
            exact = a @ b.double()
            assert torch.allclose(a.float() @ b, exact.float(), atol=1e-3)
            from vaelab.models import products
            assert not products.onednn_beats_blas_fp32()  # so fp32 products stay with MKL
            assert not products.uses_onednn(torch.randn(200, 784), torch.randn(400, 784), True)
            print(os.environ["LD_PRELOAD"])
            """
        )
    )
    parent = (
        "import sys; from vaelab.training.cpu import maybe_reexec_with_mkl_override as m; "
        f"m([], program=[{str(child)!r}]); print('not re-executed')"
    )
    env = {cpu.OPT_IN: "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "LD_PRELOAD": None}
    done = run_python(parent, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(cpu._SHIM_NAME), done.stdout + done.stderr
    assert (tmp_path / "cache" / "vaelab" / cpu._SHIM_NAME).exists()


def test_subnormals_are_flushed_on_every_intra_op_thread_inside_the_block_only(two_torch_threads):
    tiny = torch.full((1 << 20,), 1e-39)  # subnormal in fp32; the product splits over threads
    with cpu.subnormals_flushed() as flushed:
        if not flushed:
            pytest.skip("this CPU does not flush subnormals")
        inside = tiny * 1.0
    after = tiny * 1.0
    assert torch.count_nonzero(inside) == 0
    assert torch.equal(after, tiny)


def test_a_training_epoch_flushes_subnormals(two_torch_threads, monkeypatch):
    seen = []
    original = epoch.training_step

    def step(*args, **kwargs):
        seen.append(torch.count_nonzero(torch.full((1 << 20,), 1e-39) * 1.0).item())
        return original(*args, **kwargs)

    monkeypatch.setattr(epoch, "training_step", step)
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_dim=16, hidden=(8,), latent_dim=2))
    config = TrainConfig(batch_size=4, epochs=1)
    optimizer = epoch.make_optimizer(model, config)
    scheduler = epoch.make_scheduler(optimizer, config, 2)
    images = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    epoch.train_epoch(model, optimizer, scheduler, images, config, torch.Generator().manual_seed(1))
    if torch.set_flush_denormal(False):
        assert seen == [0, 0]


def test_the_last_level_cache_is_the_largest_size_sysfs_lists(tmp_path):
    for index, size in enumerate(["48K", "2048K", "491520K", "garbage"]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "size").write_text(size + "\n")
    (tmp_path / "index4").mkdir()  # no size file
    assert cpu.last_level_cache_bytes(tmp_path) == 491520 << 10
    assert cpu.last_level_cache_bytes(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("cache", "block"),
    [(None, 4 << 20), (1 << 20, 4 << 20), (64 << 20, 8 << 20), (1 << 30, 32 << 20)],
)
def test_iwae_blocks_take_an_eighth_of_the_last_level_cache_within_bounds(
    monkeypatch, cache, block
):
    from vaelab import evaluation

    monkeypatch.setattr(cpu, "last_level_cache_bytes", lambda: cache)
    assert evaluation._block_bytes() == block
