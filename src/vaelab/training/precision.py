"""Numeric precision of training: fp32, or bf16 matrix products with fp32 weights and Adam."""

from __future__ import annotations

import copy

import torch

from vaelab.models import VAE, LossTerms
from vaelab.training.cpu import has_native_bf16


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is 'bf16-mixed' on CPUs that multiply bf16 natively, else '32'.

    On CUDA 'auto' stays '32': bf16-mixed's quality for this model was measured on CPUs only.
    """
    if precision != "auto":
        return precision
    if device.type == "cpu" and has_native_bf16():
        return "bf16-mixed"
    return "32"


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 matrix products with fp32 weights and optimizer for 'bf16-mixed'; a no-op for '32'.

    autocast casts each weight to bf16 once per step (its cast cache lives as long as the
    context), and the model returns its latent statistics and logits in fp32 for the loss.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


class Bf16Copy:
    """bf16-mixed training through a bf16 copy of the model's layers, without autocast.

    Before each forward pass the fp32 weights are copied into the bf16 layers in one batch of
    copies; after the backward pass the bf16 gradients are copied into the fp32 weights' `.grad`
    for Adam. The arithmetic is autocast's (bf16 inputs, weights and outputs of every matrix
    product, the loss in fp32), but the casts happen in two batched copies per step instead of
    at each layer call through autocast's dispatch, and autograd records no cast node per weight
    (whose backward would cast each gradient separately). Parameters outside the layers (a
    Gaussian decoder's log-scale) stay fp32.
    """

    def __init__(self, model: VAE) -> None:
        self.model = model
        self.copy = copy.deepcopy(model)
        for layer in self.copy.children():
            layer.to(torch.bfloat16)
        self.weights: list[torch.Tensor] = list(model.parameters())
        self.copied: list[torch.Tensor] = list(self.copy.parameters())

    def loss(
        self,
        batch: torch.Tensor,
        kl_scale: float,
        noise: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        objective: str = "elbo",
    ) -> LossTerms:
        """The training loss of `batch` through the bf16 layers, with the current fp32 weights."""
        with torch.no_grad():
            torch._foreach_copy_(self.copied, self.weights)
        if self.copy.training != self.model.training:
            self.copy.train(self.model.training)
        return self.copy.loss(batch, None, kl_scale, noise, labels, objective)

    def backward(self, loss: torch.Tensor) -> None:
        """Set each fp32 weight's `.grad` to d loss / d weight, computed in the bf16 layers."""
        grads = torch.autograd.grad(loss, self.copied, allow_unused=True)
        for weight, grad in zip(self.weights, grads):
            weight.grad = None if grad is None else _in_layout_of(weight, grad)


def _in_layout_of(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """`grad` in `weight`'s dtype and memory layout (strides). torch's fused optimizers (Adam's
    `fused=True`, vaelab's default) read a parameter and its gradient as flat arrays, element i
    of one with element i of the other: a gradient laid out otherwise (a convolution's backward
    pass returns channels-last weight gradients) would update the wrong weights. Autograd's own
    accumulation keeps that contract; a `.grad` set by hand must too."""
    if grad.dtype == weight.dtype and grad.stride() == weight.stride():
        return grad  # a parameter the copy keeps in fp32 (a Gaussian decoder's log-scale)
    return torch.empty_like(weight).copy_(grad)
