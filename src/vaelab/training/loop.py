"""The training loop: Adam on the tutorial's loss, a shuffled pass per epoch, then a test pass."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack, closing
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from vaelab import rundir
from vaelab.config import RunConfig
from vaelab.data import Dataset, load_dataset
from vaelab.data.images import Images
from vaelab.data.loader import make_feed, on_device
from vaelab.data.model_data import ModelData, model_data
from vaelab.diagnostics import diagnose_posterior, few_steps_note
from vaelab.errors import VaelabError
from vaelab.evaluation import evaluate
from vaelab.models import VAE, LossTerms, build_model
from vaelab.models.likelihoods import kl_weight
from vaelab.training.checkpoint import (
    EpochProgress,
    LaterFingerprint,
    Trainables,
    fingerprint,
    float_fingerprint,
    run_identity,
)
from vaelab.training.distributed import (
    DEFAULT_TIMEOUT_S,
    World,
    barrier,
    check_divisible,
    close_world,
    init_world,
    lost_ranks_message,
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
from vaelab.training.extension import extend, extension_base
from vaelab.training.guard import RunGuard, check_checkpoint_every
from vaelab.training.precision import resolve_precision
from vaelab.training.reporters import EpochLog
from vaelab.training.selection import best_epoch, selection_record, stopped_early, weights_copy
from vaelab.training.start import (
    check_fits,
    check_memory_fits,
    check_model_fits,
    class_count,
    run_info,
    run_layout,
)


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
    data: Any = None,
    test_data: Any = None,
    model: VAE | None = None,
) -> TrainResult:
    """Train a VAE as the config says; when `run_dir` is given, save the run there.

    The images are `dataset`, else `data` (NumPy arrays or torch tensors of images, an
    `(images, labels)` pair, a torch Dataset, or a path; see `vaelab.data.as_dataset`) with
    `test_data` as its test set, else what `config.data` names. The model's input size follows
    the data. With `config.data.val_split`, the run keeps the best validation epoch's weights
    (and stops early after `config.train.early_stopping` epochs without a better one). `log`
    receives the tutorial's lines (None for silence); `callbacks` receive every event of the loop
    (see `vaelab.training.events`). With a run directory, a full checkpoint is written every
    epoch (and every `checkpoint_every` steps), SIGINT/SIGTERM stop cleanly after a checkpoint,
    and `resume` continues from the last one. A non-finite loss stops training. Started by
    torchrun, each rank trains on its share of every batch (DDP); rank 0 alone reports and
    writes. `model` trains a VAE you built (one with your own networks, `VAE(config.model,
    encoder=..., decoder=...)`) instead of the one config.model describes; its config is the
    run's. Returns the model, the per-epoch history and the time.
    """
    config = config or RunConfig()
    if data is not None or test_data is not None:
        if dataset is not None:
            raise VaelabError("give dataset or data, not both", parameters=("dataset", "data"))
        if _is_path(data) and (test_data is None or _is_path(test_data)):
            # named in config.json, so that the run's data can be found again
            sources: dict[str, Any] = {"source": str(data), "test_source": _optional_str(test_data)}
            config = replace(config, data=replace(config.data, **sources))
        else:
            from vaelab.data.arrays import as_dataset  # the in-memory forms of data

            dataset = as_dataset(data, config.data, test_data)
    dataset = dataset or load_dataset(config.data)
    dataset.check()
    if model is not None:
        config = replace(config, model=model.config)
        check_model_fits(model, dataset)
    config = replace(
        config,
        model=replace(
            config.model, input_dim=dataset.input_dim, image_shape=dataset.shape,
            classes=class_count(config, dataset),
        ),
        data=config.data.resolved(),  # config.json then names the same files from anywhere
    )  # fmt: skip
    if model is not None:
        model.config = config.model
    prepared = model_data(dataset, config.data)
    check_fits(config, prepared)
    check_checkpoint_every(checkpoint_every)
    if resume and run_dir is None:
        raise VaelabError("resume=True needs the run_dir to continue", parameters=("resume",))
    device = resolve_device(config.train.device)
    check_memory_fits(config, prepared, device, run_dir is not None, model)
    world = init_world(device, dist_timeout_s)
    reporters = [EpochLog(log)] if log is not None else []
    report = Callbacks([*reporters, *callbacks] if world.is_main else [])
    try:
        check_divisible(config.train.batch_size, world)
        return _train(
            config, dataset, prepared, rank_device(device, world), world, run_dir, overwrite,
            report, resume, checkpoint_every, model,
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
    prepared: ModelData,
    device: torch.device,
    world: World,
    run_dir: str | Path | None,
    overwrite: bool,
    report: Callbacks,
    resume: bool,
    checkpoint_every: int | None,
    given_model: VAE | None = None,
) -> TrainResult:
    with ExitStack() as stack:
        claim = None
        if run_dir is not None and world.is_main:
            claim = stack.enter_context(rundir.claim_run_dir(Path(run_dir), overwrite, resume))
        guards: list[RunGuard] = []
        try:
            return _train_in(
                config, dataset, prepared, device, world, run_dir, claim, report, resume,
                checkpoint_every, guards.append, given_model,
            )  # fmt: skip
        except BaseException:
            if claim is not None and not resume:
                # A failed start (nothing checkpointed past the start) leaves nothing behind.
                claim.keep = any(guard.progress_saved for guard in guards)
            raise


def _train_in(
    config: RunConfig,
    dataset: Dataset,
    prepared: ModelData,
    device: torch.device,
    world: World,
    run_dir: str | Path | None,
    claim: rundir.Claim | None,
    report: Callbacks,
    resume: bool,
    checkpoint_every: int | None,
    on_guard: Callable[[RunGuard], None],
    given_model: VAE | None = None,
) -> TrainResult:
    out_dir = None if claim is None else claim.run_dir  # where this process writes: rank 0's
    if out_dir is not None and not resume:
        rundir.save_config(out_dir, config, run_info(config, dataset, device, prepared))
    barrier(world)

    # Workers fork now, before the model exists: little of this process is copied into them.
    feed = make_feed(prepared.train, device, config.data.loader, config.data.workers).start()
    torch.manual_seed(config.train.seed)
    model = (build_model(config.model) if given_model is None else given_model).to(device)
    precision = resolve_precision(config.train.precision, device)
    objective = make_objective(model, world, precision, config.train)
    optimizer = make_optimizer(model, config.train)
    steps_per_epoch = len(prepared.train) // config.train.batch_size
    scheduler = make_scheduler(optimizer, config.train, steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    val_images = None if prepared.val is None else on_device(prepared.val, device)
    test_images = on_device(prepared.test, device)
    labels = _labels_on(device, prepared, config)
    test_each_epoch = config.train.test_each_epoch == "yes" or (
        config.train.test_each_epoch == "auto" and val_images is None
    )
    patience = config.train.early_stopping
    guard_dir = None if run_dir is None else Path(run_dir)
    report.on_run_start(RunStart(
        config, device, precision, world.size, steps_per_epoch, guard_dir, model, test_images,
        optimizer, labels["test"], feed.describe() if prepared.train.mapped else "",
    ))  # fmt: skip

    identity: dict[str, object] = {}
    extended_from = None
    printed: str | LaterFingerprint | None = None
    data = (dataset.train_images, dataset.test_images)
    if guard_dir is not None:
        printed = fingerprint(*data) if resume else LaterFingerprint(*data)
        identity = run_identity(config.to_dict(), data, device, precision, printed)
        extended_from = extension_base(guard_dir, config) if resume else None
    started_identity = identity
    if extended_from is not None:  # the checkpoint was written under the run's saved epochs
        started_identity = run_identity(extended_from.to_dict(), data, device, precision, printed)
    guard = RunGuard(
        guard_dir, Trainables(model, optimizer, scheduler, generator),
        run_layout(config, len(prepared.train), steps_per_epoch), started_identity,
        checkpoint_every, report.on_note, writer=world.is_main,
        earlier_data=lambda: float_fingerprint(data),
    )  # fmt: skip
    on_guard(guard)
    started = time.perf_counter()
    with guard.catching_signals(), closing(feed):
        state = guard.begin(resume)
        history = [EpochMetrics(**row) for row in state.history]
        if resume and stopped_early(history, patience) and extended_from is None:
            guard.finished_early(best_epoch(history))
        if extended_from is not None:
            guard.identity = identity
            extend(out_dir, config, extended_from, scheduler, report)
        few_steps = few_steps_note(len(prepared.train), config.train.batch_size,
                                   config.train.epochs)  # fmt: skip
        if few_steps is not None:
            report.on_note(few_steps)
        resume_from = state.progress
        for epoch in range(state.epochs_done + 1, config.train.epochs + 1):
            if stopped_early(history, patience):
                break
            epoch_start = time.perf_counter()
            report.on_epoch_start(epoch, steps_per_epoch - (resume_from.step if resume_from else 0))

            def after_step(progress: EpochProgress, terms: LossTerms, epoch: int = epoch) -> None:
                if isinstance(printed, LaterFingerprint):
                    printed.start()  # the first step is taken: hash the data beside the next
                guard.after_step(epoch, progress)
                step = (epoch - 1) * steps_per_epoch + progress.step - 1
                report.on_step_end(StepEnd(
                    epoch, progress.step, steps_per_epoch, terms,
                    float(scheduler.base_lrs[0] * scheduler.lr_lambdas[0](step)),
                    kl_weight(config.train.beta, config.train.kl_warmup, step, steps_per_epoch),
                ))  # fmt: skip

            train_terms = train_epoch(
                model, optimizer, scheduler, feed, config.train, generator, precision,
                first_step=(epoch - 1) * steps_per_epoch, resume_from=resume_from,
                after_step=after_step, objective=objective, world=world,
                binarize=config.data.binarize == "dynamic", labels=labels["train"],
            )  # fmt: skip
            resume_from = None
            train_loss, train_reconstruction, train_kld = train_terms
            row = EpochMetrics(
                epoch, time.perf_counter() - epoch_start, train_loss, train_reconstruction,
                train_kld,
                **_pass_metrics(
                    "test", model, test_images if test_each_epoch else None, config,
                    labels["test"],
                ),
                **_pass_metrics("val", model, val_images, config, labels["val"]),
            )  # fmt: skip
            history.append(row)
            if best_epoch(history) == epoch:
                state.best = weights_copy(model)
            report.on_epoch_end(row)
            if out_dir is not None:
                rundir.save_metrics(out_dir, history)
            guard.after_epoch(epoch, asdict(row))
    total = time.perf_counter() - started
    if state.best is not None:
        if out_dir is not None:
            rundir.save_weights(out_dir, model, rundir.LAST_WEIGHTS_FILE)
        model.load_state_dict(state.best)
    posterior = None
    if world.is_main:  # what the kept weights' latent code carries, over the test set
        posterior = diagnose_posterior(
            model, test_images, config.train.test_batch_size, labels=labels["test"]
        )
    if out_dir is not None:
        rundir.save_weights(out_dir, model)
        if val_images is not None:
            selection = selection_record(history, config.train.epochs, patience)
            rundir.update_run_info(out_dir, selection=selection)
        if posterior is not None:
            record = {**posterior.to_dict(), "weights_sha256": rundir.weights_sha256(out_dir)}
            rundir.update_run_info(out_dir, posterior=record)
    result = TrainResult(
        model=model.eval(), history=history, total_seconds=total, run_dir=out_dir,
        best_epoch=best_epoch(history), posterior=posterior,
    )  # fmt: skip
    report.on_run_end(result)
    return result


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, Path))


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _labels_on(
    device: torch.device, prepared: ModelData, config: RunConfig
) -> dict[str, torch.Tensor | None]:
    """The labels of each split on `device` for a conditional model; None for the others."""
    splits = {"train": prepared.train_labels, "val": prepared.val_labels,
              "test": prepared.test_labels}  # fmt: skip
    if not config.model.conditional:
        return dict.fromkeys(splits)
    return {name: None if values is None else values.to(device) for name, values in splits.items()}


def _pass_metrics(
    split: str,
    model: VAE,
    images: Images | None,
    config: RunConfig,
    labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """The loss terms of a pass over `images` as EpochMetrics fields `split`_*; none if None."""
    if images is None:
        return {}
    terms = evaluate(model, images, config.train.test_batch_size, labels=labels)
    return {
        f"{split}_loss": terms.loss,
        f"{split}_reconstruction": terms.reconstruction,
        f"{split}_kld": terms.kld,
    }
