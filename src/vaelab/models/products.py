"""Dense matrix products through the fastest route this torch exposes for the device.

On x86 CPUs torch sends fp32 matrix products to Intel MKL, which takes its AVX-512 kernels only
on Intel CPUs: on an AMD Zen 5 CPU it runs at about half of what oneDNN (also inside torch)
reaches on the same shapes (on Zen 4, whose AVX-512 units are 256 bits wide, at about the same
rate). On AMD CPUs with AVX-512 `matmul_nt` sends fp32 products of the sizes that
matter to oneDNN's linear primitive (which also fuses the bias and a ReLU). Everywhere else fp32
products stay with torch's BLAS: on Intel CPUs, and on AMD CPUs where the shim that lets MKL
take its AVX-512 kernels is loaded (`VAELAB_MKL_AVX512=1`, `vaelab.training.cpu`), MKL is as
fast or faster, reads transposed operands in place and has no fixed cost per call (oneDNN's
primitive takes about 15 us whatever the size, and copies a transposed input). bf16 products
with a bias go to oneDNN's linear primitive, every other product to the usual
`torch.addmm`/`torch.mm` (torch's bf16 `mm` is oneDNN's already, and reads transposed operands
without the copy the linear primitive makes). The route
is checked once per process against `torch.mm`; where oneDNN's primitive is missing or
disagrees, the usual route is used. `matmul_nt` chooses on every call; `product_route` hands
the choice to a caller that repeats products of the same shapes (the MLP's training step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# Below this many multiply-adds a product is dominated by call overhead, where MKL's is lower.
_ONEDNN_FP32_MIN_MACS = 1 << 20
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


@functools.cache
def _onednn_linear_op() -> Any:
    """oneDNN's linear primitive as its overload (calling the overload, not the op packet,
    skips about 4 us of Python dispatch per call), or None where this torch lacks it."""
    packet = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return None if packet is None else getattr(packet, "default", None)


@functools.cache
def onednn_linear_available() -> bool:
    """Whether oneDNN's linear primitive runs here and agrees with torch.mm (checked once)."""
    linear = _onednn_linear_op()
    if linear is None or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(8, 16, generator=generator)
    b = torch.randn(12, 16, generator=generator)
    c = torch.randn(8, 12, generator=generator)
    try:
        forward = linear(a, b, None, "none", [], "")
        transposed = linear(a.t(), c.t(), None, "none", [], "")  # a.T @ c, from strided views
    except (RuntimeError, NotImplementedError):
        return False
    return bool(
        torch.allclose(forward, a @ b.t(), atol=1e-4)
        and torch.allclose(transposed, a.t() @ c, atol=1e-4)
    )


@functools.cache
def onednn_beats_blas_fp32() -> bool:
    """Whether oneDNN's fp32 products beat torch's BLAS here: where that BLAS is MKL on an AMD
    CPU whose AVX-512 kernels MKL does not take (no shim loaded)."""
    from vaelab.training import cpu  # vaelab.training imports this module

    if "BLAS_INFO=mkl" not in torch.__config__.show():
        return False
    return cpu.cpu_info().get("vendor_id") == "AuthenticAMD" and not cpu.mkl_override_active()


def onednn_linear(
    a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, activation: str
) -> torch.Tensor:
    """activation(a @ b.T + bias) by oneDNN's linear primitive ('none', 'relu', 'sigmoid', ...)."""
    return _onednn_linear_op()(a, b, bias, activation, [], "")


def uses_onednn(a: torch.Tensor, b: torch.Tensor, bias: bool = False) -> bool:
    """Whether `matmul_nt(a, b, bias?)` goes to oneDNN's linear primitive."""
    if a.device.type != "cpu" or a.dtype not in _ONEDNN_DTYPES or b.dtype != a.dtype:
        return False
    if a.dtype == torch.bfloat16 and not bias:
        return False
    if a.dtype == torch.float32:
        if a.shape[0] * a.shape[1] * b.shape[0] < _ONEDNN_FP32_MIN_MACS:
            return False
        if not onednn_beats_blas_fp32():
            return False
    return onednn_linear_available()


# relu?(a @ rhs + bias), written into `out` when given: (a, rhs, bias, relu, out) -> result.
Product = Callable[[Tensor, Tensor, Tensor | None, bool, Tensor | None], Tensor]


def product_route(a: torch.Tensor, rhs: torch.Tensor, bias: bool = False) -> Product:
    """The function that computes relu?(a @ rhs + bias) for `a` (M, K) and `rhs` (K, N), chosen
    for their shapes, dtypes and device as `matmul_nt` chooses: a caller that repeats products of
    these shapes (a training step) chooses once and calls `route(a, rhs, bias, relu, out)`."""
    return _onednn_product if uses_onednn(a, rhs.t(), bias) else _blas_product


def matmul_nt(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None = None,
    relu: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """relu?(a @ b.T + bias) for 2-D `a` (M, K), `b` (N, K), either possibly a transposed view;
    written into `out` when given (a product without bias or ReLU).

    The three products of a dense layer's step are all of this form: the forward pass
    x @ W.T, the input gradient g @ W = matmul_nt(g, W.t()) and the weight gradient
    g.T @ x = matmul_nt(g.t(), x.t()).
    """
    rhs = b.t()
    return product_route(a, rhs, bias is not None)(a, rhs, bias, relu, out)


def _onednn_product(
    a: Tensor, rhs: Tensor, bias: Tensor | None, relu: bool, out: Tensor | None
) -> Tensor:
    result = onednn_linear(a, rhs.t(), bias, "relu" if relu else "none")
    return result if out is None else out.copy_(result)


def _blas_product(
    a: Tensor, rhs: Tensor, bias: Tensor | None, relu: bool, out: Tensor | None
) -> Tensor:
    if out is not None:
        return torch.mm(a, rhs, out=out)
    result = torch.mm(a, rhs) if bias is None else torch.addmm(bias, a, rhs)
    return result.relu_() if relu else result
