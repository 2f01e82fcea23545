"""Command line: a thin layer that builds configs and calls the Python API."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from vaelab import checkpoints
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation import evaluate
from vaelab.losses import gaussian_constant
from vaelab.training import resolve_device, train

_MODEL = ModelConfig()
_TRAIN = TrainConfig()


def _parse_hidden(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise click.BadParameter(f"hidden sizes must be positive, got {value!r}")
    return sizes


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="vaelab")
def cli() -> None:
    """vaelab: train, evaluate and inspect variational auto-encoders on image data.

    The defaults reproduce the Fashion-MNIST VAE tutorial: an MLP 784-400-200-100-20-2 trained with
    Adam (lr 1e-3, batch 200) for 60 epochs.
    """


@cli.command("train")
@click.option("--epochs", type=int, default=_TRAIN.epochs, help="Passes over the training set.")
@click.option("--batch-size", type=int, default=_TRAIN.batch_size, help="Images per step.")
@click.option(
    "--test-batch-size", type=int, default=_TRAIN.test_batch_size,
    help="Images per batch in the test pass after each epoch.",
)  # fmt: skip
@click.option("--lr", type=float, default=_TRAIN.lr, help="Adam learning rate.")
@click.option(
    "--lr-schedule", type=click.Choice(["constant", "cosine-tail"]), default=_TRAIN.lr_schedule,
    help="'constant' is the tutorial's; 'cosine-tail' anneals the last third of training to 0.",
)  # fmt: skip
@click.option(
    "--latent-dim", type=int, default=_MODEL.latent_dim, help="Size of the latent code z."
)
@click.option(
    "--hidden", default=",".join(map(str, _MODEL.hidden)), callback=_parse_hidden,
    help="Encoder hidden sizes, comma separated; the decoder mirrors them.",
)  # fmt: skip
@click.option(
    "--seed", type=int, default=_TRAIN.seed, help="Seed for weights, shuffling and noise."
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default=_TRAIN.device,
    help="'auto' uses CUDA when present, else the CPU.",
)  # fmt: skip
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Folder with the four Fashion-MNIST IDX files (else $VAELAB_DATA, the user cache, "
    "/usr/share/datasets/fashion-mnist, then a verified download).",
)  # fmt: skip
@click.option(
    "--train-csv",
    type=click.Path(path_type=Path),
    default=None,
    help="Training images in the tutorial's CSV layout (label,pixel1,...).",
)
@click.option(
    "--test-csv",
    type=click.Path(path_type=Path),
    default=None,
    help="Test images in the tutorial's CSV layout; needs --train-csv.",
)
@click.option("--name", default=None, help="Run name  [default: a timestamp]")
@click.option(
    "--runs-dir",
    type=click.Path(path_type=Path),
    default=Path("runs"),
    help="Folder that holds run directories.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory of that name.")
@click.option("--no-plots", is_flag=True, help="Do not draw the figures into RUN/figures/.")
def train_command(
    epochs: int, batch_size: int, test_batch_size: int, lr: float, lr_schedule: str,
    latent_dim: int, hidden: tuple[int, ...], seed: int, device: str, data_dir: Path | None,
    train_csv: Path | None, test_csv: Path | None, name: str | None, runs_dir: Path,
    overwrite: bool, no_plots: bool,
) -> None:  # fmt: skip
    """Train a VAE and save the run to RUNS_DIR/NAME."""
    config = RunConfig(
        model=ModelConfig(hidden=hidden, latent_dim=latent_dim),
        data=DataConfig(
            data_dir=_optional_str(data_dir),
            train_csv=_optional_str(train_csv),
            test_csv=_optional_str(test_csv),
        ),
        train=TrainConfig(
            epochs=epochs, batch_size=batch_size, test_batch_size=test_batch_size, lr=lr,
            lr_schedule=lr_schedule, seed=seed, device=device,
        ),
    )  # fmt: skip
    dataset = load_dataset(config.data)
    run_dir = runs_dir / (name or time.strftime("%Y%m%d-%H%M%S"))
    click.echo(f"training on {dataset.source}, {len(dataset.train_images)} images -> {run_dir}")
    train(config, dataset, run_dir=run_dir, overwrite=overwrite, log=click.echo)
    click.echo(f"saved {run_dir}")
    if not no_plots:
        from vaelab.plots import write_figures  # matplotlib loads only when figures are drawn

        write_figures(run_dir, dataset=dataset, log=click.echo)


@cli.command("evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Use the dataset from this folder instead of where the run found it.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
def evaluate_command(run: Path, data_dir: Path | None, device: str) -> None:
    """Test metrics of a saved run, in the tutorial's units."""
    config = checkpoints.load_config(run)
    data_config = config.data
    if data_dir is not None:
        data_config = DataConfig(data_dir=str(data_dir))
    model = checkpoints.load(run, device=resolve_device(device))
    dataset = load_dataset(data_config)
    metrics = evaluate(model, dataset.test_images, config.train.test_batch_size)
    click.echo(
        f"test_loss {metrics.loss:.4f} (MSE {metrics.mse:.4f} | KLD {metrics.kld:.4f}) "
        f"on {metrics.images} test images"
    )
    click.echo(
        f"negative ELBO {metrics.negative_elbo_nats(dataset.input_dim):.2f} nats per image "
        f"(tutorial loss + {gaussian_constant(dataset.input_dim):.2f}, the unit-variance "
        "Gaussian decoder's constant)"
    )


@cli.command("serve")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", help="Address to listen on (loopback by default).")
@click.option("--port", type=int, default=8000, help="Port to listen on; 0 picks a free one.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Use the dataset from this folder instead of where the run found it.",
)  # fmt: skip
def serve_command(run: Path, host: str, port: int, data_dir: Path | None) -> None:
    """Explore the latent space of a saved run in the browser; prints the URL to open."""
    from vaelab.serve import serve  # the web stack loads only for this command

    serve(run, host=host, port=port, data_dir=data_dir, announce=click.echo)


_DATA_DIR_HELP = "Use the dataset from this folder instead of where the run found it."


@cli.command("plot")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--grid", type=int, default=20, help="Images per side of the latent manifold.")
@click.option("--span", type=float, default=2.0, help="The manifold covers [-SPAN, SPAN]^2.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=_DATA_DIR_HELP)
def plot_command(run: Path, grid: int, span: float, data_dir: Path | None) -> None:
    """Draw the six figures of a saved run into RUN/figures/."""
    from vaelab.plots import write_figures

    started = time.perf_counter()
    write_figures(run, grid, span, dataset=_dataset_from(data_dir), log=click.echo)
    click.echo(f"figures drawn in {time.perf_counter() - started:.1f}s")


def _dataset_from(data_dir: Path | None) -> Dataset | None:
    """The dataset in `data_dir`, or None to use the one the run was trained on."""
    return None if data_dir is None else load_dataset(DataConfig(data_dir=str(data_dir)))


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        cli.main(args=argv, prog_name="vaelab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vaelab: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VaelabError as exc:
        click.echo(f"vaelab: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("vaelab: interrupted", err=True)
        sys.exit(130)
