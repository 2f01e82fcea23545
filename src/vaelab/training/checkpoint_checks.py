"""Checks of an untrusted checkpoint's optimizer and RNG states, made before anything is restored.

Every value read from the file is compared with what the live objects hold (the structure and types
of their state dicts), so a refused file changes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.errors import VaelabError


def optimizer_state(
    path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], optimizer: Any
) -> dict[str, Any]:
    """The optimizer's state_dict from the file, checked against the optimizer it will fill."""
    current = optimizer.state_dict()
    saved = meta.get("optimizer")
    if not isinstance(saved, dict):
        raise VaelabError(f"{path}: optimizer must be a JSON object")
    groups = conform(current["param_groups"], saved.get("param_groups"), path, "optimizer")
    if [g["params"] for g in groups] != [g["params"] for g in current["param_groups"]]:
        raise VaelabError(f"{path}: optimizer parameter groups differ from the model's")
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in prefixed(tensors, "optimizer/").items():
        index_text, _, key = name.partition("/")
        state.setdefault(_param_index(path, index_text), {})[key] = tensor
    scalars = saved.get("scalars")
    if not isinstance(scalars, dict) or not all(isinstance(v, dict) for v in scalars.values()):
        raise VaelabError(f"{path}: optimizer.scalars must be a JSON object of objects")
    for index_text, entries in scalars.items():
        state.setdefault(_param_index(path, index_text), {}).update(entries)
    if state:
        _check_optimizer_state(path, state, _optimizer_template(optimizer))
    return {"state": state, "param_groups": groups}


def _param_index(path: Path, text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise VaelabError(f"{path}: optimizer state {text!r:.20} names no parameter")
    return int(text)


def _optimizer_template(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    """The per-parameter state this optimizer keeps: one step of a scratch copy on zero grads."""
    groups = []
    for group in optimizer.param_groups:
        params = [torch.zeros_like(p, requires_grad=True) for p in group["params"]]
        for param in params:
            param.grad = torch.zeros_like(param)
        groups.append({**group, "params": params})
    scratch = type(optimizer)(groups)  # type: ignore[call-arg]  # torch's optimizers take this
    scratch.step()
    return scratch.state_dict()["state"]


def _check_optimizer_state(
    path: Path, state: dict[int, dict[str, Any]], template: dict[int, dict[str, Any]]
) -> None:
    if set(state) != set(template):
        raise VaelabError(f"{path}: optimizer state does not cover the model's parameters")
    for index, entries in state.items():
        expected = template[index]
        if set(entries) != set(expected):
            raise VaelabError(
                f"{path}: optimizer state of parameter {index} has {sorted(entries)}, "
                f"expected {sorted(expected)}"
            )
        for key, value in entries.items():
            like = expected[key]
            if not isinstance(like, torch.Tensor):
                if type(value) is not type(like):
                    raise VaelabError(f"{path}: optimizer.scalars.{index}.{key} is not {like!r}")
                continue
            if (
                not isinstance(value, torch.Tensor)
                or value.shape != like.shape
                or value.dtype != like.dtype
            ):
                raise VaelabError(
                    f"{path}: optimizer/{index}/{key} is not a {like.dtype} tensor of shape "
                    f"{tuple(like.shape)}"
                )
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise VaelabError(f"{path}: optimizer/{index}/{key} holds non-finite values")


def rng_restorer(
    path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], generator: torch.Generator
) -> Callable[[], None]:
    """Check the saved RNG states; return a function that restores them (called last)."""
    saved = meta.get("rng")
    if not isinstance(saved, dict):
        raise VaelabError(f"{path}: rng must be a JSON object")
    numpy_meta = conform(
        {"pos": 0, "has_gauss": 0, "cached_gaussian": 0.0}, saved.get("numpy"), path, "rng.numpy"
    )
    python_state = _python_random_state(path, saved.get("python"))
    torch_state = _byte_state(path, tensors, "rng/torch", torch.get_rng_state())
    generator_state = _byte_state(path, tensors, "rng/generator", generator.get_state())
    numpy_keys = tensors.get("rng/numpy")
    if (
        numpy_keys is None
        or numpy_keys.dtype != torch.int64
        or numpy_keys.shape != (624,)
        or not bool(((numpy_keys >= 0) & (numpy_keys < 2**32)).all())
        or not 0 <= numpy_meta["pos"] <= 624
        or numpy_meta["has_gauss"] not in (0, 1)
    ):
        raise VaelabError(f"{path}: rng/numpy is not a NumPy MT19937 state")
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
    keys = numpy_keys.numpy().astype(np.uint32)
    try:  # on scratch generators first, so that a bad state changes nothing
        torch.Generator().set_state(torch_state)
        torch.Generator(device=generator.device).set_state(generator_state)
        np.random.RandomState().set_state(("MT19937", keys, *numpy_meta.values()))
        random.Random().setstate(python_state)
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        raise VaelabError(f"{path}: an RNG state is invalid ({exc})") from None

    def restore() -> None:
        torch.set_rng_state(torch_state)
        generator.set_state(generator_state)
        np.random.set_state(("MT19937", keys, *numpy_meta.values()))
        random.setstate(python_state)
        if generator.device.type == "cuda" and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)

    return restore


def _python_random_state(path: Path, saved: Any) -> tuple[int, tuple[int, ...], float | None]:
    """random.getstate() as stored in JSON: version 3, 624 words and a position, gauss_next."""
    valid = (
        isinstance(saved, list)
        and len(saved) == 3
        and saved[0] == 3
        and isinstance(saved[1], list)
        and len(saved[1]) == 625
        and all(type(v) is int and 0 <= v < 2**32 for v in saved[1][:-1])
        and type(saved[1][-1]) is int
        and 0 < saved[1][-1] <= 624
        and (saved[2] is None or type(saved[2]) is float)
    )
    if not valid:
        raise VaelabError(f"{path}: rng.python is not a Python random state")
    return 3, tuple(saved[1]), saved[2]


def _byte_state(
    path: Path, tensors: dict[str, torch.Tensor], name: str, like: torch.Tensor
) -> torch.Tensor:
    state = tensors.get(name)
    if state is None or state.dtype != torch.uint8 or state.shape != like.shape:
        raise VaelabError(f"{path}: {name} is not a torch RNG state like this one")
    return state


def conform(template: Any, value: Any, path: Path, where: str) -> Any:
    """`value` (parsed JSON) with the structure and types of `template`, else a VaelabError.

    Lists become tuples where the template has tuples, so restored settings equal the originals.
    """
    if isinstance(template, dict):
        if not isinstance(value, dict) or set(value) != set(template):
            raise VaelabError(f"{path}: {where} does not have the expected fields")
        return {k: conform(template[k], value[k], path, f"{where}.{k}") for k in template}
    if isinstance(template, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(template):
            raise VaelabError(f"{path}: {where} must be a list of {len(template)}")
        items = [
            conform(t, v, path, f"{where}[{i}]") for i, (t, v) in enumerate(zip(template, value))
        ]
        return tuple(items) if isinstance(template, tuple) else items
    if isinstance(template, float) and type(value) in (int, float):
        return float(value)
    if type(value) is not type(template):
        raise VaelabError(f"{path}: {where} must be {type(template).__name__}, got {value!r:.40}")
    return value


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
