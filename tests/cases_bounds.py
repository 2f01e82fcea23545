"""Bad-input cases of sizes bounded before anything is allocated: a run beyond the machine's
memory (see tests/bad_input_cases.py, which gathers every group)."""

from __future__ import annotations

from tests.bad_input_cases import Case, train_csv_args

# 400 million weights pass the weight cap; 100,000 samples of z per image of a batch of 50 then
# need petabytes of activations, more than any machine has. (fp32: the same figures on every CPU)
HUGE = ("--hidden", "10000000", "--train-samples", "100000", "--precision", "32")
REFUSED = (
    r"^vaelab: error: training \([\d.]+ GiB for 400,[\d,]+ weights with their gradients and Adam's "
    r"moments, [\d.]+ TiB for a training step's activations, .*\) needs [\d.]+ TiB \([\d,]+ "
    r"bytes\) of memory, .* are available; choose a smaller --hidden, --batch-size, "
    r"--test-batch-size or --train-samples$"
)

# fmt: off
CASES: list[Case] = [
    Case("memory", "hidden sizes and samples beyond the machine's memory",
         lambda w: train_csv_args(w, *HUGE), REFUSED, "--hidden"),
]
# fmt: on
