"""Seeded splits of a set of images: a test set off data that has none, a validation set off the
training set. Both keep the images' order, so a split is a choice of rows and nothing else."""

from __future__ import annotations

import torch

from vaelab.errors import VaelabError


def split_count(total: int, size: float, name: str) -> int:
    """How many of `total` images a split of `size` takes: a fraction (0, 1) of them, rounded,
    or a count; at least 1 and fewer than all, else one line naming `name`."""
    count = round(total * size) if isinstance(size, float) and size < 1 else int(size)
    if not 1 <= count < total:
        raise VaelabError(
            f"{name} {size:g} takes {count} of {total} images; it must take at least 1 and leave "
            "at least 1",
            parameters=(name,),
        )
    return count


def split_indices(
    total: int, size: float, seed: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) row indices, each in ascending order; which rows are held out follows
    from `seed` alone (a permutation of `total` drawn from its own generator)."""
    held = held_out(total, size, seed, name)
    return others(total, held), held


def held_out(total: int, size: float, seed: int, name: str) -> torch.Tensor:
    """The held-out rows of `split_indices`, alone (the kept ones are all the others)."""
    held_count = split_count(total, size, name)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return order[:held_count].sort().values


def others(total: int, rows: torch.Tensor) -> torch.Tensor:
    """The rows of `range(total)` not in `rows`, in ascending order."""
    keep = torch.ones(total, dtype=torch.bool)
    keep[rows] = False
    return keep.nonzero().flatten()


def take(
    images: torch.Tensor, labels: torch.Tensor | None, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images (and labels) at `rows`."""
    return images[rows], None if labels is None else labels[rows]
