"""Studies: many runs listed with their status, compared on one page, and swept over a grid."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.bad_input_cases import csv_pair
from tests.cases_runs import hold_lock
from tests.helpers import finish, offline_page, start_vaelab, stop_training_at
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.rundir import EVAL_FILE, WEIGHTS_FILE, weights_sha256
from vaelab.studies import list_runs, summarize_run
from vaelab.studies.compare import compared_run, config_differences, spread
from vaelab.training import TrainingInterrupted, train

TINY = RunConfig(
    model=ModelConfig(hidden=(8, 4)),
    train=TrainConfig(epochs=2, batch_size=32, test_batch_size=64, device="cpu", precision="32"),
)


def tiny_run(run_dir: Path, dataset, **train_fields) -> Path:
    config = replace(TINY, train=replace(TINY.train, **train_fields))
    train(config, dataset, run_dir=run_dir, log=None)
    return run_dir


@pytest.fixture
def runs(tmp_path, tiny_dataset, monkeypatch) -> Path:
    """runs/: finished, stopped, running, damaged and incomplete runs, and a stray folder."""
    root = tmp_path / "runs"
    tiny_run(root / "finished", tiny_dataset)
    with monkeypatch.context() as patch:
        stop_training_at(patch, epoch=2, step=3)
        with pytest.raises(TrainingInterrupted):
            tiny_run(root / "stopped", tiny_dataset)
    shutil.copytree(root / "finished", root / "running")
    hold_lock(root / "running")
    (root / "damaged").mkdir()
    (root / "damaged" / "config.json").write_text("{not json")
    (root / "incomplete").mkdir()
    shutil.copy(root / "finished" / "config.json", root / "incomplete")
    (root / "notes").mkdir()  # not a run: left out
    return root


class TestListRuns:
    def test_each_run_gets_its_status(self, runs):
        found = {s.name: s for s in list_runs(runs)}
        assert sorted(found) == ["damaged", "finished", "incomplete", "running", "stopped"]
        assert found["finished"].status == "finished"
        assert (found["finished"].epochs_done, found["finished"].epochs) == (2, 2)
        assert found["stopped"].detail == "stopped at epoch 1 (resumable)"
        assert re.fullmatch(r"running \(PID \d+\)", found["running"].detail)
        assert found["damaged"].status == "damaged"
        assert "config.json: not valid JSON" in found["damaged"].detail
        assert found["incomplete"].detail == "incomplete (config.json only, no checkpoint)"

    def test_the_summary_has_the_model_and_the_losses(self, runs):
        summary = summarize_run(runs / "finished")
        assert summary.model == "mlp 8-4 z2 tutorial-mse"
        assert summary.test_loss is not None and summary.best_val_loss is None
        assert summary.iwae_nll is None

    def test_iwae_is_shown_only_for_the_current_weights(self, runs):
        run = runs / "finished"
        eval_json = {"iwae_nll_nats": 12.5, "weights_sha256": weights_sha256(run)}
        (run / EVAL_FILE).write_text(json.dumps(eval_json))
        assert summarize_run(run).iwae_nll == 12.5
        (run / EVAL_FILE).write_text(json.dumps({**eval_json, "weights_sha256": "0" * 64}))
        assert summarize_run(run).iwae_nll is None

    def test_the_cli_prints_one_line_per_run_and_no_traceback(self, runs, cli):
        code, out, err = cli("runs", runs)
        assert code == 0 and err == ""
        lines = out.strip().splitlines()
        assert lines[0].split()[:3] == ["run", "status", "model"]
        assert len(lines) == 6
        assert any(line.startswith("damaged ") and "damaged: config.json" in line for line in lines)


class TestCompare:
    def test_the_config_differences_are_only_the_settings_that_differ(self, tmp_path, tiny_dataset):
        a = compared_run(tiny_run(tmp_path / "a", tiny_dataset))
        b = compared_run(tiny_run(tmp_path / "b", tiny_dataset, lr=0.01, seed=3))
        assert config_differences([a, b]) == ["train.lr", "train.seed"]
        assert config_differences([a, a]) == []

    def test_spread_is_mean_and_sample_deviation_over_known_values(self):
        result = spread([1.0, 3.0, None])
        assert result is not None and result.text(2) == "2.00 \u00b1 1.41"
        assert spread([None]) is None

    def test_the_page_is_self_contained_and_shows_both_runs(self, tmp_path, tiny_dataset, cli):
        from vaelab.viz.plots import write_figures

        write_figures(tiny_run(tmp_path / "a", tiny_dataset), dataset=tiny_dataset)
        tiny_run(tmp_path / "b", tiny_dataset, beta=4.0)  # its data was in memory: no images
        out = tmp_path / "cmp.html"
        from vaelab.studies.compare_page import write_compare

        write_compare([tmp_path / "a"], out)
        page = write_compare([tmp_path / "a", tmp_path / "b"], out, overwrite=True)
        html = out.read_text()
        assert html.startswith("<!DOCTYPE html>")
        assert not re.search(r"(src|href)=\"(?!data:|#)", html), "a link out of the page"
        assert "http" not in html.replace("http-equiv", "")
        assert html.count('src="data:image/png;base64,') == 1 + 2  # curves, a's two images
        assert "images not drawn: " in html
        assert 'id="config-differences"' in html and "<td>train.beta</td>" in html
        assert "<td>train.lr</td>" not in html
        assert html.count("<tr>") >= 2 + 1 + 1  # the runs, the differing setting, the headers
        assert "a " in page.table and "b " in page.table

    def test_the_cli_prints_the_table_and_writes_the_page(self, tmp_path, tiny_dataset, cli):
        tiny_run(tmp_path / "a", tiny_dataset)
        tiny_run(tmp_path / "b", tiny_dataset, seed=1)
        out_file = tmp_path / "c.html"
        code, out, err = cli("compare", tmp_path / "a", tmp_path / "b", "--out", out_file)
        assert code == 0, err
        assert out.splitlines()[0].startswith("run ")
        assert out.strip().endswith(f"wrote {tmp_path / 'c.html'}")


# ---------------------------------------------------------------- sweeps

EPOCHS = ["--epochs", "2", "--batch-size", "50", "--test-batch-size", "50", "--hidden", "8,4"]


def sweep_args(*grid: str, seeds: int = 2, jobs: int = 2) -> list[str]:
    sets = [part for setting in grid for part in ("--set", setting)]
    return ["sweep", *sets, "--seeds", str(seeds), "--name", "study", "--runs-dir", "runs",
            "--jobs", str(jobs), *EPOCHS, "--precision", "32", "--no-plots",
            "--train-csv", "train.csv", "--test-csv", "test.csv"]  # fmt: skip


def test_a_sweep_trains_the_grid_then_continues_without_training_again(tmp_path, monkeypatch, cli):
    """2 x 2 settings x 2 seeds: eight runs, a sweep.json, and the page's mean ± spread."""
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    code, out, err = cli(*sweep_args("latent_dim=2,3", "beta=1,4"))
    assert code == 0, err
    study = tmp_path / "runs" / "study"
    names = sorted(p.name for p in study.iterdir() if (p / WEIGHTS_FILE).is_file())
    assert len(names) == 8 and "latent_dim=3,beta=4,seed=1" in names
    record = json.loads((study / "sweep.json").read_text())
    assert record["grid"] == [["latent_dim", ["2", "3"]], ["beta", ["1", "4"]]]
    config = json.loads((study / "latent_dim=3,beta=4,seed=1" / "config.json").read_text())
    assert (config["model"]["latent_dim"], config["train"]["beta"]) == (3, 4.0)
    assert config["train"]["seed"] == 1
    html = (study / "compare.html").read_text()
    assert html.count("\u00b1") >= 4 and 'id="settings-table"' in html
    assert html.count('src="data:image/png;base64,') == 1 + 8 * 2  # drawn: --no-plots
    assert re.search(r"latent_dim=2,beta=1 +2 +- +[\d.]+ \u00b1 [\d.]+", out)

    code, out, err = cli(*sweep_args("latent_dim=2,3", "beta=1,4"))
    assert code == 0, err
    assert out.count("finished already") == 8 and "started" not in out

    code, _, err = cli(*sweep_args("latent_dim=2,4", "beta=1,4"))
    assert code == 2 and "sweep.json: this study was started with another grid" in err


def _weights(study: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(study.glob(f"*/{WEIGHTS_FILE}"))}


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_and_run_again_gives_the_same_runs(tmp_path):
    """SIGTERM after the first run finished: exit 143, one line; the same command continues, and
    every run's weights are bit for bit those of an uninterrupted sweep."""
    args = [*sweep_args("beta=1,4", seeds=1, jobs=1)]
    args[args.index("--epochs") + 1] = "12"  # long enough to be stopped after a checkpoint
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for work in (whole, cut):
        work.mkdir()
        csv_pair(work, n_train=1000)
    assert finish(start_vaelab(*args, cwd=whole)).returncode == 0

    process = start_vaelab(*args, cwd=cut)
    for line in process.stdout:
        if "finished in" in line:
            break
    second = cut / "runs" / "study" / "beta=4,seed=0" / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    while not second.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stopped = finish(process)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    message = stopped.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("vaelab: sweep stopped by SIGTERM: 1 of 2")
    assert "continue with: vaelab sweep --set=beta=1,4" in message[0]
    again = finish(start_vaelab(*args, cwd=cut))
    assert again.returncode == 0, again.stderr
    assert "beta=1,seed=0: finished already" in again.stdout
    assert "beta=4,seed=0: resumed" in again.stdout
    assert _weights(cut / "runs" / "study") == _weights(whole / "runs" / "study")
    assert len(_weights(whole / "runs" / "study")) == 2


@pytest.mark.slow
def test_the_compare_page_in_chromium(chromium_browser, tmp_path, tiny_dataset):
    from vaelab.studies.compare_page import write_compare

    tiny_run(tmp_path / "a", tiny_dataset)
    tiny_run(tmp_path / "b", tiny_dataset, lr=0.01)
    path = write_compare([tmp_path / "a", tmp_path / "b"], tmp_path / "compare.html").path
    with offline_page(chromium_browser, path) as (page, problems):
        curves = page.eval_on_selector(
            "#learning-curves img", "e => [e.complete, e.naturalWidth, e.naturalHeight]"
        )
        assert curves[0] and curves[1] > 500 and curves[2] > 200
        first = "#runs-table tbody tr:first-child td:first-child"
        header = "#runs-table th:first-child"
        page.click(header)
        assert page.inner_text(first) == "a"
        page.click(header)
        assert page.inner_text(first) == "b"
        assert page.get_attribute(header, "data-order") == "descending"
    assert problems == []
