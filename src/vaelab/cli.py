"""Command line: a thin layer that builds configs, calls the Python API, and speaks in flags.

The library's errors name the API's words (``checkpoint_every``); `translate` shows them as the
command's flags (``--checkpoint-every``) in one line, with the exit status the error carries.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vaelab.config import (
    ARCHS,
    DEVICES,
    LIKELIHOODS,
    LR_SCHEDULES,
    PRECISIONS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from vaelab.data import Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation import (
    DEFAULT_IW_SAMPLES,
    EVAL_SEED,
    evaluate,
    evaluate_likelihood,
    parse_size,
    save_eval,
)
from vaelab.latent import sample
from vaelab.rundir import (
    EVAL_FILE,
    RunExists,
    image_shape,
    load_config,
    load_model,
    load_run_info,
    open_run,
)
from vaelab.training import ProgressBar, TrainingInterrupted, train
from vaelab.training.cpu import maybe_reexec_with_mkl_override
from vaelab.training.distributed import DEFAULT_TIMEOUT_S, is_main_process, resolve_device

_MODEL = ModelConfig()
_TRAIN = TrainConfig()


# ---------------------------------------------------------------- errors in the command's words


def _flags(command: click.Command | None) -> dict[str, str]:
    """API name -> how the command line spells it: its flag, or its argument's metavar."""
    if command is None:
        return {}
    names = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name:
            names[param.name] = max(param.opts, key=len)
        elif isinstance(param, click.Argument) and param.name:
            names[param.name] = param.name.upper()
    return names


def translate(error: VaelabError, command: click.Command | None) -> str:
    """The error's message with each parameter it names shown as this command's flag."""
    message = str(error)
    if isinstance(error, RunExists):
        hint = f"--resume {error.run_dir} to continue it, " if error.resumable else ""
        return (
            f"{error.run_dir}: run directory already exists; pass {hint}--overwrite to replace "
            "it or --name to choose another"
        )
    if isinstance(error, TrainingInterrupted):
        return (
            f"stopped by {error.signal_name} {error.where}; checkpoint saved; resume with: "
            f"vaelab train --resume {error.run_dir}"
        )
    flags = _flags(command)
    for name in error.parameters:
        flag = flags.get(name)
        if flag is None:
            continue
        word = rf"(?<![\w./-]){re.escape(name)}"
        message = re.sub(word + r"=True\b", flag, message)
        message = re.sub(word + r"(?![\w/-])", flag, message)
    return message


class _Refusal(Exception):
    """A VaelabError with its message in the words of the command it left."""

    def __init__(self, error: VaelabError, text: str) -> None:
        super().__init__(text)
        self.error = error
        self.text = text


class _Commands(click.Group):
    """The command group; a VaelabError leaving a command is told in that command's flags."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VaelabError as exc:
            name = ctx.invoked_subcommand
            command = self.get_command(ctx, name) if name else None
            raise _Refusal(exc, translate(exc, command)) from exc


# ---------------------------------------------------------------- shared options


def _parse_hidden(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise click.BadParameter(f"hidden sizes must be positive, got {value!r}")
    return sizes


def _device_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--device", type=click.Choice(list(DEVICES)), default=default,
        help="'auto' uses CUDA when present, else the CPU.",
    )  # fmt: skip


_RUN_DATA_DIR = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Use the dataset from this folder instead of where the run found it.",
)  # fmt: skip
_RUN = click.argument("run", type=click.Path(path_type=Path))


@click.group(
    cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(package_name="vaelab")
def cli() -> None:
    """vaelab: train, evaluate and inspect variational auto-encoders on image data.

    The defaults reproduce the Fashion-MNIST VAE tutorial: an MLP 784-400-200-100-20-2 trained with
    Adam (lr 1e-3, batch 200) for 60 epochs.
    """


# ---------------------------------------------------------------- train


@cli.command("train")
@click.option("--epochs", type=int, default=_TRAIN.epochs, help="Passes over the training set.")
@click.option("--batch-size", type=int, default=_TRAIN.batch_size, help="Images per step.")
@click.option(
    "--test-batch-size", type=int, default=_TRAIN.test_batch_size,
    help="Images per batch in the test pass after each epoch.",
)  # fmt: skip
@click.option("--lr", type=float, default=_TRAIN.lr, help="Adam learning rate.")
@click.option(
    "--lr-schedule", type=click.Choice(list(LR_SCHEDULES)), default=_TRAIN.lr_schedule,
    help="'constant' is the tutorial's; 'cosine-tail' anneals the last third of training to 0.",
)  # fmt: skip
@click.option(
    "--latent-dim", type=int, default=_MODEL.latent_dim, help="Size of the latent code z."
)
@click.option(
    "--hidden", default=",".join(map(str, _MODEL.hidden)), callback=_parse_hidden,
    help="Encoder hidden sizes, comma separated; the decoder mirrors them. For --arch conv: "
    "conv 1 channels, conv 2 channels, dense width  [default for conv: 32,64,256]",
)  # fmt: skip
@click.option(
    "--arch", type=click.Choice(list(ARCHS)), default=_MODEL.arch,
    help="'mlp' is the tutorial's; 'conv': two stride-2 convolutions and a dense layer, mirrored "
    "(square images, side a multiple of 4).",
)  # fmt: skip
@click.option(
    "--likelihood", type=click.Choice(list(LIKELIHOODS)), default=_MODEL.likelihood,
    help="The decoder's p(x|z). 'tutorial-mse': the tutorial's loss (unit-variance Gaussian); "
    "'gaussian' learns one scale, 'gaussian-per-pixel' one per pixel.",
)  # fmt: skip
@click.option("--beta", type=float, default=_TRAIN.beta, help="Weight of the KL term (beta-VAE).")
@click.option(
    "--kl-warmup", type=int, default=_TRAIN.kl_warmup,
    help="Epochs over which the KL weight rises linearly from 0 to --beta.",
)  # fmt: skip
@click.option(
    "--seed", type=int, default=_TRAIN.seed, help="Seed for weights, shuffling and noise."
)
@click.option(
    "--precision", type=click.Choice(list(PRECISIONS)), default=_TRAIN.precision,
    help="'32': fp32 throughout. 'bf16-mixed': bf16 matrix products, fp32 weights and Adam. "
    "'auto': bf16-mixed on CPUs with AVX-512 BF16 or AMX, else 32.",
)  # fmt: skip
@_device_option(_TRAIN.device)
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Folder with the four Fashion-MNIST IDX files (else $VAELAB_DATA, the user cache, "
    "/usr/share/datasets/fashion-mnist, then a verified download).",
)  # fmt: skip
@click.option(
    "--train-csv", type=click.Path(path_type=Path), default=None,
    help="Training images in the tutorial's CSV layout (label,pixel1,...).",
)  # fmt: skip
@click.option(
    "--test-csv", type=click.Path(path_type=Path), default=None,
    help="Test images in the tutorial's CSV layout; needs --train-csv.",
)  # fmt: skip
@click.option("--name", default=None, help="Run name  [default: a timestamp]")
@click.option(
    "--runs-dir", type=click.Path(path_type=Path), default=Path("runs"),
    help="Folder that holds run directories.",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory of that name.")
@click.option(
    "--resume", "resume_run", type=click.Path(path_type=Path), default=None,
    help="Continue the run in this directory from its last checkpoint, with its saved settings.",
)  # fmt: skip
@click.option(
    "--checkpoint-every", type=int, default=None,
    help="Also checkpoint every N optimizer steps  [default: every epoch only]",
)  # fmt: skip
@click.option("--no-plots", is_flag=True, help="Do not draw the figures into RUN/figures/.")
@click.option(
    "--dist-timeout", "dist_timeout_s", type=click.IntRange(min=1), default=DEFAULT_TIMEOUT_S,
    help="Under torchrun: seconds a rank waits for the others before the job stops.",
)  # fmt: skip
def train_command(
    name: str | None, runs_dir: Path, overwrite: bool, resume_run: Path | None,
    checkpoint_every: int | None, no_plots: bool, dist_timeout_s: int, **settings: Any,
) -> None:  # fmt: skip
    """Train a VAE and save the run to RUNS_DIR/NAME (or continue one with --resume RUN).

    Under `torchrun --nproc-per-node N -m vaelab train ...` the ranks share each batch (DDP).
    """
    say = click.echo if is_main_process() else None
    if resume_run is not None:
        _refuse_options_besides_resume(resume_run)
        config, run_dir = load_config(resume_run), resume_run
    else:
        config = _run_config(**settings)
        run_dir = runs_dir / (name or time.strftime("%Y%m%d-%H%M%S"))
    dataset = load_dataset(config.data)
    target = "" if resume_run is not None else f" -> {run_dir}"
    if say:
        say(f"training on {dataset.source}, {len(dataset.train_images)} images{target}")
    reporters = [ProgressBar()] if say and sys.stderr.isatty() else []
    train(
        config, dataset, run_dir=run_dir, overwrite=overwrite, resume=resume_run is not None,
        log=say, callbacks=reporters, checkpoint_every=checkpoint_every,
        dist_timeout_s=dist_timeout_s,
    )  # fmt: skip
    if not is_main_process():
        return
    click.echo(f"saved {run_dir}")
    if not no_plots:
        from vaelab.viz.plots import write_figures  # matplotlib loads only when figures are drawn

        write_figures(run_dir, dataset=dataset, log=click.echo)


def _run_config(
    epochs: int, batch_size: int, test_batch_size: int, lr: float, lr_schedule: str,
    latent_dim: int, hidden: tuple[int, ...], arch: str, likelihood: str, beta: float,
    kl_warmup: int, seed: int, precision: str, device: str, data_dir: Path | None,
    train_csv: Path | None, test_csv: Path | None,
) -> RunConfig:  # fmt: skip
    return RunConfig(
        model=ModelConfig(hidden=hidden, latent_dim=latent_dim, arch=arch, likelihood=likelihood),
        data=DataConfig(
            data_dir=_optional_str(data_dir),
            train_csv=_optional_str(train_csv),
            test_csv=_optional_str(test_csv),
        ),
        train=TrainConfig(
            epochs=epochs, batch_size=batch_size, test_batch_size=test_batch_size, lr=lr,
            lr_schedule=lr_schedule, seed=seed, device=device, precision=precision, beta=beta,
            kl_warmup=kl_warmup,
        ),
    )  # fmt: skip


# Options that do not change what is computed, so a resumed run may set them again.
_RESUMABLE_OPTIONS = {"resume_run", "checkpoint_every", "no_plots", "dist_timeout_s"}


def _refuse_options_besides_resume(run: Path) -> None:
    ctx = click.get_current_context()
    given = [
        "--" + name.replace("_", "-")
        for name in ctx.params
        if name not in _RESUMABLE_OPTIONS
        and ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    if given:
        raise VaelabError(
            f"--resume continues {run} with the settings in its config.json; "
            f"drop {', '.join(given)}"
        )


# ---------------------------------------------------------------- using a saved run


@cli.command("evaluate")
@_RUN
@_RUN_DATA_DIR
@_device_option("auto")
@click.option(
    "--iw-samples", "k", type=int, default=DEFAULT_IW_SAMPLES,
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
def evaluate_command(
    run: Path, data_dir: Path | None, device: str, k: int, max_memory: str, seed: int,
    images: int | None,
) -> None:  # fmt: skip
    """Test metrics of a saved run: the training loss, the negative ELBO and the IWAE estimate
    of -log p(x) in nats; writes RUN/eval.json."""
    memory = parse_size(max_memory)
    opened = open_run(run, data_dir=data_dir, device=resolve_device(device))
    test_images = opened.dataset.test_images
    if images is not None:
        if not 1 <= images <= len(test_images):
            raise VaelabError(f"--images must be between 1 and {len(test_images)}, got {images}")
        test_images = test_images[:images]
    model = opened.model
    metrics = evaluate(model, test_images, opened.config.train.test_batch_size)
    part = "MSE" if metrics.likelihood == "tutorial-mse" else "reconstruction"
    click.echo(
        f"test_loss {metrics.loss:.4f} ({part} {metrics.reconstruction:.4f} | "
        f"KLD {metrics.kld:.4f}) on {metrics.images} test images"
    )
    report = evaluate_likelihood(
        model, test_images, k, max_memory=memory, seed=seed, progress=sys.stderr.isatty()
    )
    click.echo(
        f"negative ELBO {report.negative_elbo_nats:.2f} nats per image "
        f"(reconstruction {report.reconstruction_nats:.2f} + KL {report.kl_nats:.2f}; "
        f"{model.config.likelihood} likelihood, all constants included)"
    )
    click.echo(
        f"IWAE -log p(x) {report.iwae_nll_nats:.2f} +- {report.iwae_stderr_nats:.2f} nats per "
        f"image (k={report.iw_samples}, {report.images} images, {report.seconds:.1f}s)"
    )
    replaced = (run / EVAL_FILE).exists()
    path = save_eval(run, report)
    click.echo(f"{'replaced' if replaced else 'wrote'} {path}")


@cli.command("sample")
@_RUN
@click.option("--n", "n", type=int, default=64, help="Number of images to draw.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("samples.png"),
    help="Output file: .png (a grid, one pixel per pixel) or .npy (n x H x W float32 in [0, 1]).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, help="Seed of the latent codes z ~ N(0, I).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@_device_option("cpu")
def sample_command(run: Path, n: int, out: Path, seed: int, overwrite: bool, device: str) -> None:
    """Draw new images: decoder means for z ~ N(0, I) (the report's samples for the same seed)."""
    from vaelab.viz.images import write_samples

    model = load_model(run, device=resolve_device(device))
    shape = image_shape(load_run_info(run), model.config.input_dim, run)
    images = sample(model, n, seed).numpy().reshape(n, *shape)
    click.echo(f"wrote {write_samples(images, out, overwrite)} ({n} images)")


@cli.command("serve")
@_RUN
@click.option("--host", default="127.0.0.1", help="Address to listen on (loopback by default).")
@click.option("--port", type=int, default=8000, help="Port to listen on; 0 picks a free one.")
@_RUN_DATA_DIR
def serve_command(run: Path, host: str, port: int, data_dir: Path | None) -> None:
    """Explore the latent space of a saved run in the browser; prints the URL to open."""
    from vaelab.explorer.app import serve  # the web stack loads only for this command

    serve(run, host=host, port=port, data_dir=data_dir, announce=click.echo)


@cli.command("plot")
@_RUN
@click.option("--grid", type=int, default=20, help="Images per side of the latent manifold.")
@click.option("--span", type=float, default=2.0, help="The manifold covers [-SPAN, SPAN]^2.")
@_RUN_DATA_DIR
def plot_command(run: Path, grid: int, span: float, data_dir: Path | None) -> None:
    """Draw the six figures of a saved run into RUN/figures/."""
    from vaelab.viz.plots import write_figures

    started = time.perf_counter()
    write_figures(run, grid, span, dataset=_dataset_from(data_dir), log=click.echo)
    click.echo(f"figures drawn in {time.perf_counter() - started:.1f}s")


@cli.command("report")
@_RUN
@_RUN_DATA_DIR
def report_command(run: Path, data_dir: Path | None) -> None:
    """Write RUN/report.html: metrics, tables and every figure in one offline file."""
    from vaelab.viz.report import write_report

    click.echo(f"wrote {write_report(run, dataset=_dataset_from(data_dir), log=click.echo)}")


def _dataset_from(data_dir: Path | None) -> Dataset | None:
    """The dataset in `data_dir`, or None to use the one the run was trained on."""
    return None if data_dir is None else load_dataset(DataConfig(data_dir=str(data_dir)))


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and the error's exit status."""
    maybe_reexec_with_mkl_override(
        sys.argv[1:] if argv is None else argv, say=lambda line: click.echo(line, err=True)
    )
    try:
        cli.main(args=argv, prog_name="vaelab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vaelab: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"vaelab: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except _Refusal as refusal:
        prefix = "" if isinstance(refusal.error, TrainingInterrupted) else "error: "
        click.echo(f"vaelab: {prefix}{refusal.text}", err=True)
        sys.exit(refusal.error.exit_code)
    except VaelabError as exc:
        click.echo(f"vaelab: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("vaelab: interrupted", err=True)
        sys.exit(130)
