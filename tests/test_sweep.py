"""Sweeps kept in bounds: the grid counted before it is built, checked whole before a run starts,
one sweep at a time in a folder, and no run left running when the sweep is stopped or killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bad_input_cases import csv_pair
from tests.helpers import finish, start_vaelab
from vaelab.errors import VaelabError
from vaelab.studies import sweep, sweep_memory, sweep_run
from vaelab.studies.sweep import MAX_RUNS, Setting, parse_seeds, parse_set, plan_sweep
from vaelab.studies.sweep_folder import SWEEP_LOCK_FILE, SweepBusy, claim_study, study_lock

CSV = ["--train-csv", "train.csv", "--test-csv", "test.csv", "--epochs", "1", "--hidden", "8,4"]


class TestBounds:
    def test_a_seed_count_is_bounded_before_the_seeds_are_made(self):
        assert parse_seeds(str(MAX_RUNS)) == tuple(range(MAX_RUNS))
        for text in (str(MAX_RUNS + 1), "9" * 30, str(2**64)):
            with pytest.raises(VaelabError, match=f"a count above the {MAX_RUNS} runs"):
                parse_seeds(text)

    def test_a_list_of_seeds_is_bounded_and_each_seed_checked(self):
        with pytest.raises(VaelabError, match=f"seeds: {MAX_RUNS + 1} listed"):
            parse_seeds(",".join(map(str, range(MAX_RUNS + 1))))
        with pytest.raises(VaelabError, match="seeds must be a whole number from 0 to 2"):
            parse_seeds(f"1,{2**64}")
        with pytest.raises(VaelabError, match="expected a count"):
            parse_seeds("1" * 5000)

    def test_the_values_of_a_setting_are_bounded(self):
        values = ",".join(str(n) for n in range(MAX_RUNS + 1))
        with pytest.raises(VaelabError, match=f"latent_dim: {MAX_RUNS + 1} values, more than"):
            parse_set(f"latent_dim={values}")

    def test_the_grid_is_counted_before_it_is_built(self, monkeypatch):
        def never(*_args):
            raise AssertionError("the grid was built")

        monkeypatch.setattr(sweep, "_grid", never)
        many = tuple(str(n) for n in range(1, 101))
        settings = [Setting("latent_dim", many), Setting("batch_size", many)]
        with pytest.raises(VaelabError, match=r"the grid is 100 x 100 x 3 = 30000 runs, more than"):
            plan_sweep(settings, (0, 1, 2), "runs/s")


def test_every_run_is_checked_before_the_first_starts(tmp_path, monkeypatch):
    """A value refused only in the 5th run's combination, and a file missing only in the 2nd
    run's, are refused while planning: run_sweep is never reached."""
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    grid = [Setting("arch", ("mlp", "gated", "conv")), Setting("latent_dim", ("2", "3"))]
    with pytest.raises(VaelabError, match="^arch=conv,latent_dim=2,seed=0: the conv arch"):
        plan_sweep(grid, (0,), "runs/s", CSV)
    files = [Setting("test_source", ("test.csv", "gone.csv"))]
    with pytest.raises(VaelabError, match=r"test_source=gone.csv,seed=0: data.test_source gone"):
        plan_sweep(files, (0,), "runs/s", ["--data", "train.csv", "--epochs", "1"])
    assert not (tmp_path / "runs").exists()


def test_the_grid_is_checked_with_its_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    (tmp_path / "c.toml").write_text("[train]\nbatch_size = 0\n")
    with pytest.raises(VaelabError, match=r"^beta=1,seed=0: c.toml: train.batch_size must be"):
        plan_sweep([Setting("beta", ("1", "4"))], (0,), "runs/s", [*CSV, "--config", "c.toml"])


def test_a_second_sweep_on_the_folder_is_refused_while_the_first_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    plan = plan_sweep([Setting("beta", ("1", "4"))], (0,), tmp_path / "runs" / "s", CSV)
    with study_lock(plan.study_dir):
        assert (plan.study_dir / SWEEP_LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(SweepBusy, match=rf"another vaelab sweep \(PID {os.getpid()}\)"):
            sweep_run.run_sweep(plan, say=lambda line: None)
    assert not (plan.study_dir / "sweep.json").exists()  # the refused sweep wrote nothing
    assert not (plan.study_dir / SWEEP_LOCK_FILE).exists()  # released with the first


def test_a_sweep_folder_that_is_a_run_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config.json").write_text("{}")
    with (
        pytest.raises(VaelabError, match="is a run directory, not a sweep's folder"),
        study_lock(tmp_path / "s"),
    ):
        pass


def test_a_compare_page_vaelab_did_not_record_is_refused_before_any_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    plan = plan_sweep([Setting("beta", ("1", "4"))], (0,), tmp_path / "runs" / "s", CSV)
    plan.study_dir.mkdir(parents=True)
    claim_study(plan)  # a study begun earlier, whose folder now holds a page of another kind
    (plan.study_dir / "compare.html").write_text("<p>mine</p>")
    started = []
    monkeypatch.setattr(sweep_run, "_run_children", lambda *args: started.append(args))
    with pytest.raises(VaelabError, match=r"compare\.html: exists and is not a compare page"):
        sweep_run.run_sweep(plan, say=lambda line: None)
    assert not started
    assert (plan.study_dir / "compare.html").read_text() == "<p>mine</p>"


def test_jobs_are_bounded_by_the_cores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    plan = plan_sweep([Setting("beta", ("1", "4"))], (0,), tmp_path / "runs" / "s", CSV)
    monkeypatch.setattr(sweep_run, "cpu_count", lambda: 4)
    with pytest.raises(VaelabError, match="jobs 5: runs at once must be from 1 to the 4 cores"):
        sweep_run.run_sweep(plan, jobs=5)
    assert not (tmp_path / "runs").exists()


def test_runs_at_once_are_checked_against_the_free_memory_together(tmp_path, monkeypatch):
    """Two runs that each fit alone but not side by side are refused, naming --jobs, before the
    study's folder is made; one at a time leaves the check to each run."""
    monkeypatch.chdir(tmp_path)
    csv_pair(tmp_path)
    grid = [Setting("hidden", ("64,32", "8,4"))]
    plan = plan_sweep(grid, (0, 1), tmp_path / "runs" / "s", CSV[:-2])  # without its --hidden
    monkeypatch.setattr(sweep_run, "cpu_count", lambda: 4)
    peaks = sorted(sweep_memory._peaks(plan), reverse=True)
    assert peaks[0] == peaks[1] > peaks[2] == peaks[3]  # the two 64,32 runs, measured once
    together = peaks[0] + peaks[1] + 2 * sweep_memory.PROCESS_BYTES
    monkeypatch.setattr(sweep_memory, "available_memory", lambda: together - 1)
    with pytest.raises(VaelabError, match=r"^2 runs at once .* needs .* of memory, .*; give fewer "
                       r"jobs$"):  # fmt: skip
        sweep_run.run_sweep(plan, jobs=2)
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(sweep_memory, "available_memory", lambda: together)
    sweep_memory.check_jobs_memory(plan, 2)  # fits exactly
    monkeypatch.setattr(sweep_memory, "available_memory", lambda: 1)
    sweep_memory.check_jobs_memory(plan, 1)  # each run checks itself


# ---------------------------------------------------------------- child processes

IGNORE_STOPS = (
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.signal(signal.SIGINT, signal.SIG_IGN); "
)
SLEEP = "import time; print('ready', flush=True); time.sleep(120)"


@pytest.fixture
def start_child(tmp_path):
    """Start a child process running Python code as the sweep starts its runs (killed after the
    test if it is still running)."""
    started: list[subprocess.Popen] = []

    def start(code: str = SLEEP) -> sweep_run._Child:
        process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
        )
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        run = sweep.SweepRun("stub", (), 0)
        return sweep_run._Child(run, process, time.perf_counter(), tmp_path / "log")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


def _ended_by(child: sweep_run._Child, signum: int, timeout: float = 10) -> bool:
    """Whether the child ends within `timeout` seconds, killed by `signum`."""
    try:
        return child.process.wait(timeout=timeout) == -signum
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.slow
def test_stop_signals_are_passed_on_and_the_third_kills(start_child):
    stop, child = sweep_run._Stop(), start_child(IGNORE_STOPS + SLEEP)
    stop.children.append(child)
    stop.handle(signal.SIGTERM, None)
    stop.handle(signal.SIGTERM, None)
    assert not _ended_by(child, signal.SIGKILL, timeout=0.5) and child.told == 2
    stop.handle(signal.SIGTERM, None)
    assert _ended_by(child, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_run_started_as_a_signal_came_is_stopped_by_sigterm(start_child, signum):
    """SIGHUP is passed on as SIGTERM: a run answers that with a checkpoint, SIGHUP would end it
    without one."""
    stop = sweep_run._Stop()
    stop.handle(signum, None)  # no child yet
    child = start_child()
    stop.children.append(child)
    stop.pass_on()
    assert _ended_by(child, signal.SIGTERM)


@pytest.mark.slow
def test_a_failing_sweep_ends_its_runs(start_child, monkeypatch):
    monkeypatch.setattr(sweep_run, "_END_GRACE_S", 0.5)
    stubborn, willing = start_child(IGNORE_STOPS + SLEEP), start_child()
    sweep_run._end_children([stubborn, willing])
    assert stubborn.process.returncode == -signal.SIGKILL
    assert willing.process.returncode == -signal.SIGTERM


def _alive(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie waiting for its reaper has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def long_sweep(tmp_path):
    """A sweep of one long run, started; yields the sweep and its run's PID once the run has
    started (the run is killed after the test if it outlived the sweep)."""
    csv_pair(tmp_path, n_train=1000)
    process = start_vaelab(
        "sweep", "--set", "beta=1", "--name", "s", "--epochs", "500", "--batch-size", "50",
        "--hidden", "8,4", "--no-plots", "--device", "cpu", "--precision", "32",
        "--train-csv", "train.csv", "--test-csv", "test.csv", cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if "started (PID " in line:
            run_pid = int(line.rsplit("PID ", 1)[1].rstrip(")\n"))
            break
    else:
        raise AssertionError(f"no run started: {finish(process).stderr}")
    yield process, run_pid
    if process.poll() is None:
        process.kill()
        finish(process)
    if _alive(run_pid):
        os.kill(run_pid, signal.SIGKILL)


def _wait_until_gone(pid: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stopping_the_sweep_stops_its_runs(long_sweep, signum):
    sweep_process, run_pid = long_sweep
    assert _alive(run_pid)
    sweep_process.send_signal(signum)
    stopped = finish(sweep_process)
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert not _alive(run_pid)  # the sweep waited for it
    assert f"sweep stopped by {signal.Signals(signum).name}" in stopped.stderr


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_a_sweep_killed_outright_takes_its_runs_with_it(long_sweep):
    sweep_process, run_pid = long_sweep
    sweep_process.kill()
    finish(sweep_process)
    assert _wait_until_gone(run_pid), "the run outlived its sweep"
