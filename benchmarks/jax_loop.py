"""vaelab's default VAE trained in JAX, one jitted function per epoch, for the speed benchmark.

The model is `vaelab.models.VAE(ModelConfig())`: encoder 784-400-200-100-20 (Linear + ReLU),
mu and log-variance heads 20 -> 2, z = mu + eps * exp(logvar / 2), decoder 2-20-100-200-400
(Linear + ReLU) and Linear(400, 784) to logits. The loss is the tutorial's, per image:

    loss = sum((sigmoid(logits) - x)^2) / (2N) - 0.5 * sum(1 + logvar - mu^2 - exp(logvar)) / N

trained with optax's Adam (1e-3, betas 0.9 and 0.999, eps 1e-8), batch 200, in fp32. An epoch
is one `jax.lax.scan` over the batches of a fresh permutation of the images, which stay on the
device as one array; the parameters and Adam's state are donated to it.

    python benchmarks/jax_loop.py --check   # trains it and vaelab side by side, prints both

Needs the `bench` extra (`pip install -e '.[bench]'`); `available()` says why it cannot run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from vaelab.config import ModelConfig, TrainConfig
from vaelab.data import load_fashion_mnist
from vaelab.evaluation import evaluate
from vaelab.models import VAE
from vaelab.training.epoch import make_optimizer, make_scheduler, train_epoch

try:
    import jax
    import jax.numpy as jnp
    import optax
except ImportError as error:
    _IMPORT_ERROR: str | None = f"{error} (pip install -e '.[bench]')"
else:
    _IMPORT_ERROR = None

ENCODER_SIZES = (784, 400, 200, 100, 20)
LATENT_DIM = 2

Layer = tuple["jax.Array", "jax.Array"]
Params = dict[str, list[Layer]]


def available() -> str | None:
    """None when jax and optax import, else one line saying why they do not."""
    return _IMPORT_ERROR


# --- The model ---------------------------------------------------------------------------------


def linear_init(key: jax.Array, fan_in: int, fan_out: int) -> Layer:
    """Weight (fan_in, fan_out) and bias ~ U(+-1/sqrt(fan_in)), as torch.nn.Linear initialises."""
    bound = 1.0 / np.sqrt(fan_in)
    weight_key, bias_key = jax.random.split(key)
    weight = jax.random.uniform(weight_key, (fan_in, fan_out), jnp.float32, -bound, bound)
    bias = jax.random.uniform(bias_key, (fan_out,), jnp.float32, -bound, bound)
    return weight, bias


def dense_layers(key: jax.Array, sizes: Sequence[int]) -> list[Layer]:
    """Linear layers between consecutive `sizes`."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [linear_init(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def init_params(key: jax.Array) -> Params:
    """The default VAE's weights: encoder, mu and log-variance heads, decoder, output layer."""
    encoder, mu, logvar, decoder, output = jax.random.split(key, 5)
    hidden = ENCODER_SIZES[-1]
    return {
        "encoder": dense_layers(encoder, ENCODER_SIZES),
        "mu": dense_layers(mu, (hidden, LATENT_DIM)),
        "logvar": dense_layers(logvar, (hidden, LATENT_DIM)),
        "decoder": dense_layers(decoder, (LATENT_DIM, *reversed(ENCODER_SIZES[1:]))),
        "output": dense_layers(output, ENCODER_SIZES[1::-1]),
    }


def linear(layer: Layer, h: jax.Array) -> jax.Array:
    weight, bias = layer
    return h @ weight + bias


def relu_stack(layers: list[Layer], h: jax.Array) -> jax.Array:
    """Each layer followed by a ReLU."""
    for layer in layers:
        h = jax.nn.relu(linear(layer, h))
    return h


def encode(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of q(z|x)."""
    h = relu_stack(params["encoder"], x)
    return linear(params["mu"][0], h), linear(params["logvar"][0], h)


def decode_logits(params: Params, z: jax.Array) -> jax.Array:
    """One logit per pixel for codes z."""
    return linear(params["output"][0], relu_stack(params["decoder"], z))


def reparameterize(mu: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """z = mu + eps * exp(logvar / 2)."""
    return mu + eps * jnp.exp(0.5 * logvar)


def half_squared_error(recon: jax.Array, x: jax.Array) -> jax.Array:
    """sum((recon - x)^2) / 2 per image."""
    return 0.5 * jnp.sum(jnp.square(recon - x), axis=-1)


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image."""
    return -0.5 * jnp.sum(1 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


def per_image_loss(params: Params, x: jax.Array, eps: jax.Array) -> jax.Array:
    """The tutorial's loss of each image, one sample z from the noise eps."""
    mu, logvar = encode(params, x)
    logits = decode_logits(params, reparameterize(mu, logvar, eps))
    return half_squared_error(jax.nn.sigmoid(logits), x) + gaussian_kl(mu, logvar)


def batch_loss(params: Params, x: jax.Array, eps: jax.Array) -> jax.Array:
    """The loss per image averaged over the batch: what a step differentiates."""
    return jnp.mean(per_image_loss(params, x, eps))


# --- Training and evaluation ---------------------------------------------------------------------


def epoch_batches(key: jax.Array, count: int, batch: int) -> jax.Array:
    """Row indices (steps, batch) of a fresh permutation, the last partial batch dropped."""
    steps = count // batch
    return jax.random.permutation(key, count)[: steps * batch].reshape(steps, batch)


def make_train_epoch(optimizer: optax.GradientTransformation, batch: int) -> jax.stages.Wrapped:
    """epoch(params, opt_state, images, key) -> (params, opt_state, mean loss), jitted, the
    parameters and optimizer state donated."""
    loss_and_grad = jax.value_and_grad(batch_loss)

    def epoch(
        params: Params, opt_state: Any, images: jax.Array, key: jax.Array
    ) -> tuple[Params, Any, jax.Array]:
        def step(
            state: tuple[Params, Any], xs: tuple[jax.Array, jax.Array]
        ) -> tuple[tuple[Params, Any], jax.Array]:
            params, opt_state = state
            rows, noise_key = xs
            x = jnp.take(images, rows, axis=0)
            eps = jax.random.normal(noise_key, (batch, LATENT_DIM), jnp.float32)
            loss, grads = loss_and_grad(params, x, eps)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        order_key, noise_key = jax.random.split(key)
        batches = epoch_batches(order_key, images.shape[0], batch)
        noise_keys = jax.random.split(noise_key, batches.shape[0])
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (batches, noise_keys))
        return params, opt_state, jnp.mean(losses)

    return jax.jit(epoch, donate_argnums=(0, 1))


def summed_loss(params: Params, batches: jax.Array, mask: jax.Array, key: jax.Array) -> jax.Array:
    """Sum of the per-image losses over (batches, batch, D) images; `mask` 0 marks padding."""
    keys = jax.random.split(key, batches.shape[0])

    def batch_sum(xs: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        x, weights, noise_key = xs
        eps = jax.random.normal(noise_key, (x.shape[0], LATENT_DIM), jnp.float32)
        return jnp.sum(per_image_loss(params, x, eps) * weights)

    return jnp.sum(jax.lax.map(batch_sum, (batches, mask, keys)))


def padded_batches(images: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Images as (batches, batch, D), zero rows after the last; a mask of the real rows."""
    count, width = images.shape
    if count % batch == 0:
        return images.reshape(-1, batch, width), np.ones((count // batch, batch), np.float32)
    steps = -(-count // batch)
    padded = np.zeros((steps * batch, width), np.float32)
    padded[:count] = images
    mask = np.zeros(steps * batch, np.float32)
    mask[:count] = 1.0
    return padded.reshape(steps, batch, width), mask.reshape(steps, batch)


class JaxLoop:
    """The default VAE and its Adam state in JAX, trained one jitted epoch at a time.

    `compile_seconds` is the time the epoch function took to compile, set by the first
    `run_epoch` (None before it); later epochs run the compiled function alone.
    """

    def __init__(
        self, train_images: np.ndarray, seed: int = 0, batch: int = 200, lr: float = 1e-3
    ) -> None:
        if _IMPORT_ERROR is not None:
            raise RuntimeError(_IMPORT_ERROR)
        self.images = jax.device_put(np.asarray(train_images, np.float32))
        init_key, self._train_key, self._test_key = jax.random.split(jax.random.key(seed), 3)
        self.params = init_params(init_key)
        optimizer = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
        self.opt_state = optimizer.init(self.params)
        self._train_epoch = make_train_epoch(optimizer, batch)
        self._summed_loss = jax.jit(summed_loss)
        self._compiled: Callable[..., tuple[Params, Any, jax.Array]] | None = None
        self.compile_seconds: float | None = None

    def run_epoch(self) -> float:
        """Train one epoch; its mean training loss, once the work is done."""
        self._train_key, key = jax.random.split(self._train_key)
        if self._compiled is None:
            started = time.perf_counter()
            lowered = self._train_epoch.lower(self.params, self.opt_state, self.images, key)
            self._compiled = lowered.compile()
            self.compile_seconds = time.perf_counter() - started
        self.params, self.opt_state, loss = self._compiled(
            self.params, self.opt_state, self.images, key
        )
        return float(jax.block_until_ready(loss))

    def test_loss(self, images: np.ndarray, batch: int = 1000) -> float:
        """Mean loss per image over `images`, in batches of `batch`, with fresh noise."""
        batches, mask = padded_batches(np.asarray(images, np.float32), batch)
        self._test_key, key = jax.random.split(self._test_key)
        total = self._summed_loss(self.params, batches, mask, key)
        return float(total) / len(images)


# --- Agreement with vaelab ---------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Training-loss trajectories (one per seed, one value per epoch) and test losses per seed,
    of JaxLoop and of vaelab's own loop on the same images."""

    jax_train: tuple[tuple[float, ...], ...]
    vaelab_train: tuple[tuple[float, ...], ...]
    jax_test: tuple[float, ...]
    vaelab_test: tuple[float, ...]

    @property
    def seed_spread(self) -> float:
        """The widest range over seeds of either loop's final training or test loss."""
        finals = [
            [run[-1] for run in self.jax_train],
            [run[-1] for run in self.vaelab_train],
            list(self.jax_test),
            list(self.vaelab_test),
        ]
        return max(max(values) - min(values) for values in finals)

    @property
    def gaps(self) -> tuple[float, float]:
        """|mean JAX - mean vaelab| of the final training loss and of the test loss."""
        train = statistics.mean(r[-1] for r in self.jax_train) - statistics.mean(
            r[-1] for r in self.vaelab_train
        )
        test = statistics.mean(self.jax_test) - statistics.mean(self.vaelab_test)
        return abs(train), abs(test)

    @property
    def agrees(self) -> bool:
        """Whether both gaps are within the seed-to-seed spread."""
        return max(self.gaps) <= self.seed_spread


def vaelab_run(
    images: torch.Tensor, test_images: torch.Tensor, epochs: int, seed: int
) -> tuple[tuple[float, ...], float]:
    """vaelab's fp32 training loop with a constant learning rate: per-epoch losses, test loss."""
    config = replace(
        TrainConfig(), epochs=epochs, seed=seed, precision="32", lr_schedule="constant"
    )
    torch.manual_seed(seed)
    model = VAE(ModelConfig())
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(images) // config.batch_size)
    generator = torch.Generator().manual_seed(seed)
    losses = tuple(
        train_epoch(model, optimizer, scheduler, images, config, generator, "32")[0]
        for _ in range(epochs)
    )
    return losses, evaluate(model, test_images, config.test_batch_size).loss


def jax_run(
    images: np.ndarray, test_images: np.ndarray, epochs: int, seed: int
) -> tuple[tuple[float, ...], float]:
    """JaxLoop's per-epoch losses and test loss."""
    loop = JaxLoop(images, seed=seed)
    losses = tuple(loop.run_epoch() for _ in range(epochs))
    return losses, loop.test_loss(test_images)


def compare_with_vaelab(
    images: torch.Tensor,
    test_images: torch.Tensor,
    epochs: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
) -> Comparison:
    """Train JaxLoop and vaelab for `epochs` from each seed on the same float32 images."""
    runs = {"jax": [], "vaelab": []}
    for seed in seeds:
        runs["jax"].append(jax_run(images.numpy(), test_images.numpy(), epochs, seed))
        runs["vaelab"].append(vaelab_run(images, test_images, epochs, seed))
    return Comparison(
        jax_train=tuple(losses for losses, _ in runs["jax"]),
        vaelab_train=tuple(losses for losses, _ in runs["vaelab"]),
        jax_test=tuple(test for _, test in runs["jax"]),
        vaelab_test=tuple(test for _, test in runs["vaelab"]),
    )


def print_comparison(result: Comparison, seeds: Sequence[int]) -> None:
    for name, trains, tests in (
        ("jax", result.jax_train, result.jax_test),
        ("vaelab", result.vaelab_train, result.vaelab_test),
    ):
        for seed, losses, test in zip(seeds, trains, tests):
            trajectory = " ".join(f"{loss:7.3f}" for loss in losses)
            print(f"  {name:6s} seed {seed}: train {trajectory} | test {test:7.3f}")
    train_gap, test_gap = result.gaps
    print(
        f"  gap of the means: final train {train_gap:.3f}, test {test_gap:.3f}; "
        f"seed spread {result.seed_spread:.3f} -> {'agree' if result.agrees else 'DIFFER'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with vaelab's loop")
    parser.add_argument("--subset", type=int, default=6000, help="training images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if (reason := available()) is not None:
        sys.exit(f"JAX loop not available: {reason}")
    if not args.check:
        parser.print_help()
        return
    data = load_fashion_mnist()
    images = data.train_images[: args.subset]
    print(f"{len(images)} training images, {args.epochs} epochs, seeds {args.seeds}")
    result = compare_with_vaelab(images, data.test_images.tensor(), args.epochs, args.seeds)
    print_comparison(result, args.seeds)
    sys.exit(0 if result.agrees else 1)


if __name__ == "__main__":
    main()
