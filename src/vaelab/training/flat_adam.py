"""torch's fused Adam run once over weights that live in one flat buffer.

`torch.optim.Adam(fused=True)` updates every parameter tensor with the same elementwise
arithmetic; for a model of many small tensors most of a step's time is the optimizer's Python
bookkeeping around that kernel. When the weights, their gradients and Adam's two moments are each
one flat buffer (the parameters, `.grad`s and the optimizer's state tensors being views of them),
one call of the same kernel updates them all, with `optimizer.step()`'s arithmetic: equal to the
last bit except for the elements torch's kernel leaves to its scalar tail, which round a hair
differently. Every step after the first takes this path, so a resumed run repeats an
uninterrupted one bit for bit.

The optimizer object stays the source of truth (its `state_dict` is what a checkpoint saves and
restores); whenever its state tensors are not the flat buffers' views (after the first step,
after `load_state_dict`) they are gathered into the buffers again. Any optimizer this does not
describe (another class, options that change the arithmetic, several groups) is stepped with
`optimizer.step()`.
"""

from __future__ import annotations

import torch


def views_like(flat: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive views of `flat` with the shapes of `tensors`, in order."""
    views, offset = [], 0
    for tensor in tensors:
        views.append(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()
    return views


class FlatAdam:
    """Steps a fused `torch.optim.Adam` over `parameters`, views of the flat `weights` whose
    `.grad`s are views of the flat `grads` (in the same order)."""

    def __init__(
        self, parameters: list[torch.Tensor], weights: torch.Tensor, grads: torch.Tensor
    ) -> None:
        self.parameters = parameters
        self.weights, self.grads = weights, grads
        self.moments = torch.zeros_like(weights), torch.zeros_like(weights)
        self.grad_pointers = [view.data_ptr() for view in views_like(grads, parameters)]
        self.checked: tuple[int, int] | None = None  # the optimizer and group found to match
        self.views = [views_like(moment, parameters) for moment in self.moments]
        self.steps = torch.zeros(len(parameters), device=weights.device)  # each one's step count
        self.step_views = list(self.steps.unbind())

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """One Adam step of `optimizer`: one fused kernel over the flat buffers where it applies."""
        group = self._group(optimizer)
        if group is not None and not self._bound(optimizer):
            self._bind(optimizer)
        if group is None or not self._bound(optimizer):  # another optimizer, or its first step
            optimizer.step()
            return
        self.steps.add_(1)
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            [self.weights], [self.grads], [self.moments[0]], [self.moments[1]], [],
            [self.step_views[0]],
            amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
            grad_scale=None, found_inf=None,
        )  # fmt: skip

    def _group(self, optimizer: torch.optim.Optimizer) -> dict | None:
        """The optimizer's one parameter group when it is a fused Adam of these parameters whose
        arithmetic the flat call repeats, else None."""
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        if self.checked == (id(optimizer), id(group["params"])):
            return group
        plain = (
            group.get("fused")
            and not group.get("amsgrad")
            and not group.get("maximize")
            and not group.get("differentiable")
            and not group.get("capturable")
            and not group.get("decoupled_weight_decay")
            and not isinstance(group["lr"], torch.Tensor)
            and not any(isinstance(beta, torch.Tensor) for beta in group["betas"])
        )
        ours = {id(p) for p in group["params"]} == {id(p) for p in self.parameters}
        if not (plain and ours and len(group["params"]) == len(self.parameters)):
            return None
        if any(p.grad is None or p.grad.data_ptr() != pointer
               for p, pointer in zip(self.parameters, self.grad_pointers)):  # fmt: skip
            return None
        self.checked = (id(optimizer), id(group["params"]))
        return group

    def _bound(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether the optimizer's moments are the flat buffers' views (and its steps agree)."""
        for index, parameter in enumerate(self.parameters):
            state = optimizer.state.get(parameter)
            if not state or state.get("exp_avg") is not self.views[0][index]:
                return False
            if state.get("exp_avg_sq") is not self.views[1][index]:
                return False
            if state.get("step") is not self.step_views[index]:
                return False
        return True

    def _bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Gather the optimizer's moments into the flat buffers and hand it back their views."""
        states = [optimizer.state.get(p) for p in self.parameters]
        if not all(states) or len({float(s["step"]) for s in states}) != 1:  # type: ignore[index]
            return
        if any(s["step"].dtype != self.steps.dtype or s["step"].dim() for s in states):  # type: ignore[index]
            return
        for index, state in enumerate(states):
            assert state is not None
            for moment, key in enumerate(("exp_avg", "exp_avg_sq")):
                view = self.views[moment][index]
                view.copy_(state[key])
                state[key] = view
            self.step_views[index].copy_(state["step"])
            state["step"] = self.step_views[index]
