import math
from dataclasses import replace

import pytest
import torch

from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.training import EpochMetrics, train
from vaelab.training import epoch as training
from vaelab.training.distributed import TrainingObjective
from vaelab.training.epoch import lr_factor
from vaelab.training.reporters import format_epoch, reconstruction_label


def tiny_config(**train_options) -> RunConfig:
    options = {"epochs": 3, "batch_size": 32, "test_batch_size": 50, "lr": 3e-3, **train_options}
    return RunConfig(model=ModelConfig(hidden=(8, 4), latent_dim=2), train=TrainConfig(**options))


def test_training_lowers_the_test_loss(tiny_dataset):
    result = train(tiny_config(epochs=6), tiny_dataset, log=None)
    assert len(result.history) == 6
    assert result.history[-1].test_loss < result.history[0].test_loss


def test_same_seed_same_weights_and_another_seed_other_weights(tiny_dataset):
    first = train(tiny_config(), tiny_dataset, log=None).model.state_dict()
    second = train(tiny_config(), tiny_dataset, log=None).model.state_dict()
    other = train(tiny_config(seed=1), tiny_dataset, log=None).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_log_line_has_the_tutorial_form(tiny_dataset):
    lines = []
    train(tiny_config(epochs=1), tiny_dataset, log=lines.append)
    lines = [line for line in lines if not line.startswith(("note: ", "warning: "))]
    assert lines[0].startswith("device cpu, precision ")
    assert lines[1].startswith("epoch 01 - ")
    assert "- loss " in lines[1] and "- test_loss " in lines[1] and "(MSE " in lines[1]
    assert lines[-1].startswith("total ")


def test_batch_larger_than_training_set_is_refused(tiny_dataset):
    with pytest.raises(VaelabError, match="larger than the training set"):
        train(tiny_config(batch_size=10_000), tiny_dataset, log=None)


def test_cosine_tail_keeps_the_tutorial_rate_then_anneals():
    total = 300
    factors = [lr_factor("cosine-tail", step, total) for step in range(total)]
    assert factors[0] == factors[199] == 1.0
    tail = factors[199:]
    assert all(a > b for a, b in zip(tail, tail[1:]))
    assert 0 < factors[-1] < 1e-3
    assert lr_factor("constant", total - 1, total) == 1.0


def test_format_epoch_writes_the_tutorials_line_with_two_decimals():
    from vaelab.training import EpochMetrics

    row = EpochMetrics(1, 2.14, 29.292, 0, 0, 23.3558, 20.9186, 2.4372)
    assert format_epoch(row) == (
        "epoch 01 - 2.1s - loss 29.29 - test_loss 23.36 (MSE 20.92 | KLD 2.44)"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"lr": 0.0}, "lr .the learning rate"),
        ({"lr": math.inf}, "lr .the learning rate"),
        ({"device": "tpu"}, "device must be one of"),
    ],
)
def test_bad_train_options_fail_at_construction(options, message):
    with pytest.raises(VaelabError, match=message):
        TrainConfig(**options)


@pytest.mark.slow
def test_one_epoch_on_fashion_mnist_beats_the_tutorials_first_epoch(fashion_mnist):
    config = RunConfig(train=TrainConfig(epochs=1))
    result = train(config, fashion_mnist, log=None)
    assert result.history[0].test_loss < 20.0  # the tutorial's epoch 1: 23.36


def test_bf16_mixed_trains_fp32_weights_and_follows_fp32_closely(tiny_dataset):
    # a first layer of 16 x 512 weights, enough for the hand-written step to multiply it in bf16
    wide = ModelConfig(hidden=(512, 4))
    fp32 = train(replace(tiny_config(epochs=4, precision="32"), model=wide), tiny_dataset, log=None)
    mixed = train(replace(tiny_config(epochs=4, precision="bf16-mixed"), model=wide),
                  tiny_dataset, log=None)  # fmt: skip
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    assert mixed.history[-1].test_loss < mixed.history[0].test_loss
    assert mixed.history[-1].test_loss == pytest.approx(fp32.history[-1].test_loss, rel=0.05)
    differs = any(
        not torch.equal(a, b)
        for a, b in zip(fp32.model.state_dict().values(), mixed.model.state_dict().values())
    )
    assert differs, "bf16-mixed must really multiply in bf16"


def test_the_loss_of_a_mixed_precision_step_is_computed_in_fp32(tiny_dataset):
    model = VAE(ModelConfig(input_dim=16, hidden=(8, 4)))
    optimizer = training.make_optimizer(model, TrainConfig())
    batch = tiny_dataset.train_images[:32]
    noise = torch.zeros(32, 2)
    terms = training.training_step(TrainingObjective(model), optimizer, batch, noise, "bf16-mixed")
    assert all(term.dtype == torch.float32 for term in terms)


def test_the_log_line_names_the_reconstruction_term_of_the_likelihood():
    row = EpochMetrics(3, 1.25, 300.0, 290.0, 10.0, 280.0, 270.0, 10.0)
    assert reconstruction_label("tutorial-mse") == "MSE"
    line = format_epoch(row, reconstruction_label("bernoulli"))
    assert line == (
        "epoch 03 - 1.2s - loss 300.00 - test_loss 280.00 (-log p(x|z) 270.00 | KLD 10.00)"
    )
