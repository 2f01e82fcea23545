"""The commands that use a saved run: evaluate, sample, plot, report, serve."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import torch

from vaelab._outputs import SAMPLES, check_output, check_run_file
from vaelab.cli.group import RUN, cli, device_option, run_data, run_data_options
from vaelab.config import DataConfig, check_seed
from vaelab.data import Dataset, load_dataset
from vaelab.diagnostics import collapse_warning, describe, diagnose_posterior, planned_steps
from vaelab.errors import MissingExtra, VaelabError
from vaelab.evaluation import (
    DEFAULT_IW_SAMPLES,
    EVAL_SEED,
    MAX_IW_SAMPLES,
    evaluate,
    evaluate_likelihood,
    parse_size,
    save_eval,
)
from vaelab.iwae_time import (
    DEFAULT_BUDGET_MINUTES,
    check_budget,
    estimate_iwae_time,
    require_within,
)
from vaelab.latent import class_index, sample
from vaelab.rundir import (
    EVAL_FILE,
    REPORT_FILE,
    image_shape,
    load_model,
    load_run_info,
    open_run,
    run_lock,
)
from vaelab.training.distributed import resolve_device
from vaelab.training.footprint import check_test_memory


@cli.command("evaluate")
@RUN
@run_data_options
@device_option("auto")
@click.option(
    "--iw-samples", "k", type=click.IntRange(1, MAX_IW_SAMPLES), default=DEFAULT_IW_SAMPLES,
    help="Importance samples k per image for the IWAE estimate of -log p(x).",
)  # fmt: skip
@click.option(
    "--max-memory", default="1GB",
    help="Bound on the memory of one batch of decoder work (e.g. 512MB, 2GiB).",
)  # fmt: skip
@click.option("--seed", type=int, default=EVAL_SEED, help="Seed of the importance samples.")
@click.option(
    "--images", type=int, default=None,
    help="Evaluate only the first IMAGES test images  [default: all]",
)  # fmt: skip
@click.option(
    "--time-budget", type=click.FloatRange(min=0), default=DEFAULT_BUDGET_MINUTES,
    metavar="MINUTES",
    help="Refuse an IWAE evaluation estimated (on a few images first) to take longer; 0: any "
    "time.",
)  # fmt: skip
def evaluate_command(
    run: Path, device: str, k: int, max_memory: str, seed: int, images: int | None,
    time_budget: float,
) -> None:  # fmt: skip
    """Test metrics of a saved run: the training loss, the negative ELBO and the IWAE estimate
    of -log p(x) in nats; writes RUN/eval.json. The IWAE pass's time is measured on a few
    images first and said; beyond --time-budget it is refused."""
    memory = parse_size(max_memory)
    check_seed(seed)
    check_budget(time_budget)
    check_run_file(run / EVAL_FILE)  # before the model is loaded and evaluated
    with run_lock(run):  # refused at once while another process writes the run
        data = run_data(run)
        opened = open_run(run, data=data, device=resolve_device(device))
        test_images = opened.dataset.test_images
        if images is not None:
            if not 1 <= images <= len(test_images):
                raise VaelabError(
                    f"--images must be between 1 and {len(test_images)}, got {images}"
                )
            test_images = test_images.take(torch.arange(images))
        model = opened.model
        if next(model.parameters()).device.type == "cpu":  # a GPU's failure is one line itself
            rows = min(opened.config.train.test_batch_size, len(test_images))
            check_test_memory(opened.config, rows)
        labels = opened.test_classes  # a conditional model: p(x|y), each image with its class
        labels = None if labels is None else labels[: len(test_images)]
        estimate = estimate_iwae_time(model, test_images, k, memory, labels)
        if estimate is not None:
            require_within(estimate, time_budget, k, ("--images", "--iw-samples", "--time-budget"))
            click.echo(estimate.describe(k), err=True)
        metrics = evaluate(model, test_images, opened.config.train.test_batch_size, labels=labels)
        part = "MSE" if metrics.likelihood == "tutorial-mse" else "reconstruction"
        click.echo(
            f"test_loss {metrics.loss:.4f} ({part} {metrics.reconstruction:.4f} | "
            f"KLD {metrics.kld:.4f}) on {metrics.images} test images"
        )
        posterior = diagnose_posterior(
            model, test_images, opened.config.train.test_batch_size, labels=labels
        )
        click.echo(f"latent code: {describe(posterior)}")
        steps = planned_steps(opened.config.train, opened.info)
        warning = collapse_warning(posterior, *steps, model.config.likelihood)
        if warning is not None:
            click.echo(warning)
        report = evaluate_likelihood(
            model, test_images, k, max_memory=memory, seed=seed, progress=sys.stderr.isatty(),
            labels=labels,
        )  # fmt: skip
        given = "|y" if report.conditional else ""
        click.echo(
            f"negative ELBO {report.negative_elbo_nats:.2f} nats per image "
            f"(reconstruction {report.reconstruction_nats:.2f} + KL {report.kl_nats:.2f}; "
            f"{model.config.likelihood} likelihood, all constants included)"
        )
        click.echo(
            f"IWAE -log p(x{given}) {report.iwae_nll_nats:.2f} +- {report.iwae_stderr_nats:.2f} "
            "nats per "
            f"image (k={report.iw_samples}, {report.images} images, {report.seconds:.1f}s)"
        )
        replaced = (run / EVAL_FILE).exists()
        path = save_eval(run, report, posterior)
        click.echo(f"{'replaced' if replaced else 'wrote'} {path}")
    if (run / REPORT_FILE).exists():  # it showed the earlier eval.json, or none
        _rewrite_report(run, data)


def _rewrite_report(run: Path, data: DataConfig | None) -> None:
    """Write RUN/report.html again after eval.json changed (when the plots extra is there)."""
    try:
        from vaelab.viz.report import write_report
    except MissingExtra:
        click.echo(f"{run / REPORT_FILE} predates {EVAL_FILE}; vaelab report {run} redraws it")
        return
    click.echo(f"rewrote {write_report(run, dataset=_dataset_from(data), log=click.echo)}")


@cli.command("sample")
@RUN
@click.option("--n", "n", type=int, default=64, help="Number of images to draw.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("samples.png"),
    help="Output file: .png (a grid, one pixel per pixel, RGB for colour images) or .npy "
    "(float32 in [0, 1]: n x H x W, or n x C x H x W for more than one channel).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, help="Seed of the latent codes z ~ p(z).")
@click.option(
    "--class", "class_name", default=None, metavar="NAME|INDEX",
    help="For a conditional run: draw images of this class (a name or an index).",
)  # fmt: skip
@click.option(
    "--overwrite", is_flag=True,
    help="Replace a samples file vaelab wrote at --out (never any other file).",
)  # fmt: skip
@device_option("cpu")
def sample_command(
    run: Path, n: int, out: Path, seed: int, class_name: str | None, overwrite: bool, device: str
) -> None:
    """Draw new images: decoder means for z ~ p(z) (the report's samples for the same seed)."""
    from vaelab.viz.images import write_samples

    check_output(out, SAMPLES, overwrite)  # before the model is loaded and the images drawn
    model = load_model(run, device=resolve_device(device))
    recorded = load_run_info(run).get("dataset")
    names = recorded.get("class_names", []) if isinstance(recorded, dict) else []
    label = class_index(
        model, [str(n) for n in names] if isinstance(names, list) else [], class_name
    )
    channels, height, width = model.config.shape
    if not model.config.image_shape:  # runs before (C, H, W) was recorded: one channel
        height, width = image_shape(load_run_info(run), model.config.input_dim, run)
    shape = (height, width) if channels == 1 else (channels, height, width)
    images = sample(model, n, seed, label).numpy().reshape(n, *shape)
    kind = "" if label is None else f" of class {class_name}"
    click.echo(f"wrote {write_samples(images, out, overwrite)} ({n} images{kind})")


@cli.command("serve")
@RUN
@click.option(
    "--host", default="127.0.0.1",
    help="Address to listen on (loopback by default); any other gets a token (see --token).",
)  # fmt: skip
@click.option("--port", type=int, default=8000, help="Port to listen on; 0 picks a free one.")
@click.option(
    "--token", default=None,
    help="Require TOKEN on every /api request (the printed URL carries it and the page sends "
    "it as 'Authorization: Bearer TOKEN').  [default: none on loopback, a random one otherwise]",
)  # fmt: skip
@run_data_options
def serve_command(
    run: Path, host: str, port: int, token: str | None
) -> None:  # fmt: skip
    """Explore the latent space of a saved run in the browser; prints the URL to open.

    Security: only requests whose Host header names this server (its --host, or localhost,
    127.0.0.1, [::1] on loopback) are answered, cross-origin POSTs are refused, and with a token
    /api answers 401 without it. Connections are bounded (100, fewer under a low descriptor
    limit; the longest-idle is closed first), and a request must send its headers within 5 s
    and its body within 10 s more.
    """
    from vaelab.explorer.app import serve  # the web stack loads only for this command

    data = run_data(run)
    serve(run, host=host, port=port, announce=click.echo, token=token, data=data)


@cli.command("plot")
@RUN
@click.option("--grid", type=int, default=20, help="Images per side of the latent manifold.")
@click.option("--span", type=float, default=2.0, help="The manifold covers [-SPAN, SPAN]^2.")
@run_data_options
def plot_command(
    run: Path, grid: int, span: float
) -> None:  # fmt: skip
    """Draw the six figures of a saved run into RUN/figures/."""
    from vaelab.viz.plots import write_figures

    started = time.perf_counter()
    dataset = _dataset_from(run_data(run))
    write_figures(run, grid, span, dataset=dataset, log=click.echo)
    click.echo(f"figures drawn in {time.perf_counter() - started:.1f}s")


@cli.command("report")
@RUN
@run_data_options
def report_command(run: Path) -> None:
    """Write RUN/report.html: metrics, tables and every figure in one offline file."""
    from vaelab.viz.report import write_report

    dataset = _dataset_from(run_data(run))
    click.echo(f"wrote {write_report(run, dataset=dataset, log=click.echo)}")


def _dataset_from(data: DataConfig | None) -> Dataset | None:
    """The dataset `data` names, or None to use the one the run was trained on."""
    return None if data is None else load_dataset(data)
