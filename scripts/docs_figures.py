"""Copy a run's figures into docs/figures/ as small PNGs for the README.

    python scripts/docs_figures.py RUN [OUT_DIR] [--max-kb 150] [--only NAME ...] [--prefix P]

Each figure is reduced to a 256-colour palette and, when still over the limit, scaled down
until it fits. `make docs-figures RUN=...` calls this.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

from vaelab._io import atomic_write_bytes
from vaelab.rundir import FIGURE_FILES, FIGURES_DIR

SHRINK = 0.85


def small_png(source: Path, max_bytes: int) -> bytes:
    """`source` as a palette PNG of at most `max_bytes`, scaled down only as far as needed."""
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    while True:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
            buffer, format="PNG", optimize=True
        )
        if buffer.tell() <= max_bytes or min(image.size) < 64:
            return buffer.getvalue()
        size = (round(image.width * SHRINK), round(image.height * SHRINK))
        image = image.resize(size, Image.Resampling.LANCZOS)


def draw_pseudo_inputs(args: argparse.Namespace) -> int:
    """A VampPrior run's first pseudo-inputs as a small PNG."""
    from vaelab.rundir import open_run
    from vaelab.viz.plots import figure_png, pseudo_inputs

    run = open_run(args.run)
    figure = pseudo_inputs(run.model, run.dataset.shape, args.pseudo_inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / f"{args.prefix}pseudo_inputs.png"
    atomic_write_bytes(source, figure_png(figure))
    payload = small_png(source, args.max_kb * 1000)
    atomic_write_bytes(source, payload)
    print(f"{source}: {len(payload) / 1000:.0f} KB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory with figures/ (vaelab plot RUN)")
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/figures"))
    parser.add_argument("--max-kb", type=int, default=150, help="size limit of each PNG in KB")
    parser.add_argument("--only", nargs="+", choices=FIGURE_FILES, default=list(FIGURE_FILES))
    parser.add_argument("--prefix", default="", help="put before each copy's name")
    parser.add_argument(
        "--pseudo-inputs", type=int, default=0, metavar="N",
        help="also draw N of a VampPrior run's pseudo-inputs into OUT_DIR/PREFIXpseudo_inputs.png",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.pseudo_inputs:
        return draw_pseudo_inputs(args)
    sources = [args.run / FIGURES_DIR / name for name in args.only]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        print(f"docs_figures: missing {', '.join(missing)}; run vaelab plot first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        payload = small_png(source, args.max_kb * 1000)
        target = args.out / f"{args.prefix}{source.name}"
        atomic_write_bytes(target, payload)
        print(f"{target}: {len(payload) / 1000:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
