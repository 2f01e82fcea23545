"""The MLP's training step replayed from a CUDA graph: one launch for its hundred-odd kernels.

On a GPU the hand-written step (`MLPStep`) of the tutorial's model is a few hundred
microseconds of arithmetic spread over about a hundred kernel launches, so the host's launches,
not the device, set the pace. `GraphedStep` records the step once into a `torch.cuda.CUDAGraph`
and replays it for every batch of the captured size: the batch, its noise and the KL term's
scale and weight are copied into static device buffers the graph reads, and the loss terms come
back in a static buffer, copied out for each step. Adam's fused kernel runs after the replay, with
the learning rate of that step (the schedule changes it), and a batch of another size (an epoch's
last, smaller one) runs `MLPStep` as usual. The arithmetic is the eager step's, kernel for kernel.

`capture=False` runs the same static-buffer path without a graph, on any device: the tests run it
on the CPU against `MLPStep.step`.
"""

from __future__ import annotations

import torch

from vaelab.errors import VaelabError
from vaelab.models import LossTerms
from vaelab.training.mlp_step import MLPStep

# Eager steps on a side stream before the capture, as torch.cuda.graphs asks (lazy
# initialisation of kernels and workspaces must not happen inside the capture).
WARMUP_STEPS = 3


class GraphedStep:
    """`MLPStep.step` for batches of `rows` images, replayed from a CUDA graph when `capture`."""

    def __init__(self, step: MLPStep, rows: int, capture: bool = True) -> None:
        self.eager = step
        self.adam = step.adam
        self.rows = rows
        self.capture = capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.buffers: tuple[torch.Tensor, ...] | None = None  # x, noise, kl scale, kl weight
        self.terms = torch.empty(0)  # the step's loss terms, stacked: written by every replay

    def step(self, x: torch.Tensor, noise: torch.Tensor, kl_scale: float = 1.0) -> LossTerms:
        """`MLPStep.step`: the loss terms of batch `x` with eps `noise`; leaves each
        parameter's gradient in its `.grad`."""
        if len(x) != self.rows:
            return self.eager.step(x, noise, kl_scale)
        buffers = self._buffers(x, noise)
        static_x, static_noise, scale, weight = buffers
        static_x.copy_(x)
        static_noise.copy_(noise)
        scale.fill_(kl_scale)
        weight.fill_(kl_scale / len(x))
        if not self.capture:
            torch.stack(self.eager.step_with(*buffers), out=self.terms)
        elif self.graph is None:
            self.graph = self._captured_or_refused(buffers)
            self.graph.replay()
        else:
            self.graph.replay()
        return LossTerms(*self.terms.clone().unbind())

    def _buffers(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.buffers is None:
            scalars = torch.zeros(2, device=x.device)
            self.buffers = (torch.empty_like(x), torch.empty_like(noise), scalars[0], scalars[1])
            self.terms = torch.empty(3, device=x.device)
        return self.buffers

    def _captured_or_refused(self, buffers: tuple[torch.Tensor, ...]) -> torch.cuda.CUDAGraph:
        """`_captured`, or one line saying the capture failed and how to train without it."""
        try:
            return self._captured(buffers)
        except RuntimeError as failed:
            first_line = (str(failed).strip().splitlines() or ["no message"])[0][:200]
            raise VaelabError(
                f"cuda_graphs: the training step could not be captured into a CUDA graph "
                f"({first_line}); train without cuda_graphs",
                parameters=("cuda_graphs",),
            ) from None

    def _captured(self, buffers: tuple[torch.Tensor, ...]) -> torch.cuda.CUDAGraph:
        """The step recorded into a CUDA graph, after warm-up steps on a side stream (they
        write the gradients, which every step overwrites, and leave the weights as they were)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.eager.step_with(*buffers)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            torch.stack(self.eager.step_with(*buffers), out=self.terms)
        return graph
