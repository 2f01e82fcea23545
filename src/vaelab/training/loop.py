"""The training loop: Adam on the tutorial's loss, a shuffled pass per epoch, then a test pass."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from vaelab import rundir
from vaelab._version import __version__
from vaelab.config import RunConfig
from vaelab.data import Dataset, load_dataset
from vaelab.data.dataset import test_fingerprint
from vaelab.errors import VaelabError
from vaelab.evaluation import evaluate
from vaelab.models import VAE, LossTerms
from vaelab.training.checkpoint import EpochProgress, Layout, Trainables, run_identity
from vaelab.training.distributed import (
    DEFAULT_TIMEOUT_S,
    World,
    barrier,
    check_divisible,
    close_world,
    init_world,
    rank_device,
    resolve_device,
)
from vaelab.training.epoch import (
    make_objective,
    make_optimizer,
    make_scheduler,
    train_epoch,
)
from vaelab.training.events import (
    Callback,
    Callbacks,
    EpochMetrics,
    RunStart,
    StepEnd,
    TrainResult,
)
from vaelab.training.guard import RunGuard, check_checkpoint_every
from vaelab.training.precision import resolve_precision
from vaelab.training.reporters import EpochLog


def run_layout(config: RunConfig, dataset: Dataset, steps_per_epoch: int) -> Layout:
    """The numbers a checkpoint of this run must agree with."""
    row = {f.name: 0 if f.type == "int" else 0.0 for f in fields(EpochMetrics)}
    return Layout(config.train.epochs, steps_per_epoch, len(dataset.train_images), row)


def _check_fits(config: RunConfig, dataset: Dataset) -> None:
    if config.train.batch_size > len(dataset.train_images):
        raise VaelabError(
            f"batch_size {config.train.batch_size} is larger than the training set "
            f"({len(dataset.train_images)} images)",
            parameters=("batch_size",),
        )


def run_info(config: RunConfig, dataset: Dataset, device: torch.device) -> dict[str, object]:
    """What config.json records beside the config itself."""
    return {
        "dataset": {
            "source": dataset.source,
            "train_images": len(dataset.train_images),
            "test_images": len(dataset.test_images),
            "image_shape": list(dataset.image_shape),
            "class_names": list(dataset.class_names),
            "test_sha256": test_fingerprint(dataset),
        },
        "device": str(device),
        "precision": resolve_precision(config.train.precision, device),
        "versions": {
            "vaelab": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def train(
    config: RunConfig | None = None,
    dataset: Dataset | None = None,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
    resume: bool = False,
    checkpoint_every: int | None = None,
    dist_timeout_s: int = DEFAULT_TIMEOUT_S,
    callbacks: Iterable[Callback] = (),
) -> TrainResult:
    """Train a VAE as the config says; when `run_dir` is given, save the run there.

    The model's input size follows the data. `log` receives the tutorial's lines (None for
    silence); `callbacks` receive every event of the loop (see `vaelab.training.events`). With a
    run directory, a full checkpoint is written every epoch (and every `checkpoint_every` steps),
    SIGINT/SIGTERM stop cleanly after a checkpoint, and `resume` continues from the last one. A
    non-finite loss stops training. Started by torchrun, each rank trains on its share of every
    batch (DDP); rank 0 alone reports and writes. Returns the model, the per-epoch history and the
    time.
    """
    config = config or RunConfig()
    dataset = dataset or load_dataset(config.data)
    config = replace(
        config,
        model=replace(config.model, input_dim=dataset.input_dim, image_shape=dataset.shape),
        data=config.data.resolved(),  # config.json then names the same files from anywhere
    )
    _check_fits(config, dataset)
    check_checkpoint_every(checkpoint_every)
    if resume and run_dir is None:
        raise VaelabError("resume=True needs the run_dir to continue", parameters=("resume",))
    device = resolve_device(config.train.device)
    world = init_world(device, dist_timeout_s)
    reporters = [EpochLog(log)] if log is not None else []
    report = Callbacks([*reporters, *callbacks] if world.is_main else [])
    try:
        check_divisible(config.train.batch_size, world)
        return _train(
            config, dataset, rank_device(device, world), world, run_dir, overwrite, report,
            resume, checkpoint_every,
        )  # fmt: skip
    except RuntimeError as exc:  # gloo and nccl report a dead or silent peer as RuntimeError
        if not world.distributed:
            raise
        raise VaelabError(lost_ranks_message(world, run_dir, exc), parameters=("resume",)) from None
    finally:
        close_world(world)


def _train(
    config: RunConfig,
    dataset: Dataset,
    device: torch.device,
    world: World,
    run_dir: str | Path | None,
    overwrite: bool,
    report: Callbacks,
    resume: bool,
    checkpoint_every: int | None,
) -> TrainResult:
    with ExitStack() as stack:
        claim = None
        if run_dir is not None and world.is_main:
            claim = stack.enter_context(rundir.claim_run_dir(Path(run_dir), overwrite, resume))
        guards: list[RunGuard] = []
        try:
            return _train_in(
                config, dataset, device, world, run_dir, claim, report, resume, checkpoint_every,
                guards.append,
            )  # fmt: skip
        except BaseException:
            if claim is not None and not resume:
                # A failed start (nothing checkpointed past the start) leaves nothing behind.
                claim.keep = any(guard.progress_saved for guard in guards)
            raise


def _train_in(
    config: RunConfig,
    dataset: Dataset,
    device: torch.device,
    world: World,
    run_dir: str | Path | None,
    claim: rundir.Claim | None,
    report: Callbacks,
    resume: bool,
    checkpoint_every: int | None,
    on_guard: Callable[[RunGuard], None],
) -> TrainResult:
    out_dir = None if claim is None else claim.run_dir  # where this process writes: rank 0's
    if out_dir is not None and not resume:
        rundir.save_config(out_dir, config, run_info(config, dataset, device))
    barrier(world)

    torch.manual_seed(config.train.seed)
    model = VAE(config.model).to(device)
    precision = resolve_precision(config.train.precision, device)
    objective = make_objective(model, world, precision)
    optimizer = make_optimizer(model, config.train)
    steps_per_epoch = len(dataset.train_images) // config.train.batch_size
    scheduler = make_scheduler(optimizer, config.train, steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    train_images = dataset.train_images.to(device)
    test_images = dataset.test_images.to(device)
    guard_dir = None if run_dir is None else Path(run_dir)
    report.on_run_start(RunStart(config, device, precision, world.size, steps_per_epoch, guard_dir))

    identity: dict[str, object] = {}
    extended_from = None
    if guard_dir is not None:
        data = (dataset.train_images, dataset.test_images)
        identity = run_identity(config.to_dict(), data, device, precision)
        extended_from = _extension_base(guard_dir, config) if resume else None
    started_identity = identity
    if extended_from is not None:  # the checkpoint was written under the run's saved epochs
        started_identity = run_identity(extended_from.to_dict(), data, device, precision)
    guard = RunGuard(
        guard_dir, Trainables(model, optimizer, scheduler, generator),
        run_layout(config, dataset, steps_per_epoch), started_identity, checkpoint_every,
        report.on_note, writer=world.is_main,
    )  # fmt: skip
    on_guard(guard)
    started = time.perf_counter()
    with guard.catching_signals():
        state = guard.begin(resume)
        if extended_from is not None:
            guard.identity = identity
            _extend(out_dir, config, extended_from, scheduler, report)
        history = [EpochMetrics(**row) for row in state.history]
        resume_from = state.progress
        for epoch in range(state.epochs_done + 1, config.train.epochs + 1):
            epoch_start = time.perf_counter()
            report.on_epoch_start(epoch, steps_per_epoch - (resume_from.step if resume_from else 0))

            def after_step(progress: EpochProgress, terms: LossTerms, epoch: int = epoch) -> None:
                guard.after_step(epoch, progress)
                report.on_step_end(StepEnd(epoch, progress.step, steps_per_epoch, terms))

            train_terms = train_epoch(
                model, optimizer, scheduler, train_images, config.train, generator, precision,
                first_step=(epoch - 1) * steps_per_epoch, resume_from=resume_from,
                after_step=after_step, objective=objective, world=world,
            )  # fmt: skip
            resume_from = None
            test = evaluate(model, test_images, config.train.test_batch_size)
            row = EpochMetrics(
                epoch, time.perf_counter() - epoch_start, *train_terms, test.loss,
                test.reconstruction, test.kld,
            )  # fmt: skip
            history.append(row)
            report.on_epoch_end(row)
            if out_dir is not None:
                rundir.save_metrics(out_dir, history)
            guard.after_epoch(epoch, asdict(row))
    total = time.perf_counter() - started
    if out_dir is not None:
        rundir.save_weights(out_dir, model)
    result = TrainResult(model=model.eval(), history=history, total_seconds=total, run_dir=out_dir)
    report.on_run_end(result)
    return result


def _extension_base(run_dir: Path, config: RunConfig) -> RunConfig | None:
    """The run's saved config when `config` differs from it in train.epochs alone (a resume that
    extends the run), else None (any other difference is refused by the checkpoint's identity)."""
    saved = rundir.load_config(run_dir)
    if saved.train.epochs == config.train.epochs:
        return None
    if replace(saved, train=replace(saved.train, epochs=config.train.epochs)) != config:
        return None
    if config.train.epochs < saved.train.epochs:
        raise VaelabError(
            f"{run_dir}: a resume can extend a run, not shorten it: epochs={config.train.epochs} "
            f"is below the {saved.train.epochs} it is set for",
            parameters=("epochs",),
        )
    return saved


def _extend(
    out_dir: Path | None,
    config: RunConfig,
    saved: RunConfig,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    report: Callbacks,
) -> None:
    """Carry a resumed run on to `config.train.epochs`: config.json says so, and the learning
    rate from the current step on is that of the longer run's schedule."""
    step = scheduler.last_epoch
    lrs = [base * factor(step) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports until the next step
    if out_dir is not None:
        rundir.extend_epochs(out_dir, config.train.epochs)
    report.on_note(
        f"extending the run from {saved.train.epochs} to {config.train.epochs} epochs "
        f"(learning rate from here: {lrs[0]:.3g}, {config.train.lr_schedule} over "
        f"{config.train.epochs} epochs)"
    )


def lost_ranks_message(world: World, run_dir: str | Path | None, error: Exception) -> str:
    """One line for a collective that failed: another rank died or stopped answering."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    kept = ""
    if run_dir is not None:
        kept = f"; the last checkpoint in {run_dir} is kept (resume=True continues it)"
    return (
        f"rank {world.rank} of {world.size}: lost contact with the other ranks (one stopped or "
        f"timed out: {detail[:200]}){kept}"
    )
