"""IWAE evaluation speed against the fp32 GEMM peak of its own decoder shapes.

For the default model (MLP 784-400-200-100-20-2, 'tutorial-mse') almost all of `vaelab evaluate`'s
work is the decoder run on k samples per image. In one process this measures
  (peak)    the fp32 GEMM rate of the decoder's products at the block size the evaluation plans
            (block rows x fan_in @ fan_in x fan_out for every decoder layer, no bias or
            activation), through MKL (torch.mm into a buffer) and through oneDNN's linear
            primitive, each the best of several timings; the peak is the faster route's,
            measured right before and right after the evaluation, the higher of the two;
  (fast)    `importance_weighted` with k samples over the first N test images, as `vaelab
            evaluate` runs it: decoder FLOPs / seconds and its fraction of the peak;
  (general) the same through the model's own `importance_terms` on whole chunks, the way every
            model is evaluated where the fast path does not apply (on `--general-images` images),
and writes a JSON record to benchmarks/results/.

    python benchmarks/bench_iwae.py --threads 1 --images 200    # a quick look
    python benchmarks/bench_iwae.py                             # k=5000 over all 10,000 images
    python benchmarks/bench_iwae.py --run runs/demo --likelihood bernoulli   # another model
    VAELAB_MKL_AVX512=1 python benchmarks/bench_iwae.py         # with MKL's AVX-512 path on AMD

`iwae_rows(images, k, threads)` returns the rows for another table (bench_train.py's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from records import RESULTS_DIR, write_record
from torch import nn

import vaelab
from vaelab.config import ModelConfig
from vaelab.data import load_fashion_mnist
from vaelab.data.dataset import as_unit_images
from vaelab.evaluation import (
    DEFAULT_IW_SAMPLES,
    DEFAULT_MAX_MEMORY,
    EVAL_SEED,
    _batch_bounds,
    block_rows,
    fast_decoder,
    importance_weighted,
    parse_size,
    plan_chunks,
)
from vaelab.models import VAE, evaluating
from vaelab.models.priors import held_prior
from vaelab.models.products import onednn_linear_available

PATHS = ("fast", "general")


def decoder_shapes(model: VAE) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each Linear layer a latent sample passes through in the decoder."""
    linears = [m for m in (*model.decoder.modules(), *model.output.modules())]
    return [(m.in_features, m.out_features) for m in linears if isinstance(m, nn.Linear)]


def decoder_flops(model: VAE) -> int:
    """FLOPs of one sample's decoder pass: two per multiply-add of every Linear layer."""
    return sum(2 * fan_in * fan_out for fan_in, fan_out in decoder_shapes(model))


def best_seconds(fn: Callable[[], object], repeats: int, tries: int = 7) -> float:
    """The fastest of `tries` timings of `repeats` calls, per call (after three warm-up calls)."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def gemm_peaks(shapes: list[tuple[int, int]], rows: int) -> dict[str, float]:
    """GFLOP/s of one pass of fp32 products rows x fan_in @ fan_in x fan_out over `shapes`,
    through each route this torch has: 'mkl' (torch.mm) and 'onednn' (its linear primitive)."""
    generator = torch.Generator().manual_seed(0)
    operands = [
        (
            torch.randn(rows, fan_in, generator=generator),
            torch.randn(fan_out, fan_in, generator=generator),
            torch.empty(rows, fan_out),
        )
        for fan_in, fan_out in shapes
    ]
    flops = sum(2 * rows * fan_in * fan_out for fan_in, fan_out in shapes)

    def mkl() -> None:
        for a, w, out in operands:
            torch.mm(a, w.t(), out=out)

    def onednn() -> None:
        for a, w, _out in operands:
            torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")

    routes = {"mkl": mkl}
    if onednn_linear_available():
        routes["onednn"] = onednn
    repeats = max(1, int(2e9 // flops))  # about 10-20 ms per timing
    return {name: flops / best_seconds(fn, repeats) / 1e9 for name, fn in routes.items()}


@torch.no_grad()
def general_path(model: VAE, images: torch.Tensor, k: int, max_memory: int) -> None:
    """`importance_weighted`'s work through the model's own `importance_terms` on whole chunks
    (no fast path and no blocks), the same noise."""
    parameter = next(model.parameters())
    images = as_unit_images(images)
    batch, chunk = plan_chunks(model, len(images), k, max_memory)
    generator = torch.Generator().manual_seed(EVAL_SEED)
    with evaluating(model), held_prior(model.prior, model.top_posterior):
        for start in range(0, len(images), batch):
            x = images[start : start + batch].to(parameter.dtype)
            _batch_bounds(model, x.reshape(len(x), -1), k, chunk, generator)


def default_model(likelihood: str = "tutorial-mse") -> VAE:
    """The default model, weights from seed 0 (its speed does not depend on them)."""
    torch.manual_seed(0)
    return VAE(ModelConfig(likelihood=likelihood))


def iwae_rows(
    images: int,
    k: int = DEFAULT_IW_SAMPLES,
    threads: int | None = None,
    model: VAE | None = None,
    general_images: int = 0,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    verbose: bool = True,
) -> dict[str, dict]:
    """IWAE with `k` samples over the first `images` test images on `threads` torch threads
    (all when None), for `model` (the default model when None): decoder GFLOP/s and its fraction
    of the fp32 GEMM peak of the decoder's shapes at the planned block size, for the fast path
    and (on the first `general_images` images, none when 0) the general path."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        model = model or default_model()
        memory = parse_size(max_memory)
        test_images = load_fashion_mnist().test_images[:images]
        batch, chunk = plan_chunks(model, len(test_images), k, memory)
        rows = block_rows(model, batch, chunk)
        fast = fast_decoder(model, rows) is not None
        shapes = decoder_shapes(model)
        importance_weighted(model, test_images[:1], k=min(k, 500), max_memory=memory)  # warm-up

        def timed_path(path: str, count: int) -> dict[str, object]:
            subset = test_images[:count]
            before = gemm_peaks(shapes, rows)
            started = time.perf_counter()
            if path == "fast":
                importance_weighted(model, subset, k, max_memory=memory)
            else:
                general_path(model, subset, k, memory)
            seconds = time.perf_counter() - started
            after = gemm_peaks(shapes, rows)
            peaks = {route: max(before[route], after[route]) for route in before}
            peak_route = max(peaks, key=peaks.__getitem__)
            gflops = decoder_flops(model) * k * len(subset) / seconds / 1e9
            row = {
                "images": len(subset),
                "k": k,
                "seconds": seconds,
                "seconds_per_image": seconds / len(subset),
                "decoder_gflops": gflops,
                "peak_gflops": peaks[peak_route],
                "peak_route": peak_route,
                "peaks_before": before,
                "peaks_after": after,
                "fraction_of_peak": gflops / peaks[peak_route],
                "block_rows": rows if path == "fast" else batch * chunk,
                "batch_images": batch,
                "chunk_samples": chunk,
                "fast_path_applies": fast,
            }
            if verbose:
                print(
                    f"  {path}: {len(subset)} images in {seconds:.1f} s, {gflops:.0f} GFLOP/s, "
                    f"{row['fraction_of_peak']:.0%} of the {peak_route} peak "
                    f"{peaks[peak_route]:.0f} GFLOP/s",
                    flush=True,
                )
            return row

        rows_by_path = {"fast": timed_path("fast", len(test_images))}
        if general_images > 0:
            rows_by_path["general"] = timed_path("general", min(general_images, images))
    finally:
        torch.set_num_threads(previous_threads)
    return rows_by_path


def print_table(rows: dict[str, dict]) -> None:
    """The rows of `iwae_rows` as a markdown table."""
    print(
        "| IWAE path | images x k | s per image | decoder GFLOP/s | fp32 GEMM peak (route) "
        "| of peak | rows per block |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['images']} x {row['k']} | {row['seconds_per_image']:.4f} | "
            f"{row['decoder_gflops']:.0f} | {row['peak_gflops']:.0f} ({row['peak_route']}) | "
            f"{row['fraction_of_peak']:.0%} | {row['block_rows']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="test images to evaluate")
    parser.add_argument("--k", type=int, default=DEFAULT_IW_SAMPLES, help="importance samples")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--run", type=Path, help="a run directory (default: a random model)")
    parser.add_argument("--likelihood", default="tutorial-mse", help="of the random model")
    parser.add_argument("--general-images", type=int, default=100, help="0 skips the general path")
    parser.add_argument("--max-memory", default=str(DEFAULT_MAX_MEMORY))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    from bench_train import machine

    from vaelab.training.cpu import maybe_reexec_with_mkl_override

    maybe_reexec_with_mkl_override(sys.argv[1:], program=[__file__])
    model = vaelab.load(args.run) if args.run else default_model(args.likelihood)
    info = machine()
    info["torch_threads"] = args.threads
    print(f"machine: {json.dumps(info)}")
    described = f"{model.config.arch}, {model.config.likelihood}, latent {model.config.latent_dim}"
    print(f"IWAE k={args.k} over {args.images} test images; model: {described}")
    rows = iwae_rows(args.images, args.k, args.threads, model, args.general_images, args.max_memory)
    print()
    print_table(rows)
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": "cpu",
        "machine": info,
        "command": " ".join(["python", *sys.argv]),
        "model": described,
        "run": str(args.run) if args.run else None,
        "decoder_shapes": decoder_shapes(model),
        "decoder_flops_per_sample": decoder_flops(model),
        "paths": rows,
    }
    write_record(record, "iwae-cpu", args.out)


if __name__ == "__main__":
    main()
