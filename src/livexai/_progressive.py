"""The progressive engine of the sampling methods: evaluate a chunk, refit, check the stop rule, yield.

LIME and KernelSHAP both walk through a flat sequence of model evaluations planned up front, refit their
surrogate on everything seen so far after every chunk, and stop early once the standard errors are small next to
the spread of the estimates. They plug in only what differs: how the inputs are built, what is fitted on the first
``done`` units, and how a fit becomes an :class:`Explanation`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

import torch

from ._adapter import ModelAdapter
from ._call import PreparedCall, last_result
from ._features import FeatureSpace
from ._inputs import check_float, check_int
from ._surrogate import solve_dtype
from .explanation import Explanation

P = ParamSpec("P")


class Estimate(Protocol):
    """What the stop rule reads from a fit: per-feature estimates ``(M,)`` and their standard errors ``(M,)``."""

    @property
    def values(self) -> torch.Tensor: ...

    @property
    def stderr(self) -> torch.Tensor: ...


E = TypeVar("E", bound=Estimate)
E_co = TypeVar("E_co", bound=Estimate, covariant=True)


# ----------------------------------------------------------------------------------------------------------------
# The evaluation sequence and its chunks


@dataclass(frozen=True)
class FlatSequence:
    """``n_items`` items, each evaluated ``evals_per_item`` times in a row (item ``i`` owns evaluations
    ``i * evals_per_item ...``); chunks end on item boundaries ``first + align * j`` only, so that after the
    ``first`` lead items a chunk always holds whole units of ``align`` items (KernelSHAP's pairs).

    An item's value is the mean of its evaluations, or their average with ``weights`` ``(evals_per_item,)``
    (summing to 1: a weighted background such as k-means centres)."""

    n_items: int
    evals_per_item: int = 1
    first: int = 0
    align: int = 1
    weights: torch.Tensor | None = None

    def units_done(self, stop: int) -> int:
        """Whole units among the first ``stop`` items."""
        return (stop - self.first) // self.align

    def boundary(self, target: int) -> int:
        """The smallest valid chunk end ``>= target`` (``first + align * j``), capped at ``n_items``."""
        if target <= self.first:
            return min(self.first, self.n_items) if self.first > 0 else min(self.align, self.n_items)
        return min(self.n_items, self.first + -(-(target - self.first) // self.align) * self.align)


# Evaluations in a progressive run's first chunk: on a CPU ResNet-18 a first chunk of 100 LIME samples kept the
# first partial map 1.4 s away; 32 forward passes bring it in about a third of that.
FIRST_CHUNK = 32
# Evaluations per chunk at least in a run that refits only at the end.
QUIET_CHUNK = 1024


def evaluate_chunks(
    adapter: ModelAdapter,
    sequence: FlatSequence,
    make_batch: Callable[[int, int], torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    chunk_size: int,
    check_cancel: Callable[[], None] | None = None,
    early_first: bool = False,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Evaluate ``sequence`` chunk by chunk; yield ``(item_start, item_stop, scores)``.

    ``make_batch(start, stop)`` builds inputs ``start..stop`` of the flat sequence of evaluations. A chunk holds
    about ``chunk_size`` items, rounded up to whole batches once the adapter's batch size is seen (streaming then
    costs no extra model calls), and while a chunk fits in one call the next one doubles. With ``early_first``
    (a run that streams its refits) the first chunk holds at most :data:`FIRST_CHUNK` evaluations' worth of items,
    so the first picture comes after about that many forward passes, for a model call or two more in all.
    """
    chunk_size = check_int("chunk_size", chunk_size, 1)
    per_item = sequence.evals_per_item
    done = 0
    want = min(chunk_size, max(1, FIRST_CHUNK // per_item)) if early_first else chunk_size
    while done < sequence.n_items:
        stop = sequence.boundary(done + want)
        requested: list[int] = []
        offset = done * per_item

        def build(
            start: int, end: int, offset: int = offset, requested: list[int] = requested
        ) -> torch.Tensor:
            requested.append(end - start)
            return make_batch(offset + start, offset + end)

        calls_before = adapter.n_calls
        scores = adapter.evaluate(
            (stop - done) * per_item, build, input_shape=input_shape, check_cancel=check_cancel
        )
        calls = adapter.n_calls - calls_before
        if calls > 1:
            batch = max(requested)
            evals = -(-chunk_size * per_item // batch) * batch
            want = max(1, -(-evals // per_item))
        elif calls == 1:
            want = 2 * (stop - done)
        yield done, stop, scores
        done = stop


# ----------------------------------------------------------------------------------------------------------------
# The stop rule and the refit loop


def check_tol(tol: object) -> float | None:
    """``tol`` as a positive float, or None (never stop early)."""
    return None if tol is None else check_float("tol", tol, 0.0, open_low=True)


@dataclass(frozen=True)
class Schedule:
    """When a progressive method refits and reports: after chunks of about ``chunk_size`` items, yielding every
    refit (``every_chunk``) or only the last, stopping early with ``tol``; ``check_cancel`` runs between batches."""

    chunk_size: int
    tol: float | None
    every_chunk: bool
    check_cancel: Callable[[], None] | None

    @classmethod
    def checked(
        cls, chunk_size: object, tol: object, every_chunk: bool, check_cancel: Callable[[], None] | None
    ) -> Schedule:
        """A schedule from the caller's arguments: ``chunk_size`` an int >= 1, ``tol`` None or positive."""
        return cls(check_int("chunk_size", chunk_size, 1), check_tol(tol), every_chunk, check_cancel)

    def params(self) -> dict[str, Any]:
        """What an Explanation records about the schedule."""
        return {"chunk_size": self.chunk_size, "tol": self.tol}


@dataclass(frozen=True)
class StopRule:
    """Stop once ``max(stderr) / (max(values) - min(values)) < tol``: the estimates are precise next to their
    spread. Trusted only from ``min_done`` fitted units (samples, pairs) on, below which the standard errors have
    not settled; never before the final refit would come anyway, and never with ``tol=None``."""

    tol: float | None
    min_done: int

    @staticmethod
    def ratio(estimate: Estimate) -> float:
        """``max(stderr) / (max(values) - min(values))`` (infinite when all values are equal)."""
        spread = float(estimate.values.max() - estimate.values.min())
        return float(estimate.stderr.max()) / spread if spread > 0 else float("inf")

    def converged(self, ratio: float, done: int, final: bool) -> bool:
        """Whether a refit on ``done`` units with this ``ratio`` ends the run early."""
        return self.tol is not None and not final and done >= self.min_done and ratio < self.tol


@dataclass(frozen=True, eq=False)
class Step(Generic[E]):
    """One refit to report: the fit on the first ``done`` units, its stderr ratio, and the evaluations that an
    early stop saved (non-zero only on the last step of a run stopped by the rule)."""

    fit: E
    done: int
    stderr_ratio: float
    n_evals_saved: int

    def explanation(
        self, call: PreparedCall, method: str, space: FeatureSpace, params: dict[str, Any], base_value: float
    ) -> Explanation:
        """Package the refit: its values as weights painted on the features, with their standard errors and the
        stop rule's record appended to the method's ``params``."""
        return call.explanation(
            method,
            space.paint(self.fit.values),
            {**params, "stderr_ratio": self.stderr_ratio, "n_evals_saved": self.n_evals_saved},
            weights=self.fit.values,
            stderr=self.fit.stderr,
            segments=space.labels,
            base_value=base_value,
        )


class Surrogate(Protocol[E_co]):
    """What a method plugs into :func:`refits`: its evaluation ``sequence``, how to build the inputs
    ``start..stop`` of it, how to fit the first ``done`` units from the item values ``(n_items,)``, and from how
    many fitted units on the stop rule may trust the standard errors."""

    @property
    def sequence(self) -> FlatSequence: ...

    @property
    def min_done(self) -> int: ...

    def inputs(self, start: int, stop: int, memory_format: torch.memory_format) -> torch.Tensor: ...

    def fit(self, values: torch.Tensor, done: int, final: bool) -> E_co: ...


def refits(call: PreparedCall, surrogate: Surrogate[E], schedule: Schedule) -> Iterator[Step[E]]:
    """Evaluate ``surrogate.sequence`` in chunks and yield refits until the end or until the stop rule is met.

    Each item's value is the mean of its evaluations' ``target`` scores, in the solver's dtype. Without
    ``schedule.every_chunk`` only the last refit is yielded, and refits happen only where the stop rule needs them.
    """
    sequence = surrogate.sequence
    stop_rule = StopRule(schedule.tol, surrogate.min_done)
    values = torch.empty(sequence.n_items, dtype=solve_dtype(call.x.device), device=call.x.device)
    input_shape = tuple(call.x.shape[1:])

    def make_batch(start: int, stop: int) -> torch.Tensor:
        return surrogate.inputs(start, stop, call.adapter.layout(input_shape))

    # Without refits along the way, chunks of at least QUIET_CHUNK evaluations: batches then split a run evenly,
    # as plain forward passes would (chunks of 100 cut 1000 samples into 64 + 36 + 14 x 64 + 4 images, ~2 %
    # slower on a small CNN), while a chunk's scores (N, K) stay a few MB for any budget.
    refits_along_the_way = schedule.every_chunk or stop_rule.tol is not None
    quiet_chunk = max(schedule.chunk_size, -(-QUIET_CHUNK // sequence.evals_per_item))
    chunks = evaluate_chunks(
        call.adapter,
        sequence,
        make_batch,
        input_shape=input_shape,
        chunk_size=schedule.chunk_size if refits_along_the_way else quiet_chunk,
        check_cancel=schedule.check_cancel,
        early_first=schedule.every_chunk,
    )
    for start, stop, scores in chunks:
        item_scores = scores[:, call.target].to(values.dtype).reshape(-1, sequence.evals_per_item)
        weights = sequence.weights
        values[start:stop] = item_scores.mean(dim=1) if weights is None else item_scores @ weights.to(values)
        done, final = sequence.units_done(stop), stop == sequence.n_items
        if (done == 0 and not final) or not (refits_along_the_way or final):
            continue  # nothing to fit yet, or no partial result wanted
        estimate = surrogate.fit(values, done, final)
        ratio = stop_rule.ratio(estimate)
        converged = stop_rule.converged(ratio, done, final)
        if schedule.every_chunk or converged or final:
            saved = (sequence.n_items - stop) * sequence.evals_per_item if converged else 0
            yield Step(fit=estimate, done=done, stderr_ratio=ratio, n_evals_saved=saved)
        if converged:
            return


# ----------------------------------------------------------------------------------------------------------------
# The plain function of a progressive method


def final_result(
    progressive: Callable[P, Iterator[Explanation]], name: str, doc: str
) -> Callable[P, Explanation]:
    """The plain function ``name`` of a progressive method: ``progressive`` run with ``every_chunk=False`` (one
    fit at the end, early stopping still on), returning its last :class:`Explanation`.

    Its signature is ``progressive``'s without ``every_chunk``, so ``help()`` and ``inspect.signature`` show the
    real keywords, and ``doc`` is its docstring.
    """
    full = inspect.signature(progressive)
    signature = full.replace(
        parameters=[parameter for key, parameter in full.parameters.items() if key != "every_chunk"],
        return_annotation="Explanation",
    )

    @functools.wraps(progressive)
    def final(*args: P.args, **kwargs: P.kwargs) -> Explanation:
        signature.bind(*args, **kwargs)  # rejects every_chunk and unknown keywords, as a plain def would
        return last_result(progressive(*args, **kwargs, every_chunk=False))

    final.__name__ = final.__qualname__ = name
    final.__doc__ = doc
    final.__signature__ = signature  # type: ignore[attr-defined]
    final.__annotations__ = {
        **{key: value for key, value in progressive.__annotations__.items() if key != "every_chunk"},
        "return": "Explanation",
    }
    return final
