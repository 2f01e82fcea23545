#!/bin/bash
# The 60-epoch quality runs behind the README's tutorial-reproduction table: the tutorial's recipe
# (constant lr) against vaelab's default (cosine tail), in fp32 and bf16-mixed, over seeds.
# Runs in parallel, OMP_NUM_THREADS threads each; results go to RUNS_DIR/q-*/metrics.csv.
#   bash benchmarks/quality_runs.sh [RUNS_DIR]      (about 8 CPU cores for ~6 minutes, or longer)
set -eu
RUNS_DIR=${1:-runs/quality}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$RUNS_DIR"; pids=""
for spec in "32 cosine-tail 0" "32 cosine-tail 1" "32 cosine-tail 2" \
            "bf16-mixed cosine-tail 0" "bf16-mixed cosine-tail 1" "bf16-mixed cosine-tail 2" \
            "32 constant 0" "32 constant 1"; do
  set -- $spec
  python3 -m vaelab train --device cpu --precision "$1" --lr-schedule "$2" --seed "$3" \
    --name "q-$1-$2-s$3" --runs-dir "$RUNS_DIR" --no-plots --overwrite > "$RUNS_DIR/q-$1-$2-s$3.log" 2>&1 &
  pids="$pids $!"
done
wait $pids
python3 - "$RUNS_DIR" <<'PY'
import csv, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("q-*/metrics.csv")):
    losses = [float(row["test_loss"]) for row in csv.DictReader(path.open())]
    print(f"{path.parent.name:32s} final {losses[-1]:.4f}  best {min(losses):.4f}")
PY
