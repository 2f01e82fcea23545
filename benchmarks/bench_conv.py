"""Training speed of vaelab's conv VAE against the plain PyTorch loop with the same layers.

In one process, alternately, it times an epoch of
  (ref)  the loop a typical user writes: TensorDataset + DataLoader(shuffle=True, batch 200) + an
         nn.Module with the conv VAE's layers (NCHW) + torch.optim.Adam(lr 1e-3), fp32, the
         tutorial's loss sum((sigmoid(logits) - x)^2) / 2N + KL / N;
  (32)   vaelab's training loop with `--arch conv` in fp32;
  (bf16-mixed) the same in bf16-mixed (bf16 layers, fp32 weights and Adam), what `--precision
         auto` trains on CPUs with native bf16,
after one untimed warm-up epoch each. It prints each loop's wall and CPU seconds an epoch and
their ratios to the plain loop (CPU seconds vary less where other work shares the CPU), and
writes a JSON record to benchmarks/results/.

    python benchmarks/bench_conv.py --threads 1                   # 5 alternating epochs each
    python benchmarks/bench_conv.py --threads 1 --epochs 2 --subset 6000   # a quick look

`conv_rows(epochs, subset, threads)` returns the rows for another table (bench_train.py's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from records import RESULTS_DIR, write_record
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vaelab.config import ModelConfig, TrainConfig
from vaelab.data import load_fashion_mnist
from vaelab.models import VAE
from vaelab.training.cpu import has_native_bf16
from vaelab.training.distributed import SINGLE_PROCESS, resolve_device
from vaelab.training.epoch import make_objective, make_optimizer, make_scheduler, train_epoch

BATCH = 200
LOOPS = ("ref", "32", "bf16-mixed")


class ReferenceConvVAE(nn.Module):
    """The conv VAE's layers as a user writes them: two stride-2 4x4 convolutions and a dense
    layer, mirrored with transposed convolutions; flat images in, flat reconstructions out."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels, height, width = config.shape
        first, second, dense = config.hidden
        if height % 4 or width % 4:
            raise ValueError("the reference takes sides that are multiples of 4")
        self.shape = config.shape
        quarter = (second, height // 4, width // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, first, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, second, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(second * quarter[1] * quarter[2], dense),
            nn.ReLU(),
        )
        self.fc_mu = nn.Linear(dense, config.latent_dim)
        self.fc_logvar = nn.Linear(dense, config.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, dense),
            nn.ReLU(),
            nn.Linear(dense, second * quarter[1] * quarter[2]),
            nn.ReLU(),
            nn.Unflatten(1, quarter),
            nn.ConvTranspose2d(second, first, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(first, channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x.view(-1, *self.shape))
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def conv_rows(
    epochs: int, subset: int, threads: int, device: str = "auto", verbose: bool = True
) -> dict[str, dict]:
    """s/epoch of each loop (LOOPS) over the first `subset` training images on `threads` torch
    threads, alternating for `epochs` timed epochs after a warm-up, and each one's ratio to the
    plain loop (per pair of epochs, and their median); also the process's CPU seconds, steadier
    than the wall clock on a CPU that other work shares. `verbose` prints each round."""
    # bench_train.py imports this module for its combined table: its helpers load on first use.
    from bench_train import reference_epoch, summary, synchronize

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        where = resolve_device(device)
        train_x = load_fashion_mnist().train_images[:subset]
        model_config = ModelConfig(arch="conv")
        train_config = replace(TrainConfig(), epochs=max(epochs, 1))
        steps = len(train_x) // BATCH

        torch.manual_seed(0)
        reference = ReferenceConvVAE(model_config).to(where)
        ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
        ref_loader = DataLoader(TensorDataset(train_x), batch_size=BATCH, shuffle=True)
        images = train_x.to(where)

        def vaelab_epoch(precision: str) -> Callable[[], object]:
            torch.manual_seed(0)
            model = VAE(model_config).to(where)
            optimizer = make_optimizer(model, train_config)
            scheduler = make_scheduler(optimizer, train_config, steps)
            generator = torch.Generator(device=where).manual_seed(0)
            objective = make_objective(model, SINGLE_PROCESS, precision)  # as vaelab train does
            return lambda: train_epoch(
                model, optimizer, scheduler, images, train_config, generator, precision,
                objective=objective,
            )  # fmt: skip

        epoch_of = {
            "ref": lambda: reference_epoch(reference, ref_optimizer, ref_loader, where),
            "32": vaelab_epoch("32"),
            "bf16-mixed": vaelab_epoch("bf16-mixed"),
        }

        def timed(name: str) -> tuple[float, float]:
            synchronize(where)
            wall, cpu = time.perf_counter(), time.process_time()
            epoch_of[name]()
            synchronize(where)
            return time.perf_counter() - wall, time.process_time() - cpu

        times: dict[str, list[float]] = {name: [] for name in LOOPS}
        cpu_times: dict[str, list[float]] = {name: [] for name in LOOPS}
        # One untimed warm-up epoch each, then alternate so that drifts hit every loop alike.
        for timed_round in range(epochs + 1):
            measured = {name: timed(name) for name in LOOPS}
            if not timed_round:
                continue
            for name in LOOPS:
                times[name].append(measured[name][0])
                cpu_times[name].append(measured[name][1])
            seconds = {name: wall for name, (wall, _) in measured.items()}
            if verbose:
                print(
                    f"  round {timed_round}: "
                    + ", ".join(f"{n} {seconds[n]:.2f}s" for n in LOOPS)
                    + " (vs ref: "
                    + ", ".join(f"{n} {seconds[n] / seconds['ref']:.2f}x" for n in LOOPS[1:])
                    + ")"
                )
    finally:
        torch.set_num_threads(previous_threads)
    rows = {}
    for name in LOOPS:
        ratios = [t / r for t, r in zip(times[name], times["ref"])]
        cpu_ratios = [t / r for t, r in zip(cpu_times[name], cpu_times["ref"])]
        rows[name] = {
            "train_epoch_s": summary(times[name]),
            "ratio_to_ref_per_pair": ratios,
            "ratio_to_ref_median": statistics.median(ratios),
            "train_epoch_cpu_s": summary(cpu_times[name]),
            "cpu_ratio_to_ref_median": statistics.median(cpu_ratios),
        }
    return rows


def print_table(rows: dict[str, dict]) -> None:
    """The rows of `conv_rows` as a markdown table."""
    print("| conv loop | s/epoch median (min-max) | vs plain loop | CPU s/epoch | vs plain loop |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        stats, cpu = row["train_epoch_s"], row["train_epoch_cpu_s"]
        print(
            f"| {name} | {stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f}) | "
            f"{row['ratio_to_ref_median']:.2f}x | {cpu['median']:.2f} | "
            f"{row['cpu_ratio_to_ref_median']:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each loop")
    parser.add_argument("--subset", type=int, default=60000, help="training images per epoch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    from bench_train import machine

    device = resolve_device(args.device)
    info = machine()
    info["torch_threads"] = args.threads
    print(f"machine: {json.dumps(info)}")
    steps = min(args.subset, 60000) // BATCH
    print(f"device {device}; conv VAE, {steps} steps of {BATCH} images an epoch")
    rows = conv_rows(args.epochs, args.subset, args.threads, args.device)
    print()
    print_table(rows)
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": str(device),
        "machine": info,
        "command": " ".join(["python", *sys.argv]),
        "subset": args.subset,
        "epochs": args.epochs,
        "model": "conv, CONV_HIDDEN, latent 2, tutorial-mse",
        "loops": rows,
        "native_bf16": has_native_bf16(),
    }
    write_record(record, f"conv-{device.type}", args.out)


if __name__ == "__main__":
    main()
