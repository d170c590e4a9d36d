"""LIME: the surrogate against scikit-learn and the lime package, known answers, streaming, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import (
    CountingModel,
    SegmentLinear,
    assert_unchanged,
    grid_segments,
    make_cnn,
    make_mlp,
    snapshot,
)

from livexai._adapter import ModelAdapter
from livexai._features import gaussian_blur, generator, image_fill, lime_masks
from livexai._surrogate import lime_kernel, weighted_ridge
from livexai.lime import iter_lime, lime

pytestmark = pytest.mark.usefixtures("single_thread")


def _cnn_and_image(size: int = 32, seed: int = 0):
    model = make_cnn(seed=seed).eval()
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))
    return model, image


# ----------------------------------------------------------------------------------------------------------------
# The surrogate against scikit-learn and lime


def test_weighted_ridge_matches_sklearn_ridge() -> None:
    from sklearn.linear_model import Ridge

    gen = torch.Generator().manual_seed(1)
    masks = lime_masks(300, 12, gen)
    y = masks.double() @ torch.randn(12, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(
        300, generator=gen, dtype=torch.float64
    )
    weights = lime_kernel(masks, 0.25)
    ours = weighted_ridge(masks, y, weights, alpha=1.0)
    theirs = Ridge(alpha=1.0, fit_intercept=True).fit(masks.numpy(), y.numpy(), sample_weight=weights.numpy())
    np.testing.assert_allclose(ours.values.numpy(), theirs.coef_, atol=1e-8)
    assert ours.intercept == pytest.approx(theirs.intercept_, abs=1e-8)
    assert ours.score == pytest.approx(
        theirs.score(masks.numpy(), y.numpy(), sample_weight=weights.numpy()), abs=1e-8
    )


def test_kernel_matches_lime_on_cosine_distances() -> None:
    from sklearn.metrics import pairwise_distances

    masks = lime_masks(200, 20, torch.Generator().manual_seed(2))
    masks[5] = False  # the empty mask: cosine distance 1
    distances = pairwise_distances(masks.numpy().astype(int), np.ones((1, 20)), metric="cosine").ravel()
    expected = np.sqrt(np.exp(-(distances**2) / 0.25**2))
    np.testing.assert_allclose(lime_kernel(masks, 0.25).numpy(), expected, atol=1e-12)


def _lime_style_samples(model, image, segments, masks):
    """Perturbed images built the way lime builds them (a Python loop, superpixel means), and their scores."""
    picture = image.permute(1, 2, 0).numpy()
    labels = segments.numpy()
    fudged = picture.copy()
    for label in np.unique(labels):
        fudged[labels == label] = picture[labels == label].mean(0)
    batch = []
    for row in masks.numpy():
        sample = picture.copy()
        off = np.isin(labels, np.flatnonzero(row == 0))
        sample[off] = fudged[off]
        batch.append(sample)
    with torch.no_grad():
        return model(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)).double().numpy()


def test_same_samples_give_lime_base_result() -> None:
    """Our whole pipeline against lime's own regression, on the masks our seed draws."""
    from lime.lime_base import LimeBase
    from sklearn.metrics import pairwise_distances

    model, image = _cnn_and_image()
    segments = grid_segments(32, 32, 4, 4)
    ours = lime(model, image, segments=segments, baseline="segment_mean", n_samples=400, seed=3, target=2)
    masks = lime_masks(400, 16, generator(3, torch.device("cpu")))
    scores = _lime_style_samples(model, image, segments, masks)
    data = masks.numpy().astype(int)
    distances = pairwise_distances(data, data[:1], metric="cosine").ravel()
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d**2) / 0.25**2)), random_state=0)
    intercept, local_exp, score, _ = base.explain_instance_with_data(
        data, scores, distances, 2, num_features=16
    )
    coef = np.zeros(16)
    for feature, value in local_exp:
        coef[feature] = value
    np.testing.assert_allclose(ours.weights.numpy(), coef, atol=1e-5)
    assert ours.base_value == pytest.approx(intercept, abs=1e-5)
    assert ours.params["score"] == pytest.approx(score, abs=1e-5)


def test_agrees_with_the_lime_package_in_distribution() -> None:
    """Independent draws of lime's ImageExplainer and ours rank the superpixels alike."""
    from lime.lime_image import LimeImageExplainer
    from scipy.stats import spearmanr

    model, image = _cnn_and_image(seed=4)
    segments = grid_segments(32, 32, 4, 4)
    target = 1

    def classifier(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch).float().permute(0, 3, 1, 2)).numpy()

    explanation = LimeImageExplainer(random_state=0).explain_instance(
        image.permute(1, 2, 0).double().numpy(),
        classifier,
        labels=(target,),
        top_labels=None,
        hide_color=None,
        num_features=16,
        num_samples=1000,
        batch_size=100,
        segmentation_fn=lambda _: segments.numpy(),
    )
    theirs = np.zeros(16)
    for feature, value in explanation.local_exp[target]:
        theirs[feature] = value
    ours = lime(model, image, segments=segments, baseline="segment_mean", n_samples=1000, target=target)
    assert spearmanr(ours.weights.numpy(), theirs).statistic > 0.85
    tolerance = 5 * math.sqrt(2) * ours.stderr.numpy()  # two independent estimates, each about this noisy
    assert np.all(np.abs(ours.weights.numpy() - theirs) < tolerance + 1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Known answers


def test_recovers_a_model_linear_in_the_superpixel_mask() -> None:
    segments = grid_segments(24, 24, 4, 4)
    gen = torch.Generator().manual_seed(5)
    model = SegmentLinear(segments, torch.randn(16, generator=gen, dtype=torch.float64))
    image = torch.rand(3, 24, 24, generator=gen, dtype=torch.float64)
    expected = model.coefficients * model.segment_means(image[None])[0]
    exact = lime(model, image, segments=segments, baseline="zero", n_samples=300, alpha=0.0, target=0)
    torch.testing.assert_close(exact.weights.double(), expected, atol=1e-5, rtol=0)
    assert exact.params["score"] == pytest.approx(1.0, abs=1e-9)
    assert exact.base_value == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(exact.attributions, exact.weights[segments])
    shrunk = lime(model, image, segments=segments, baseline="zero", n_samples=1000, target=0)
    torch.testing.assert_close(
        shrunk.weights.double(), expected, atol=0.02 * float(expected.abs().max()), rtol=0
    )


def test_tabular_rows_take_off_columns_from_background_rows() -> None:
    gen = torch.Generator().manual_seed(6)
    slope = torch.randn(8, generator=gen, dtype=torch.float64)

    def model(rows: torch.Tensor) -> torch.Tensor:  # a plain callable: the adapter sends float32
        score = rows.double() @ slope
        return torch.stack([score, -score], 1)

    x = torch.randn(8, generator=gen)
    background = torch.randn(20, 8, generator=gen)
    result = lime(model, x, background=background, n_samples=3000, target=0, feature_names=list("abcdefgh"))
    # E[f | mask] = sum_i slope_i (mask_i x_i + (1 - mask_i) mean_i): the surrogate's slope is slope_i (x_i - mean_i)
    expected = slope * (x.double() - background.double().mean(0))
    assert torch.all((result.weights.double() - expected).abs() < 4 * result.stderr.double() + 1e-3)
    assert result.attributions.shape == (8,) and result.feature_names == list("abcdefgh")
    zero = lime(model, x, baseline="zero", n_samples=200, alpha=0.0, target=0)
    torch.testing.assert_close(zero.weights.double(), slope * x.double(), atol=1e-5, rtol=0)


def test_blur_wider_than_the_image_matches_scipy_gaussian_filter() -> None:
    """Taps reaching past both edges (radius 15 on a 9 x 13 image) all land on the edge pixels, as scipy's
    ``mode="nearest"``; a batch of images is blurred image by image."""
    from scipy.ndimage import gaussian_filter

    images = torch.rand(2, 2, 9, 13, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = gaussian_blur(images, 5.0)
    theirs = np.stack(
        [[gaussian_filter(c, 5.0, mode="nearest", truncate=3.0) for c in image] for image in images.numpy()]
    )
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-12)


def test_blur_baseline_matches_scipy_gaussian_filter() -> None:
    from scipy.ndimage import gaussian_filter

    image = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ours = image_fill(image, "blur", blur_sigma=2.5)
    theirs = np.stack([gaussian_filter(c, 2.5, mode="nearest", truncate=3.0) for c in image[0].numpy()])
    np.testing.assert_allclose(ours[0].numpy(), theirs, atol=1e-6)
    default = image_fill(image, "blur")  # sigma = max(H, W) / 8
    theirs = np.stack([gaussian_filter(c, 3.0, mode="nearest", truncate=3.0) for c in image[0].numpy()])
    np.testing.assert_allclose(default[0].numpy(), theirs, atol=1e-6)
    torch.testing.assert_close(image_fill(image, "mean"), image.mean((2, 3), keepdim=True).expand_as(image))
    torch.testing.assert_close(
        image_fill(image, torch.tensor([0.5, 0.0, 1.0]).view(3, 1, 1))[0, :, 0, 0],
        torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64),
    )


def test_superpixels_from_the_segmentation_module_and_a_display_image() -> None:
    model, image = _cnn_and_image(size=24, seed=8)
    display = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    result = lime(model, image, n_segments=12, n_samples=100, image=display)
    count = int(result.segments.max()) + 1
    assert result.segments.shape == (24, 24) and result.weights.shape == (count,) and 2 <= count <= 24
    assert result.params["n_segments"] == count
    assert result.image.shape == (24, 24, 3)
    assert result.target == int(model(image[None]).argmax())


def test_probabilities_output() -> None:
    model, image = _cnn_and_image(size=16, seed=9)
    result = lime(model, image, segments=grid_segments(16, 16, 3, 3), n_samples=100, output="probs", target=1)
    with torch.no_grad():
        expected = float(torch.softmax(model(image[None]), 1)[0, 1])
    assert result.prediction == pytest.approx(expected, abs=1e-6)
    assert result.params["output"] == "probs"


# ----------------------------------------------------------------------------------------------------------------
# Streaming and seeds


def test_partial_results_stream_and_end_at_the_plain_result() -> None:
    model, image = _cnn_and_image(size=16, seed=10)
    segments = grid_segments(16, 16, 3, 3)
    results = list(iter_lime(model, image, segments=segments, n_samples=400, chunk_size=64, seed=2))
    done = [r.params["n_samples_done"] for r in results]
    assert len(results) >= 3 and done == sorted(set(done)) and done[-1] == 400
    assert all(r.stderr is not None and r.stderr.shape == (9,) for r in results)
    assert results[0].stderr.max() > results[-1].stderr.max()
    final = lime(model, image, segments=segments, n_samples=400, chunk_size=64, seed=2)
    torch.testing.assert_close(final.weights, results[-1].weights, atol=1e-6, rtol=0)
    assert final.params["score"] == pytest.approx(results[-1].params["score"], abs=1e-9)


def test_tolerance_stops_early_and_reports_the_saving() -> None:
    model, image = _cnn_and_image(size=16, seed=11)
    result = lime(model, image, segments=grid_segments(16, 16, 3, 3), n_samples=2000, chunk_size=100, tol=0.1)
    assert result.params["n_samples_done"] < 2000
    assert result.params["n_evals_saved"] == 2000 - result.params["n_samples_done"]
    assert result.params["stderr_ratio"] < 0.1


def test_tolerance_waits_for_four_samples_per_feature() -> None:
    model, image = _cnn_and_image(size=16, seed=11)
    segments = grid_segments(16, 16, 4, 4)  # 16 features: not before 64 samples
    result = lime(model, image, segments=segments, n_samples=2000, chunk_size=10, tol=1e9)
    assert 64 <= result.params["n_samples_done"] < 100


def test_same_seed_same_result_and_seeds_differ() -> None:
    model, image = _cnn_and_image(size=16, seed=12)
    segments = grid_segments(16, 16, 3, 3)
    lime(
        model, image, segments=segments, n_samples=1000, seed=0
    )  # a first call on a CPU tunes the batch plan
    first = lime(model, image, segments=segments, n_samples=200, seed=5)
    second = lime(model, image, segments=segments, n_samples=200, seed=5)
    other = lime(model, image, segments=segments, n_samples=200, seed=6)
    assert torch.equal(first.weights, second.weights) and torch.equal(first.stderr, second.stderr)
    assert not torch.equal(first.weights, other.weights)


def test_a_fixed_batch_size_makes_even_first_calls_bit_identical() -> None:
    model, image = _cnn_and_image(size=16, seed=13)
    segments = grid_segments(16, 16, 3, 3)
    runs = [
        lime(ModelAdapter(model, batch_size=16), image, segments=segments, n_samples=300, seed=5)
        for _ in "ab"
    ]
    assert torch.equal(runs[0].weights, runs[1].weights)
    tuned = lime(model, image, segments=segments, n_samples=300, seed=5)  # tuned plan: equal to rounding
    torch.testing.assert_close(tuned.weights, runs[0].weights, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Errors, model calls, model state, devices


def test_clear_errors_for_bad_input() -> None:
    model, image = _cnn_and_image(size=16, seed=13)
    segments = grid_segments(16, 16, 3, 3)
    with pytest.raises(ValueError, match="n_segments must be at least 2"):
        lime(model, image, n_segments=1)
    with pytest.raises(ValueError, match="n_segments=100000 is more than the 256 pixels"):
        lime(model, image, n_segments=100_000)
    with pytest.raises(ValueError, match="n_samples=5 is less than the 9 features"):
        lime(model, image, segments=segments, n_samples=5)
    with pytest.raises(ValueError, match=r"segments has shape \(16, 15\)"):
        lime(model, image, segments=segments[:, :15])
    with pytest.raises(ValueError, match="unknown baseline 'noise'"):
        lime(model, image, segments=segments, baseline="noise")
    with pytest.raises(ValueError, match=r"background has shape \(2, 3, 16, 17\)"):
        lime(model, image, segments=segments, background=torch.zeros(2, 3, 16, 17))
    with pytest.raises(ValueError, match="kernel_width must be greater than 0"):
        lime(model, image, segments=segments, kernel_width=0)
    mlp = make_mlp(5)
    row = torch.randn(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"background has shape \(4, 6\)"):
        lime(mlp, row, background=torch.randn(4, 6))
    with pytest.raises(ValueError, match="baseline 'blur' does not apply to tabular rows"):
        lime(mlp, row)


def test_model_calls_are_whole_batches() -> None:
    model = CountingModel(make_cnn(seed=14).eval())
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(14))
    segments = grid_segments(16, 16, 3, 3)
    lime(
        model, image, segments=segments, n_samples=1000
    )  # first call tunes the batch plan (about 400 inputs)
    model.reset()
    result = lime(model, image, segments=segments, n_samples=300)
    batch = max(model.sizes)
    assert result.n_evals == 300 + 1
    assert model.calls <= math.ceil(300 / batch) + 2, (model.calls, model.sizes)


def test_a_plain_call_splits_its_samples_into_whole_batches() -> None:
    """Without refits along the way, chunks of 100 samples would cut batches short at every chunk's end."""
    model = CountingModel(make_cnn(seed=14).eval())
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(14))
    segments = grid_segments(16, 16, 3, 3)
    adapter = ModelAdapter(model, batch_size=64)
    lime(adapter, image, segments=segments, n_samples=1000, chunk_size=100)
    assert model.sizes == [1] + [64] * 15 + [40]  # f(x), then the samples as a plain loop would batch them
    model.reset()  # chunks of at least 1024 samples keep the scores (N, K) bounded, then grow to whole batches
    lime(ModelAdapter(model, batch_size=48), image, segments=segments, n_samples=3000, chunk_size=100)
    assert model.sizes == [1] + [48] * 21 + [16] + [48] * 22 + [48] * 19 + [8]


def test_model_left_unchanged() -> None:
    model = make_cnn(seed=15)
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    before = snapshot(model)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(15))
    list(iter_lime(model, image, segments=grid_segments(16, 16, 3, 3), n_samples=120, chunk_size=40))
    assert_unchanged(before, snapshot(model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree() -> None:
    model, image = _cnn_and_image(seed=16)
    segments = grid_segments(32, 32, 4, 4)
    cpu = lime(model, image, segments=segments, n_samples=2000)
    cuda = lime(model.cuda(), image.cuda(), segments=segments, n_samples=2000)
    # Different devices draw different masks: compare within the combined standard errors.
    tolerance = 5 * torch.sqrt(cpu.stderr**2 + cuda.stderr**2) + 1e-5
    assert torch.all((cpu.weights - cuda.weights).abs() < tolerance)


def test_discretised_tabular_lime_recovers_a_quartile_rule() -> None:
    generator = torch.Generator().manual_seed(21)
    background = torch.randn(400, 4, generator=generator)
    q75 = torch.quantile(background[:, 0], 0.75)

    def model(rows: torch.Tensor) -> torch.Tensor:
        # Only "column 0 is in its top quartile" matters: a rule that is linear in lime's discretised features.
        score = 3.0 * (rows[:, 0] > q75).float() + 0.0 * rows[:, 1:].sum(1)
        return torch.stack([score, -score], dim=1)

    x = torch.tensor([2.5, 0.0, 0.1, -0.2])  # column 0 well inside the top quartile
    result = lime(
        model,
        x,
        background=background,
        discretize=True,
        n_samples=800,
        alpha=0.0,
        target=0,
        feature_names=["a", "b", "c", "d"],
    )
    torch.testing.assert_close(result.weights, torch.tensor([3.0, 0.0, 0.0, 0.0]), atol=1e-4, rtol=0)
    assert result.params["discretize"] is True
    assert result.params["quartiles"][0] == f"a > {float(q75):.4g}"
    assert " < b <= " in result.params["quartiles"][1]


def test_discretised_lime_is_reproducible_and_differs_from_plain_background_sampling() -> None:
    generator = torch.Generator().manual_seed(22)
    background = torch.randn(200, 5, generator=generator)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = background[0] + 1.0
    lime(model, x, background=background, n_samples=1000)  # a first call on a CPU tunes the batch plan
    first = lime(model, x, background=background, discretize=True, n_samples=300, seed=3)
    again = lime(model, x, background=background, discretize=True, n_samples=300, seed=3)
    plain = lime(model, x, background=background, n_samples=300, seed=3)
    assert torch.equal(first.weights, again.weights)
    assert not torch.equal(first.weights, plain.weights)


def test_discretize_needs_rows_and_a_background() -> None:
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="discretize=True applies to tabular rows with a background"):
        lime(model, torch.zeros(3), discretize=True, baseline="zero")
    cnn, image = _cnn_and_image(size=16, seed=1)
    with pytest.raises(ValueError, match="got an image"):
        lime(cnn, image, background=image[None], discretize=True, n_segments=4)
    with pytest.raises(TypeError, match="discretize must be True or False"):
        lime(model, torch.zeros(3), discretize="yes")
