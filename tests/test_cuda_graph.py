"""The CUDA-graph step: its static-buffer path (on any device) trains exactly as `MLPStep`."""

from dataclasses import replace

import pytest
import torch

from vaelab.config import ModelConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.training import epoch as training
from vaelab.training.cuda_graph import GraphedStep
from vaelab.training.distributed import SINGLE_PROCESS
from vaelab.training.mlp_step import MLPStep

CONFIG = ModelConfig(input_dim=64, hidden=(32, 16), latent_dim=2)


def trained(precision: str, graphed: bool, device: str = "cpu", capture: bool = False):
    """Weights and per-step losses after steps of 24 and then 10 images, with the KL weight
    and the learning rate changing from step to step."""
    torch.manual_seed(0)
    model = VAE(CONFIG).to(device)
    step = MLPStep(model, precision)
    objective = GraphedStep(step, 24, capture=capture) if graphed else step
    optimizer = training.make_optimizer(model, TrainConfig())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.9**i)
    generator = torch.Generator(device=device).manual_seed(1)
    losses = []
    for index, rows in enumerate([24, 24, 24, 10, 24]):
        batch = torch.rand(rows, 64, generator=generator, device=device)
        noise = torch.randn(rows, 2, generator=generator, device=device)
        terms = training.training_step(
            objective, optimizer, batch, noise, precision, kl_scale=0.2 * (index + 1)
        )
        scheduler.step()
        losses.append(terms)
    return model, [torch.stack(terms) for terms in losses]


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_the_static_buffer_step_trains_as_the_eager_step_to_the_bit(precision):
    model, losses = trained(precision, graphed=False)
    graphed_model, graphed_losses = trained(precision, graphed=True)
    for (name, weight), graphed_weight in zip(model.named_parameters(), graphed_model.parameters()):
        assert torch.equal(weight, graphed_weight), name
    for eager, graphed in zip(losses, graphed_losses):
        assert torch.equal(eager, graphed)


def test_each_steps_terms_are_its_own_not_the_buffer_the_next_step_overwrites():
    _, losses = trained("32", graphed=True)
    assert len({tuple(terms.tolist()) for terms in losses}) == len(losses)


def test_cuda_graphs_are_refused_where_there_is_no_cuda_step_to_capture():
    config = replace(TrainConfig(), cuda_graphs=True)
    with pytest.raises(VaelabError, match="the device is cpu, not cuda") as refused:
        training.make_objective(VAE(CONFIG), SINGLE_PROCESS, "32", config)
    assert refused.value.parameters == ("cuda_graphs",)


def test_a_step_that_cannot_be_captured_stops_with_one_line_naming_cuda_graphs(monkeypatch):
    def fails(self, buffers):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(GraphedStep, "_captured", fails)
    model = VAE(CONFIG)
    graphed = GraphedStep(MLPStep(model, "32"), 24, capture=True)
    with pytest.raises(VaelabError, match=r"could not be captured .*stream is capturing\); train"):
        graphed.step(torch.rand(24, 64), torch.randn(24, 2))


def test_cuda_graphs_must_be_a_boolean():
    with pytest.raises(VaelabError, match="cuda_graphs must be true or false"):
        TrainConfig(cuda_graphs="yes")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_on_cuda_the_replayed_graph_trains_as_the_eager_step_to_the_bit(precision):
    model, losses = trained(precision, graphed=False, device="cuda")
    graphed_model, graphed_losses = trained(precision, graphed=True, device="cuda", capture=True)
    for (name, weight), graphed_weight in zip(model.named_parameters(), graphed_model.parameters()):
        assert torch.equal(weight, graphed_weight), name
    for eager, graphed in zip(losses, graphed_losses):
        assert torch.equal(eager, graphed)
