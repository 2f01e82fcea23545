"""Peak private memory of a process and its children (DataLoader workers), for bench_scale.py.

Private memory is the proportional anonymous and shared-memory pages (Pss_Anon + Pss_Shmem of
/proc/PID/smaps_rollup) summed over the process tree, sampled every 10 ms: pages of a mapped
file, which the kernel can drop, do not count; pages a forked worker shares with its parent count
once.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(c) for c in handle.read().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def private_bytes(pid: int) -> tuple[int, int]:
    """(Pss_Anon + Pss_Shmem, RssAnon) of one process in bytes; (0, 0) once it is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in ("Pss_Anon", "Pss_Shmem", "Anonymous"):
                    values[name] = int(rest.split()[0]) * 1024
    except OSError:
        return 0, 0
    return values.get("Pss_Anon", 0) + values.get("Pss_Shmem", 0), values.get("Anonymous", 0)


class Sampler(threading.Thread):
    """Samples the private memory of a process tree until stopped; keeps the peaks."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_private = self.peak_anon = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            totals = [private_bytes(p) for p in process_tree(self.pid)]
            self.peak_private = max(self.peak_private, sum(t[0] for t in totals))
            self.peak_anon = max(self.peak_anon, sum(t[1] for t in totals))
            time.sleep(self.every)


def sampled(
    command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[str, Sampler]:
    """Run `command` to its end, sampling its memory; its stdout and the sampler's peaks."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    sampler = Sampler(process.pid)
    sampler.start()
    out, err = process.communicate()
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return out, sampler
