"""The explanation methods by name, for the functions that take a method as a string (``explain_classes``,
``explain_dataset``, ``sanity_check``): one table, so a new method is known to all of them at once."""

from __future__ import annotations

from collections.abc import Callable

from .cam import grad_cam
from .deep import deep_shap, deeplift
from .explanation import Explanation
from .gradients import gradient_shap, integrated_gradients, saliency
from .lime import lime
from .shap import kernel_shap

METHODS: dict[str, Callable[..., Explanation]] = {
    fn.__name__: fn
    for fn in (
        grad_cam,
        saliency,
        integrated_gradients,
        gradient_shap,
        deeplift,
        deep_shap,
        lime,
        kernel_shap,
    )
}
