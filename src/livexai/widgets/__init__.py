"""Live Jupyter widgets over the headless core: one widget per module, all sharing one background runner.

Importing this package imports anywidget and ipywidgets; ``import livexai`` alone does not (the top-level
package loads these classes on first access).
"""

from __future__ import annotations

from ._base import ExplainerWidget
from .explorer import Explorer
from .layer import LayerWidget
from .lime import LimeWidget
from .shap import ShapWidget
from .tabular import TabularExplorer

__all__ = ["ExplainerWidget", "Explorer", "LayerWidget", "LimeWidget", "ShapWidget", "TabularExplorer"]
