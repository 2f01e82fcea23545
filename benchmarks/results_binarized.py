"""The published table of dynamically binarized Fashion-MNIST, reproduced: the VAE, the
two-layer HVAE and the ConvHVAE, each with a Gaussian prior and with the VampPrior, under the
protocol of Norouzi et al. (2020, Exemplar VAE; descended from the VampPrior code of Tomczak &
Welling 2018), scored as test -log p(x) in nats by IWAE with 5,000 samples.

The protocol: training images binarized afresh every batch; 50,000 training and 10,000
validation images split from the training set; the test set binarized once with a fixed seed;
latent 40 (both layers of the HVAEs); gated layers of 300 units; Adam lr 5e-4, batch 100; KL
warm-up over 100 epochs; early stopping after 50 epochs without a better validation loss, the
best validation epoch's weights kept; at most 2,000 epochs.

    python benchmarks/results_binarized.py                        # the protocol, every row
    python benchmarks/results_binarized.py --minutes 15 --only vae vae-vamp   # capped runs
    python benchmarks/results_binarized.py --reuse --only vae     # no training; reuse eval.json

`--minutes M` trains a row in chunks of `--chunk` epochs (each continues the run bit for bit)
for M more minutes, until the run stops early, or until the epochs run out; the table then states
the epochs each row ran, which is not the protocol's run. A row whose run directory exists
continues from its last checkpoint (`--overwrite` starts it afresh). The record goes to
benchmarks/results/binarized-<dataset>-<device>.{json,md}; rows recorded there before are kept
(each with the command that measured it) unless `--fresh`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from dataclasses import fields as dataclass_fields
from pathlib import Path

import torch

from vaelab import rundir
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.evaluation import LikelihoodReport, evaluate_likelihood, save_eval
from vaelab.rundir import open_run
from vaelab.training import train
from vaelab.training.distributed import resolve_device
from vaelab.training.precision import resolve_precision

sys.path.insert(0, str(Path(__file__).parent))
from results_table import machine, save_table  # noqa: E402

RESULTS_DIR = Path(__file__).parent / "results"
VAL_IMAGES = 10_000
SPLIT_SEED = 14  # the seed of the validation split and of the test set's binarization
# Published test -log p(x) in nats (Norouzi et al. 2020, Exemplar VAE), whose test set is
# binarized once with NumPy seed 777; ours is binarized once with SPLIT_SEED.
PUBLISHED = {
    "fashion-mnist": {
        "vae": 228.70, "vae-vamp": 227.35, "hvae": 227.37, "hvae-vamp": 226.72,
        "convhvae": 225.38, "convhvae-vamp": 224.67,
    },
    "mnist": {"vae": 84.45, "vae-vamp": 82.43},
}  # fmt: skip
ROWS = {
    "vae": ("VAE (gated MLP)", "gaussian", dict(arch="gated")),
    "vae-vamp": ("VAE (gated MLP)", "vamp", dict(arch="gated")),
    "hvae": ("HVAE (two layers)", "gaussian", dict(arch="gated", stochastic_layers=2)),
    "hvae-vamp": ("HVAE (two layers)", "vamp", dict(arch="gated", stochastic_layers=2)),
    "convhvae": ("ConvHVAE", "gaussian", dict(arch="conv", stochastic_layers=2)),
    "convhvae-vamp": ("ConvHVAE", "vamp", dict(arch="conv", stochastic_layers=2)),
}


def protocol_config(name: str, args: argparse.Namespace, epochs: int) -> RunConfig:
    """The protocol's run config for row `name`, trained for `epochs` epochs."""
    _, prior, model = ROWS[name]
    return RunConfig(
        model=ModelConfig(latent_dim=40, likelihood="bernoulli", prior=prior, **model),
        data=DataConfig(
            source=args.dataset, binarize="dynamic", val_split=VAL_IMAGES, split_seed=SPLIT_SEED
        ),
        train=TrainConfig(
            epochs=epochs, batch_size=100, test_batch_size=1000, lr=5e-4,
            lr_schedule="constant", kl_warmup=args.warmup, early_stopping=args.early_stopping,
            test_each_epoch="no", seed=args.seed, device=args.device, precision=args.precision,
            objective=args.objective, train_samples=args.train_samples,
        ),
    )  # fmt: skip


def trained_run(name: str, args: argparse.Namespace) -> Path:
    """Train row `name` into its run directory (in chunks under --minutes); returns it."""
    run_dir = args.runs_dir / name
    if args.reuse and (run_dir / rundir.WEIGHTS_FILE).is_file():
        return run_dir
    started = time.perf_counter()
    done = epochs_done(run_dir) if not args.overwrite else 0
    resume = done > 0  # an interrupted run continues from its last checkpoint
    epochs = min(args.epochs, done + args.chunk) if args.minutes else args.epochs
    while True:
        config = protocol_config(name, args, epochs)
        print(f"== {name}: up to epoch {epochs}", flush=True)
        result = train(
            config, run_dir=run_dir, overwrite=args.overwrite and not resume, resume=resume,
            log=print,
        )  # fmt: skip
        resume = True
        stopped = len(result.history) < epochs
        spent = (time.perf_counter() - started) / 60
        if stopped or epochs >= args.epochs or not args.minutes or spent >= args.minutes:
            return run_dir
        epochs = min(args.epochs, epochs + args.chunk)


def saved_evaluation(run_dir: Path, args: argparse.Namespace) -> dict | None:
    """With --reuse, RUN/eval.json when it scored the current weights as asked; else None."""
    path = run_dir / rundir.EVAL_FILE
    if not args.reuse or not path.is_file():
        return None
    saved = json.loads(path.read_text())
    fields = {f.name for f in dataclass_fields(LikelihoodReport)}
    asked = (saved.get("iw_samples"), saved.get("images")) == (args.iw_samples, args.images)
    current = saved.get("weights_sha256") == rundir.weights_sha256(run_dir)
    if not (asked and current and fields <= set(saved)):
        return None
    print(f"== {run_dir.name}: {path} scored these weights with k={args.iw_samples}", flush=True)
    return {name: saved[name] for name in fields}


def epochs_done(run_dir: Path) -> int:
    """Epochs a run directory has checkpointed (0 when there is none)."""
    if not (run_dir / rundir.CONFIG_FILE).is_file():
        return 0
    try:
        return len(rundir.read_metrics(run_dir))
    except VaelabError:
        return 0


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Train and evaluate row `name`: its record."""
    run_dir = trained_run(name, args)
    report = saved_evaluation(run_dir, args)
    if report is None:
        run = open_run(run_dir, device=str(device))
        images = run.dataset.test_images[: args.images]
        report = asdict(
            evaluate_likelihood(
                run.model, images, args.iw_samples, max_memory=args.max_memory, progress=True
            )
        )
        save_eval(run_dir, LikelihoodReport(**report))
    metrics = rundir.read_metrics(run_dir)
    info = rundir.load_run_info(run_dir)
    model, prior, _ = ROWS[name]
    row = {
        "name": name,
        "model": model,
        "prior": prior,
        "published_nats": PUBLISHED.get(args.dataset, {}).get(name),
        "epochs": len(metrics),
        "best_epoch": (info.get("selection") or {}).get("best_epoch"),
        "train_seconds": sum(row["seconds"] for row in metrics),
        "kl_warmup": rundir.load_config(run_dir).train.kl_warmup,
        "run_info": info,
        **report,
    }
    print(json.dumps({k: v for k, v in row.items() if k != "run_info"}), flush=True)
    return row


def markdown(rows: list[dict], device: str) -> str:
    """The table: published and vaelab's -log p(x) side by side, with what each row ran."""
    lines = [
        "| model | prior | published | vaelab | epochs (best) | KL warm-up | train time "
        "| IWAE k, test images | device |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        published = "" if row["published_nats"] is None else f"{row['published_nats']:.2f}"
        prior = "VampPrior" if row["prior"] == "vamp" else "Gaussian"
        lines.append(
            f"| {row['model']} | {prior} | {published} "
            f"| {row['iwae_nll_nats']:.2f} ± {row['iwae_stderr_nats']:.2f} "
            f"| {row['epochs']} ({row['best_epoch']}) | {row['kl_warmup']} epochs "
            f"| {row['train_seconds'] / 60:.0f} min "
            f"| {row['iw_samples']}, {row['images']} | {device} |"
        )
    return "\n".join(lines) + "\n"


def earlier_rows(path: Path, args: argparse.Namespace) -> dict[str, dict]:
    """The rows an earlier run of this script recorded in `path`, by name, unless --fresh: a
    table is built up row by row (each row keeps the command that measured it)."""
    if args.fresh or not path.is_file():
        return {}
    rows = json.loads(path.read_text()).get("rows", [])
    return {row["name"]: row for row in rows if row.get("name") in ROWS}


def argument_parser() -> argparse.ArgumentParser:
    """The script's options; their defaults are the protocol's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=list(PUBLISHED))
    parser.add_argument("--only", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=2000, help="at most this many epochs")
    parser.add_argument("--minutes", type=float, default=0, help="train each row this long")
    parser.add_argument("--chunk", type=int, default=10, help="epochs per chunk with --minutes")
    parser.add_argument("--warmup", type=int, default=100, help="KL warm-up epochs")
    parser.add_argument("--early-stopping", type=int, default=50)
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--train-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=10_000, help="first N test images")
    parser.add_argument("--max-memory", default="1GB")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "32", "bf16-mixed"])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/binarized"))
    parser.add_argument("--reuse", action="store_true", help="evaluate runs already trained")
    parser.add_argument("--overwrite", action="store_true", help="retrain over existing runs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--fresh", action="store_true", help="forget the rows recorded before")
    return parser


def main() -> None:
    args = argument_parser().parse_args()

    device = resolve_device(args.device)
    record: dict = {
        "command": "python benchmarks/results_binarized.py " + " ".join(sys.argv[1:]),
        "protocol": {
            "binarization": "dynamic (train), once with seed 14 (test)",
            "split": f"{60_000 - VAL_IMAGES} train / {VAL_IMAGES} validation",
            "latent": 40, "hidden": "gated, 300 units", "optimizer": "Adam lr 5e-4",
            "batch": 100, "max_epochs": args.epochs, "kl_warmup_epochs": args.warmup,
            "early_stopping_epochs": args.early_stopping, "minutes_per_row": args.minutes,
            "objective": args.objective, "train_samples": args.train_samples,
        },
        "machine": machine(device),
        "precision": resolve_precision(args.precision, device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": [],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"binarized-{args.dataset}-{device.type}"
    kept = earlier_rows(stem.with_suffix(".json"), args)
    for name in args.only:
        row = measure(name, args, device)
        row["command"] = record["command"]
        kept[name] = row
        record["rows"] = [kept[n] for n in ROWS if n in kept]
        # Written after every row, so that an interrupted run keeps what it measured.
        record["table"] = markdown(record["rows"], record["machine"]["device"])
        save_table(stem, record)
    print(record["table"])
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
