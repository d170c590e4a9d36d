"""``TabularExplorer``: a table's rows, one row's explanation as a waterfall, and the model's global picture.

The row tab lists the rows (prediction, confidence, label: sortable in the browser) and explains the chosen one
with KernelSHAP (background rows: a random sample or k-means centres, their number on a slider), LIME or DeepSHAP.
The global tab, computed the first time it is opened, shows permutation importance with its spread, a beeswarm of
SHAP values that fills in as rows finish, and a decision tree distilled from the model with its fidelity (depth
on a slider). Every computation runs on the shared runner: the latest request wins, and each part of the global
tab is its own job, so moving the depth slider does not restart the beeswarm.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, TypedDict

import torch
import traitlets
from typing_extensions import Unpack

from .._adapter import Model, OutputSpace
from .._call import prepare
from ..background import WeightedRows, kmeans
from ..explanation import Explanation
from ..importance import as_table, column_names
from ._base import ExplainerWidget, WidgetOptions, top_predictions
from ._params import OUTPUT, SEED, ChoiceParam, Fixed, IntParam
from ._runner import JobContext
from ._serialize import WireArray, to_wire

METHODS: tuple[str, ...] = ("kernel", "lime", "deep")
TITLES = {"kernel": "KernelSHAP", "lime": "LIME", "deep": "DeepSHAP"}
SUMMARIES: tuple[str, ...] = ("random", "kmeans")
VIEWS: tuple[str, ...] = ("row", "global")
# Rows the beeswarm explains (the first ones), and how many finish between two updates of the picture.
SWARM_ROWS = 100
SWARM_STEP = 10
# KernelSHAP coalitions per row in the beeswarm: fewer than for the row tab's single explanation.
SWARM_SAMPLES = 300


class TableWire(TypedDict):
    """The rows as the browser's table gets them (``Table`` typedef in ``js/widget.js``)."""

    columns: list[str]
    classes: list[str]
    values: WireArray  # (N, F)
    predicted: WireArray  # (N,) int32
    confidence: WireArray  # (N,) float32: the predicted class's probability
    labels: WireArray | None  # (N,) int32 true labels, when given


class TabularOptions(WidgetOptions, total=False):
    """``TabularExplorer``'s keywords: its parameters and fixed settings."""

    selected: int
    method: str
    summary: str
    background_size: int
    n_samples: int
    depth: int
    view: str
    seed: int
    output: OutputSpace


class TabularExplorer(ExplainerWidget[Explanation]):
    """Rows of a table, each explained on request, and the model's global behaviour.

    ``TabularExplorer(model, X, y=None, feature_names=None, class_names=None, background=None)``: ``X`` ``(N, F)``
    model-ready rows (a tensor, an array or a DataFrame), ``y`` their true labels (optional), ``background`` the
    reference rows absent features take (default: ``X`` itself). Parameters: ``selected`` (the row),
    ``method`` (``"kernel"``, ``"lime"``, ``"deep"``), ``summary`` (``"random"`` sample or ``"kmeans"`` centres of
    the background), ``background_size``, ``n_samples``, ``depth`` (of the distilled tree) and ``view``
    (``"row"`` or ``"global"``).
    """

    FIXED: ClassVar[dict[str, Fixed]] = {"seed": SEED, "output": OUTPUT}

    kind = traitlets.Unicode("tabular").tag(sync=True)
    title = traitlets.Unicode("Table").tag(sync=True)
    selected = IntParam(0, "row", low=0, high=lambda widget: len(widget._table) - 1, drawn=False)
    view = ChoiceParam("row", "view", choices=VIEWS, drawn=False)
    method = ChoiceParam("kernel", "method", choices=METHODS)
    summary = ChoiceParam(
        "kmeans", "background", choices=SUMMARIES, shown=lambda widget: widget.method == "kernel"
    )
    background_size = IntParam(
        10, "background rows", low=1, high=lambda widget: len(widget._background), ui=(1, 100, 1)
    )
    n_samples = IntParam(
        500, "samples", low=10, high=100_000, ui=(50, 5000, 50), shown=lambda widget: widget.method != "deep"
    )
    depth = IntParam(
        3, "tree depth", low=1, high=12, ui=(1, 8, 1), shown=lambda widget: widget.view == "global"
    )
    table = traitlets.Dict().tag(sync=True)  # a TableWire
    local = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    global_view = traitlets.Dict().tag(sync=True)  # "importance", "swarm", "tree": each filled in by its job

    def __init__(
        self,
        model: Model,
        X: Any,
        *,
        y: Any = None,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        background: Any = None,
        **options: Unpack[TabularOptions],
    ) -> None:
        self._table = as_table(X)
        self._names = column_names(X, feature_names, self._table.shape[1])
        self._labels_given = None if y is None else torch.as_tensor(y).reshape(-1).long()
        if self._labels_given is not None and self._labels_given.shape[0] != self._table.shape[0]:
            raise ValueError(
                f"y has {self._labels_given.shape[0]} labels for {self._table.shape[0]} rows; give one per row"
            )
        self._background = self._table if background is None else as_table(background, "background")
        if self._background.shape[1] != self._table.shape[1]:
            raise ValueError(
                f"background has {self._background.shape[1]} columns; expected {self._table.shape[1]} like X"
            )
        self._global_owners = {part: object() for part in ("importance", "swarm", "tree")}
        options.setdefault("background_size", min(10, len(self._background)))
        options.setdefault("faithfulness", False)  # deletion curves are drawn for images
        selected = type(self).selected.check(self, options.get("selected", 0))
        super().__init__(model, self._table[selected], labels=class_names, **options)
        self.table = self._table_wire()
        self.observe(self._on_view_change, names=["view", "depth"])

    # -- inputs ------------------------------------------------------------------------------------------------
    def _load_input(self, x: torch.Tensor, image: Any) -> None:
        """Make row ``x`` the explained input (no display image: rows are drawn as bars)."""
        call = prepare(self._adapter, x, target=None, expect="tabular", feature_names=self._names)
        self._x = x
        self._display = None
        self._scores = call.scores

    def _table_wire(self) -> TableWire:
        """Every row's prediction and confidence, computed once in batches, with the rows and the labels."""
        rows = self._table.to(device=self._adapter.device, dtype=self._adapter.dtype)
        scores = self._adapter.evaluate(
            rows.shape[0], lambda start, stop: rows[start:stop], input_shape=(rows.shape[1],)
        )
        probabilities = torch.softmax(scores.float(), dim=1)
        confidence, predicted = probabilities.max(dim=1)
        self._predicted = predicted.cpu()
        return {
            "columns": self._names,
            "classes": list(self._labels),
            "values": to_wire(self._table, "float32"),
            "predicted": to_wire(predicted, "int32"),
            "confidence": to_wire(confidence, "float32"),
            "labels": None if self._labels_given is None else to_wire(self._labels_given, "int32"),
        }

    def _on_param_change(self, change: dict[str, Any]) -> None:
        if change["name"] in ("view", "depth"):
            return  # the global tab's own jobs (see _on_view_change); the row's explanation stays
        if change["name"] == "selected" and self._ready:
            self._load_input(self._table[change["new"]], None)
            self.predictions = top_predictions(self._scores, self._labels)
        super()._on_param_change(change)

    # -- the row's explanation ---------------------------------------------------------------------------------
    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        began = time.perf_counter()
        row = self._table[request["selected"]]
        target = request["target"]
        explanation = self._explain(request, row, target, context)
        context.check_cancel()
        local = _local_wire(explanation, row, self._names, TITLES[request["method"]], self._labels)
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        context.post(lambda: self._finish_row(explanation, local, elapsed_ms))

    def _explain(
        self, request: dict[str, Any], row: torch.Tensor, target: int | None, context: JobContext
    ) -> Any:
        from ..deep import deep_shap
        from ..lime import lime
        from ..shap import kernel_shap

        # Only KernelSHAP weighs background rows; LIME and DeepSHAP draw on a random sample of them.
        summary = request["summary"] if request["method"] == "kernel" else "random"
        background = self._reference(summary, request["background_size"])
        common = {"target": target, "output": self._fixed["output"], "feature_names": self._names}
        if request["method"] == "deep":
            return deep_shap(
                self._adapter, row, background=background, target=target, output=self._fixed["output"]
            )
        if request["method"] == "lime":  # lime's tabular sampling: off columns from random background rows
            return lime(
                self._adapter, row, background=background, n_samples=request["n_samples"], seed=self._fixed["seed"],
                check_cancel=context.check_cancel, **common,
            )  # fmt: skip
        return kernel_shap(
            self._adapter, row, background=background, n_samples=request["n_samples"], seed=self._fixed["seed"],
            check_cancel=context.check_cancel, **common,
        )  # fmt: skip

    def _reference(self, summary: str, size: int) -> torch.Tensor | WeightedRows:
        """The background: ``size`` k-means centres of it, or a seeded random sample of ``size`` of its rows."""
        from .._features import subsample_indices

        size = min(size, len(self._background))
        if summary == "kmeans":
            return kmeans(self._background, size, seed=self._fixed["seed"])
        return self._background[subsample_indices(len(self._background), size, self._fixed["seed"])]

    def _finish_row(self, explanation: Explanation, local: dict[str, Any], elapsed_ms: float) -> None:
        self.explanation = explanation
        with self.hold_sync():
            self.local = local
            self.panels = []
            self.elapsed_ms = round(elapsed_ms, 1)
            self.n_evals = int(explanation.n_evals)
            self.progress = 1.0
            self.error = ""
            self.status = "idle"

    # -- the global tab ----------------------------------------------------------------------------------------
    def _on_view_change(self, change: dict[str, Any]) -> None:
        self.controls = self._controls()
        if self.view != "global":
            return
        if change["name"] == "depth":
            self._submit_global("tree")
            return
        for part in ("importance", "swarm", "tree"):
            if part not in self.global_view:
                self._submit_global(part)

    def _job_owners(self) -> tuple[object, ...]:
        """The row's job, then the global tab's three."""
        return (*super()._job_owners(), *self._global_owners.values())

    def show_global(self) -> None:
        """Open the global tab (as the browser's tab button does)."""
        self.view = "global"

    def _submit_global(self, part: str) -> None:
        compute = {"importance": self._importance, "swarm": self._swarm, "tree": self._tree}[part]
        self._runner.submit(
            self._global_owners[part], compute, on_error=lambda error: self._global_failed(part, error)
        )

    def _set_global(self, part: str, value: dict[str, Any]) -> None:
        self.global_view = {**self.global_view, part: value}

    def _global_failed(self, part: str, error: BaseException) -> None:
        self._set_global(part, {"error": f"{type(error).__name__}: {error}"})

    def _truth(self) -> torch.Tensor:
        """The labels permutation importance scores against: the given ones, else the model's own predictions."""
        return self._labels_given if self._labels_given is not None else self._predicted

    def _importance(self, context: JobContext) -> None:
        from ..importance import permutation_importance

        result = permutation_importance(
            self._adapter,
            self._table,
            self._truth(),
            n_repeats=5,
            seed=self._fixed["seed"],
            feature_names=self._names,
        )
        context.check_cancel()
        wire = {
            "mean": to_wire(result.mean, "float32"),
            "std": to_wire(result.std, "float32"),
            "scoring": result.scoring,
            "baseline": round(result.baseline_score, 4),
            "against": "labels" if self._labels_given is not None else "the model's own predictions",
        }
        context.post(lambda: self._set_global("importance", wire))

    def _swarm(self, context: JobContext) -> None:
        from ..summary import explain_rows

        n_rows = min(SWARM_ROWS, len(self._table))
        target = self._swarm_target()
        centres = kmeans(self._background, min(10, len(self._background)), seed=self._fixed["seed"])
        batches = explain_rows(
            self._adapter, self._table[:n_rows], "kernel", centres, target, n_samples=SWARM_SAMPLES,
            seed=self._fixed["seed"], check_cancel=context.check_cancel, batch_rows=SWARM_STEP,
        )  # fmt: skip
        values: list[torch.Tensor] = []
        for explanations in batches:
            values += [e.attributions for e in explanations]
            done = len(values)
            wire = {
                "values": to_wire(torch.stack(values), "float32"),
                "data": to_wire(self._table[:done], "float32"),
                "done": done,
                "total": n_rows,
                "target": self._labels[target],
            }
            context.post(lambda wire=wire: self._set_global("swarm", wire))

    def _swarm_target(self) -> int:
        """The class the beeswarm explains: the one the model predicts most often (output 0 of a regressor)."""
        from ..summary import most_predicted

        return most_predicted(self._predicted, self._n_outputs)

    def _tree(self, context: JobContext) -> None:
        from ..distill import distill

        labels = self._labels_given
        surrogate = distill(
            self._adapter, self._table, max_depth=self.depth, seed=self._fixed["seed"], y=labels,
            feature_names=self._names, class_names=self._labels,
        )  # fmt: skip
        context.check_cancel()
        wire = {
            "rules": surrogate.rules().splitlines(),
            "fidelity": round(surrogate.fidelity, 4),
            "accuracy": None if surrogate.accuracy is None else round(surrogate.accuracy, 4),
            "depth": self.depth,
        }
        context.post(lambda: self._set_global("tree", wire))

    def _figure(self) -> Any:
        return self.explanation.plot() if self.explanation is not None else None


def _local_wire(
    explanation: Explanation, row: torch.Tensor, names: list[str], title: str, classes: list[str]
) -> dict[str, Any]:
    """One row's explanation for the waterfall: each feature's value and attribution, the base and the output."""
    base = explanation.base_value if explanation.base_value is not None else 0.0
    return {
        "title": title,
        "names": names,
        "values": to_wire(explanation.attributions, "float32"),
        "features": to_wire(row, "float32"),
        "base": round(float(base), 6),
        "prediction": round(float(explanation.prediction), 6),
        "target": classes[explanation.target],
        "output": explanation.params.get("output", "logits"),
    }
