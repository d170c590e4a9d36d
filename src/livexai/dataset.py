"""Explain every input of a dataset: in a plain loop in this process, or with Ray Data actors on a cluster.

Both engines run the same :class:`_Worker` on each input (the method, then the per-input metrics), with a seed
derived from the input's index, so they give the same results whichever worker an input lands on. Results are
grouped into shards of ``batch_size`` consecutive indices; with ``output=`` each finished shard is written as one
Parquet file, and a later call with ``resume=True`` skips the shards already there. Ray is imported only when
``engine="ray"`` is asked for, and pyarrow only when Parquet or a table is.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from ._adapter import ModelAdapter
from ._bars import progress_bar
from ._methods import METHODS
from .explanation import Explanation
from .metrics import deletion, energy_pointing_game, insertion, pointing_game

if TYPE_CHECKING:
    import pandas
    import pyarrow
    from matplotlib.figure import Figure

Engine = Literal["local", "ray"]
Method = Callable[..., Explanation]


# Per-input quality metrics, as one number each: curve areas, 1.0/0.0 for a pointing-game hit.
# Each takes (model, x, explanation, mask); the pointing games need the input's ground-truth mask.
METRICS: dict[str, Callable[[Any, torch.Tensor, Explanation, Any], float]] = {
    "deletion": lambda model, x, exp, mask: deletion(model, x, exp).auc,
    "insertion": lambda model, x, exp, mask: insertion(model, x, exp).auc,
    "pointing_game": lambda model, x, exp, mask: float(pointing_game(exp, mask)),
    "energy_pointing_game": lambda model, x, exp, mask: energy_pointing_game(exp, mask),
}
_NEEDS_MASK = frozenset({"pointing_game", "energy_pointing_game"})

# Inputs per batch handed to a worker, and per Parquet shard: large enough that a Ray task's scheduling is a
# small part of its time, small enough that an interrupted run loses little (64 LIME explanations of the shapes
# CNN take about 10 s on one core).
DEFAULT_BATCH_SIZE = 64
_SHARD = "shard-{:06d}.parquet"
_RUN_FILE = "run.json"


class _Item(NamedTuple):
    """One input as a worker sees it."""

    index: int
    x: torch.Tensor
    target: int | None
    mask: Any


@dataclass(eq=False)
class _Result:
    """What a worker returns for one input."""

    index: int
    explanation: Explanation
    metrics: dict[str, float]


# ---------------------------------------------------------------------------------------------------------------
# Seeds


def input_seed(seed: int, index: int) -> int:
    """The seed of input ``index`` in a run seeded with ``seed``: independent streams per input, the same on any
    worker and in any order (numpy's ``SeedSequence`` mixes the two numbers)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------------------------
# Models: what a worker builds, and how a model travels to a Ray actor


@dataclass(frozen=True)
class _AdapterRecipe:
    """A :class:`ModelAdapter`'s model and settings, picklable (an adapter holds a lock and is not)."""

    model: Any
    output: str
    batch_size: int | None
    autocast: torch.dtype | None

    def __call__(self) -> ModelAdapter:
        return ModelAdapter(
            self.model, output=self.output, batch_size=self.batch_size, autocast=self.autocast
        )


def _is_factory(model: object) -> bool:
    """A zero-argument callable that is not itself a model (a model maps a batch, so it takes an argument)."""
    if isinstance(model, (nn.Module, ModelAdapter)) or not callable(model):
        return False
    try:
        parameters = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters
    )


def _build(model: object, output: str) -> ModelAdapter:
    """The adapter a worker runs: a factory is called (each worker gets its own copy), a model is wrapped."""
    built = model() if _is_factory(model) else model
    if isinstance(built, ModelAdapter):
        return built
    if not callable(built):
        raise TypeError(
            "model must be an nn.Module, a ModelAdapter, a callable mapping a batch to scores, or a zero-argument "
            f"factory returning one of those; got {type(built).__name__}"
        )
    return ModelAdapter(built, output=output)  # type: ignore[arg-type]


def _portable(model: object) -> object:
    """``model`` in a form that pickles to a Ray actor."""
    if isinstance(model, ModelAdapter):
        return _AdapterRecipe(model.model, model.output, model.batch_size, model.autocast)
    return model


def _to_gpu(adapter: ModelAdapter) -> ModelAdapter:
    """The adapter on the GPU Ray gave this actor: its model is the actor's own copy, so moving it is safe."""
    if adapter.device.type == "cuda" or not isinstance(adapter.model, nn.Module):
        return adapter
    return _AdapterRecipe(adapter.model.to("cuda"), adapter.output, adapter.batch_size, adapter.autocast)()


# ---------------------------------------------------------------------------------------------------------------
# The worker: one input in, one result out (shared by both engines)


def _method(method: str | Method) -> tuple[str, Method]:
    if callable(method):
        return getattr(method, "__name__", type(method).__name__), method
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; expected one of {sorted(METHODS)} or a callable "
            "(model, x, **kwargs) -> Explanation"
        )
    return method, METHODS[method]


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected names from {sorted(METRICS)}")
    return tuple(metrics)


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs, picklable for Ray: the model (or its factory), the method and its arguments."""

    model: object
    method: str | Method
    kwargs: dict[str, Any]
    metrics: tuple[str, ...]


class _Worker:
    """Builds the model once, then explains inputs one at a time with index-derived seeds."""

    def __init__(self, job: _Job, *, on_gpu: bool = False) -> None:
        self.name, self.fn = _method(job.method)
        self.kwargs = dict(job.kwargs)
        adapter = _build(job.model, self.kwargs.get("output", "logits"))
        self.model = _to_gpu(adapter) if on_gpu else adapter
        self.metrics = job.metrics
        seed_parameter = _parameters(self.fn).get("seed")
        # A method that samples is seeded per input, from the seed given or the method's own default.
        self.seed = None if seed_parameter is None else self.kwargs.pop("seed", seed_parameter.default)
        if self.seed is inspect.Parameter.empty:
            self.seed = 0

    def explain(self, item: _Item) -> _Result:
        kwargs = dict(self.kwargs)
        if self.seed is not None:
            kwargs["seed"] = input_seed(self.seed, item.index)
        if item.target is not None:
            if "target" in kwargs:
                raise ValueError(
                    f"input {item.index} comes with its own target and target={kwargs['target']!r} was also "
                    "given; pass targets in the data or as target=, not both"
                )
            kwargs["target"] = item.target
        explanation = self.fn(self.model, item.x, **kwargs)
        scores = {}
        for name in self.metrics:
            if name in _NEEDS_MASK and item.mask is None:
                raise ValueError(f"metric {name!r} needs a ground-truth mask per input: pass masks=")
            scores[name] = float(METRICS[name](self.model, item.x, explanation, item.mask))
        return _Result(item.index, explanation, scores)


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------------------------
# Sources: where inputs come from


def _as_target(value: object) -> int | None:
    if value is None:
        return None
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or isinstance(value, (int, np.integer)):
        return int(value)  # type: ignore[arg-type]
    raise TypeError(f"a target must be an int or a one-element tensor, got {type(value).__name__}")


@dataclass(frozen=True)
class _IndexedSource:
    """Inputs by position: a tensor ``(N, ...)``, a sequence, or a map-style ``torch.utils.data.Dataset`` whose
    items are ``x`` or ``(x, target)``; ``masks`` (for the pointing games) by the same position."""

    data: Any
    masks: Any = None

    def indices(self) -> list[int]:
        return list(range(len(self.data)))

    def item(self, index: int) -> _Item:
        value = self.data[index]
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(
                    f"input {index} is a {type(value).__name__} of {len(value)} items; expected x or (x, target)"
                )
            x, target = value
        else:
            x, target = value, None
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        mask = None if self.masks is None else self.masks[index]
        return _Item(index, x, _as_target(target), mask)


def _source(data: object, masks: object, engine: str) -> Any:
    """The source for ``data``; an iterable without ``len`` is read into a list first."""
    if type(data).__module__.startswith("ray.data"):
        if engine != "ray":
            raise ValueError("a ray.data.Dataset is explained with engine='ray'")
        if masks is not None:
            raise ValueError("with a ray.data.Dataset, give masks as its 'mask' column, not masks=")
        return _RaySource(data)
    if isinstance(data, torch.Tensor):
        if data.ndim < 2:
            raise ValueError(f"data as a tensor is a batch of inputs (N, ...); got shape {tuple(data.shape)}")
    elif not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        if not isinstance(data, Iterable):
            raise TypeError(
                "data must be a tensor (N, ...), a sequence or iterable of x or (x, target), a torch Dataset, "
                f"or a ray.data.Dataset; got {type(data).__name__}"
            )
        data = list(data)
    if masks is not None and len(masks) != len(data):  # type: ignore[arg-type]
        raise ValueError(f"masks has {len(masks)} entries for {len(data)} inputs; expected one per input")  # type: ignore[arg-type]
    return _IndexedSource(data, masks)


@dataclass(frozen=True)
class _RaySource:
    """A ``ray.data.Dataset`` with an ``index`` column (unique ints), an ``x`` column and optional ``target`` and
    ``mask`` columns. The index is required because Ray does not keep rows in order: seeds and shards come from it.
    """

    dataset: Any

    def indices(self) -> list[int]:
        columns = self.dataset.columns()
        missing = [name for name in ("index", "x") if name not in columns]
        if missing:
            raise ValueError(
                f"the ray.data.Dataset lacks the columns {missing}; expected 'index' (a unique int per row, which "
                f"fixes each input's seed and shard), 'x' (the input), optionally 'target' and 'mask'; it has {columns}"
            )
        indices = [int(row["index"]) for row in self.dataset.select_columns(["index"]).take_all()]
        if len(set(indices)) != len(indices):
            raise ValueError(
                "the ray.data.Dataset's 'index' column has repeated values; expected one per row"
            )
        return indices


def _rows_item(batch: dict[str, np.ndarray], row: int) -> _Item:
    """Row ``row`` of a Ray batch from a :class:`_RaySource`."""
    target = batch["target"][row] if "target" in batch else None
    mask = torch.as_tensor(batch["mask"][row]) if "mask" in batch else None
    return _Item(int(batch["index"][row]), torch.as_tensor(batch["x"][row]), _as_target(target), mask)


# ---------------------------------------------------------------------------------------------------------------
# Results as a table (Parquet shards, pandas)


def _arrow() -> Any:
    try:
        import pyarrow
    except ImportError as error:
        raise ImportError(
            "Parquet output and tables need pyarrow: pip install 'livexai[parquet]' (or pip install pyarrow)"
        ) from error
    return pyarrow


def _describe(value: object) -> str:
    """JSON's fallback for parameters: a tensor by shape and a hash of its values, anything else by ``repr``."""
    if isinstance(value, torch.Tensor):
        digest = hashlib.sha1(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:12]
        return f"tensor{tuple(value.shape)}:{digest}"
    return repr(value)


def _to_table(results: Sequence[_Result], metric_names: Sequence[str]) -> pyarrow.Table:
    """One row per input: index, method, target, prediction, attributions as a fixed-shape tensor column, the
    superpixel weights/standard errors/segments (null for pixel methods), base value, n_evals, timing, params
    (JSON), and one column per metric."""
    pa = _arrow()
    exps = [r.explanation for r in results]
    shapes = {tuple(e.attributions.shape) for e in exps}
    if len(shapes) > 1:
        raise ValueError(f"attributions have different shapes {sorted(shapes)}; a table needs one shape")
    shape = shapes.pop() if shapes else (0,)
    attributions = (
        np.stack([e.attributions.numpy() for e in exps]) if exps else np.zeros((0, *shape), np.float32)
    )
    columns: dict[str, Any] = {
        "index": pa.array([r.index for r in results], pa.int64()),
        "method": pa.array([e.method for e in exps], pa.string()),
        "target": pa.array([e.target for e in exps], pa.int64()),
        "prediction": pa.array([e.prediction for e in exps], pa.float64()),
        "attributions": pa.FixedShapeTensorArray.from_numpy_ndarray(attributions.astype(np.float32)),
    }
    for name, values, dtype in (
        ("weights", [e.weights for e in exps], pa.float32()),
        ("stderr", [e.stderr for e in exps], pa.float32()),
        ("segments", [e.segments for e in exps], pa.int32()),
    ):
        columns[name] = pa.array(
            [None if v is None else v.reshape(-1).numpy() for v in values], pa.list_(dtype)
        )
    columns["base_value"] = pa.array([e.base_value for e in exps], pa.float64())
    columns["n_evals"] = pa.array([e.n_evals for e in exps], pa.int64())
    columns["elapsed_s"] = pa.array([e.elapsed_s for e in exps], pa.float64())
    columns["params"] = pa.array([json.dumps(e.params, default=_describe) for e in exps], pa.string())
    columns["feature_names"] = pa.array([e.feature_names for e in exps], pa.list_(pa.string()))
    for name in metric_names:
        columns[name] = pa.array([r.metrics[name] for r in results], pa.float64())
    return pa.table(columns)


def _from_table(table: pyarrow.Table, metric_names: Sequence[str]) -> list[_Result]:
    """The results a :func:`_to_table` table holds (explanations without their display image)."""
    if table.num_rows == 0:
        return []
    attributions = torch.from_numpy(table.column("attributions").combine_chunks().to_numpy_ndarray().copy())
    shape = attributions.shape[1:]
    rows = table.drop_columns(["attributions"]).to_pylist()

    def tensor(values: list | None, dtype: torch.dtype, like: tuple[int, ...] | None = None) -> Any:
        if values is None:
            return None
        out = torch.tensor(values, dtype=dtype)
        return out.reshape(like) if like is not None else out

    return [
        _Result(
            row["index"],
            Explanation(
                method=row["method"],
                target=row["target"],
                attributions=attributions[i],
                prediction=row["prediction"],
                weights=tensor(row["weights"], torch.float32),
                stderr=tensor(row["stderr"], torch.float32),
                segments=tensor(row["segments"], torch.long, tuple(shape)),
                base_value=row["base_value"],
                params=json.loads(row["params"]),
                n_evals=row["n_evals"],
                elapsed_s=row["elapsed_s"],
                feature_names=row["feature_names"],
            ),
            {name: row[name] for name in metric_names},
        )
        for i, row in enumerate(rows)
    ]


# ---------------------------------------------------------------------------------------------------------------
# The result


@dataclass(eq=False)
class DatasetExplanations(Sequence[Explanation]):
    """The explanations of a dataset, in index order: a sequence of :class:`Explanation`.

    Attributes
    ----------
    indices: the input index of each explanation (its position in ``data``, or a ``ray.data.Dataset``'s
        ``index`` column).
    explanations: one per input. Those read back from Parquet have no display image (``image`` is None), and
        parameters that are not JSON come back as text.
    metrics: metric name -> one value per explanation (curve areas; 1.0/0.0 for pointing-game hits).
    output: the folder of Parquet shards, or None for an in-memory run.
    complete: False when the run was interrupted (Ctrl-C): the explanations are those finished so far.
    n_explained: inputs explained by this call; the others came from shards a previous call had finished.
    """

    indices: list[int]
    explanations: list[Explanation]
    metrics: dict[str, list[float]] = field(default_factory=dict)
    output: Path | None = None
    complete: bool = True
    n_explained: int = 0

    def __len__(self) -> int:
        return len(self.explanations)

    def __getitem__(self, position: int) -> Explanation:  # type: ignore[override]
        return self.explanations[position]

    def __iter__(self) -> Iterator[Explanation]:
        return iter(self.explanations)

    @property
    def attributions(self) -> torch.Tensor:
        """``(N, H, W)`` or ``(N, F)``: every map stacked, e.g. for ``shap.summary_plot(d.attributions.numpy(), X)``."""
        return torch.stack([e.attributions for e in self.explanations])

    def _results(self) -> list[_Result]:
        return [
            _Result(index, e, {name: values[i] for name, values in self.metrics.items()})
            for i, (index, e) in enumerate(zip(self.indices, self.explanations, strict=True))
        ]

    def to_arrow(self) -> pyarrow.Table:
        """A pyarrow table, one row per input (the columns of the Parquet shards)."""
        return _to_table(self._results(), list(self.metrics))

    def to_pandas(self) -> pandas.DataFrame:
        """A pandas DataFrame, one row per input; ``attributions`` holds each map as a numpy array of its shape
        (pyarrow alone would give it flattened)."""
        table = self.to_arrow()
        frame = table.drop_columns(["attributions"]).to_pandas()
        maps = table.column("attributions").combine_chunks().to_numpy_ndarray()
        frame.insert(table.schema.get_field_index("attributions"), "attributions", list(maps))
        return frame

    @classmethod
    def read(cls, output: str | os.PathLike[str]) -> DatasetExplanations:
        """The explanations in the finished shards of an ``output`` folder."""
        store = _ShardStore(Path(output))
        results = store.read()
        return cls._of(results, store.metric_names(), output=store.folder)

    @classmethod
    def _of(
        cls, results: Iterable[_Result], metric_names: Sequence[str], **fields: Any
    ) -> DatasetExplanations:
        ordered = sorted(results, key=lambda r: r.index)
        return cls(
            indices=[r.index for r in ordered],
            explanations=[r.explanation for r in ordered],
            metrics={name: [r.metrics[name] for r in ordered] for name in metric_names},
            **fields,
        )

    def plot_summary(self, ax: Any = None, *, top: int = 20) -> Figure:
        """A global view: for tabular rows, the mean |attribution| of the ``top`` features (shap's bar summary);
        for images, the mean |attribution| map over the dataset."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 4))
        mean = self.attributions.abs().mean(0).numpy()
        if mean.ndim == 2:
            image = ax.imshow(mean, cmap="inferno")
            ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            ax.set_axis_off()
        else:
            names = self.explanations[0].feature_names or [f"feature {i}" for i in range(len(mean))]
            order = np.argsort(mean)[-top:]
            ax.barh([names[i] for i in order], mean[order], color="#d62728")
            ax.set_xlabel("mean |attribution|")
        ax.set_title(f"{self.explanations[0].method} over {len(self)} inputs", fontsize=9)
        return ax.figure


# ---------------------------------------------------------------------------------------------------------------
# Shards: where results go, one Parquet file per ``batch_size`` consecutive indices


class _ShardStore:
    """A folder of ``shard-NNNNNN.parquet`` files and ``run.json``, which says what the run computes so that a
    resumed call cannot mix in results of other settings."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def run_info(self) -> dict[str, Any] | None:
        path = self.folder / _RUN_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def metric_names(self) -> list[str]:
        info = self.run_info()
        if info is None:
            raise FileNotFoundError(
                f"{self.folder} holds no {_RUN_FILE}: it is not an explain_dataset output"
            )
        return list(info["metrics"])

    def shard_files(self) -> list[Path]:
        return sorted(self.folder.glob(_SHARD.replace("{:06d}", "*")))

    def finished(self) -> set[int]:
        return {int(path.stem.removeprefix("shard-")) for path in self.shard_files()}

    def start(self, info: dict[str, Any], resume: bool) -> None:
        """Check that a resumed run has the same settings, or clear the previous run's files."""
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = self.run_info()
        if resume and previous is not None and previous != info:
            changed = sorted(key for key in {*info, *previous} if info.get(key) != previous.get(key))
            raise ValueError(
                f"{self.folder} holds a run with other settings ({', '.join(changed)} differ); resume it with the "
                "same settings, or pass resume=False to start over, or use another folder"
            )
        if not resume or previous is None:
            for path in self.shard_files():
                path.unlink()
        (self.folder / _RUN_FILE).write_text(json.dumps(info, indent=1))

    def write(self, shard: int, results: Sequence[_Result], metric_names: Sequence[str]) -> None:
        """Write one shard atomically (a half-written file never looks finished)."""
        import pyarrow.parquet as pq

        path = self.folder / _SHARD.format(shard)
        partial = path.with_suffix(".partial")
        pq.write_table(_to_table(results, metric_names), partial)
        os.replace(partial, path)

    def read(self) -> list[_Result]:
        import pyarrow.parquet as pq

        metric_names = self.metric_names()
        return [r for path in self.shard_files() for r in _from_table(pq.read_table(path), metric_names)]


class _Collector:
    """Receives results in any order, keeps them, and writes each shard once all its inputs are in."""

    def __init__(
        self,
        expected: dict[int, int],
        batch_size: int,
        store: _ShardStore | None,
        metric_names: Sequence[str],
    ) -> None:
        self.expected = expected
        self.batch_size = batch_size
        self.store = store
        self.metric_names = metric_names
        self.pending: dict[int, list[_Result]] = {}
        self.results: list[_Result] = []

    def add(self, result: _Result) -> None:
        self.results.append(result)
        shard = result.index // self.batch_size
        group = self.pending.setdefault(shard, [])
        group.append(result)
        if len(group) == self.expected[shard]:
            if self.store is not None:
                self.store.write(shard, sorted(group, key=lambda r: r.index), self.metric_names)
            del self.pending[shard]


# ---------------------------------------------------------------------------------------------------------------
# Engines


def _local_results(job: _Job, source: _IndexedSource, todo: list[int]) -> Iterator[_Result]:
    """Explain ``todo`` in this process, one input after another, on the model's own device."""
    worker = _Worker(job)
    for index in todo:
        yield worker.explain(source.item(index))


class _RayWorker:
    """A Ray Data actor: builds the model once (on its GPU when Ray gave it one), then explains batches of rows.

    Rows are indices into ``source`` (which the actor holds), or, for a ``ray.data.Dataset``, the user's rows,
    of which only those in ``wanted`` are explained: skipping finished shards here rather than in a ``filter``
    step needs no Ray task, which could wait forever for a CPU that the actors hold. Results travel back pickled
    in a binary column, so that Ray's own conversions never touch their tensors.
    """

    def __init__(self, job: _Job, source: _IndexedSource | None, wanted: frozenset[int] | None) -> None:
        import ray

        self.worker = _Worker(job, on_gpu=bool(ray.get_gpu_ids()))
        self.source = source
        self.wanted = wanted

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.source is not None:
            items = [self.source.item(int(index)) for index in batch["index"]]
        else:
            rows = range(len(batch["index"]))
            items = [_rows_item(batch, row) for row in rows if int(batch["index"][row]) in self.wanted]  # type: ignore[operator]
        results = [pickle.dumps(self.worker.explain(item)) for item in items]
        return {
            "index": np.array([item.index for item in items], dtype=np.int64),
            "result": np.array(results, dtype=object),
        }


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "engine='ray' needs Ray with Ray Data: pip install 'livexai[ray]' (or pip install 'ray[data]')"
        ) from error
    return ray


def _ray_workers(ray: Any, num_workers: int | None, num_gpus: float) -> int:
    """The actor pool's size: as asked, else one per GPU share (GPU workers) or per CPU of the cluster."""
    if num_workers is not None:
        return num_workers
    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1)))


def _ray_results(
    job: _Job,
    source: Any,
    todo: list[int],
    *,
    batch_size: int,
    num_workers: int | None,
    num_gpus_per_worker: float | None,
) -> Iterator[_Result]:
    """Explain ``todo`` with Ray Data ``map_batches`` over a pool of actors, each holding the model once.

    Uses the Ray cluster this process is connected to (``ray.init(address=...)``), else starts a local one for
    the call and shuts it down after. Ray Data's own progress bars are off while it runs: the caller has one.
    """
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        num_gpus = float(num_gpus_per_worker or 0)
        indexed = isinstance(source, _IndexedSource)
        rows = ray.data.from_items([{"index": index} for index in todo]) if indexed else source.dataset
        explained = rows.map_batches(
            _RayWorker,
            fn_constructor_kwargs={
                "job": _Job(_portable(job.model), job.method, job.kwargs, job.metrics),
                "source": source if indexed else None,
                "wanted": None if indexed else frozenset(todo),
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=_ray_workers(ray, num_workers, num_gpus)),
            num_gpus=num_gpus,
        )
        for batch in explained.iter_batches(batch_size=None, batch_format="numpy"):
            for blob in batch["result"]:
                yield pickle.loads(blob)
    finally:
        context.enable_progress_bars = bars
        if started_here:
            ray.shutdown()


def _open_store(
    folder: Path,
    resume: bool,
    name: str,
    job: _Job,
    method_kwargs: dict[str, Any],
    batch_size: int,
    indices: list[int],
) -> _ShardStore:
    """The output folder, checked against (or set up for) this run's settings."""
    _arrow()
    store = _ShardStore(folder)
    # What the shards depend on, flat, so that a refused resume can name the settings that differ.
    info = {
        "method": name,
        "metrics": list(job.metrics),
        "batch_size": batch_size,
        "n_inputs": len(indices),
        **json.loads(json.dumps(method_kwargs, default=_describe)),
    }
    store.start(info, resume)
    return store


# ---------------------------------------------------------------------------------------------------------------
# The entry point


def explain_dataset(
    model: object,
    data: object,
    method: str | Method,
    *,
    engine: Engine = "local",
    output: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    num_gpus_per_worker: float | None = None,
    resume: bool = True,
    progress: bool = True,
    metrics: Sequence[str] = (),
    masks: Any = None,
    **method_kwargs: Any,
) -> DatasetExplanations:
    """Explain every input of ``data`` with ``method``, in this process or on a Ray cluster.

    Parameters
    ----------
    model: an ``nn.Module``, a :class:`ModelAdapter` (e.g. with a fixed ``batch_size`` for bit-identical
        results), a callable mapping a batch to scores, or a zero-argument factory returning one of those (each
        Ray worker then builds its own copy).
    data: a tensor ``(N, ...)`` of inputs; a sequence, iterable (read into a list first) or map-style
        ``torch.utils.data.Dataset`` of ``x`` or ``(x, target)``; or, with ``engine="ray"``, a
        ``ray.data.Dataset`` with columns ``index`` (unique ints), ``x``, and optionally ``target`` and ``mask``.
    method: a name from :data:`METHODS` (``"lime"``, ``"grad_cam"``, ...) or a callable
        ``(model, x, **kwargs) -> Explanation``. ``method_kwargs`` go to it; a method with a ``seed`` gets
        :func:`input_seed` of that seed (or its default) and the input's index, so results do not depend on the
        engine, the worker or the order.
    engine: ``"local"``: a loop in this process with a progress bar; Ctrl-C stops it and returns what is done
        (``complete=False``), finished shards kept. ``"ray"``: Ray Data ``map_batches`` with ``num_workers``
        actors (default: one per CPU, or per ``num_gpus_per_worker`` share of the GPUs), each holding the model.
    output: a folder for Parquet shards (one row per input, :meth:`DatasetExplanations.to_arrow`'s columns),
        or None to keep results in memory only.
    batch_size: inputs per batch given to a worker and per shard (default :data:`DEFAULT_BATCH_SIZE`).
    resume: with ``output``, skip the shards already written by a previous call with the same settings;
        False clears them and starts over.
    metrics: per-input quality numbers from :data:`METRICS`: ``"deletion"``, ``"insertion"`` (curve areas),
        ``"pointing_game"``, ``"energy_pointing_game"`` (these two need ``masks``, one ``(H, W)`` bool mask per
        input, in ``data``'s order).
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    name, _ = _method(method)
    job = _Job(model, method, dict(method_kwargs), _check_metrics(metrics))
    source = _source(data, masks, engine)
    indices = source.indices()
    expected: dict[int, int] = {}
    for index in indices:
        expected[index // batch_size] = expected.get(index // batch_size, 0) + 1
    store = (
        None
        if output is None
        else _open_store(Path(output), resume, name, job, method_kwargs, batch_size, indices)
    )
    finished = set() if store is None else store.finished()
    todo = [index for index in indices if index // batch_size not in finished]
    collector = _Collector(expected, batch_size, store, job.metrics)
    results = (
        _local_results(job, source, todo)
        if engine == "local"
        else _ray_results(
            job,
            source,
            todo,
            batch_size=batch_size,
            num_workers=num_workers,
            num_gpus_per_worker=num_gpus_per_worker,
        )
    )
    complete = True
    bar = progress_bar(len(todo), progress, "explaining", "input")
    try:
        for result in results:
            collector.add(result)
            bar.update(1)
    except KeyboardInterrupt:
        complete = False
        warnings.warn(
            f"interrupted after {len(collector.results)} of {len(todo)} inputs; the explanations finished so far "
            "are returned" + (", and a call with resume=True computes only the rest" if store else ""),
            stacklevel=2,
        )
    finally:
        bar.close()
        results.close()  # a Ray run shuts down the Ray it started
    # With shards, the finished ones (this call's and earlier calls') plus the inputs of unfinished shards.
    kept = (
        collector.results
        if store is None
        else [*store.read(), *(r for group in collector.pending.values() for r in group)]
    )
    return DatasetExplanations._of(
        kept,
        job.metrics,
        output=None if store is None else store.folder,
        complete=complete,
        n_explained=len(collector.results),
    )
