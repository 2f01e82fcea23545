"""The comparison page: one self-contained HTML file, like the report (images as data URIs, the
styles and a few lines of sorting script inline, no URL), written atomically.

Needs vaelab[plots]: the curves are drawn with matplotlib, the images with `vaelab.viz.plots`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from vaelab._outputs import COMPARE_PAGE, check_output, write_output
from vaelab._version import __version__
from vaelab.diagnostics import collapse_warning
from vaelab.errors import VaelabError
from vaelab.rundir import (
    FIGURES_DIR,
    WEIGHTS_FILE,
    figures_weights_sha256,
    open_run,
    weights_sha256,
)
from vaelab.studies.compare import (
    GROUP_HEADERS,
    RUN_HEADERS,
    Cell,
    ComparedRun,
    Group,
    compared_run,
    config_differences,
    group_rows,
    metrics_text,
    run_rows,
)
from vaelab.studies.sweep import MAX_RUNS
from vaelab.viz import plots  # first: it names the missing extra (vaelab[plots]) in one line
from vaelab.viz.page import escape as _e
from vaelab.viz.page import png_size
from vaelab.viz.report import STYLE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

IMAGE_FIGURES = ("reconstructions.png", "samples.png")
# Sorts a table.sortable by the column whose header is clicked, by each cell's data-sort number
# when it has one, else its text; a second click reverses the order.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
    const ascending = th.dataset.order !== "ascending";
    table.querySelectorAll("th").forEach((other) => delete other.dataset.order);
    th.dataset.order = ascending ? "ascending" : "descending";
    const key = (row) => row.cells[column].dataset.sort ?? row.cells[column].textContent;
    const order = (a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      const c = isNaN(nx) || isNaN(ny) ? String(x).localeCompare(String(y)) : nx - ny;
      return ascending ? c : -c;
    };
    const body = table.tBodies[0];
    [...body.rows].sort(order).forEach((row) => body.appendChild(row));
  }));
});
"""
EXTRA_STYLE = """
table.sortable th { cursor: pointer; user-select: none; }
#runs-table th:nth-child(-n+3), #runs-table td:nth-child(-n+3),
#config-differences td { text-align: left; }
th[data-order="ascending"]::after { content: " \\25B2"; }
th[data-order="descending"]::after { content: " \\25BC"; }
.images { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr));
  gap: 0.75rem; }
.images figure { margin: 0; }
"""
COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive", "tab:cyan")  # fmt: skip


class ComparePage(NamedTuple):
    """What `write_compare` wrote: the page's path, and its metrics table as plain text."""

    path: Path
    table: str


def write_compare(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    groups: Sequence[tuple[str, Sequence[str | Path]]] = (),
    title: str = "vaelab: runs compared",
    overwrite: bool = False,
) -> ComparePage:
    """Write the comparison of `run_dirs` to `out` (an .html file) and return its path and
    metrics table.

    An existing `out` is replaced only with `overwrite`, and only when it is a compare page
    vaelab wrote (`vaelab._outputs`); nothing is written inside a run directory. `groups`
    (label, run directories) gather runs that differ only in their seed: the metrics table then
    shows each group's mean ± spread, and the curves one colour per group.
    """
    out = Path(out)
    check_output(out, COMPARE_PAGE, overwrite)
    if not run_dirs:
        raise VaelabError("no runs to compare")
    if len(run_dirs) > MAX_RUNS:  # each run's images are decoded and drawn onto the page
        raise VaelabError(
            f"{len(run_dirs):,} runs to compare, more than the {MAX_RUNS:,} a page shows (a "
            "sweep's most); compare fewer"
        )
    _require_distinct(run_dirs)
    runs = [compared_run(path, _name(path, run_dirs)) for path in run_dirs]
    by_path = {str(Path(path)): run for path, run in zip(run_dirs, runs)}
    grouped = [Group(label, [by_path[str(Path(p))] for p in paths]) for label, paths in groups]
    now = time.time()
    page = render_compare(runs, grouped, now, title)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"{out.parent}: cannot create the folder ({exc.strerror})") from None
    write_output(out, COMPARE_PAGE, page.encode("utf-8"), overwrite)
    return ComparePage(out, metrics_text(runs, grouped, now))


def _require_distinct(run_dirs: Sequence[str | Path]) -> None:
    """Refuse a run given twice (also as another path to the same folder): the page would show
    it as two runs, and a group's spread would count it twice."""
    seen: dict[Path, Path] = {}
    for path in map(Path, run_dirs):
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            same = "given twice" if first == path else f"the same run as {first}"
            raise VaelabError(f"{path}: {same}; give each run once")


def _name(path: str | Path, all_paths: Sequence[str | Path]) -> str:
    """A run's own name, with its parent's in front when two runs share a name."""
    path = Path(path)
    names = [Path(p).resolve().name for p in all_paths]
    own = path.resolve().name
    return f"{path.resolve().parent.name}/{own}" if names.count(own) > 1 else own


# ---------------------------------------------------------------- figures


def curves_figure(runs: Sequence[ComparedRun], groups: Sequence[Group]) -> Figure:
    """Train loss (left) and test loss, or validation loss where no test was measured (right),
    per epoch; one colour per run, or per group with its seeds in the same colour."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.8), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2)
    colour_of = _colours(runs, groups)
    labelled: set[str] = set()
    for run in runs:
        colour, label = colour_of[run.name]
        epochs = [row["epoch"] for row in run.history]
        test = [row["test_loss"] for row in run.history]
        split = "test" if any(v == v for v in test) else "val"
        shown = label if label not in labelled else None
        labelled.add(label)
        left.plot(epochs, [row["train_loss"] for row in run.history], color=colour, label=shown)
        right.plot(epochs, [row[f"{split}_loss"] for row in run.history], color=colour,
                   marker="o" if len(epochs) < 3 else None, label=shown)  # fmt: skip
    for ax, what in ((left, "train loss"), (right, "test loss (validation where no test)")):
        ax.set_title(what)
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Loss per image")
        ax.grid(True, alpha=0.4)
    if labelled:
        right.legend(fontsize="small")
    return fig


def _colours(runs: Sequence[ComparedRun], groups: Sequence[Group]) -> dict[str, tuple[str, str]]:
    """Run name -> (colour, legend label): a group's colour and label for grouped runs."""
    result = {}
    for index, group in enumerate(groups):
        for run in group.runs:
            result[run.name] = (COLOURS[index % len(COLOURS)], group.label)
    offset = len(groups)
    for index, run in enumerate(r for r in runs if r.name not in result):
        result[run.name] = (COLOURS[(offset + index) % len(COLOURS)], run.name)
    return result


def run_images(run: ComparedRun) -> dict[str, bytes] | str:
    """The run's reconstructions and samples as PNGs: from RUN/figures/ when they were drawn
    from the current weights, else drawn now; or the reason there are none."""
    run_dir = run.summary.path
    if not (run_dir / WEIGHTS_FILE).is_file():
        return f"no {WEIGHTS_FILE} yet ({run.summary.detail})"
    try:
        current = weights_sha256(run_dir)
        paths = [run_dir / FIGURES_DIR / name for name in IMAGE_FIGURES]
        if figures_weights_sha256(run_dir) == current and all(p.is_file() for p in paths):
            return {p.name: p.read_bytes() for p in paths}
        opened = open_run(run_dir)
        shape = opened.dataset.shape
        drawn = {
            "reconstructions.png": plots.reconstructions(
                opened.model, opened.dataset.test_images, shape
            ),
            "samples.png": plots.samples(opened.model, shape),
        }
        return {name: plots.figure_png(fig) for name, fig in drawn.items()}
    except (VaelabError, OSError) as exc:
        return f"images not drawn: {exc}"


# ---------------------------------------------------------------- HTML


def _table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], table_id: str) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>\n" for row in rows)
    return (f'<table id="{table_id}" class="sortable">\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}</tbody>\n</table>")  # fmt: skip


def _cell(cell: Cell) -> str:
    order = "Infinity" if cell.sort is None else repr(float(cell.sort))
    attribute = f' data-sort="{order}"' if cell.sort is not None or cell.text == "-" else ""
    return f"<td{attribute}>{_e(cell.text)}</td>"


def _img(png: bytes, alt: str) -> str:
    width, height = png_size(png, alt)
    data = base64.b64encode(png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
            f'alt="{_e(alt)}">')  # fmt: skip


def differences_section(runs: Sequence[ComparedRun]) -> str:
    """The settings whose values differ between the runs, one row each, a column per run."""
    keys = config_differences(runs)
    if not keys:
        return '<p id="no-differences">The runs have the same config.</p>'
    rows = [[Cell(key), *(Cell(run.config.get(key, "-")) for run in runs)] for key in keys]
    return _table(["setting", *(run.name for run in runs)], rows, "config-differences")


def images_section(runs: Sequence[ComparedRun]) -> str:
    """Each run's reconstructions and samples, side by side."""
    parts = []
    for run in runs:
        images = run_images(run)
        if isinstance(images, str):
            body = f'<p class="muted">{_e(images)}</p>'
        else:
            body = "".join(_img(png, f"{run.name}: {name}") for name, png in images.items())
        parts.append(f'<figure class="run-images">{body}<figcaption><code>{_e(run.name)}</code> '
                     "reconstructions (inputs above outputs) and samples from the prior"
                     "</figcaption></figure>")  # fmt: skip
    return '<div class="images">' + "\n".join(parts) + "</div>"


def collapse_section(runs: Sequence[ComparedRun]) -> str:
    """One warning line per run whose posterior collapsed (as recorded for its weights)."""
    lines = []
    for run in runs:
        likelihood = run.config.get("model.likelihood")
        warning = None if run.posterior is None else collapse_warning(
            run.posterior, likelihood=likelihood
        )  # fmt: skip
        if warning is not None:
            lines.append(f'<p class="warning"><code>{_e(run.name)}</code>: {_e(warning)}</p>')
    return "\n".join(lines)


def render_compare(
    runs: Sequence[ComparedRun], groups: Sequence[Group], now: float, title: str
) -> str:
    """The comparison as an HTML5 document (see `write_compare`)."""
    curves = plots.figure_png(curves_figure(runs, groups))
    tables = []
    if groups:
        tables += ["<h3>Per setting: mean \u00b1 spread over seeds</h3>",
                   _table(GROUP_HEADERS, group_rows(groups), "settings-table")]  # fmt: skip
    tables += ["<h3>Per run</h3>", _table(RUN_HEADERS, run_rows(runs, now), "runs-table")]
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">', f"<title>{_e(title)}</title>",
        f"<style>{STYLE}{EXTRA_STYLE}</style>", "</head>", "<body>", "<main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{len(runs)} runs: '
        + ", ".join(f"<code>{_e(run.name)}</code>" for run in runs) + "</p>",
        '<section id="metrics">', "<h2>Metrics</h2>",
        '<p class="muted">Click a column to sort. Final test loss: the last one metrics.csv '
        "records; IWAE: from eval.json, shown only when it is of the current weights; spread: "
        "the sample standard deviation over seeds; active dims: latent dimensions the code "
        "uses over the test set, as the end of training or eval.json recorded them.</p>",
        collapse_section(runs), *tables, "</section>",
        '<section id="curves">', "<h2>Learning curves</h2>",
        f'<figure id="learning-curves">{_img(curves, "learning curves of every run")}'
        "<figcaption>Loss per epoch of every run.</figcaption></figure>", "</section>",
        '<section id="differences">', "<h2>Config differences</h2>",
        differences_section(runs), "</section>",
        '<section id="images">', "<h2>Reconstructions and samples</h2>",
        images_section(runs), "</section>",
        f"<footer>Written by vaelab {_e(__version__)} on "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(now)))}.</footer>",
        "</main>", f"<script>{SORT_SCRIPT}</script>", "</body>", "</html>",
    ]  # fmt: skip
    return "\n".join(parts) + "\n"
