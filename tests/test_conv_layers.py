"""The conv VAE's layers: the parameters, initial weights, values and gradients of plain torch
layers (to rounding), channels-last maps on the CPU, bf16 training through them, and torch's
own convolutions where oneDNN is off."""

import copy
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.models import VAE, networks
from vaelab.models.networks import (
    ConvTranspose2dThenBias,
    SubPixelConvTranspose2d,
    in_conv_layout,
)
from vaelab.training.precision import Bf16Copy, autocast

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = ModelConfig(arch="conv", latent_dim=3)  # 28 x 28, CONV_HIDDEN
ODD = ModelConfig(3 * 9 * 7, image_shape=(3, 9, 7), arch="conv", hidden=(4, 8, 16))


@contextmanager
def conv_memory_format(memory_format: torch.memory_format):
    saved = networks.CONV_MEMORY_FORMAT
    networks.CONV_MEMORY_FORMAT = memory_format
    try:
        yield
    finally:
        networks.CONV_MEMORY_FORMAT = saved


def loss_and_gradients(model: VAE, x: torch.Tensor, noise: torch.Tensor):
    model.zero_grad(set_to_none=True)
    loss = model.loss(x, None, 0.7, noise).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def plain_torch_loss_and_gradients(
    model: VAE, x: torch.Tensor, noise: torch.Tensor, precision: str = "32"
):
    """The loss and gradients of `model`'s weights in torch's nn.ConvTranspose2d layers, NCHW,
    under `precision`'s autocast."""
    plain = copy.deepcopy(model)
    for layers, index in ((plain.decoder, 5), (plain.output, 0)):
        fast = layers[index]
        layers[index] = nn.ConvTranspose2d(fast.in_channels, fast.out_channels, 4, 2, 1)
        layers[index].load_state_dict(fast.state_dict())
    with conv_memory_format(torch.contiguous_format), autocast(precision, x.device):
        return loss_and_gradients(plain, x, noise)


def assert_close_to_rounding(model: VAE, grads, expected, tolerance: float) -> None:
    for (name, _), a, b in zip(model.named_parameters(), grads, expected, strict=True):
        assert (a - b).abs().max() <= tolerance * b.abs().max(), name


def test_a_seed_gives_the_layers_and_initial_weights_of_plain_torch_layers():
    torch.manual_seed(0)
    model = VAE(CONFIG)
    torch.manual_seed(0)  # in the order vaelab 0.1 built them
    plain = [nn.Conv2d(1, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1), nn.Linear(64 * 7 * 7, 256),
             nn.Linear(256, 3), nn.Linear(256, 3), nn.Linear(3, 256), nn.Linear(256, 64 * 7 * 7),
             nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ConvTranspose2d(32, 1, 4, 2, 1)]  # fmt: skip
    ours = list(model.parameters())
    theirs = [p for layer in plain for p in layer.parameters()]
    assert len(ours) == len(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert list(model.state_dict()) == [  # the names saved runs hold
        f"{layer}.{kind}"
        for layer in ("encoder.1", "encoder.3", "encoder.6", "mu_head", "logvar_head",
                      "decoder.0", "decoder.2", "decoder.5", "output.0")
        for kind in ("weight", "bias")
    ]  # fmt: skip


@pytest.mark.parametrize("fast", [ConvTranspose2dThenBias, SubPixelConvTranspose2d])
@pytest.mark.parametrize(("channels_out", "size"), [(1, (7, 7)), (3, (5, 8)), (5, (1, 2))])
def test_the_transposed_convolutions_compute_torchs_values_and_gradients(fast, channels_out, size):
    options = {} if fast is SubPixelConvTranspose2d else dict(kernel_size=4, stride=2, padding=1)
    torch.manual_seed(0)
    ours = fast(6, channels_out, **options).double()
    torch.manual_seed(0)
    theirs = nn.ConvTranspose2d(6, channels_out, 4, 2, 1).double()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    x = torch.randn(4, 6, *size, dtype=torch.float64)
    weights = torch.randn(4, channels_out, 2 * size[0], 2 * size[1], dtype=torch.float64)
    results = []
    for layer in (ours, theirs):
        maps = x.clone().requires_grad_()
        out = layer(maps)
        (out * weights).sum().backward()
        results.append([out, maps.grad, layer.weight.grad, layer.bias.grad])
    for a, b in zip(*results):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_transposed_convolution_without_bias_is_torchs_too():
    torch.manual_seed(0)
    ours = ConvTranspose2dThenBias(3, 2, 4, stride=2, padding=1, bias=False)
    torch.manual_seed(0)
    theirs = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, bias=False)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x))


def test_one_channel_maps_get_a_channel_stride_of_one_and_others_are_copied_only_if_needed():
    maps = torch.rand(5, 1, 4, 6)
    assert maps.is_contiguous(memory_format=torch.channels_last)  # and yet
    laid_out = in_conv_layout(maps)
    assert laid_out.stride() == (24, 1, 6, 1) and torch.equal(laid_out, maps)
    assert in_conv_layout(laid_out) is laid_out
    rgb = torch.rand(5, 3, 4, 6)
    assert in_conv_layout(rgb).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(in_conv_layout(rgb), rgb)
    meta = torch.empty(5, 3, 4, 6, device="meta")
    assert in_conv_layout(meta) is meta  # channels-last was measured on CPUs only


@pytest.mark.parametrize("config", [CONFIG, ODD], ids=["28x28", "3x9x7"])
def test_the_conv_layers_see_channels_last_maps_and_give_plain_torchs_gradients(config):
    torch.manual_seed(0)
    model = VAE(config)
    x, noise = torch.rand(16, config.input_dim), torch.randn(16, config.latent_dim)
    layouts = []

    def record(layer, inputs, output):
        layouts.append((inputs[0].stride(1) == 1, output.stride(1) == 1))

    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for conv in convs:
        conv.register_forward_hook(record)
    loss, grads = loss_and_gradients(model, x, noise)
    # channels-last maps in and out, but for the last layer's output: NCHW, as the image
    assert layouts == [(True, True)] * (len(convs) - 1) + [(True, False)]

    expected_loss, expected = plain_torch_loss_and_gradients(model, x, noise)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=0)
    assert_close_to_rounding(model, grads, expected, 1e-5)


@pytest.mark.parametrize("mkldnn", [True, False], ids=["oneDNN", "torch's own convolutions"])
def test_the_bf16_copy_trains_with_gradients_as_close_to_fp32_as_plain_torch_layers(mkldnn):
    """bf16 through oneDNN (native bf16 kernels where the CPU has them, else oneDNN's
    emulation), and through torch's own convolutions where oneDNN is off or absent."""
    torch.manual_seed(0)
    model = VAE(CONFIG)
    x, noise = torch.rand(32, CONFIG.input_dim), torch.randn(32, CONFIG.latent_dim)
    with torch.backends.mkldnn.flags(enabled=mkldnn, allow_tf32=None):
        bf16 = Bf16Copy(model)
        terms = bf16.loss(x, 0.7, noise)
        bf16.backward(terms.loss)
        grads = [p.grad.clone() for p in model.parameters()]
        plain_loss, plain = plain_torch_loss_and_gradients(model, x, noise, "bf16-mixed")
        fp32_loss, fp32 = plain_torch_loss_and_gradients(model, x, noise)
    assert terms.loss.dtype == torch.float32
    torch.testing.assert_close(terms.loss, plain_loss, rtol=1e-3, atol=0)
    torch.testing.assert_close(terms.loss, fp32_loss, rtol=1e-2, atol=0)
    for (name, _), ours, theirs, exact in zip(model.named_parameters(), grads, plain, fp32):
        assert ours.dtype == torch.float32
        assert (ours - theirs).norm() <= 0.05 * exact.norm(), name  # bf16 rounds differently
        assert (ours - exact).norm() <= (theirs - exact).norm() + 0.02 * exact.norm(), name


def test_the_nchw_layout_gives_the_same_model_to_rounding():
    torch.manual_seed(0)
    model = VAE(CONFIG)
    x, noise = torch.rand(16, CONFIG.input_dim), torch.randn(16, CONFIG.latent_dim)
    loss, grads = loss_and_gradients(model, x, noise)
    with conv_memory_format(torch.contiguous_format):
        nchw_loss, nchw = loss_and_gradients(model, x, noise)
    torch.testing.assert_close(loss, nchw_loss, rtol=1e-5, atol=0)
    assert_close_to_rounding(model, grads, nchw, 1e-5)
