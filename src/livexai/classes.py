"""``explain_classes``: one explanation per class of one input, for seed 004's "which pixels speak for which class"
picture (drawn by :func:`livexai.plot_grid`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._adapter import Model
from ._call import prepare
from ._methods import METHODS
from .explanation import Explanation

__all__ = ["explain_classes"]

# With no classes given: every class when the model has at most this many outputs, else the top ones.
ALL_CLASSES_UP_TO = 10
TOP_CLASSES = 5
# Methods whose passes serve every class at once (the forward passes are shared; each class adds a backward pass).
SHARED = ("deeplift", "deep_shap")


def _method(name: str) -> Callable[..., Explanation]:
    """The livexai function called ``name``."""
    if name not in METHODS:
        raise ValueError(
            f"unknown method {name!r}; expected one of {', '.join(map(repr, METHODS))} or a callable "
            "(model, x, target=...) -> Explanation"
        )
    return METHODS[name]


def default_classes(scores: torch.Tensor) -> list[int]:
    """Every class of a model with few outputs; else the most probable ones, most probable first."""
    n_outputs = scores.shape[-1]
    if n_outputs <= ALL_CLASSES_UP_TO:
        return list(range(n_outputs))
    return [int(i) for i in torch.argsort(scores.reshape(-1), descending=True)[:TOP_CLASSES]]


def explain_classes(
    model: Model,
    x: torch.Tensor,
    method: str | Callable[..., Explanation] = "deep_shap",
    *,
    classes: Sequence[int] | None = None,
    **method_kwargs: Any,
) -> dict[int, Explanation]:
    """Explain one input ``x`` once for each of ``classes`` with ``method``: ``{class: Explanation}``.

    ``method`` is a livexai method name or a callable ``(model, x, target=..., **kwargs) -> Explanation``;
    ``method_kwargs`` go to it (``background=`` for ``"deep_shap"``, ``n_samples=``, ...). ``classes`` None
    means every class of a model with at most 10 outputs, else its 5 most probable. DeepLIFT and DeepSHAP compute
    all classes in one batched pass (one backward pass per class); other methods run once per class.
    """
    output = method_kwargs.get("output", "logits")
    if classes is None:
        call_ = prepare(model, x, target=None, output=output, image=method_kwargs.get("image"))
        classes = default_classes(call_.scores)
    wanted = [int(c) for c in classes]
    if len(set(wanted)) != len(wanted) or not wanted:
        raise ValueError(f"classes must be distinct output indices, at least one; got {list(classes)}")
    if isinstance(method, str) and method in SHARED:
        from .deep import deep_explanations

        return dict(zip(wanted, deep_explanations(model, x, method, wanted, **method_kwargs), strict=True))
    function = _method(method) if isinstance(method, str) else method
    if not callable(function):
        raise TypeError(f"method must be a method name or a callable, got {type(method).__name__}")
    return {c: function(model, x, target=c, **method_kwargs) for c in wanted}
