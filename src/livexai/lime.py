"""LIME (Ribeiro et al., 2016): a weighted linear surrogate of the model around one input.

Features are superpixels of an image or columns of a tabular row. Random on/off masks are drawn on the input's
device, turned into inputs batch by batch, scored by the model, and a ridge regression weighted by lime's
exponential kernel is fitted to them. :func:`iter_lime` refits after every chunk of samples and yields partial
explanations with standard errors; :func:`lime` returns the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from ._adapter import Model, OutputSpace
from ._call import PreparedCall, prepare
from ._features import (
    FeatureSpace,
    background_rows,
    check_n_samples,
    describe,
    generator,
    lime_masks,
    quartile_fill,
    row_fill,
    sequence_space,
)
from ._inputs import check_float
from ._progressive import FlatSequence, Schedule, Step, final_result, refits
from ._superpixels import Superpixels
from ._surrogate import RidgeFit, lime_kernel, weighted_ridge
from ._tokens import Removal
from .explanation import Explanation

# Early stopping trusts the standard errors only from this many samples per feature on (with fewer, tol=0.05
# stopped at ~144 samples for 50 superpixels and changed the top-5 superpixels; see benchmarks/RESULTS.md).
_MIN_SAMPLES_PER_FEATURE = 4


def iter_lime(
    model: Model,
    x: torch.Tensor,
    *,
    target: int | None = None,
    n_segments: int = 50,
    segments: Any = None,
    n_samples: int = 1000,
    baseline: Any = "blur",
    kernel_width: float = 0.25,
    output: OutputSpace = "logits",
    seed: int = 0,
    image: Any = None,
    segmentation: str = "slic",
    chunk_size: int = 100,
    background: Any = None,
    feature_names: list[str] | None = None,
    discretize: bool = False,
    tol: float | None = None,
    alpha: float = 1.0,
    blur_sigma: float | None = None,
    segmentation_options: dict[str, Any] | None = None,
    check_cancel: Callable[[], None] | None = None,
    every_chunk: bool = True,
    groups: Any = None,
    mask_token_id: int | None = None,
    removal: Removal = "replace",
) -> Iterator[Explanation]:
    """Yield LIME explanations of ``x`` refined after every chunk of about ``chunk_size`` samples.

    Parameters
    ----------
    model: an ``nn.Module`` or callable mapping a batch to scores ``(N, K)``, or a :class:`ModelAdapter`.
    x: an image ``(C, H, W)`` or a tabular row ``(F,)`` (a leading batch of 1 is accepted), model-ready; or a
        sequence of token ids ``(T,)`` (an integer tensor, or a tokenizer's ``input_ids``/``attention_mask``
        mapping) for a model that starts with an embedding.
    target: output index to explain (None: the arg-max).
    n_segments, segmentation, segmentation_options: superpixels from :func:`livexai.segmentation.segment`
        run on the display image ``image`` (or on ``x`` when None); ``segments`` ``(H, W)`` overrides them.
    n_samples: masks drawn (the first keeps every feature, as lime does); at least the number of features.
    baseline: what an off superpixel shows: ``"blur"`` (default: a Gaussian blur of ``x``, sigma ``blur_sigma``
        pixels, default ``max(H, W) / 8``), ``"mean"`` (per-channel mean), ``"zero"``, ``"segment_mean"``
        (each superpixel's mean colour: lime's own default), a number, or a tensor broadcastable to ``x``.
        Tabular rows: ``"zero"``, a number or an ``(F,)`` tensor, used only when ``background`` is None.
    discretize: tabular rows only, with ``background``: lime's quartile discretisation. A feature is "x's
        column lies in the same background quartile as x", and switching it off draws a value from another
        quartile; ``params["quartiles"]`` describes x's quartile per column (e.g. ``"1.2 < age <= 3.4"``).
    background: reference inputs ``(B, F)`` (tabular) or ``(B, C, H, W)`` (images). When given, each sample takes
        its off features from one background row drawn at random (seeded), the way lime's tabular explainer
        perturbs from training data (without its discretisation).
    kernel_width: width of lime's kernel ``sqrt(exp(-d^2 / width^2))`` on the cosine distance ``d`` between a mask
        and the all-on mask (lime's image default 0.25; used for rows too).
    alpha: ridge penalty of the surrogate (lime: ``Ridge(alpha=1)`` with an intercept).
    output: ``"logits"`` or ``"probs"`` (softmax), the space the surrogate is fitted in.
    seed: seeds the mask generator on the input's device; the same seed gives the same result (bit-identical
        once the adapter has tuned its CPU batch plan, or always with ``ModelAdapter(model, batch_size=...)``).
    chunk_size: samples between refits (rounded up to whole model batches once the batch size is known).
    tol: stop early once ``max(stderr) / (max(weights) - min(weights)) < tol``; the evaluations saved are in
        ``params["n_evals_saved"]``. Checked only from ``4 M`` samples on, where the standard errors settle.
    check_cancel: called between model batches; may raise :class:`livexai.Cancelled`.
    every_chunk: refit and yield after every chunk (False: only the final result, fitted once, as
        :func:`lime` does; the chunks still stop early with ``tol``).
    groups, mask_token_id, removal: sequences only. Features are tokens, or with ``groups`` (one int or None
        per token, e.g. a tokenizer's ``word_ids()``) words of several tokens; padding and None are never
        features. An off feature's tokens are replaced by ``mask_token_id`` (default: the model's pad id)
        with ``removal="replace"``, or deleted (``"delete"``: the rest shift left, the end is padded).
        ``attributions`` are then ``(T,)`` per token and ``segments`` ``(T,)`` each token's feature (-1: none).

    Each yielded :class:`Explanation` carries ``weights``, ``stderr``, ``base_value`` (intercept),
    ``params["score"]`` (weighted R², as lime's ``score``), ``params["n_samples_done"]``.
    ``stderr`` is the heteroscedasticity-robust sandwich standard error of each weighted-ridge coefficient: how
    much it would vary over repeated draws of the masks.
    """
    kernel_width = check_float("kernel_width", kernel_width, 0.0, open_low=True)
    alpha = check_float("alpha", alpha, 0.0)
    schedule = Schedule.checked(chunk_size, tol, every_chunk, check_cancel)
    if not isinstance(discretize, bool):
        raise TypeError(f"discretize must be True or False, got {discretize!r}")
    call = prepare(model, x, target=target, output=output, image=image, feature_names=feature_names)
    _check_discretize(call, discretize, background)
    superpixels = Superpixels(n_segments, segments, segmentation, segmentation_options, image, blur_sigma)
    if call.kind == "sequence":
        space = sequence_space(call, background, groups, removal, mask_token_id)
    else:
        space = _feature_space(call, superpixels, baseline, background)
    n_samples = check_n_samples(n_samples, space.n_features)
    run = _draw(call, space, n_samples, seed, discretize, kernel_width, alpha)
    described = "background" if background is not None else describe(baseline)
    params = run.params(None if space.tokens is not None else described, seed)
    params.update(**schedule.params(), **superpixels.params(space), **run.quartile_params())
    for step in refits(call, run, schedule):
        yield _explanation(call, run.space, params, step)


lime = final_result(
    iter_lime,
    "lime",
    """Explain ``model``'s output ``target`` at ``x`` with LIME; see :func:`iter_lime` for the parameters.

    Returns the final :class:`Explanation`: ``weights`` ``(M,)`` the surrogate's coefficients, ``attributions``
    the weights painted on the superpixels ``(H, W)`` (tabular: ``(F,)``), ``base_value`` its intercept,
    ``stderr`` ``(M,)``, and ``params["score"]`` its weighted R².
    """,
)


def _check_discretize(call: PreparedCall, discretize: bool, background: Any) -> None:
    """Quartile discretisation needs tabular rows and background rows to take the quartiles of."""
    if discretize and (call.kind != "tabular" or background is None):
        raise ValueError(
            "discretize=True applies to tabular rows with a background (B, F) of training rows, whose quartiles "
            f"define the bins; got {'an image' if call.kind == 'image' else 'no background'}"
        )


def _feature_space(
    call: PreparedCall, superpixels: Superpixels, baseline: Any, background: Any
) -> FeatureSpace:
    """Features and fill values for LIME: columns + background rows or a baseline row, or superpixels."""
    if call.kind == "tabular":
        x = call.x
        return FeatureSpace.columns(
            x, background_rows(background, x) if background is not None else row_fill(x, baseline)
        )
    return superpixels.space(call, baseline, background)


@dataclass(frozen=True, eq=False)
class _LimeRun:
    """LIME's plug-in for the progressive engine: the masks ``(n, M)``, the feature space they switch off to,
    which fill row each sample takes (``fill_rows`` ``(n,)``; None: the single baseline), x's quartiles when
    discretised, lime's kernel weights ``(n,)`` and the ridge penalty ``alpha``."""

    masks: torch.Tensor
    space: FeatureSpace
    fill_rows: torch.Tensor | None
    quartiles: list[str] | None
    kernel: torch.Tensor
    kernel_width: float
    alpha: float

    @property
    def sequence(self) -> FlatSequence:
        """One item per sample, evaluated once."""
        return FlatSequence(self.masks.shape[0])

    @property
    def min_done(self) -> int:
        """Samples from which the stop rule trusts the standard errors."""
        return _MIN_SAMPLES_PER_FEATURE * self.space.n_features

    def inputs(self, start: int, stop: int, memory_format: torch.memory_format) -> torch.Tensor:
        """Model inputs of samples ``start..stop``."""
        rows = None if self.fill_rows is None else self.fill_rows[start:stop]
        return self.space.inputs(self.masks[start:stop], rows, memory_format)

    def fit(self, values: torch.Tensor, done: int, final: bool) -> RidgeFit:
        """The weighted ridge on the first ``done`` samples' model outputs ``values``."""
        return weighted_ridge(self.masks[:done], values[:done], self.kernel[:done], self.alpha)

    def params(self, baseline: object, seed: int) -> dict[str, Any]:
        """What an Explanation records about the sampling and the surrogate."""
        return {
            "n_samples": self.masks.shape[0],
            "kernel_width": self.kernel_width,
            "alpha": self.alpha,
            "baseline": baseline,
            "seed": seed,
        }

    def quartile_params(self) -> dict[str, Any]:
        """What an Explanation records about the discretisation (nothing without it)."""
        return {} if self.quartiles is None else {"discretize": True, "quartiles": self.quartiles}


def _draw(
    call: PreparedCall,
    space: FeatureSpace,
    n_samples: int,
    seed: int,
    discretize: bool,
    kernel_width: float,
    alpha: float,
) -> _LimeRun:
    """Draw the masks, then each sample's fill row (a random background row, or with ``discretize`` a fill row
    of its own from other quartiles), from one generator seeded with ``seed`` on the input's device."""
    gen = generator(seed, call.x.device)
    masks = lime_masks(n_samples, space.n_features, gen)
    rows, quartiles = None, None
    if discretize:
        fill, quartiles = quartile_fill(space.fill, call.x, n_samples, gen, _names(call))
        space, rows = replace(space, fill=fill), torch.arange(n_samples, device=gen.device)  # a row each
    elif space.fill.shape[0] > 1:
        rows = torch.randint(space.fill.shape[0], (n_samples,), generator=gen, device=gen.device)
    return _LimeRun(masks, space, rows, quartiles, lime_kernel(masks, kernel_width), kernel_width, alpha)


def _names(call: PreparedCall) -> list[str]:
    """Column names for descriptions: the caller's, else ``feature 0``, ``feature 1``, ..."""
    return call.feature_names or [f"feature {i}" for i in range(call.x.shape[1])]


def _explanation(
    call: PreparedCall, space: FeatureSpace, params: dict[str, Any], step: Step[RidgeFit]
) -> Explanation:
    """Package a refit: the coefficients as weights, the intercept as base value, the weighted R² as score."""
    fit = step.fit
    lime_params = {
        **params,
        "n_samples_done": step.done,
        "score": fit.score,
        "local_pred": fit.intercept + float(fit.values.sum()),
    }
    return step.explanation(call, "lime", space, lime_params, base_value=fit.intercept)
