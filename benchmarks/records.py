"""Where the benchmarks keep what they measured: one timestamped JSON file per run."""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


def write_record(record: dict, kind: str, out: Path = RESULTS_DIR) -> Path:
    """Write `record` to OUT/KIND-YYYYmmdd-HHMMSS.json and say where."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path
