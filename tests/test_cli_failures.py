"""What the command line says when memory runs out, or Ctrl-C or SIGTERM comes before training has
taken them over: one line, exit status 2 for memory, 130 for an interrupt and 143 for SIGTERM
(after the command's temporary files are removed), never a traceback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click
import pytest

from tests.bad_input_cases import saved_run, train_csv_args
from tests.helpers import finish, run_python, start_vaelab
from vaelab.cli import cli as command_group

CPU_FAILURE = (
    "DefaultCPUAllocator: can't allocate memory: you tried to allocate 80000000000 bytes. "
    "Error code 12 (Cannot allocate memory)"
)


@pytest.mark.parametrize(
    "error", [RuntimeError(CPU_FAILURE), MemoryError()], ids=["torch", "MemoryError"]
)
def test_memory_running_out_in_a_command_is_one_line_exit_2(error, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = train_csv_args(tmp_path)

    def build_model(config):
        raise error

    monkeypatch.setattr("vaelab.training.loop.build_model", build_model)
    code, _, err = cli(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vaelab: error: vaelab train ran out of memory: ")
    if isinstance(error, RuntimeError):
        assert "allocating 74.5 GiB (80,000,000,000 bytes) failed" in lines[0]
    assert not (tmp_path / "runs" / "r").exists()  # a failed start leaves nothing behind


def test_other_runtime_errors_are_not_taken_for_memory(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = train_csv_args(tmp_path)

    def build_model(config):
        raise RuntimeError("a bug")

    monkeypatch.setattr("vaelab.training.loop.build_model", build_model)
    with pytest.raises(RuntimeError, match="a bug"):
        cli(*args)


@pytest.mark.parametrize("name", sorted(command_group.commands))
def test_ctrl_c_as_any_command_starts_is_one_line_exit_130(name, cli, monkeypatch):
    parse = click.Command.parse_args

    def interrupted(self, ctx, args):
        if self is command_group.commands[name]:
            raise KeyboardInterrupt
        return parse(self, ctx, args)

    monkeypatch.setattr(click.Command, "parse_args", interrupted)
    code, out, err = cli(name)
    assert code == 130
    assert err.strip().splitlines() == ["vaelab: interrupted"]


def test_ctrl_c_while_a_run_loads_its_data_is_one_line_exit_130(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = train_csv_args(tmp_path)

    def load_dataset(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vaelab.cli.train.load_dataset", load_dataset)
    code, _, err = cli(*args)
    assert code == 130
    assert err.strip().splitlines() == ["vaelab: interrupted"]
    assert not (tmp_path / "runs").exists()


def _loading_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("args", [["evaluate", "no-such-run"], ["train", "--epochs", "1"]])
def test_ctrl_c_while_the_command_imports_is_one_line_exit_130(args, tmp_path):
    process = start_vaelab(*args, cwd=tmp_path)
    for _ in range(3000):  # until torch's library is loaded: its Python modules follow
        if _loading_torch(process.pid) or process.poll() is not None:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    result = finish(process)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["vaelab: interrupted"]


@pytest.mark.slow
def test_a_program_importing_vaelab_keeps_its_own_interrupts():
    result = run_python("import sys, vaelab; print(sys.excepthook is sys.__excepthook__)")
    assert result.stdout.strip() == "True", result.stderr


def test_sigterm_while_an_output_is_written_leaves_no_temporary_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = saved_run(tmp_path)
    fsync = os.fsync

    def terminated_midway(fd: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here, as a real signal would
        fsync(fd)

    monkeypatch.setattr("vaelab._io.os.fsync", terminated_midway)
    code, _, err = cli("sample", run, "--n", "4", "--out", "s.npy")
    assert code == 143
    assert err.strip().splitlines() == ["vaelab: terminated"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "s.npy" not in left and not [name for name in left if name.endswith(".tmp")]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's handler is gone
