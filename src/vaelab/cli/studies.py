"""The commands over many runs: runs (list them), compare (side by side), sweep (a grid)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from vaelab._outputs import check_output_folder
from vaelab.cli.group import cli
from vaelab.cli.options import parse_folder_name
from vaelab.errors import one_line
from vaelab.studies.runs import RUNS_HEADERS, list_runs, runs_rows, text_table
from vaelab.studies.sweep import MAX_RUNS, parse_seeds, parse_set, plan_sweep

_DETAIL_WIDTH = 60  # a damaged run's reason is cut to this in the table


@cli.command("runs")
@click.argument("runs_dir", type=click.Path(path_type=Path), default=Path("runs"))
def runs_command(runs_dir: Path) -> None:
    """List the runs in RUNS_DIR: status, model, epochs, best validation and final test loss,
    IWAE -log p(x) (when eval.json is of the current weights) and age."""
    summaries = list_runs(runs_dir)
    if not summaries:
        click.echo(f"{runs_dir}: no runs")
        return
    rows = runs_rows(summaries)
    for row in rows:
        if len(row[1]) > _DETAIL_WIDTH:
            row[1] = row[1][: _DETAIL_WIDTH - 1] + "\u2026"
    click.echo(text_table(RUNS_HEADERS, rows))


@cli.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("compare.html"),
    help="The page to write (.html); never inside a run directory.",
)  # fmt: skip
@click.option(
    "--overwrite", is_flag=True,
    help="Replace a compare page vaelab wrote at --out (never any other file).",
)  # fmt: skip
def compare_command(runs: tuple[Path, ...], out: Path, overwrite: bool) -> None:
    """Compare runs on one offline HTML page: learning curves overlaid, a sortable metrics table,
    the config settings that differ, reconstructions and samples side by side."""
    from vaelab.studies.compare_page import write_compare  # matplotlib loads only here

    page = write_compare(list(runs), out, overwrite=overwrite)
    click.echo(page.table)
    click.echo(f"wrote {page.path}")


@cli.command("sweep", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=V1,V2,...",
    help="A train option in config form and its values, e.g. latent_dim=2,10 (repeat for a "
    "grid; hidden's values are separated by ';').",
)  # fmt: skip
@click.option(
    "--seeds", default="1",
    help="How many seeds (0, 1, ...), or a list: 0,5,7. The grid (values times seeds) may have "
    f"at most {MAX_RUNS} runs.",
)  # fmt: skip
@click.option(
    "--name", default="sweep", callback=parse_folder_name, help="The study's folder in RUNS_DIR."
)  # fmt: skip
@click.option(
    "--runs-dir", type=click.Path(path_type=Path), default=Path("runs"),
    help="Folder that holds the study's folder.",
)  # fmt: skip
@click.option(
    "--jobs", type=click.IntRange(min=1), default=1,
    help="Runs at once, at most one per core; each gets its share of the cores "
    "(OMP_NUM_THREADS).",
)  # fmt: skip
@click.pass_context
def sweep_command(
    ctx: click.Context, sets: tuple[str, ...], seeds: str, name: str, runs_dir: Path, jobs: int
) -> None:
    """Train the grid of --set values times --seeds, each run a `vaelab train` process in
    RUNS_DIR/NAME/RUN; any other option goes to every `vaelab train` (e.g. --epochs 5 --data X).

    The whole grid is checked before any run starts. A finished run is skipped and a stopped one
    resumed, so running the same command again continues the sweep; SIGINT/SIGTERM/SIGHUP stop
    every run at a checkpoint (a third one kills them), and no run outlives the sweep. One sweep
    at a time runs in a folder. Ends with RUNS_DIR/NAME/compare.html: the mean and spread over
    seeds of each setting.
    """
    from vaelab.studies.sweep_run import SweepInterrupted, run_sweep

    check_output_folder(runs_dir, "runs_dir")  # a study is never made inside a run
    settings = [parse_set(text) for text in sets]
    plan = plan_sweep(settings, parse_seeds(seeds), runs_dir / name, ctx.args)
    again = shlex.join([
        "vaelab", "sweep", *(f"--set={text}" for text in sets), "--seeds", seeds, "--name", name,
        "--runs-dir", str(runs_dir), "--jobs", str(jobs), *ctx.args,
    ])  # fmt: skip
    try:
        run_sweep(plan, jobs, again, say=click.echo)
    except SweepInterrupted as stopped:
        click.echo(f"vaelab: {one_line(str(stopped))}", err=True)
        sys.exit(stopped.exit_code)
