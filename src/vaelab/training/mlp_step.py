"""The MLP VAE's training step with its backward pass written out: no autograd graph.

The tutorial's model is a chain of Linear+ReLU layers, so its gradient is a short sequence of
matrix products. `MLPStep.step` computes the loss and every weight's gradient in one call:

- forward: each layer one product with its bias and ReLU fused; the encoder's mu and
  log-variance heads are one product, their weights being adjacent rows of one buffer;
- backward: per layer one product for the weight gradient and one for the layer below, the
  bias gradient a column sum, and the ReLU's mask applied in place from the stored outputs;
- each of a layer's three products goes the route `models/products.py` picks for its shapes
  and dtype (oneDNN or torch's BLAS), chosen once per batch size (`LayerStep`): choosing on
  every call, with the transposed views it takes, cost 3-5% of an fp32 step;
- the weights and their gradients live in flat fp32 buffers (the parameters and `.grad`s are
  views into them), so Adam updates them in one fused call (`FlatAdam`). In bf16-mixed one cast
  kernel per step copies the weights into a flat bf16 shadow the products read, and one copy
  per run of adjacent bf16 layers moves their gradients into the fp32 `.grad`s: autocast's
  arithmetic (bf16 inputs, weights and outputs of the products, the loss and latent statistics
  in fp32) without its casts, except that layers of fewer than `BF16_MIN_WEIGHTS` weights (the
  tutorial's 100-20-2-20-100 middle) multiply in fp32, which is faster there.

It trains `arch='mlp'` with the N(0, I) prior, one stochastic layer, no conditioning, the ELBO of
one sample, and the 'tutorial-mse' or 'bernoulli' likelihood, in fp32 or bf16-mixed (`covers`
says why not otherwise); the training loop uses autograd for every other model. Tests check its
loss and gradients against autograd's (in bf16-mixed: as close to fp32's as autocast's are).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vaelab.models import VAE, LossTerms
from vaelab.models.likelihoods import gaussian_kl
from vaelab.models.products import Product, product_route
from vaelab.training.flat_adam import FlatAdam, views_like

# The likelihoods whose gradient with respect to the logits is written out below.
LIKELIHOODS = ("tutorial-mse", "bernoulli")
# In bf16-mixed, layers with fewer weights multiply in fp32: a oneDNN bf16 product costs about
# 13 us whatever its size, more than torch's fp32 product of such a layer at batch 200.
BF16_MIN_WEIGHTS = 8192


def covers(
    model: nn.Module, precision: str, samples: int = 1, objective: str = "elbo"
) -> str | None:
    """None when `MLPStep` can train `model` this way, else why not (in a few words)."""
    if type(model) is not VAE:
        return "the model is not vaelab's VAE with one stochastic layer"
    config = model.config
    reasons = {
        f"arch is {config.arch!r}": config.arch != "mlp",
        f"the prior is {config.prior!r}": config.prior != "gaussian",
        "the model is conditional": config.conditional,
        f"the likelihood is {config.likelihood!r}": config.likelihood not in LIKELIHOODS,
        "the objective is not the one-sample ELBO": objective != "elbo" or samples != 1,
        f"the precision is {precision!r}": precision not in ("32", "bf16-mixed"),
        "the weights are not float32": any(p.dtype != torch.float32 for p in model.parameters()),
    }
    return next((reason for reason, applies in reasons.items() if applies), None)


class Dense(NamedTuple):
    """One layer's (out, in) weight and its bias, as views of a flat buffer."""

    weight: torch.Tensor
    bias: torch.Tensor


class LayerStep(NamedTuple):
    """What a step does with one layer: its weight (and the weight transposed) and bias, in the
    dtype it multiplies in, where its gradients go, and the route (`product_route`) of each of
    its three products for one batch size, chosen once."""

    weight: torch.Tensor
    weight_t: torch.Tensor
    bias: torch.Tensor
    grad: Dense
    forward: Product
    weight_grad: Product
    input_grad: Product


class MLPStep:
    """Loss and gradients of an MLP VAE's training step, computed without autograd.

    Building it moves `model`'s parameters into one flat buffer, values unchanged (build it
    before the optimizer, which holds the parameters). `step` returns the batch's loss terms and
    leaves d loss / d weight in every parameter's `.grad`, ready for `optimizer.step()` or, the
    same update in one kernel, `self.adam.step(optimizer)`.
    """

    def __init__(self, model: VAE, precision: str = "32") -> None:
        reason = covers(model, precision)
        if reason is not None:
            raise ValueError(f"MLPStep cannot train this model: {reason}")
        self.likelihood = model.config.likelihood
        self.latent = model.config.latent_dim
        encoder = _linears(model.encoder)
        decoder = _linears(model.decoder) + _linears(model.output)
        assert model.mu_head is not None and model.logvar_head is not None
        heads = _linears(model.mu_head) + _linears(model.logvar_head)
        # The flat layout: encoder layers, both heads' weights then both biases, the decoder.
        self.parameters: list[torch.Tensor] = [p for layer in encoder for p in _pair(layer)]
        self.parameters += [head.weight for head in heads] + [head.bias for head in heads]
        self.parameters += [p for layer in decoder for p in _pair(layer)]
        self.weights = _flatten_into_one_buffer(self.parameters)
        self.low = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
        self.shadow = self.weights if self.low == torch.float32 else self.weights.to(self.low)
        shapes = [_shape(layer) for layer in encoder]
        shapes.append((2 * self.latent, encoder[-1].out_features))
        shapes += [_shape(layer) for layer in decoder]
        self.encoder_depth = len(encoder)
        self.grads = torch.zeros_like(self.weights)
        for parameter, grad in zip(self.parameters, views_like(self.grads, self.parameters)):
            parameter.grad = grad
        # the products write the gradients in their own dtype; bf16 ones are cast back per run
        # of adjacent bf16 layers (`low_spans`)
        self.shadow_grads = self.grads if self.low == torch.float32 else self.shadow.clone()
        # whether each layer multiplies in the low dtype
        low = [self.low == torch.float32 or rows * columns >= BF16_MIN_WEIGHTS
               for rows, columns in shapes]  # fmt: skip
        self.layers = _pick(low, _layer_views(self.shadow, shapes),
                            _layer_views(self.weights, shapes))  # fmt: skip
        self.grad_layers = _pick(low, _layer_views(self.shadow_grads, shapes),
                                 _layer_views(self.grads, shapes))  # fmt: skip
        self.low_spans = [] if self.shadow_grads is self.grads else _spans(low, shapes)
        self.adam = FlatAdam(self.parameters, self.weights, self.grads)
        self.plans: dict[int, list[LayerStep]] = {}  # per batch size

    def step(self, x: torch.Tensor, noise: torch.Tensor, kl_scale: float = 1.0) -> LossTerms:
        """The loss terms of batch `x` (N, D) with eps `noise` (N, latent); fills each
        parameter's `.grad`."""
        return self.step_with(x, noise, kl_scale, kl_scale / len(x))

    @torch.no_grad()
    def step_with(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        kl_scale: float | torch.Tensor,
        kl_weight: float | torch.Tensor,
    ) -> LossTerms:
        """`step` with the KL term's scale and its per-image weight `kl_scale / len(x)` given,
        as numbers or as 0-dim tensors on the device (which a captured CUDA graph reads)."""
        if self.shadow is not self.weights:
            self.shadow.copy_(self.weights)
        n = len(x)
        plan = self.plans.get(n) or self._plan(n)
        encoder, decoder = plan[: self.encoder_depth + 1], plan[self.encoder_depth + 1 :]
        encoder_inputs, stats = self._forward(x, encoder)
        stats = _as_dtype(stats, torch.float32)
        mu, logvar = stats[:, : self.latent], stats[:, self.latent :]
        std = torch.exp(0.5 * logvar)
        z = torch.addcmul(mu, noise, std)
        decoder_inputs, logits = self._forward(z, decoder)
        reconstruction, grad_logits = self._reconstruction(logits.float(), x, n)
        kld = gaussian_kl(mu, logvar)

        grad_z = self._backward(grad_logits, decoder_inputs, decoder, input_grad=True)
        grad_stats = _latent_gradient(grad_z.float(), noise, mu, logvar, std, kl_weight)
        self._backward(grad_stats, encoder_inputs, encoder, input_grad=False)
        for start, end in self.low_spans:
            self.grads[start:end].copy_(self.shadow_grads[start:end])
        return LossTerms(reconstruction + kl_scale * kld, reconstruction, kld)

    def _plan(self, rows: int) -> list[LayerStep]:
        """Each layer's `LayerStep` for batches of `rows` rows (kept for the steps that follow)."""
        plan = []
        for layer, grad in zip(self.layers, self.grad_layers):
            out_features, in_features = layer.weight.shape
            x = layer.weight.new_empty((rows, in_features))
            g = layer.weight.new_empty((rows, out_features))
            plan.append(LayerStep(
                layer.weight, layer.weight.t(), layer.bias, grad,
                forward=product_route(x, layer.weight.t(), bias=True),
                weight_grad=product_route(g.t(), x),
                input_grad=product_route(g, layer.weight),
            ))  # fmt: skip
        self.plans[rows] = plan
        return plan

    @staticmethod
    def _forward(
        h: torch.Tensor, layers: list[LayerStep]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each layer's input, in the layer's dtype (each a ReLU output but the first), and the
        last layer's output, from input `h`."""
        inputs = []
        last = len(layers) - 1
        for index, layer in enumerate(layers):
            h = _as_dtype(h, layer.weight.dtype)
            inputs.append(h)
            h = layer.forward(h, layer.weight_t, layer.bias, index < last, None)
        return inputs, h

    def _reconstruction(
        self, logits: torch.Tensor, x: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's reconstruction term per image and its gradient with respect to the logits."""
        mean = torch.sigmoid(logits)
        if self.likelihood == "tutorial-mse":  # sum((p - x)^2) / 2N with p = sigmoid(l)
            residual = (mean - x).reshape(-1)
            reconstruction = torch.dot(residual, residual) / (2 * n)
            # d/dl = (p - x) p (1 - p) / N
            grad = torch.ops.aten.sigmoid_backward(residual.view_as(x).mul_(1 / n), mean)
            return reconstruction, grad
        # bernoulli: sum(softplus(l) - x l) / N, whose gradient is (sigmoid(l) - x) / N
        flat_x, flat_logits = x.reshape(-1), logits.reshape(-1)
        softplus = nn.functional.softplus(logits).sum()
        reconstruction = (softplus - torch.dot(flat_x, flat_logits)) / n
        return reconstruction, mean.sub_(x).mul_(1 / n)

    @staticmethod
    def _backward(
        grad: torch.Tensor, inputs: list[torch.Tensor], layers: list[LayerStep], input_grad: bool
    ) -> torch.Tensor:
        """Backward through a Linear+ReLU chain whose layers' inputs are `inputs` (each a ReLU
        output except the first), from the last layer's output gradient `grad`: writes each
        layer's weight and bias gradients into its `grad` views; returns the first input's
        gradient (when `input_grad`, else the last gradient computed)."""
        for position in range(len(layers) - 1, -1, -1):
            layer, layer_input = layers[position], inputs[position]
            grad = _as_dtype(grad, layer.weight.dtype)
            layer.weight_grad(grad.t(), layer_input, None, False, layer.grad.weight)
            torch.sum(grad, dim=0, out=layer.grad.bias)
            if position == 0 and not input_grad:
                break
            below = layer.input_grad(grad, layer.weight, None, False, None)
            if position > 0:  # the input is a ReLU output: no gradient where it is 0
                _mask_by_relu_output(below, layer_input)
            grad = below
        return grad


def _latent_gradient(
    grad_z: torch.Tensor,
    noise: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    std: torch.Tensor,
    kl_weight: float | torch.Tensor,
) -> torch.Tensor:
    """d loss / d (mu, logvar), side by side as the heads' output gradient (N, 2 * latent).

    z = mu + eps std with std = exp(logvar / 2), and the loss's KL term is kl_weight times
    -0.5 sum(1 + logvar - mu^2 - exp(logvar)).
    """
    grad_mu = grad_z + kl_weight * mu
    grad_logvar = 0.5 * (grad_z * noise * std + kl_weight * (logvar.exp() - 1))
    return torch.cat([grad_mu, grad_logvar], dim=1)


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor if tensor.dtype == dtype else tensor.to(dtype)  # no call into torch when equal


def _mask_by_relu_output(grad: torch.Tensor, relu_output: torch.Tensor) -> None:
    """grad[relu_output == 0] = 0, in place."""
    torch.ops.aten.threshold_backward.grad_input(grad, relu_output, 0, grad_input=grad)


def _pick(choices: list[bool], if_true: list[Dense], if_false: list[Dense]) -> list[Dense]:
    return [a if choice else b for choice, a, b in zip(choices, if_true, if_false)]


def _spans(chosen: list[bool], shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The flat buffer's (start, end) ranges of the chosen layers, adjacent ones merged."""
    spans: list[tuple[int, int]] = []
    for choice, (start, _, end) in zip(chosen, _layer_ranges(shapes)):
        if choice and spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        elif choice:
            spans.append((start, end))
    return spans


def _linears(stack: nn.Module) -> list[nn.Linear]:
    return [layer for layer in stack.modules() if isinstance(layer, nn.Linear)]


def _shape(layer: nn.Linear) -> tuple[int, int]:
    return layer.out_features, layer.in_features


def _pair(layer: nn.Linear) -> list[torch.Tensor]:
    return [layer.weight, layer.bias]


def _flatten_into_one_buffer(parameters: list[torch.Tensor]) -> torch.Tensor:
    """One flat tensor holding every parameter's values, in order; each parameter becomes a
    view of it."""
    flat = torch.cat([p.detach().reshape(-1) for p in parameters])
    for parameter, view in zip(parameters, views_like(flat, parameters)):
        parameter.data = view
    return flat


def _layer_ranges(shapes: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Each layer's (weight start, bias start, end) in the flat buffer, laid out as `MLPStep`
    lays out the parameters (every weight followed by its bias)."""
    ranges, offset = [], 0
    for rows, columns in shapes:
        ranges.append((offset, offset + rows * columns, offset + rows * columns + rows))
        offset = ranges[-1][2]
    return ranges


def _layer_views(flat: torch.Tensor, shapes: list[tuple[int, int]]) -> list[Dense]:
    """Each layer's weight (out, in) and bias (out,) as views of `flat`."""
    return [
        Dense(flat[start:bias].view(rows, columns), flat[bias:end])
        for (rows, columns), (start, bias, end) in zip(shapes, _layer_ranges(shapes))
    ]
