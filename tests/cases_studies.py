"""Bad-input cases of the studies: runs, compare and sweep (see tests/bad_input_cases.py, which
gathers every group)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from tests.bad_input_cases import Case, csv_pair, saved_run
from tests.cases_runs import hold_lock

SWEEP = ["sweep", "--runs-dir", "runs", "--name", "s", "--epochs", "1"]


def sweep_args(*options: str) -> list[str]:
    return [*SWEEP, *options]


def with_csv(*options: str):
    def build(work: Path) -> list[str]:
        train, test = csv_pair(work)
        return sweep_args(*options, "--train-csv", train, "--test-csv", test)

    return build


def another_sweep(work: Path) -> list[str]:
    """runs/s/sweep.json records a grid over beta; the command asks for one over lr."""
    study = work / "runs" / "s"
    study.mkdir(parents=True)
    (study / "sweep.json").write_text(json.dumps({"format": "vaelab-sweep-1", "grid": []}))
    return with_csv("--set", "lr=0.001,0.01")(work)


def damaged_config(work: Path) -> list[str]:
    run = saved_run(work)
    (run / "config.json").write_text("{not json")
    return ["compare", "runs/old", "--out", "compare.html"]


def out_is_a_directory(work: Path) -> list[str]:
    saved_run(work)
    (work / "pages").mkdir()
    return ["compare", "runs/old", "--out", "pages"]


def study_where(name: str, make: str) -> Callable[[Path], list[str]]:
    """runs/s, a study begun earlier (its sweep.json), where NAME is a link to mine/ (a folder of
    the user's) or a pipe (`make`: 'link' or 'pipe'); the command continues it."""

    def build(work: Path) -> list[str]:
        study = work / "runs" / "s"
        (study / "logs").mkdir(parents=True)
        (study / "sweep.json").write_text(json.dumps({"format": "vaelab-sweep-1", "grid": []}))
        (work / "mine").mkdir()
        (work / "mine" / "notes.txt").write_text("the user's\n")
        path = study / name
        if path.is_dir():
            path.rmdir()
        if make == "link":
            path.symlink_to(Path("../" * name.count("/")) / ".." / ".." / "mine")
        else:
            os.mkfifo(path)
        return with_csv("--set", "beta=1,4")(work)

    return build


def busy_study(work: Path) -> list[str]:
    """runs/s held by another sweep: its .sweep.lock locked, with this process's PID."""
    hold_lock(work / "runs" / "s", ".sweep.lock")
    return with_csv("--set", "beta=1,4")(work)


def bad_config_file(work: Path) -> list[str]:
    (work / "c.yaml").write_text("model:\n  latent_dim: 0\n")
    return with_csv("--set", "beta=1,4", "--config", "c.yaml")(work)


# fmt: off
CASES: list[Case] = [
    Case("studies", "runs of a folder that does not exist", lambda w: ["runs", "nowhere"],
         r"^vaelab: error: nowhere: runs folder not found$", "nowhere"),
    Case("studies", "compare a run that does not exist",
         lambda w: ["compare", "runs/none", "--out", "c.html"],
         r"^vaelab: error: runs/none: run directory not found$", "runs/none"),
    Case("studies", "compare a run whose config.json is damaged", damaged_config,
         r"runs/old: cannot be compared: damaged: config.json: not valid JSON", "config.json"),
    Case("studies", "sweep continued where its logs folder is a link to a user's folder",
         study_where("logs", "link"),
         r"^vaelab: error: runs/s/logs: is a symbolic link, and the sweep keeps a folder of its "
         "own here; move it away$", "runs/s/logs"),
    Case("studies", "sweep continued where a run's log is a pipe",
         study_where("logs/beta=1,seed=0.log", "pipe"),
         "runs/s/logs/beta=1,seed=0.log: is not a file, and the sweep keeps a file of its own "
         "here", "runs/s/logs/beta=1,seed=0.log"),
    Case("studies", "sweep continued where a run's folder is a link to a user's folder",
         study_where("beta=4,seed=0", "link"),
         "runs/s/beta=4,seed=0: is a symbolic link, and the sweep keeps a folder of its own here",
         "runs/s/beta=4,seed=0"),
    Case("studies", "sweep continued where its .sweep.lock is a link",
         study_where(".sweep.lock", "link"),
         r"runs/s/\.sweep\.lock: is a symbolic link, and vaelab keeps the lock of runs/s here",
         "runs/s/.sweep.lock"),
    Case("studies", "compare a run whose metrics.csv is a folder",
         lambda w: (saved_run(w), (w / "runs" / "old" / "metrics.csv").mkdir(),
                    ["compare", "runs/old", "--out", "c.html"])[2],
         r"^vaelab: error: runs/old: cannot be compared: runs/old/metrics\.csv: is a directory",
         "runs/old/metrics.csv"),
    Case("studies", "compare the same run twice",
         lambda w: (saved_run(w), ["compare", "runs/old", "runs/old", "--out", "c.html"])[1],
         r"^vaelab: error: runs/old: given twice; give each run once$", "runs/old"),
    Case("studies", "compare a run and a link to it",
         lambda w: (saved_run(w), (w / "again").symlink_to("runs/old"),
                    ["compare", "runs/old", "again", "--out", "c.html"])[2],
         r"again: the same run as runs/old; give each run once$", "again"),
    Case("studies", "compare --out is a directory", out_is_a_directory,
         r"pages: is a directory; give --out a file name", "--out"),
    Case("studies", "sweep --set of an unknown key", with_csv("--set", "latent=2,10"),
         r"--set latent: not a setting of vaelab train; did you mean latent_dim\?", "--set"),
    Case("studies", "sweep --set with a value that is not a number",
         with_csv("--set", "latent_dim=2,ten"),
         r"--set latent_dim=ten: Invalid value for '--latent-dim': 'ten' is not a valid integer",
         "latent_dim=ten"),
    Case("studies", "sweep --set with a value the config refuses",
         with_csv("--set", "latent_dim=2,0"),
         r"latent_dim=0,seed=0: latent_dim must be at least 1, got 0", "latent_dim"),
    Case("studies", "sweep --set without values", with_csv("--set", "beta"),
         r"--set 'beta': expected KEY=VALUE", "--set"),
    Case("studies", "sweep --set with a value given twice", with_csv("--set", "beta=1,1"),
         r"--set 'beta=1,1': 1 given twice", "beta=1,1"),
    Case("studies", "sweep --seeds 0", with_csv("--set", "beta=1,4", "--seeds", "0"),
         r"--seeds 0: give at least 1 seed", "--seeds"),
    Case("studies", "sweep with --seed for vaelab train",
         with_csv("--set", "beta=1,4", "--seed", "3"),
         r"the options for vaelab train: the sweep sets --seed itself; drop it from them",
         "--seed"),
    Case("studies", "sweep with a --set key also given as a train option",
         with_csv("--set", "beta=1,4", "--beta", "2"),
         r"--set beta and its option for vaelab train are both given", "--set beta"),
    Case("studies", "sweep with an unknown train option",
         with_csv("--set", "beta=1,4", "--latent", "3"),
         r"the options for vaelab train: No such option '--latent'", "--latent"),
    Case("studies", "sweep --set seed, which --seeds gives",
         with_csv("--set", "seed=1,2"),
         r"^vaelab: error: --set seed: each run's seed is one of --seeds \(e\.g\. --seeds 1,2\), "
         "not a --set value$", "--seeds"),
    Case("studies", "sweep --set of a switch of vaelab train",
         with_csv("--set", "conditional=true,false"),
         "--set conditional: --conditional is a switch of vaelab train, not an option with values",
         "--conditional"),
    Case("studies", "sweep passing --print-config to its runs",
         with_csv("--set", "beta=1,4", "--print-config"),
         "--print-config trains nothing, so no run would finish; drop it from them",
         "--print-config"),
    Case("studies", "sweep --seeds ending in a comma",
         with_csv("--set", "beta=1,4", "--seeds", "7,"),
         r"^vaelab: error: --seeds '7,': expected a count \(3\) or a list \(0,5,7\)$", "--seeds"),
    Case("studies", "sweep --seeds past a C integer",
         with_csv("--seeds", "9" * 30),
         r"--seeds 9{30}: a count above the 1000 runs a sweep may have$", "--seeds"),
    Case("studies", "sweep of a grid larger than a sweep's runs",
         with_csv("--set", "latent_dim=" + ",".join(map(str, range(1, 41))),
                  "--set", "beta=" + ",".join(map(str, range(1, 6))), "--seeds", "6"),
         r"--set and --seeds: the grid is 40 x 5 x 6 = 1200 runs, more than the 1000 a sweep may "
         r"have; split it into sweeps of their own --name$", "--set and --seeds"),
    Case("studies", "sweep whose 5th run has a value its config refuses",
         with_csv("--hidden", "8,4", "--set", "arch=mlp,gated,conv", "--set", "latent_dim=2,3"),
         r"arch=conv,latent_dim=2,seed=0: the conv arch reads hidden as", "arch=conv"),
    Case("studies", "sweep --set of a data file that is not there",
         lambda w: (csv_pair(w), sweep_args("--set", "source=train.csv,gone.csv"))[1],
         r"source=gone\.csv,seed=0: data\.source gone\.csv: not found$", "gone.csv"),
    Case("studies", "sweep with a config file of a bad value", bad_config_file,
         r"beta=1,seed=0: c\.yaml: model\.latent_dim must be at least 1, got 0$", "c.yaml"),
    Case("studies", "sweep in a folder another sweep is running in", busy_study,
         r"runs/s: another vaelab sweep \(PID \d+\) is running in this folder", "runs/s"),
    Case("studies", "sweep --jobs beyond the cores",
         with_csv("--set", "beta=1,4", "--jobs", "4096"),
         r"--jobs 4096: runs at once must be from 1 to the \d+ cores", "--jobs"),
    Case("studies", "sweep into a study started with another grid", another_sweep,
         r"runs/s/sweep.json: this study was started with another grid, seeds or options",
         "runs/s/sweep.json"),
]
# fmt: on
