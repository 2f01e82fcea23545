"""Training and test-pass speed of vaelab against a plain PyTorch loop and the machine's GEMM peak.

In one process, alternately, it times an epoch of
  (ref)  the loop a typical user writes: TensorDataset + DataLoader(shuffle=True) + nn.Sequential
         + torch.optim.Adam, batch 200, fp32;
  (32)   vaelab's training loop in fp32;
  (bf16) vaelab's training loop with bf16 matrix products (weights and Adam in fp32),
then a test pass over the 10,000 test images each way. Before each round it measures the peak
of the model's own GEMM shapes (fp32 through MKL and through oneDNN, bf16 through oneDNN), so
that each epoch's fraction of the floor is taken against the machine's speed of that minute (a
shared VM's drifts by up to 2x within an hour). It measures the peak RSS of a `vaelab train`
subprocess, and writes a JSON record to benchmarks/results/.

    python benchmarks/bench_train.py                 # 5 alternating epochs each, RSS of 60 epochs
    python benchmarks/bench_train.py --epochs 2 --rss-epochs 0 --subset 6000   # a quick look
    VAELAB_MKL_AVX512=1 python benchmarks/bench_train.py    # with MKL's AVX-512 path on AMD
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


# The child reports its own peak, VmHWM of /proc/self/status (Linux): getrusage's ru_maxrss,
# for the child or of it, keeps the peak of this (large) process, whose pages a forked child
# holds until it execs.
_RSS_RUNNER = """
import atexit, re, sys
def report():
    status = open("/proc/self/status").read()
    print("peak_rss_kb", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
atexit.register(report)
from vaelab.cli import main
main(sys.argv[1:])
"""


def peak_rss_of_training(epochs: int, precision: str) -> dict[str, float]:
    """Run `vaelab train` in a subprocess; its peak RSS (MB) and wall time."""
    runs = Path(os.environ.get("TMPDIR", "/tmp")) / "vaelab-bench-runs"
    command = [
        sys.executable, "-c", _RSS_RUNNER, "train", "--epochs", str(epochs), "--name", "rss",
        "--runs-dir", str(runs), "--overwrite", "--precision", precision, "--no-plots",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)  # fmt: skip
    wall = time.perf_counter() - started
    peak_kb = next(int(line.split()[1]) for line in done.stderr.splitlines()
                   if line.startswith("peak_rss_kb"))  # fmt: skip
    return {"epochs": epochs, "precision": precision, "peak_rss_mb": peak_kb / 1024, "wall_s": wall}


def summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def machine() -> dict[str, object]:
    flags = cpu_flags()
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_vp2intersect", "amx_bf16", "amx_tile"]
    info = cpu_info()
    return {
        "cpu": info.get("model name", platform.processor()),
        # a VM's model name can hide the generation (AMD family 25 is Zen 3/4, 26 Zen 5)
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": [flag for flag in wanted if flag in flags],
        "torch": torch.__version__,
        "vaelab": vaelab.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def jax_epoch(train_x: torch.Tensor) -> tuple[Callable[[], float] | None, dict[str, object]]:
    """The JAX loop's epoch (compiled here, once) and what to record of it; None without jax."""
    from jax_loop import JaxLoop, available

    missing = available()
    if missing is not None:
        print(f"  jax loop skipped: {missing}")
        return None, {"skipped": missing}
    loop = JaxLoop(train_x.numpy(), seed=0, batch=BATCH)
    first_loss = loop.run_epoch()
    return loop.run_epoch, {"compile_s": loop.compile_seconds, "first_epoch_loss": first_loss}


def epoch_gflop(model_config: ModelConfig, steps: int) -> float:
    """GFLOP of an epoch's matrix products: forward and both backward products of every layer."""
    return 3 * flops_per_image(model_config) * steps * BATCH / 1e9


def peak_for(peaks: dict[str, float], loop: str) -> float | None:
    """The GEMM peak a loop's floor is taken at: bf16's for bf16-mixed, the best fp32 route's
    for the others."""
    if loop == "bf16-mixed":
        return peaks.get("bf16")
    return max((v for k, v in peaks.items() if k.startswith("fp32")), default=None)


def floor_fraction(
    gflop: float, seconds: float, peaks: dict[str, float], loop: str
) -> float | None:
    """The time `gflop` takes at the GEMM peak that applies to `loop`, over its `seconds`."""
    peak = peak_for(peaks, loop)
    return gflop / peak / seconds if peak else None


def training_rows(
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    device: torch.device,
    epochs: int,
    use_jax: bool,
    measure_peaks: Callable[[], dict[str, float]],
) -> tuple[dict[str, dict], dict[str, object]]:
    """Alternating epochs of the plain loop, the JAX loop and vaelab in fp32 and bf16-mixed, each
    round after a measurement of the GEMM peaks (a shared VM's speed drifts within minutes); per
    loop its times, ratios to the plain loop and fractions of that round's floor, last epoch's
    loss and test pass; the rounds' peaks under extra['round_peaks']."""
    model_config = ModelConfig()
    steps = len(train_x) // BATCH
    torch.manual_seed(0)
    reference = ReferenceVAE().to(device)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    ref_loader = DataLoader(TensorDataset(train_x), batch_size=BATCH, shuffle=True)
    ref_test_loader = DataLoader(TensorDataset(test_x), batch_size=1000)

    train_config = replace(TrainConfig(), epochs=max(epochs, 1) + 1)
    images, test_images = train_x.to(device), test_x.to(device)
    losses: dict[str, float] = {}

    def vaelab_loop(
        precision: str, name: str | None = None, config: TrainConfig = train_config
    ) -> tuple[Callable[[], object], Callable[[], object]]:
        torch.manual_seed(0)
        model = VAE(model_config).to(device)
        objective = make_objective(model, SINGLE_PROCESS, precision, config)  # as train()
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config, steps)
        generator = torch.Generator(device=device).manual_seed(0)

        def epoch() -> None:
            losses[name or precision] = train_epoch(
                model, optimizer, scheduler, images, config, generator, precision,
                objective=objective,
            )[0]  # fmt: skip

        return epoch, lambda: evaluate(model, test_images, 1000)

    loops: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "plain": (
            lambda: reference_epoch(reference, ref_optimizer, ref_loader, device),
            lambda: reference_test(reference, ref_test_loader, device),
        ),
    }
    extra: dict[str, object] = {}
    if use_jax and device.type == "cpu":
        epoch, extra["jax"] = jax_epoch(train_x)
        if epoch is not None:

            def jax_train(run: Callable[[], float] = epoch) -> None:
                losses["jax"] = run()

            loops["jax"] = (jax_train, None)
    loops["32"] = vaelab_loop("32")
    if device.type == "cuda":
        graphs = replace(train_config, cuda_graphs=True)
        loops["32-cuda-graphs"] = vaelab_loop("32", "32-cuda-graphs", graphs)
    if device.type == "cuda" or has_native_bf16():
        loops["bf16-mixed"] = vaelab_loop("bf16-mixed")

    train_times: dict[str, list[float]] = {name: [] for name in loops}
    test_times: dict[str, list[float]] = {name: [] for name in loops}
    round_peaks: list[dict[str, float]] = []
    # One untimed warm-up epoch each, then alternate so that drifts hit every loop alike.
    for timed_round in range(epochs + 1):
        if timed_round:
            round_peaks.append(measure_peaks())
        for name, (train_once, test_once) in loops.items():
            seconds = timed(train_once, device)
            test_s = timed(test_once, device) if test_once is not None else None
            if timed_round:
                train_times[name].append(seconds)
                if test_s is not None:
                    test_times[name].append(test_s)
        if timed_round:
            peaks = ", ".join(f"{k} {v:.0f}" for k, v in round_peaks[-1].items())
            print(f"  round {timed_round} (GEMM peaks {peaks} GFLOP/s): " + ", ".join(
                f"{n} {t[-1]:.2f}s ({t[-1] / train_times['plain'][-1]:.2f}x)"
                for n, t in train_times.items()
            ))  # fmt: skip
    gflop = epoch_gflop(model_config, steps)
    rows = {}
    for name in loops:
        ratios = [t / r for t, r in zip(train_times[name], train_times["plain"])]
        rows[name] = {
            "train_epoch_s": summary(train_times[name]),
            "ratio_to_ref_per_pair": ratios,
            "ratio_to_ref_median": statistics.median(ratios),
            "last_epoch_train_loss": losses.get(name),
        }
        fractions = [floor_fraction(gflop, t, peaks, name)
                     for t, peaks in zip(train_times[name], round_peaks)]  # fmt: skip
        if all(f is not None for f in fractions):
            rows[name]["floor_fraction_per_round"] = fractions
            rows[name]["floor_fraction_median"] = statistics.median(fractions)  # type: ignore[type-var]
        if test_times[name]:
            test_ratios = [t / r for t, r in zip(test_times[name], test_times["plain"])]
            rows[name]["test_pass_s"] = summary(test_times[name])
            rows[name]["test_ratio_to_ref_median"] = statistics.median(test_ratios)
    extra["round_peaks"] = round_peaks
    return rows, extra


ROW_NAMES = {
    "plain": "plain PyTorch loop, fp32",
    "jax": "JAX, whole epoch jitted, fp32",
    "32": "vaelab, fp32",
    "32-cuda-graphs": "vaelab, fp32, the step replayed from a CUDA graph",
    "bf16-mixed": "vaelab, bf16-mixed",
}


def print_speed_table(record: dict) -> None:
    """The one table of every speed figure of this run, as markdown."""
    peaks = record["gemm_peak_gflops"]
    fp32_peak, bf16_peak = peak_for(peaks, "32"), peak_for(peaks, "bf16-mixed")
    gflop = record["epoch_gflop"]
    print()
    print("| what | s per epoch (median, min-max) | vs plain loop | GFLOP/s | of the GEMM floor |")
    print("|---|---|---|---|---|")
    for name, row in record["loops"].items():
        stats = row["train_epoch_s"]
        rate = gflop / stats["median"]
        fraction = row.get("floor_fraction_median")
        floor = f"{fraction:.0%}" if fraction is not None else "-"
        print(
            f"| {ROW_NAMES[name]} | {stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"
            f" | {row['ratio_to_ref_median']:.2f}x | {rate:.0f} | {floor} |"
        )
    for name, row in record.get("conv", {}).items():
        stats = row["train_epoch_s"]
        label = "plain PyTorch conv loop, fp32" if name == "ref" else f"vaelab --arch conv, {name}"
        print(
            f"| {label} ({record['conv_subset']} images) | {stats['median']:.2f} "
            f"({stats['min']:.2f}-{stats['max']:.2f}) | {row['ratio_to_ref_median']:.2f}x | - | - |"
        )
    iwae = record.get("iwae", {}).get("fast")
    if iwae:
        print(
            f"| IWAE k={iwae['k']}, {iwae['images']} test images | {iwae['seconds']:.1f} s in all "
            f"({1000 * iwae['seconds_per_image']:.1f} ms per image) | - | "
            f"{iwae['decoder_gflops']:.0f} | {iwae['fraction_of_peak']:.0%} of its shapes' "
            f"{iwae['peak_route']} peak, {iwae['peak_gflops']:.0f} GFLOP/s |"
        )
    rss = record.get("train_rss")
    if rss:
        print(f"| peak RSS, `vaelab train --epochs {rss['epochs']}` | {rss['peak_rss_mb']:.0f} MB "
              f"| - | - | - |")  # fmt: skip
    print()
    print(
        "GEMM peaks on this model's shapes (batch 200), medians of the rounds' measurements: "
        + ", ".join(f"{route} {value:.0f} GFLOP/s" for route, value in peaks.items())
        + f"; one epoch = {gflop:.0f} GFLOP, so the floor is "
        + (f"{gflop / fp32_peak:.2f} s fp32" if fp32_peak else "-")
        + (f", {gflop / bf16_peak:.2f} s bf16" if bf16_peak else "")
        + "."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each loop")
    parser.add_argument("--subset", type=int, default=60000, help="training images per epoch")
    parser.add_argument("--rss-epochs", type=int, default=60, help="0 skips the RSS run")
    parser.add_argument("--no-jax", action="store_true", help="leave out the JAX loop")
    parser.add_argument("--conv-epochs", type=int, default=2, help="0 skips the conv loops")
    parser.add_argument("--conv-subset", type=int, default=12000)
    parser.add_argument("--iwae-images", type=int, default=1000, help="0 skips IWAE")
    parser.add_argument("--iwae-k", type=int, default=5000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    maybe_reexec_with_mkl_override(sys.argv[1:], program=[__file__])

    device = resolve_device(args.device)
    data = load_fashion_mnist()
    train_x = data.train_images[: args.subset]
    model_config = ModelConfig()
    steps = len(train_x) // BATCH
    gflop = epoch_gflop(model_config, steps)
    info = machine()
    print(f"machine: {json.dumps(info)}")
    print(f"device {device}; one epoch = {steps} steps = {gflop:.0f} GFLOP")

    rows, extra = training_rows(
        train_x, data.test_images.tensor(), device, args.epochs, not args.no_jax,
        lambda: measured_peaks(model_config, device),
    )  # fmt: skip
    round_peaks = extra["round_peaks"]
    assert isinstance(round_peaks, list)
    peaks = {route: statistics.median(p[route] for p in round_peaks) for route in round_peaks[0]}
    record: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": str(device),
        "machine": info,
        "subset": len(train_x),
        "epoch_gflop": gflop,
        "gemm_peak_gflops": peaks,
        "loops": rows,
        **extra,
        "native_bf16": has_native_bf16(),
        "mkl_avx512_override": "mkl_avx512" in os.environ.get("LD_PRELOAD", ""),
    }
    threads = torch.get_num_threads()
    if args.conv_epochs > 0:
        from bench_conv import conv_rows

        print(f"conv model, {args.conv_subset} images per epoch:")
        record["conv"] = conv_rows(args.conv_epochs, args.conv_subset, threads, str(device))
        record["conv_subset"] = args.conv_subset
    if args.iwae_images > 0:
        from bench_iwae import iwae_rows

        print(f"IWAE k={args.iwae_k} over {args.iwae_images} test images:")
        record["iwae"] = iwae_rows(args.iwae_images, args.iwae_k, threads)
    if args.rss_epochs > 0:
        record["train_rss"] = peak_rss_of_training(args.rss_epochs, "auto")
    print_speed_table(record)
    write_record(record, f"train-{device.type}", args.out)


if __name__ == "__main__":
    main()
