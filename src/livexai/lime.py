"""LIME (Ribeiro et al., 2016): a weighted linear surrogate of the model around one input.

Features are superpixels of an image or columns of a tabular row. Random on/off masks are drawn on the input's
device, turned into inputs batch by batch, scored by the model, and a ridge regression weighted by lime's
exponential kernel is fitted to them. :func:`iter_lime` refits after every chunk of samples and yields partial
explanations with standard errors; :func:`lime` returns the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch

from ._adapter import Model, OutputSpace
from ._call import PreparedCall, last_result, prepare
from ._inputs import check_float, check_int
from ._perturb import (
    FeatureSpace,
    background_images,
    background_rows,
    check_n_samples,
    describe,
    evaluate_chunks,
    generator,
    image_fill,
    image_segments,
    lime_masks,
    quartile_fill,
    row_fill,
)
from ._surrogate import lime_kernel, solve_dtype, weighted_ridge
from .explanation import Explanation

# Early stopping trusts the standard errors only from this many samples per feature on (with fewer, tol=0.05
# stopped at ~144 samples for 50 superpixels and changed the top-5 superpixels; see benchmarks/RESULTS.md).
_MIN_SAMPLES_PER_FEATURE = 4


def lime(
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
) -> Explanation:
    """Explain ``model``'s output ``target`` at ``x`` with LIME; see :func:`iter_lime` for the parameters.

    Returns the final :class:`Explanation`: ``weights`` ``(M,)`` the surrogate's coefficients, ``attributions``
    the weights painted on the superpixels ``(H, W)`` (tabular: ``(F,)``), ``base_value`` its intercept,
    ``stderr`` ``(M,)``, and ``params["score"]`` its weighted R².
    """
    return last_result(
        iter_lime(
            model,
            x,
            target=target,
            n_segments=n_segments,
            segments=segments,
            n_samples=n_samples,
            baseline=baseline,
            kernel_width=kernel_width,
            output=output,
            seed=seed,
            image=image,
            segmentation=segmentation,
            chunk_size=chunk_size,
            background=background,
            feature_names=feature_names,
            discretize=discretize,
            tol=tol,
            alpha=alpha,
            blur_sigma=blur_sigma,
            segmentation_options=segmentation_options,
            check_cancel=check_cancel,
            every_chunk=False,
        )
    )


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
) -> Iterator[Explanation]:
    """Yield LIME explanations of ``x`` refined after every chunk of about ``chunk_size`` samples.

    Parameters
    ----------
    model: an ``nn.Module`` or callable mapping a batch to scores ``(N, K)``, or a :class:`ModelAdapter`.
    x: an image ``(C, H, W)`` or a tabular row ``(F,)`` (a leading batch of 1 is accepted), model-ready.
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

    Each yielded :class:`Explanation` carries ``weights``, ``stderr``, ``base_value`` (intercept),
    ``params["score"]`` (weighted R², as lime's ``score``), ``params["n_samples_done"]``.
    ``stderr`` is the heteroscedasticity-robust sandwich standard error of each weighted-ridge coefficient: how
    much it would vary over repeated draws of the masks.
    """
    kernel_width = check_float("kernel_width", kernel_width, 0.0, open_low=True)
    alpha = check_float("alpha", alpha, 0.0)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    if tol is not None:
        tol = check_float("tol", tol, 0.0, open_low=True)
    if not isinstance(discretize, bool):
        raise TypeError(f"discretize must be True or False, got {discretize!r}")
    call = prepare(model, x, target=target, output=output, image=image, feature_names=feature_names)
    if discretize and (call.kind != "tabular" or background is None):
        raise ValueError(
            "discretize=True applies to tabular rows with a background (B, F) of training rows, whose quartiles "
            f"define the bins; got {'an image' if call.kind == 'image' else 'no background'}"
        )
    space = _feature_space(
        call,
        image is not None,
        segments,
        n_segments,
        segmentation,
        segmentation_options,
        baseline,
        background,
        blur_sigma,
    )
    n_samples = check_n_samples(n_samples, space.n_features)
    gen = generator(seed, call.x.device)
    masks = lime_masks(n_samples, space.n_features, gen)
    which = None
    quartiles = None
    if discretize:
        fill, quartiles = quartile_fill(space.fill, call.x, n_samples, gen, _names(call))
        space = replace(space, fill=fill)
        which = torch.arange(n_samples, device=gen.device)  # one fill row per sample
    elif space.fill.shape[0] > 1:
        which = torch.randint(space.fill.shape[0], (n_samples,), generator=gen, device=gen.device)
    kernel = lime_kernel(masks, kernel_width)
    answers = torch.empty(n_samples, dtype=solve_dtype(call.x.device), device=call.x.device)

    input_shape = tuple(call.x.shape[1:])

    def make_batch(start: int, stop: int) -> torch.Tensor:
        layout = call.adapter.layout(input_shape)
        return space.inputs(masks[start:stop], None if which is None else which[start:stop], layout)

    params = {
        "n_samples": n_samples,
        "kernel_width": kernel_width,
        "alpha": alpha,
        "baseline": "background" if space.fill.shape[0] > 1 or background is not None else describe(baseline),
        "seed": seed,
        "chunk_size": chunk_size,
        "tol": tol,
    }
    if space.segments is not None:
        params.update(n_segments=space.n_features, segmentation=segmentation if segments is None else "given")
    if quartiles is not None:
        params.update(discretize=True, quartiles=quartiles)
    for _, stop, scores in evaluate_chunks(
        call.adapter,
        n_samples,
        make_batch,
        input_shape=input_shape,
        chunk_size=chunk_size,
        check_cancel=check_cancel,
    ):
        answers[stop - scores.shape[0] : stop] = scores[:, call.target].to(answers.dtype)
        if not (every_chunk or tol is not None or stop == n_samples):
            continue
        fit = weighted_ridge(masks[:stop], answers[:stop], kernel[:stop], alpha)
        spread = float(fit.coef.max() - fit.coef.min())
        ratio = float(fit.stderr.max()) / spread if spread > 0 else float("inf")
        converged = (
            tol is not None
            and _MIN_SAMPLES_PER_FEATURE * space.n_features <= stop < n_samples
            and ratio < tol
        )
        if not (every_chunk or converged or stop == n_samples):
            continue
        yield call.explanation(
            "lime",
            space.paint(fit.coef),
            {
                **params,
                "n_samples_done": stop,
                "score": fit.score,
                "local_pred": fit.intercept + float(fit.coef.sum()),
                "stderr_ratio": ratio,
                "n_evals_saved": n_samples - stop if converged else 0,
            },
            weights=fit.coef,
            stderr=fit.stderr,
            segments=space.segments,
            base_value=fit.intercept,
        )
        if converged:
            return


def _names(call: PreparedCall) -> list[str]:
    """Column names for descriptions: the caller's, else ``feature 0``, ``feature 1``, ..."""
    return call.feature_names or [f"feature {i}" for i in range(call.x.shape[1])]


def _feature_space(
    call: PreparedCall,
    has_image: bool,
    segments: Any,
    n_segments: Any,
    segmentation: str,
    segmentation_options: dict[str, Any] | None,
    baseline: Any,
    background: Any,
    blur_sigma: float | None,
) -> FeatureSpace:
    """Features and fill values for LIME: superpixels + baseline/background images, or columns + rows."""
    x = call.x
    if call.kind == "tabular":
        fill = background_rows(background, x) if background is not None else row_fill(x, baseline)
        return FeatureSpace(x=x, segments=None, n_features=x.shape[1], fill=fill)
    # Segment the display image if the caller gave one, else x itself (on its device).
    source = call.image if has_image else x
    labels, count = image_segments(segments, source, x, n_segments, segmentation, segmentation_options or {})
    fill = (
        background_images(background, x)
        if background is not None
        else image_fill(x, baseline, labels, blur_sigma)
    )
    return FeatureSpace(x=x, segments=labels, n_features=count, fill=fill)
