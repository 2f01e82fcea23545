"""Training and test-pass speed of vaelab against a plain PyTorch loop and the machine's GEMM peak.

In one process, alternately, it times an epoch of
  (ref)  the loop a typical user writes: TensorDataset + DataLoader(shuffle=True) + nn.Sequential
         + torch.optim.Adam, batch 200, fp32;
  (32)   vaelab's training loop in fp32;
  (bf16) vaelab's training loop with bf16 matrix products (weights and Adam in fp32),
then a test pass over the 10,000 test images each way. It measures the peak of the model's own
GEMM shapes (fp32 through MKL and through oneDNN, bf16 through oneDNN), the peak RSS of a
`vaelab train` subprocess, and writes a JSON record to benchmarks/results/.

    python benchmarks/bench_train.py                 # 5 alternating epochs each, RSS of 60 epochs
    python benchmarks/bench_train.py --epochs 2 --rss-epochs 0 --subset 6000   # a quick look
    VAELAB_MKL_AVX512=1 python benchmarks/bench_train.py    # with MKL's AVX-512 path on AMD
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from records import RESULTS_DIR, write_record
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaelab
from vaelab.config import ModelConfig, TrainConfig
from vaelab.data import load_fashion_mnist
from vaelab.evaluation import evaluate
from vaelab.models import VAE
from vaelab.training.cpu import cpu_flags, cpu_info, has_native_bf16, maybe_reexec_with_mkl_override
from vaelab.training.distributed import SINGLE_PROCESS, resolve_device
from vaelab.training.epoch import make_objective, make_optimizer, make_scheduler, train_epoch

BATCH = 200


class ReferenceVAE(nn.Module):
    """The tutorial's model as a user writes it from the PyTorch VAE example."""

    def __init__(self, sizes: tuple[int, ...] = (784, 400, 200, 100, 20), latent: int = 2) -> None:
        super().__init__()
        self.encoder = _sequential(sizes)
        self.fc_mu = nn.Linear(sizes[-1], latent)
        self.fc_logvar = nn.Linear(sizes[-1], latent)
        self.decoder = nn.Sequential(
            _sequential((latent, *reversed(sizes[1:]))), nn.Linear(sizes[1], sizes[0]), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def _sequential(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


def reference_loss(recon, x, mu, logvar):
    mse = ((recon - x) ** 2).sum() / (2 * x.shape[0])
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    return mse + kld


def reference_epoch(model, optimizer, loader, device) -> None:
    model.train()
    for (x,) in loader:
        x = x.to(device)
        recon, mu, logvar = model(x)
        loss = reference_loss(recon, x, mu, logvar)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def reference_test(model, loader, device) -> float:
    model.eval()
    total = 0.0
    for (x,) in loader:
        x = x.to(device)
        recon, mu, logvar = model(x)
        total += reference_loss(recon, x, mu, logvar).item() * len(x)
    return total


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def layer_shapes(model_config: ModelConfig) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every dense layer of the tutorial's MLP."""
    hidden = list(model_config.hidden)
    encoder = [model_config.input_dim, *hidden]
    decoder = [model_config.latent_dim, *reversed(hidden), model_config.input_dim]
    pairs = list(zip(encoder[:-1], encoder[1:])) + [(hidden[-1], model_config.latent_dim)] * 2
    return pairs + list(zip(decoder[:-1], decoder[1:]))


def flops_per_image(model_config: ModelConfig) -> int:
    """Forward multiply-adds of the dense layers, times 2 FLOPs each."""
    return sum(2 * fan_in * fan_out for fan_in, fan_out in layer_shapes(model_config))


def gemm_peak(
    model_config: ModelConfig, route: str, device: torch.device, repeats: int = 50
) -> float:
    """GFLOP/s of one training step's matrix products (forward, grad-input, grad-weight of each
    layer at batch 200) through `route`: 'fp32-mkl' (torch's default CPU route), 'fp32-onednn',
    'fp32' (CUDA) or 'bf16'."""
    dtype = torch.bfloat16 if route == "bf16" else torch.float32
    operands = []
    for fan_in, fan_out in layer_shapes(model_config):
        x = torch.randn(BATCH, fan_in, dtype=dtype, device=device)
        w = torch.randn(fan_out, fan_in, dtype=dtype, device=device)
        g = torch.randn(BATCH, fan_out, dtype=dtype, device=device)
        operands.append((x, w, g, w.t().contiguous(), g.t().contiguous(), x.t().contiguous()))
    if route == "fp32-onednn":
        linear = torch.ops.mkldnn._linear_pointwise

        def step() -> None:
            for x, w, g, w_t, g_t, x_t in operands:
                linear(x, w, None, "none", [], "")
                linear(g, w_t, None, "none", [], "")
                linear(g_t, x_t, None, "none", [], "")
    else:

        def step() -> None:
            for x, w, g, _w_t, g_t, _x_t in operands:
                x @ w.t()
                g @ w
                g_t @ x

    for _ in range(10):
        step()
    best = min(timed(lambda: [step() for _ in range(repeats)], device) for _ in range(5))
    return 3 * flops_per_image(model_config) * BATCH * repeats / best / 1e9


def measured_peaks(model_config: ModelConfig, device: torch.device) -> dict[str, float]:
    routes = ["fp32-mkl", "bf16"] if device.type == "cpu" else ["fp32", "bf16"]
    if device.type == "cpu" and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        routes.insert(1, "fp32-onednn")
    peaks = {}
    for route in routes:
        try:
            peaks[route] = gemm_peak(model_config, route, device)
        except (RuntimeError, NotImplementedError) as exc:
            print(f"  {route}: not available ({str(exc).splitlines()[0]})")
    return peaks


def peak_rss_of_training(epochs: int, precision: str) -> dict[str, float]:
    """Run `vaelab train` in a subprocess; its peak RSS (MB) and wall time."""
    runs = Path(os.environ.get("TMPDIR", "/tmp")) / "vaelab-bench-runs"
    command = [
        sys.executable, "-m", "vaelab", "train", "--epochs", str(epochs), "--name", "rss",
        "--runs-dir", str(runs), "--overwrite", "--precision", precision, "--no-plots",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"epochs": epochs, "precision": precision, "peak_rss_mb": rss_mb, "wall_s": wall}


def summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def machine() -> dict[str, object]:
    flags = cpu_flags()
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return {
        "cpu": cpu_info().get("model name", platform.processor()),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": [flag for flag in wanted if flag in flags],
        "torch": torch.__version__,
        "vaelab": vaelab.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each loop")
    parser.add_argument("--subset", type=int, default=60000, help="training images per epoch")
    parser.add_argument("--rss-epochs", type=int, default=60, help="0 skips the RSS run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    maybe_reexec_with_mkl_override(sys.argv[1:], program=[__file__])

    device = resolve_device(args.device)
    data = load_fashion_mnist()
    train_x = data.train_images[: args.subset]
    test_x = data.test_images
    model_config = ModelConfig()
    steps = len(train_x) // BATCH
    epoch_gflop = 3 * flops_per_image(model_config) * steps * BATCH / 1e9
    info = machine()
    print(f"machine: {json.dumps(info)}")
    print(f"device {device}; one epoch = {steps} steps = {epoch_gflop:.0f} GFLOP")

    peaks = measured_peaks(model_config, device)
    for route, value in peaks.items():
        print(f"  GEMM peak {route:12s} {value:7.0f} GFLOP/s (this model's shapes, batch {BATCH})")

    torch.manual_seed(0)
    reference = ReferenceVAE().to(device)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    ref_loader = DataLoader(TensorDataset(train_x), batch_size=BATCH, shuffle=True)
    ref_test_loader = DataLoader(TensorDataset(test_x), batch_size=1000)

    train_config = replace(TrainConfig(), epochs=max(args.epochs, 1))
    loops = {}
    for precision in ("32", "bf16-mixed"):
        model = VAE(model_config).to(device)
        optimizer = make_optimizer(model, train_config)
        loops[precision] = (
            model,
            optimizer,
            make_scheduler(optimizer, train_config, steps),
            torch.Generator(device=device).manual_seed(0),
            make_objective(model, SINGLE_PROCESS, precision),  # as vaelab train makes it
        )
    images = train_x.to(device)
    test_images = test_x.to(device)

    def run_vaelab(precision: str) -> None:
        model, optimizer, scheduler, generator, objective = loops[precision]
        train_epoch(
            model, optimizer, scheduler, images, train_config, generator, precision,
            objective=objective,
        )  # fmt: skip

    def test_vaelab(precision: str) -> None:
        evaluate(loops[precision][0], test_images, 1000)

    names = ["ref", "32", "bf16-mixed"]
    train_times: dict[str, list[float]] = {name: [] for name in names}
    test_times: dict[str, list[float]] = {name: [] for name in names}
    # One untimed warm-up epoch each, then alternate so that drifts hit every loop alike.
    for timed_round in range(args.epochs + 1):
        for name in names:
            if name == "ref":
                seconds = timed(
                    lambda: reference_epoch(reference, ref_optimizer, ref_loader, device), device
                )
                test_s = timed(lambda: reference_test(reference, ref_test_loader, device), device)
            else:
                seconds = timed(lambda n=name: run_vaelab(n), device)
                test_s = timed(lambda n=name: test_vaelab(n), device)
            if timed_round:
                train_times[name].append(seconds)
                test_times[name].append(test_s)
        if timed_round:
            ratios = (train_times[n][-1] / train_times["ref"][-1] for n in names[1:])
            print(
                f"  round {timed_round}: "
                + ", ".join(f"{n} {train_times[n][-1]:.2f}s" for n in names)
                + " (vs ref: "
                + ", ".join(f"{n} {r:.2f}x" for n, r in zip(names[1:], ratios))
                + ")"
            )

    rows = {}
    for name in names:
        stats = summary(train_times[name])
        ratios = [t / r for t, r in zip(train_times[name], train_times["ref"])]
        test_ratios = [t / r for t, r in zip(test_times[name], test_times["ref"])]
        gflops = epoch_gflop / stats["median"]
        rows[name] = {
            "train_epoch_s": stats,
            "ratio_to_ref_per_pair": ratios,
            "ratio_to_ref_median": statistics.median(ratios),
            "gflops": gflops,
            "test_pass_s": summary(test_times[name]),
            "test_ratio_to_ref_median": statistics.median(test_ratios),
        }
    fp32_peak = max((v for k, v in peaks.items() if k.startswith("fp32")), default=None)
    bf16_peak = peaks.get("bf16")
    print()
    print(
        "| loop | s/epoch median (min-max) | vs reference | GFLOP/s | of GEMM peak "
        "| test pass s median (min-max) | vs reference |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        row = rows[name]
        stats, test = row["train_epoch_s"], row["test_pass_s"]
        peak = bf16_peak if name == "bf16-mixed" else fp32_peak
        fraction = f"{row['gflops'] / peak:.0%}" if peak else "-"
        print(
            f"| {name} | {stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f}) | "
            f"{row['ratio_to_ref_median']:.2f}x | {row['gflops']:.0f} | {fraction} | "
            f"{test['median']:.3f} ({test['min']:.3f}-{test['max']:.3f}) | "
            f"{row['test_ratio_to_ref_median']:.2f}x |"
        )

    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": str(device),
        "machine": info,
        "subset": len(train_x),
        "epoch_gflop": epoch_gflop,
        "gemm_peak_gflops": peaks,
        "loops": rows,
        "native_bf16": has_native_bf16(),
        "mkl_avx512_override": "mkl_avx512" in os.environ.get("LD_PRELOAD", ""),
    }
    if args.rss_epochs > 0:
        for precision in ("auto",):
            rss = peak_rss_of_training(args.rss_epochs, precision)
            print(
                f"peak RSS of `vaelab train --epochs {args.rss_epochs}`: "
                f"{rss['peak_rss_mb']:.0f} MB "
                f"(wall {rss['wall_s']:.0f}s)"
            )
            record["train_rss"] = rss
    write_record(record, f"train-{device.type}", args.out)


if __name__ == "__main__":
    main()
