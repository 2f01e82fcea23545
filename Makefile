# vaelab: `make demo` trains the tutorial's run into runs/demo; `make test` runs the test suite.
# Both install what is missing first: Fashion-MNIST (Debian package when apt-get is usable, else
# vaelab downloads and verifies it on first use) and the Python package with its dependencies.

PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check
DATA_DIR = /usr/share/datasets/fashion-mnist

.PHONY: install data browser demo docs docs-figures error-table test test-fast results results-binarized lint bench bench-scale clean

install: data
	$(PIP_INSTALL) torch==2.13.0 -e '.[dev]'

data:
	@if [ -f $(DATA_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: $(DATA_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "apt-get could not install dataset-fashion-mnist; vaelab will download it"; \
	else \
		echo "Fashion-MNIST not installed; vaelab will download and verify it on first use"; \
	fi

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
browser:
	@if [ -x /usr/bin/chromium ]; then \
		echo "Chromium: /usr/bin/chromium"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "apt-get could not install chromium; browser tests will be skipped"; \
	else \
		echo "Chromium not installed; browser tests will be skipped"; \
	fi

demo: install
	$(PYTHON) -m vaelab train --name demo --overwrite
	$(PYTHON) -m vaelab report runs/demo

# Small copies of a run's figures for the README (RUN=... to use another run than the demo).
RUN ?= runs/demo
docs-figures:
	$(PYTHON) scripts/docs_figures.py $(RUN) docs/figures

# The whole suite (slow tests included) and the documentation build: what CI runs. The docs build
# executes the notebooks against this code (from an empty cache), and the notebook tests check
# that execution instead of running each notebook a second time.
NOTEBOOK_CACHE = docs/_build/.jupyter_cache
test: install browser
	rm -rf $(NOTEBOOK_CACHE)
	$(MAKE) docs
	VAELAB_REQUIRE_REAL_DATA=$$([ -f $(DATA_DIR)/train-images-idx3-ubyte.gz ] && echo 1 || echo 0) \
	VAELAB_REQUIRE_BROWSER=$$([ -x /usr/bin/chromium ] && echo 1 || echo 0) \
	VAELAB_NOTEBOOK_CACHE=$(NOTEBOOK_CACHE) \
		$(PYTHON) -m pytest -q

# The unit tests without those marked slow (processes, real data, browsers): about 2.5 minutes on 2 cores (the whole suite, `make test`: about 13).
test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

# docs/errors.md: every bad-input case of tests/bad_input_cases.py with what vaelab prints.
error-table:
	VAELAB_WRITE_ERROR_TABLE=1 $(PYTHON) -m pytest -q tests/test_error_table.py

# The user guide and API reference (Sphinx + MyST); any warning fails the build.
docs:
	$(PYTHON) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# Speed and memory, measured side by side (never part of the tests); results in benchmarks/results/.
# bench_train.py prints the one speed table: vaelab, the plain PyTorch loop and a jitted JAX loop
# (the bench extra), the GEMM peaks and floors, the conv model, IWAE and the peak RSS.
bench: install
	$(PIP_INSTALL) -e '.[bench]'
	$(PYTHON) benchmarks/jax_loop.py --check
	$(PYTHON) benchmarks/bench_train.py
	$(PYTHON) benchmarks/bench_data.py
	$(PYTHON) benchmarks/bench_read.py
	$(PYTHON) benchmarks/bench_distributed.py
	$(PYTHON) benchmarks/bench_serve.py

# Data at scale (docs/own-data.md): memory and start-up of a conv VAE on 20,000 to 1,000,000
# synthetic RGB 64x64 images (a 12 GB .npy; made once in /tmp/vaelab-scale) beside a plain PyTorch
# loop that maps the same file, streaming's throughput, a prepared folder, evaluate/report/serve
# of a 600,000-image run. About an hour on 2 cores; needs 30 GB of disk.
bench-scale: install
	$(PYTHON) benchmarks/bench_scale.py $(ARGS)

# The README's results table: five models, 60 epochs each, IWAE k=5000 on the 10,000 test images
# (hours on a 2-core CPU; minutes on a GPU: add ARGS='--device cuda').
results: install
	$(PYTHON) benchmarks/results_table.py $(ARGS)

# The published table of dynamically binarized Fashion-MNIST (VAE, HVAE, ConvHVAE; Gaussian prior
# and VampPrior) under its protocol: up to 2000 epochs per row. ARGS='--minutes 20' caps each row
# (the table then states the epochs run); ARGS='--dataset mnist' runs the MNIST column.
results-binarized: install
	$(PYTHON) benchmarks/results_binarized.py $(ARGS)

lint:
	$(PYTHON) -m ruff check src tests benchmarks scripts
	$(PYTHON) -m ruff format --check src tests benchmarks scripts
	$(PYTHON) -m mypy

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache docs/_build
