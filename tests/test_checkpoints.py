import json
import pickle

import pytest
import torch

from vaelab import _io, decode, encode, load, rundir
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.training import train


@pytest.fixture
def saved_run(tiny_dataset, tmp_path):
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4), latent_dim=2),
        train=TrainConfig(epochs=2, batch_size=32, test_batch_size=50),
    )
    result = train(config, tiny_dataset, run_dir=tmp_path / "run", log=None)
    return result, tmp_path / "run"


def test_run_directory_holds_its_config_metrics_weights_and_checkpoint(saved_run):
    result, run_dir = saved_run
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.safetensors", "config.json", "metrics.csv", "model.safetensors",
    ]  # fmt: skip
    info = json.loads((run_dir / "config.json").read_text())
    assert info["model"]["hidden"] == [8, 4] and info["model"]["input_dim"] == 16
    assert info["versions"]["torch"] == torch.__version__
    rows = rundir.read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[-1]["test_loss"] == pytest.approx(result.history[-1].test_loss)


def test_a_loaded_run_encodes_and_decodes_exactly_as_the_trained_model(saved_run, tiny_dataset):
    result, run_dir = saved_run
    loaded = load(run_dir)
    x = tiny_dataset.test_images
    assert torch.equal(encode(loaded, x), encode(result.model, x))
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(decode(loaded, z), decode(result.model, z))


def test_existing_run_is_not_overwritten(saved_run, tiny_dataset):
    _, run_dir = saved_run
    before = (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(VaelabError, match="already exists"):
        train(RunConfig(train=TrainConfig(epochs=1)), tiny_dataset, run_dir=run_dir, log=None)
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_weights_of_another_architecture_name_the_shapes(saved_run):
    _, run_dir = saved_run
    other = VAE(ModelConfig(input_dim=16, hidden=(8, 4), latent_dim=3))
    with pytest.raises(VaelabError, match=r"mu_head.weight has shape \(2, 4\).*expects \(3, 4\)"):
        rundir.load_weights(run_dir / "model.safetensors", other)


class _Bomb:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_renamed_safetensors_is_refused_unopened(saved_run, tmp_path, monkeypatch):
    _, run_dir = saved_run
    monkeypatch.chdir(tmp_path)
    (run_dir / "model.safetensors").write_bytes(pickle.dumps({"w": _Bomb()}))
    with pytest.raises(VaelabError, match="is a Python pickle, not safetensors; refused"):
        load(run_dir)
    assert not (tmp_path / "PWNED").exists()


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "f.txt"
    _io.atomic_write_text(target, "one")
    _io.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
