"""The plain PyTorch reference of bench_scale.py: a conv VAE trained on a memory-mapped .npy of
uint8 N x H x W x C images, each batch gathered from the mapping and converted to float32.

No vaelab import: a loop as a PyTorch user would write it (np.load(mmap_mode='r'), a random
permutation, one fancy-indexed gather per batch, Adam). The network has the layer sizes of
`vaelab train --arch conv --hidden 32,64,256`; the loss is the tutorial's (squared error / 2 plus
the KL divergence). It prints one JSON line: when the first step ended and the steps' times.

python benchmarks/scale_reference.py DATA.npy --steps 30 --started TIME
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def conv_vae(channels: int, side: int, latent: int = 2) -> tuple[nn.Module, nn.Module]:
    quarter = side // 4
    encoder = nn.Sequential(
        nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(64 * quarter * quarter, 256), nn.ReLU(), nn.Linear(256, 2 * latent),
    )  # fmt: skip
    decoder = nn.Sequential(
        nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 64 * quarter * quarter), nn.ReLU(),
        nn.Unflatten(1, (64, quarter, quarter)),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
    )  # fmt: skip
    return encoder, decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--started", type=float, required=True, help="time.time() at launch")
    args = parser.parse_args()
    images = np.load(args.data, mmap_mode="r")  # N x H x W x C uint8
    count, side, _, channels = images.shape
    torch.manual_seed(0)
    encoder, decoder = conv_vae(channels, side)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    order = torch.randperm(count)
    ends = []
    for step in range(args.steps):
        rows = np.sort(order[step * args.batch_size : (step + 1) * args.batch_size].numpy())
        batch = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float().div_(255)
        mu, logvar = encoder(batch).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        reconstruction = decoder(z)
        loss = (
            0.5 * (reconstruction - batch).pow(2).flatten(1).sum(1)
            - 0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        ).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ends.append(time.time())
    print(json.dumps({"first_step": ends[0] - args.started, "step_ends": ends}), flush=True)


if __name__ == "__main__":
    main()
