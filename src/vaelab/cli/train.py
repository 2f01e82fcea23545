"""`vaelab train`: the tutorial's run by default, every setting of the config as an option."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from vaelab._outputs import check_run_folder
from vaelab.cli.group import cli, command_flags, device_option
from vaelab.cli.options import (
    parse_folder_name,
    parse_hidden,
    parse_names,
    parse_split,
    reading_options,
)
from vaelab.cli.train_config import option_given, run_config
from vaelab.config import (
    ARCHS,
    BACKWARDS,
    BINARIZE,
    LIKELIHOODS,
    LOADERS,
    LR_SCHEDULES,
    MAX_EPOCHS,
    MAX_WORKERS,
    OBJECTIVES,
    PRECISIONS,
    PRIORS,
    TEST_EACH_EPOCH,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from vaelab.data import Dataset, load_dataset
from vaelab.data.splits import split_count
from vaelab.errors import MissingExtra, VaelabError
from vaelab.rundir import TENSORBOARD_DIR, load_config
from vaelab.training import Callback, ProgressBar, train
from vaelab.training.distributed import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, is_main_process
from vaelab.training.guard import NothingToResume
from vaelab.training.tensorboard import IMAGES_EVERY, TensorBoardLogger

_MODEL = ModelConfig()
_TRAIN = TrainConfig()
_DATA = DataConfig()


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
    "--hidden", default=",".join(map(str, _MODEL.hidden)), callback=parse_hidden,
    help="Encoder hidden sizes, comma separated; the decoder mirrors them. For --arch conv: "
    "conv 1 channels, conv 2 channels, dense width  [default for conv: 32,64,256]",
)  # fmt: skip
@click.option(
    "--arch", type=click.Choice([a for a in ARCHS if a != "custom"]), default=_MODEL.arch,
    help="'mlp' is the tutorial's; 'gated': gated dense layers (default 300,300), as in the "
    "VampPrior paper; 'conv': two stride-2 convolutions and a dense layer, mirrored (any size).",
)  # fmt: skip
@click.option(
    "--prior", type=click.Choice(list(PRIORS)), default=_MODEL.prior,
    help="p(z): 'gaussian' N(0, I); 'vamp' the VampPrior (a mixture of the posteriors of learned "
    "pseudo-inputs); 'mog' a mixture of learned Gaussians.",
)  # fmt: skip
@click.option(
    "--pseudo-inputs", "--components", "components", type=int, default=_MODEL.components,
    help="Pseudo-inputs of the VampPrior (components of the 'mog' prior).",
)  # fmt: skip
@click.option(
    "--stochastic-layers", type=click.IntRange(1, 2), default=_MODEL.stochastic_layers,
    help="2: the hierarchical VAE z2 -> z1 -> x (both of --latent-dim); with --arch conv the "
    "VampPrior paper's ConvHVAE.",
)  # fmt: skip
@click.option(
    "--conditional", is_flag=True,
    help="A conditional VAE: the class (one-hot) goes into the encoder and the decoder; "
    "`vaelab sample --class` then draws images of a class.",
)  # fmt: skip
@click.option(
    "--objective", type=click.Choice(list(OBJECTIVES)), default=_TRAIN.objective,
    help="'elbo', or 'iwae': the importance-weighted bound of --train-samples samples.",
)  # fmt: skip
@click.option(
    "--train-samples", type=int, default=_TRAIN.train_samples, metavar="K",
    help="Samples of z per image in each training step (the IWAE bound's K).",
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
@click.option(
    "--backward", type=click.Choice(list(BACKWARDS)), default=_TRAIN.backward,
    help="'auto': the MLP's hand-written backward pass where it covers the model (same "
    "gradients, about twice as fast on a CPU). 'autograd': always autograd.",
)  # fmt: skip
@click.option(
    "--cuda-graphs/--no-cuda-graphs", default=_TRAIN.cuda_graphs,
    help="Replay the MLP's hand-written step from a CUDA graph (--device cuda, one process).",
)  # fmt: skip
@device_option(_TRAIN.device)
@click.option(
    "--data", "source", default=None, metavar="PATH|NAME",
    help="The training images: an image folder, a .npy or .npz file, IDX files, a CSV file, "
    "Parquet or Arrow files (a Hugging Face dataset), or a built-in dataset's name (vaelab "
    "datasets lists them)  [default: fashion-mnist]",
)  # fmt: skip
@click.option(
    "--test-data", "test_source", default=None, metavar="PATH",
    help="A separate test set in any of those formats  [default: the source's own test split, "
    "else --test-split of it]",
)  # fmt: skip
@reading_options
@click.option(
    "--class-names", default=None, callback=parse_names, metavar="A,B,...",
    help="Names of the classes 0, 1, ..., comma separated.",
)  # fmt: skip
@click.option(
    "--test-split", default=str(_DATA.test_split), callback=parse_split, metavar="F|N",
    help="For data without a test set: the fraction (or number) of images held out for testing.",
)  # fmt: skip
@click.option(
    "--val-split", default="0", callback=parse_split, metavar="F|N",
    help="Hold out this fraction (or number) of the training images for validation; the run "
    "then keeps the best validation epoch's weights.",
)  # fmt: skip
@click.option(
    "--split-seed", type=int, default=_DATA.split_seed,
    help="Seed of the test and validation splits and of binarization.",
)  # fmt: skip
@click.option(
    "--binarize", type=click.Choice(list(BINARIZE)), default=_DATA.binarize,
    help="'dynamic': x ~ Bernoulli(pixels) drawn afresh for every batch; 'static': drawn once "
    "(train and test) from --split-seed.",
)  # fmt: skip
@click.option(
    "--loader", type=click.Choice(list(LOADERS)), default=_DATA.loader,
    help="How training batches are read: 'memory' in the training process, 'stream' by "
    "DataLoader workers ahead of the step; 'auto' streams images mapped from a file of more "
    "than 1 GiB. The batches are the same either way.",
)  # fmt: skip
@click.option(
    "--workers", type=click.IntRange(0, MAX_WORKERS), default=_DATA.workers,
    help="DataLoader workers when streaming; 0: one fewer than the CPUs (1 to 4).",
)  # fmt: skip
@click.option(
    "--early-stopping", type=int, default=_TRAIN.early_stopping, metavar="PATIENCE",
    help="Stop after PATIENCE epochs without a better validation loss (needs --val-split); "
    "0: off.",
)  # fmt: skip
@click.option(
    "--test-each-epoch", type=click.Choice(list(TEST_EACH_EPOCH)),
    default=_TRAIN.test_each_epoch,
    help="Evaluate the test set after every epoch; 'auto': unless --val-split is given.",
)  # fmt: skip
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Folder with the built-in dataset's files (else $VAELAB_DATA, the user cache, "
    "/usr/share/datasets/NAME, then a verified download).",
)  # fmt: skip
@click.option(
    "--train-csv", type=click.Path(path_type=Path), default=None,
    help="Training images in a CSV file (the tutorial's label,pixel1,... or pixels only), read "
    "as --data reads one.",
)  # fmt: skip
@click.option(
    "--test-csv", type=click.Path(path_type=Path), default=None,
    help="Test images in a CSV file, read as --test-data reads one; needs --train-csv.",
)  # fmt: skip
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), default=None,
    help="Start from the settings of a JSON, YAML or TOML file (the sections of config.json); "
    "options given here override them. Relative paths in the file are read from its folder.",
)  # fmt: skip
@click.option(
    "--from", "from_run", type=click.Path(path_type=Path), default=None, metavar="RUN",
    help="Start from the settings of an earlier run (e.g. with another --seed and --name).",
)  # fmt: skip
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the settings as config.json would hold them (paths made absolute; the "
    "relative paths of a --config file are named on stderr, resolved against its folder), and "
    "exit.",
)
@click.option(
    "--name", default=None, callback=parse_folder_name,
    help="Run name: the run's folder in RUNS_DIR  [default: a timestamp]",
)  # fmt: skip
@click.option(
    "--runs-dir", type=click.Path(path_type=Path), default=Path("runs"),
    help="Folder that holds run directories.",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory of that name.")
@click.option(
    "--resume", "resume_run", type=click.Path(path_type=Path), default=None,
    help="Continue the run in this directory from its last checkpoint, with its saved settings "
    "(with --epochs N: train it on to N epochs).",
)  # fmt: skip
@click.option(
    "--checkpoint-every", type=int, default=None,
    help="Also checkpoint every N optimizer steps  [default: every epoch only]",
)  # fmt: skip
@click.option("--no-plots", is_flag=True, help="Do not draw the figures into RUN/figures/.")
@click.option(
    "--tensorboard/--no-tensorboard", default=None,
    help="Log scalars, images and hparams for TensorBoard into RUN/tensorboard/  "
    "[default: on when the tensorboard package is installed]",
)  # fmt: skip
@click.option(
    "--tensorboard-images-every", type=click.IntRange(0, MAX_EPOCHS), default=IMAGES_EVERY,
    metavar="N",
    help="Draw reconstructions and samples into TensorBoard every N epochs and at the end "
    "(0: never).",
)  # fmt: skip
@click.option(
    "--dist-timeout", "dist_timeout_s", type=click.IntRange(1, MAX_TIMEOUT_S),
    default=DEFAULT_TIMEOUT_S,
    help="Under torchrun: seconds a rank waits for the others before the job stops.",
)  # fmt: skip
def train_command(
    name: str | None, runs_dir: Path, overwrite: bool, resume_run: Path | None,
    checkpoint_every: int | None, no_plots: bool, dist_timeout_s: int, config_file: Path | None,
    from_run: Path | None, print_config: bool, tensorboard: bool | None,
    tensorboard_images_every: int, **settings: Any,
) -> None:  # fmt: skip
    """Train a VAE and save the run to RUNS_DIR/NAME (or continue one with --resume RUN).

    Under `torchrun --nproc-per-node N -m vaelab train ...` the ranks share each batch (DDP).
    """
    say = click.echo if is_main_process() else None
    if resume_run is not None:
        _refuse_options_besides_resume(resume_run)
        config, run_dir = load_config(resume_run), resume_run
        if option_given("epochs"):  # --resume RUN --epochs N trains the run on to N epochs
            config = replace(config, train=replace(config.train, epochs=settings["epochs"]))
    else:
        told = _say_on_stderr if print_config else None  # where the file's relative paths led
        config = run_config(settings, config_file, from_run, told)
        run_dir = runs_dir / (name or time.strftime("%Y%m%d-%H%M%S"))
    if print_config:
        resolved = replace(config, data=config.data.resolved())
        click.echo(json.dumps(resolved.to_dict(), indent=2))
        return
    trackers = _tensorboard_logger(tensorboard, run_dir, tensorboard_images_every)
    dataset = load_dataset(config.data)
    target = "" if resume_run is not None else f" -> {run_dir}"
    if say:
        say(f"training on {_data_summary(dataset, config)}{target}")
    reporters: list[Callback] = [ProgressBar()] if say and sys.stderr.isatty() else []
    reporters += trackers
    try:
        train(
            config, dataset, run_dir=run_dir, overwrite=overwrite, resume=resume_run is not None,
            log=say, callbacks=reporters, checkpoint_every=checkpoint_every,
            dist_timeout_s=dist_timeout_s,
        )  # fmt: skip
    except NothingToResume as done:
        if say:  # a finished run: nothing is written, and that is not an error (exit 0)
            ended = (
                f"finished all {done.epochs} epochs already"
                if done.stopped_early_at is None
                else f"stopped early after epoch {done.stopped_early_at} (no better validation "
                "loss)"
            )
            say(
                f"{done.run_dir}: {ended}; nothing to resume (--epochs above {done.epochs} trains "
                "it further)"
            )
        return
    if not is_main_process():
        return
    click.echo(f"saved {run_dir}")
    if not no_plots:
        from vaelab.viz.plots import write_figures  # matplotlib loads only when figures are drawn

        write_figures(run_dir, dataset=dataset, log=click.echo)


def _data_summary(dataset: Dataset, config: RunConfig) -> str:
    """'SOURCE (FORMAT, C x H x W), N training images[, V for validation], T for testing'."""
    channels, height, width = dataset.shape
    kind = f"{dataset.format}, " if dataset.format else ""
    train, val = len(dataset.train_images), 0
    if config.data.val_split:
        val = split_count(train, config.data.val_split, "val_split")
    held = f", {val} for validation" if val else ""
    return (
        f"{dataset.source} ({kind}{channels}x{height}x{width}), {train - val} training images"
        f"{held}, {len(dataset.test_images)} for testing"
    )


def _say_on_stderr(line: str) -> None:
    click.echo(line, err=True)


def _tensorboard_logger(wanted: bool | None, run_dir: Path, images_every: int) -> list[Callback]:
    """The TensorBoard logger into RUN/tensorboard/: when asked for, or by default when the
    tensorboard package is installed; asked for without it, the one-line error names the extra."""
    if wanted is False or not is_main_process():
        return []
    check_run_folder(run_dir / TENSORBOARD_DIR, "TensorBoard logs")
    try:
        return [TensorBoardLogger(run_dir / TENSORBOARD_DIR, images_every=images_every)]
    except MissingExtra:
        if wanted:
            raise
        return []


# Options a resumed run may set: those that do not change what is computed, and --epochs, which
# trains the run on to more epochs.
_RESUMABLE_OPTIONS = {
    "resume_run", "checkpoint_every", "no_plots", "dist_timeout_s", "epochs", "tensorboard",
    "tensorboard_images_every",
}  # fmt: skip


def _refuse_options_besides_resume(run: Path) -> None:
    ctx = click.get_current_context()
    flags = command_flags(ctx.command)
    given = [
        flags[name] for name in ctx.params if name not in _RESUMABLE_OPTIONS and option_given(name)
    ]
    if given:
        raise VaelabError(
            f"--resume continues {run} with the settings in its config.json; "
            f"drop {', '.join(given)}"
        )
