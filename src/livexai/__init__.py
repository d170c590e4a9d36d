"""livexai: explain PyTorch models live in Jupyter.

The headless core (every method as a plain function returning an :class:`Explanation`) is imported here;
widgets are imported only when first used, so ``import livexai`` stays light and works without Jupyter.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ._adapter import Cancelled, ModelAdapter
from .attention import Attention, attention
from .background import WeightedRows, kmeans
from .cam import default_layer, grad_cam
from .classes import explain_classes
from .dataset import DatasetExplanations, explain_dataset
from .deep import deep_shap, deeplift
from .distill import Surrogate, distill
from .explanation import Explanation
from .featurevis import FeatureVis, TopActivations, feature_visualization, top_activating
from .gradients import gradient_shap, integrated_gradients, saliency
from .grid import plot_grid
from .importance import Importance, permutation_importance
from .layers import Activations, LayerInfo, activation_grid, activations, layer_info, layers
from .lime import iter_lime, lime
from .metrics import (
    Curve,
    agreement,
    deletion,
    energy_pointing_game,
    insertion,
    mass_inside,
    pointing_game,
    rank_correlation,
    segment_means,
)
from .sanity import SanityReport, iter_sanity_check, sanity_check
from .segmentation import count_segments, segment
from .shap import iter_kernel_shap, kernel_shap
from .summary import ShapSummary, shap_summary
from .text_plot import plot_text

__version__ = "0.1.0"

# Widget classes, imported on first access (see __getattr__): the core never imports widget code.
_WIDGETS = {
    "LimeWidget": ".widgets.lime",
    "ShapWidget": ".widgets.shap",
    "LayerWidget": ".widgets.layer",
    "Explorer": ".widgets.explorer",
    "TabularExplorer": ".widgets.tabular",
    "TextWidget": ".widgets.text",
}

__all__ = [
    "Activations",
    "Attention",
    "Cancelled",
    "Curve",
    "DatasetExplanations",
    "Explanation",
    "Explorer",
    "FeatureVis",
    "Importance",
    "LayerInfo",
    "LayerWidget",
    "LimeWidget",
    "ModelAdapter",
    "SanityReport",
    "ShapSummary",
    "ShapWidget",
    "Surrogate",
    "TabularExplorer",
    "TextWidget",
    "TopActivations",
    "WeightedRows",
    "__version__",
    "activation_grid",
    "activations",
    "agreement",
    "attention",
    "count_segments",
    "deep_shap",
    "deeplift",
    "default_layer",
    "deletion",
    "distill",
    "energy_pointing_game",
    "explain_classes",
    "explain_dataset",
    "feature_visualization",
    "grad_cam",
    "gradient_shap",
    "insertion",
    "integrated_gradients",
    "iter_kernel_shap",
    "iter_lime",
    "iter_sanity_check",
    "kernel_shap",
    "kmeans",
    "layer_info",
    "layers",
    "lime",
    "mass_inside",
    "permutation_importance",
    "plot_grid",
    "plot_text",
    "pointing_game",
    "rank_correlation",
    "saliency",
    "sanity_check",
    "segment",
    "segment_means",
    "shap_summary",
    "top_activating",
]


def __dir__() -> list[str]:
    """The public names, lazily imported widgets included, so ``livexai.<TAB>`` lists them."""
    return sorted({*__all__, "datasets", "models"})


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        return getattr(import_module(_WIDGETS[name], __name__), name)
    if name in ("datasets", "models"):
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'livexai' has no attribute {name!r}")
