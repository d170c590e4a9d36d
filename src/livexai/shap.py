"""KernelSHAP (Lundberg & Lee, 2017): Shapley values of superpixels, columns or tokens from sampled coalitions.

A coalition ``S`` of features is worth ``v(S)``: the model's output with the features outside ``S`` taken from
each background row (or baseline image), averaged over the background, as in ``shap.KernelExplainer``.
:func:`iter_kernel_shap` evaluates a planned set of coalitions in chunks and yields refined estimates with
standard errors; :func:`kernel_shap` returns the last. When the budget covers all ``2^M - 2`` coalitions the
result is the exact Shapley values.

Estimators (``estimator=``). ``"gp"`` (the default up to 16 features, :mod:`livexai._gp_shapley`): the
coalitions are chosen greedily, before any evaluation, to shrink the posterior variance of the Shapley values
under a Gaussian-process prior on the game (main effects free, interactions fading with their order), and the
values are the posterior mean; on random ReLU MLPs its error at equal budget is 0.2-0.5x that of
``shap.KernelExplainer(l1_reg=False)``. ``"regression"`` (:func:`livexai._surrogate.shapley_regression`; any
number of features): shap's allocation of the budget over coalition sizes (small sizes and their complements
enumerated when their share covers them), complementary pairs sampled without replacement in every other size
(stratified), the kernel regression solved with the efficiency constraint exact, and, for up to 16 features,
third-order terms with a ridge penalty chosen by leave-one-out error (0.33-0.75x shap's error on the same
models; 0.75-1.06x without the third-order terms, which is what runs above 16 features).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import torch

from ._adapter import Model, ModelAdapter, OutputSpace
from ._call import PreparedCall, prepare
from ._design import PairLayout, ShapleyDesign, cached_shapley_design
from ._features import (
    BASELINES,
    FeatureSpace,
    background_rows,
    check_n_samples,
    describe,
    sequence_space,
    subsample_indices,
)
from ._gp_shapley import MAX_FEATURES as MAX_GP_FEATURES
from ._gp_shapley import cached_greedy_design, gp_shapley, n_candidates
from ._inputs import check_int
from ._progressive import FlatSequence, Schedule, Step, StopRule, final_result, refits
from ._superpixels import Superpixels
from ._surrogate import MAX_INTERACTION_FEATURES, shapley_regression, solve_dtype
from ._tokens import Removal
from .background import WeightedRows
from .explanation import Explanation

# Early stopping trusts the standard errors only from this many coalition pairs per feature on: below about
# 8 M the fitted interactions make them too small (2 stderr covered 34 % of true errors at 64 coalitions, M = 14).
_MIN_PAIRS_PER_FEATURE = 8

Estimator = Literal["auto", "gp", "regression"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)

# Coalition count above which the budget is never capped (2^M - 2 would not fit comfortably in an int anyway).
_ENUMERABLE_FEATURES = 40


def iter_kernel_shap(
    model: Model,
    x: torch.Tensor,
    *,
    background: Any = None,
    target: int | None = None,
    n_segments: int = 50,
    segments: Any = None,
    n_samples: int | None = None,
    output: OutputSpace = "logits",
    seed: int = 0,
    image: Any = None,
    background_size: int | None = None,
    chunk_size: int = 128,
    feature_names: list[str] | None = None,
    segmentation: str = "slic",
    interactions: bool | None = None,
    tol: float | None = None,
    blur_sigma: float | None = None,
    segmentation_options: dict[str, Any] | None = None,
    check_cancel: Callable[[], None] | None = None,
    every_chunk: bool = True,
    groups: Any = None,
    mask_token_id: int | None = None,
    removal: Removal = "replace",
    estimator: Estimator = "auto",
) -> Iterator[Explanation]:
    """Yield KernelSHAP estimates of ``x``'s Shapley values refined after every chunk of coalitions.

    ``model``, ``x``, ``target``, ``output`` and ``check_cancel`` mean what they mean in :func:`iter_lime`.

    Parameters
    ----------
    background: what absent features take. Rows: a ``(B, F)`` tensor of reference rows (required), ``v(S)``
        being the mean over them, as ``shap.KernelExplainer``, or a weighted summary such as
        :func:`livexai.kmeans` ``(X, k)`` (a weighted mean). Images: ``"blur"`` (default; Gaussian, sigma
        ``blur_sigma`` pixels, default ``max(H, W) / 8``), ``"mean"``, ``"zero"``, ``"segment_mean"``, a number,
        or reference images ``(B, C, H, W)`` (absent superpixels from each, averaged).
    background_size: use only this many background rows/images: the first ones after a shuffle seeded by
        ``seed``, so the set for ``k`` is contained in the set for ``k + 1`` (the widget's slider). Each coalition
        costs one evaluation per background row.
    n_segments, segments, segmentation, segmentation_options, image: superpixels, as in :func:`livexai.lime`.
    n_samples: coalitions to evaluate (besides the empty and full ones), at least the number of features.
        Default, as shap: ``2 M + 2048``. When ``n_samples >= 2^M - 2`` every coalition is evaluated and the
        values are exact (``params["exact"]``).
    estimator: ``"gp"``, coalitions chosen greedily for a Gaussian-process prior on the game and its posterior
        mean (:mod:`livexai._gp_shapley`: about 0.6x the error of the regression at equal budget on random MLPs;
        up to 16 features); ``"regression"``, shap's allocation of coalitions to sizes, stratified, and the
        Shapley-kernel regression; ``"auto"`` (default): ``"gp"`` where it applies and ``interactions`` is None.
        ``params["estimator"]`` says which ran (``"exact"`` when every coalition is evaluated).
    interactions: the regression fits third-order terms too (None: when 4 <= M <= 16 and the result is not
        exact).
    chunk_size: coalitions between refits (rounded up to whole model batches once the batch size is known).
    tol: stop early once ``max(stderr) / (max(values) - min(values)) < tol`` (Covert & Lee use 0.01);
        ``params["n_evals_saved"]`` counts the evaluations skipped. Checked only from ``8 M`` coalition pairs
        on: below that the standard errors are too small (measured in ``benchmarks/RESULTS.md``).
    seed: seeds the coalition sampler on the input's device; the same seed gives the same result (bit-identical
        once the adapter has tuned its CPU batch plan, or always with ``ModelAdapter(model, batch_size=...)``).
    every_chunk: refit and yield after every chunk (False: only the final result, fitted once, as
        :func:`kernel_shap` does; the chunks still stop early with ``tol``).
    groups, mask_token_id, removal: sequences of token ids, as in :func:`livexai.lime`: an absent token (or
        word) is replaced by ``mask_token_id`` (default: the pad id) or deleted; ``background`` must be None.

    ``stderr``: stratified sandwich standard error of each value over the random choice of coalitions, with the
    finite-population correction (0 for sizes evaluated in full; all 0 when exact).
    """
    schedule = Schedule.checked(chunk_size, tol, every_chunk, check_cancel)
    if interactions is not None and not isinstance(interactions, bool):
        raise TypeError(f"interactions must be True, False or None (automatic), got {interactions!r}")
    call = prepare(model, x, target=target, output=output, image=image, feature_names=feature_names)
    superpixels = Superpixels(n_segments, segments, segmentation, segmentation_options, image, blur_sigma)
    if call.kind == "sequence":
        space, described = sequence_space(call, background, groups, removal, mask_token_id), None
    else:
        space, described = _feature_space(call, superpixels, background, background_size)
    space, kept = _subsample(space, described, background_size, seed)
    m = space.n_features
    budget = _budget(m, n_samples)
    chosen, design = _plan(estimator, m, budget, interactions, seed, call.x.device, check_cancel)
    run = _PairRegression(call, space, design, _use_interactions(m, interactions), gaussian=chosen == "gp")
    params = {
        "n_samples": budget,
        "estimator": chosen,
        **_background_params(described, run.layout.n_fill, background_size, kept),
        "seed": seed,
        **schedule.params(),
        "n_enumerated_sizes": design.n_enumerated,
        **superpixels.params(space),
    }
    for step in refits(call, run, schedule):
        yield _explanation(call, space, params, step)


kernel_shap = final_result(
    iter_kernel_shap,
    "kernel_shap",
    """Shapley values of ``model``'s output ``target`` at ``x``; see :func:`iter_kernel_shap` for the parameters.

    Returns the final :class:`Explanation`: ``weights`` ``(M,)`` the Shapley values (painted on the superpixels
    as ``attributions`` ``(H, W)``; tabular: ``(F,)``), ``base_value`` ``E[f]`` over the background, with
    ``weights.sum() + base_value == prediction`` to rounding, and ``stderr`` ``(M,)``.
    """,
)


def _budget(m: int, n_samples: int | None) -> int:
    """Coalitions to evaluate: ``n_samples`` (default ``2M + 2048``, as shap), at most all ``2^M - 2`` of them."""
    if m < 2:
        raise ValueError(f"x has {m} feature; KernelSHAP needs at least 2 (its one value is f(x) - E[f])")
    budget = 2 * m + 2048 if n_samples is None else check_n_samples(n_samples, m)
    return min(budget, 2**m - 2) if m <= _ENUMERABLE_FEATURES else budget


def _plan(
    estimator: object,
    m: int,
    budget: int,
    interactions: bool | None,
    seed: int,
    device: torch.device,
    check_cancel: Callable[[], None] | None = None,
) -> tuple[str, ShapleyDesign]:
    """The estimator that runs (see :func:`_choose_estimator`) and its coalitions."""
    chosen, seed = _choose_estimator(estimator, m, budget, interactions), check_int("seed", seed, 0)
    if chosen == "gp":
        return chosen, cached_greedy_design(m, budget, seed, device, check_cancel)
    return chosen, cached_shapley_design(m, budget, seed, device)


def _choose_estimator(estimator: object, m: int, budget: int, interactions: bool | None) -> str:
    """``"gp"``, ``"regression"`` or ``"exact"`` (every coalition evaluated: the regression is then exact)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if m <= _ENUMERABLE_FEATURES and budget >= 2**m - 2:
        return "exact"
    fits = m <= MAX_GP_FEATURES and budget // 2 < n_candidates(m)
    if estimator == "gp" and not fits:
        raise ValueError(
            f"estimator='gp' takes up to {MAX_GP_FEATURES} features and fewer coalitions than its "
            f"{2 * n_candidates(m)} candidates; got {m} features and {budget} coalitions. Use "
            "estimator='regression' (or 'auto')"
        )
    if estimator == "auto":
        return "gp" if fits and interactions is None else "regression"
    return str(estimator)


def _use_interactions(m: int, interactions: bool | None) -> bool:
    """Whether to fit third-order terms: as asked, else for 4 to :data:`MAX_INTERACTION_FEATURES` features."""
    use = (4 <= m <= MAX_INTERACTION_FEATURES) if interactions is None else interactions
    if use and m < 3:
        raise ValueError("interactions=True needs at least 3 features")
    return use


def _feature_space(
    call: PreparedCall, superpixels: Superpixels, background: Any, background_size: int | None
) -> tuple[FeatureSpace, object]:
    """Features and the background set, and how to record it: columns + reference rows (``"rows"``), or
    superpixels + reference images (``"images"``) or one baseline image (its description)."""
    if call.kind == "tabular":
        if isinstance(background, WeightedRows):
            rows = background_rows(background.rows, call.x)
            weights = _check_weights(background.weights, rows)
            return FeatureSpace.columns(call.x, rows, weights), "weighted rows"
        return FeatureSpace.columns(call.x, _reference_rows(call.x, background)), "rows"
    if background is None:
        background = "blur"
    is_number = isinstance(background, (int, float)) and not isinstance(background, bool)
    if not (isinstance(background, str) or is_number):
        return superpixels.space(call, None, background), "images"
    if isinstance(background, str) and background not in BASELINES:
        raise ValueError(
            f"unknown background {background!r}; expected one of {', '.join(map(repr, BASELINES))}, a number, "
            "or reference images (B, C, H, W)"
        )
    if background_size is not None:  # one baseline image: nothing to summarise
        check_int("background_size", background_size, 1)
    return superpixels.space(call, background), describe(background)


def _check_weights(weights: Any, rows: torch.Tensor) -> torch.Tensor:
    """A weighted background's weights: one per row, non-negative, normalised to sum to 1."""
    weights = torch.as_tensor(weights).to(device=rows.device, dtype=rows.dtype).reshape(-1)
    if weights.shape[0] != rows.shape[0] or bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise ValueError(
            f"background weights must be {rows.shape[0]} non-negative numbers (one per row) with a positive sum, "
            f"got shape {tuple(weights.shape)}"
        )
    return weights / weights.sum()


def _reference_rows(x: torch.Tensor, background: Any) -> torch.Tensor:
    """The background rows ``(B, F)`` a tabular KernelSHAP needs: absent columns take their values."""
    if background is None:
        raise ValueError(
            "kernel_shap on a tabular row needs background=(B, F) reference rows (e.g. 50-100 training rows): "
            "absent features take their values from them"
        )
    if isinstance(background, str) and background.startswith("kmeans"):
        count = background.partition(":")[2] or "k"
        raise ValueError(
            f"background={background!r} needs the rows to summarise: pass background=livexai.kmeans(X, {count}) "
            "with your training rows X (shap_summary and TabularExplorer accept 'kmeans:k' for the rows they have)"
        )
    if isinstance(background, str):
        raise ValueError(f"background={background!r} applies to images; for rows pass a (B, F) tensor")
    return background_rows(background, x)


def _subsample(
    space: FeatureSpace, described: object, background_size: int | None, seed: int
) -> tuple[FeatureSpace, torch.Tensor | None]:
    """Keep ``background_size`` of the reference rows/images (nested in the size, see :func:`subsample_indices`)
    and say which; a single baseline image is kept as is."""
    if background_size is None or described not in ("rows", "images", "weighted rows"):
        return space, None
    kept = subsample_indices(space.fill.shape[0], background_size, seed).to(space.fill.device)
    weights = space.fill_weights
    if weights is not None:
        weights = weights[kept] / weights[kept].sum()
    return replace(space, fill=space.fill[kept], fill_weights=weights), kept


def _background_params(
    described: object, n_fill: int, background_size: int | None, kept: torch.Tensor | None
) -> dict[str, Any]:
    """What an Explanation records about the background set: its kind, its size, which rows were kept."""
    return {
        "background": described,
        "n_background": n_fill,
        "background_size": background_size,
        "background_indices": None if kept is None else kept.tolist(),
    }


@dataclass(frozen=True, eq=False)
class _PairFit:
    """A KernelSHAP refit: Shapley values ``(M,)`` and their standard errors, the ridge penalty on the third-order
    terms (None: none fitted), ``v(empty)`` as the base value, and whether the values are exact."""

    values: torch.Tensor
    stderr: torch.Tensor
    ridge: float | None
    base: float
    exact: bool
    interactions: bool


class _PairRegression:
    """KernelSHAP's plug-in for the progressive engine: the pairs of ``design`` laid out over the fill rows of
    ``space``, refitted on the first ``done`` pairs: by the Gaussian-process posterior (``gaussian``) or by the
    Shapley-kernel regression.

    The regression's ridge penalty of the third-order terms is kept between refits and chosen again
    (leave-one-out) whenever the pairs have grown 4-fold since it was last chosen, and on the final refit.
    """

    def __init__(
        self,
        call: PreparedCall,
        space: FeatureSpace,
        design: ShapleyDesign,
        use_interactions: bool,
        gaussian: bool = False,
    ) -> None:
        self.space = space
        self.gaussian = gaussian
        self.design = design
        self.layout = PairLayout(design.units, space.fill.shape[0], space.fill_weights)
        self.prediction = call.scores[0, call.target].to(solve_dtype(call.x.device))
        self.use_interactions = use_interactions
        self.ridge: float | None = None
        self.selected_at = 0

    @property
    def sequence(self) -> FlatSequence:
        """The empty coalition, then the planned pairs, each coalition once per fill row."""
        return self.layout.sequence

    @property
    def min_done(self) -> int:
        """Pairs from which the stop rule trusts the standard errors."""
        return _MIN_PAIRS_PER_FEATURE * self.space.n_features

    def inputs(self, start: int, stop: int, memory_format: torch.memory_format) -> torch.Tensor:
        """Model inputs of evaluations ``start..stop`` of the sequence."""
        masks, rows = self.layout.masks(start, stop), self.layout.fill_rows(start, stop)
        return self.space.inputs(masks, rows, memory_format)

    def fit(self, values: torch.Tensor, done: int, final: bool) -> _PairFit:
        """Fit the first ``done`` pairs from the item values ``(1 + 2 P,)`` (item 0: the empty coalition)."""
        design, base = self.design, values[0]
        complete = design.complete(done)
        if self.gaussian and not complete:
            gp = gp_shapley(
                design.units[:done], self.layout.differences(values, done), self.prediction - base
            )
            return _PairFit(gp.values, gp.stderr, None, float(base), False, False)
        interactions = self.use_interactions and not complete and done >= design.units.shape[1]
        if interactions and (self.ridge is None or final or done >= 4 * self.selected_at):
            self.ridge, self.selected_at = None, done  # choose the penalty again as the sample grows
        fit = shapley_regression(
            design.units[:done],
            self.layout.differences(values, done),
            design.strata[:done],
            design.population,
            design.kernel,
            self.prediction - base,
            interactions=interactions,
            ridge=self.ridge,
        )
        if interactions:
            self.ridge = fit.ridge
        return _PairFit(fit.values, fit.stderr, fit.ridge, float(base), complete, interactions)


def _explanation(
    call: PreparedCall, space: FeatureSpace, params: dict[str, Any], step: Step[_PairFit]
) -> Explanation:
    """Package a refit: the Shapley values as weights, ``v(empty)`` as base value, evaluations counted as coalitions."""
    fit = step.fit
    shap_params = {
        **params,
        "n_samples_done": 2 * step.done,
        "exact": fit.exact,
        "interactions": fit.interactions,
        "ridge": fit.ridge,
    }
    return step.explanation(call, "kernel_shap", space, shap_params, base_value=fit.base)


# ----------------------------------------------------------------------------------------------------------------
# Many rows at once


def kernel_shap_rows(
    adapter: ModelAdapter,
    rows: torch.Tensor,
    *,
    background: Any,
    target: int,
    n_samples: int | None = None,
    seed: int = 0,
    feature_names: list[str] | None = None,
    check_cancel: Callable[[], None] | None = None,
    estimator: Estimator = "auto",
) -> list[Explanation]:
    """KernelSHAP of output ``target`` for each row of ``rows`` ``(N, F)`` against one ``background`` (rows
    ``(B, F)`` or a weighted summary), every row's coalitions evaluated in shared batches.

    A small tabular model evaluates thousands of rows in about the time the Python around one KernelSHAP call
    takes, so explaining rows one after another spends most of its time outside the model. The planned coalitions
    depend only on the number of features, the budget and the seed, so all rows share them; each row then gets its
    own regression, equal to :func:`kernel_shap` on that row with the same arguments (up to summation order).
    """
    began = time.perf_counter()
    calls = [
        prepare(adapter, row, target=target, feature_names=feature_names, expect="tabular") for row in rows
    ]
    first_space, described = _feature_space(calls[0], None, background, None)  # type: ignore[arg-type]
    m = first_space.n_features
    budget = _budget(m, n_samples)
    chosen, design = _plan(estimator, m, budget, None, seed, calls[0].x.device, check_cancel)
    layout = PairLayout(design.units, first_space.fill.shape[0], first_space.fill_weights)
    spaces = [FeatureSpace.columns(call.x, first_space.fill, first_space.fill_weights) for call in calls]
    sequence = layout.sequence
    per_row = sequence.n_items * sequence.evals_per_item

    def make_batch(start: int, stop: int) -> torch.Tensor:
        """Evaluations ``start..stop`` of all rows' sequences, one row's after another."""
        parts = []
        while start < stop:
            row, offset = divmod(start, per_row)
            end = min(stop, (row + 1) * per_row) - row * per_row
            parts.append(spaces[row].inputs(layout.masks(offset, end), layout.fill_rows(offset, end)))
            start = row * per_row + end
        return torch.cat(parts)

    scores = adapter.evaluate(len(rows) * per_row, make_batch, input_shape=(m,), check_cancel=check_cancel)
    item_scores = (
        scores[:, target].to(solve_dtype(calls[0].x.device)).reshape(len(rows), sequence.n_items, -1)
    )
    weights = sequence.weights
    values = item_scores.mean(dim=2) if weights is None else item_scores @ weights.to(item_scores)
    interactions = _use_interactions(m, None)
    params = {
        "n_samples": budget,
        "estimator": chosen,
        **_background_params(described, layout.n_fill, None, None),
        "seed": seed,
        "chunk_size": None,
        "tol": None,
        "n_enumerated_sizes": design.n_enumerated,
    }
    done = sequence.units_done(sequence.n_items)
    elapsed = (time.perf_counter() - began) / len(rows)
    results = []
    for call, space, row_values in zip(calls, spaces, values, strict=True):
        run = _PairRegression(call, space, design, interactions, gaussian=chosen == "gp")
        fit = run.fit(row_values, done, final=True)
        step = Step(fit=fit, done=done, stderr_ratio=StopRule.ratio(fit), n_evals_saved=0)
        explanation = _explanation(call, space, params, step)
        results.append(replace(explanation, n_evals=per_row + 1, elapsed_s=elapsed))  # + f(x), as kernel_shap
    return results
