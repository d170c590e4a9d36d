"""Comparison metrics, checked against scipy and hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from conftest import CountingModel, grid_segments, make_cnn
from scipy.stats import spearmanr
from torch import nn

from livexai import Explanation, ModelAdapter, saliency
from livexai._features import image_fill
from livexai._substrate import road_impute
from livexai.metrics import (
    agreement,
    deletion,
    energy_pointing_game,
    insertion,
    mass_inside,
    pointing_game,
    rank_correlation,
    segment_means,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_correlation_matches_scipy_with_ties(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 5, (8, 8), generator=generator).float()  # many ties
    b = a + torch.randn(8, 8, generator=generator)
    expected = spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic
    assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-10)


def test_rank_correlation_extremes() -> None:
    a = torch.arange(16.0).reshape(4, 4)
    assert rank_correlation(a, a**3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, torch.ones(4, 4)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        rank_correlation(a, torch.ones(3, 3))


def test_mass_inside() -> None:
    attributions = torch.tensor([[1.0, 3.0], [-5.0, 0.0]])
    mask = torch.tensor([[True, False], [True, False]])
    assert mass_inside(attributions, mask) == pytest.approx(0.25)
    assert mass_inside(-attributions.abs(), mask) == 0.0
    uniform = torch.ones(4, 4)
    square = torch.zeros(4, 4, dtype=torch.bool)
    square[:2, :2] = True
    assert mass_inside(uniform, square) == pytest.approx(0.25)


def test_segment_means_average_each_superpixel() -> None:
    segments = torch.tensor([[0, 0, 1], [2, 2, 1]])
    values = torch.tensor([[1.0, 3.0, -2.0], [5.0, 7.0, 4.0]])
    torch.testing.assert_close(segment_means(values, segments), torch.tensor([2.0, 1.0, 6.0]))
    with pytest.raises(ValueError, match="differ in shape"):
        segment_means(values, segments[:1])


def test_maps_of_one_story_agree_once_averaged_over_the_same_superpixels() -> None:
    """A superpixel map and a noisy per-pixel map of the same regions: pixel by pixel the ties and the noise hide
    the agreement, averaged over the superpixels it shows."""
    generator = torch.Generator().manual_seed(0)
    segments = torch.arange(16).repeat_interleave(16).reshape(16, 16)  # 16 horizontal bands
    strength = torch.randn(16, generator=generator)
    blocky = strength[segments]
    noisy = strength[segments] + 2.0 * torch.randn(16, 16, generator=generator)
    pixelwise = rank_correlation(blocky, noisy)
    averaged = rank_correlation(segment_means(blocky, segments), segment_means(noisy, segments))
    assert averaged > 0.9 and averaged > pixelwise + 0.2


# ----------------------------------------------------------------------------------------------------------------
# Deletion and insertion curves


class RegionModel(nn.Module):
    """Scores ``[s, -s]`` with ``s`` the mean of the channel sum over ``rows x cols`` only: it looks at one region."""

    def __init__(self, rows: slice, cols: slice) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = images[:, :, self.rows, self.cols].sum(1).mean((1, 2))
        return torch.stack([score, -score], dim=1)


class MeanModel(nn.Module):
    """Scores ``[mean of all values, 0]`` in float64: every curve point can be written down by hand."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = images.double().mean((1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def brute_force_curve(
    model: nn.Module, x: torch.Tensor, values: torch.Tensor, n_steps: int, fill: torch.Tensor, kind: str
) -> torch.Tensor:
    """The reference: a plain loop that masks one step at a time and runs the model on it, in probabilities."""
    order = torch.argsort(values.flatten(), descending=True, stable=True)
    target = int(model(x[None]).argmax())
    scores = []
    for step in range(n_steps + 1):
        count = round(step * values.numel() / n_steps + 1e-9)
        first = torch.zeros(values.numel(), dtype=torch.bool)
        first[order[:count]] = True
        first = first.reshape(values.shape)
        removed = first if kind == "deletion" else ~first
        image = torch.where(removed, fill, x)
        with torch.no_grad():
            scores.append(float(torch.softmax(model(image[None]), 1)[0, target]))
    return torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
@pytest.mark.parametrize("substrate", ["zero", "mean", "blur"])
def test_curves_match_a_brute_force_loop(kind: str, substrate: str) -> None:
    model = make_cnn().eval()
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(3, 8, 8, generator=generator)
    values = torch.randn(8, 8, generator=generator)
    fill = image_fill(x[None], substrate)[0]
    curve = (deletion if kind == "deletion" else insertion)(model, x, values, n_steps=16, substrate=substrate)
    expected = brute_force_curve(model, x, values, 16, fill, kind)
    torch.testing.assert_close(curve.scores, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(curve.fractions, torch.linspace(0, 1, 17, dtype=torch.float64))
    assert curve.kind == kind and curve.target == int(model(x[None]).argmax())


def test_auc_is_the_trapezoid_of_a_hand_computed_curve() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    values = torch.tensor([[4.0, 3.0], [2.0, 1.0]])  # removes 1, then 2, then 3, then 4
    down = deletion(MeanModel(), x, values, n_steps=4, substrate="zero", output="logits")
    assert down.scores.tolist() == [2.5, 2.25, 1.75, 1.0, 0.0]
    assert down.auc == 0.25 * (2.5 / 2 + 2.25 + 1.75 + 1.0)
    up = insertion(MeanModel(), x, values, n_steps=4, substrate="zero", output="logits")
    assert up.scores.tolist() == [0.0, 0.25, 0.75, 1.5, 2.5]
    assert up.auc == 0.25 * (0.25 + 0.75 + 1.5 + 2.5 / 2)


@pytest.mark.parametrize("substrate", ["blur", "zero", "road"])
def test_a_map_on_the_region_the_model_reads_is_the_most_faithful(substrate: str) -> None:
    model = RegionModel(slice(2, 6), slice(8, 14))
    x = 0.5 + torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    on_region = torch.zeros(16, 16)
    on_region[2:6, 8:14] = 1.0
    on_region += 0.01 * torch.rand(16, 16, generator=torch.Generator().manual_seed(1))
    random_map = torch.rand(16, 16, generator=torch.Generator().manual_seed(2))

    def aucs(curve_of) -> list[float]:
        return [curve_of(model, x, m, substrate=substrate).auc for m in (on_region, random_map, -on_region)]

    faithful, random_auc, inverse = aucs(deletion)
    assert faithful < random_auc and faithful < inverse
    faithful, random_auc, inverse = aucs(insertion)
    assert faithful > random_auc and faithful > inverse


def superpixel_explanation(weights: torch.Tensor, segments: torch.Tensor) -> Explanation:
    """A LIME-like explanation: one weight per superpixel, painted on them."""
    return Explanation("lime", 0, weights[segments], 0.0, weights=weights, segments=segments)


def test_superpixel_explanations_remove_whole_superpixels() -> None:
    segments = grid_segments(8, 8, 2, 2)
    weights = torch.tensor([0.1, 3.0, -1.0, 2.0])
    explanation = superpixel_explanation(weights, segments)
    x = torch.arange(64, dtype=torch.float64).reshape(1, 8, 8)
    curve = deletion(MeanModel(), x, explanation, n_steps=4, substrate="zero", output="logits")
    kept = [segments != label for label in (1, 3, 0, 2)]
    expected = [float(x.mean())]
    mask = torch.ones(8, 8, dtype=torch.bool)
    for keep in kept:
        mask &= keep
        expected.append(float((x[0] * mask).mean()))
    assert curve.scores.tolist() == pytest.approx(expected)
    assert curve.n_evals == 5  # f(x) and four steps
    many = deletion(MeanModel(), x, explanation, n_steps=8, substrate="zero", output="logits")
    assert many.n_evals == 5  # steps showing the same image are evaluated once


def test_n_evals_counts_every_model_call() -> None:
    counting = CountingModel(make_cnn().eval())
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    for curve_of in (deletion, insertion):
        counting.reset()
        curve = curve_of(counting, x, torch.randn(8, 8), n_steps=20, substrate="road")
        assert curve.n_evals == sum(counting.sizes) == 21
        assert curve.scores.shape == curve.fractions.shape == (21,)
    adapter = ModelAdapter(counting, output="probs")
    deletion(adapter, x, torch.randn(8, 8), n_steps=5)
    counting.reset()
    cached = deletion(adapter, x, torch.randn(8, 8), n_steps=5)  # f(x) is cached by the adapter
    assert cached.n_evals == sum(counting.sizes) == 5


def test_the_explanation_target_is_scored_unless_another_is_asked() -> None:
    model = make_cnn().eval()
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    explanation = saliency(model, x, target=2)
    assert deletion(model, x, explanation, n_steps=4).target == 2
    assert deletion(model, x, explanation, n_steps=4, target=1).target == 1
    assert deletion(model, x, explanation.attributions, n_steps=4).target == int(model(x[None]).argmax())


def test_road_imputes_a_linear_ramp_exactly() -> None:
    rows, cols = torch.meshgrid(
        torch.arange(24, dtype=torch.float64), torch.arange(20, dtype=torch.float64), indexing="ij"
    )
    ramp = torch.stack([0.3 * cols - 0.2 * rows + 1.0, 2.0 - 0.1 * rows, 0.05 * cols])[
        None
    ]  # linear in float64
    removed = torch.zeros(2, 1, 24, 20, dtype=torch.bool)
    removed[0, :, 3:20, 4:17] = True  # one large block
    removed[1, :, 2:22, 2:18] = torch.rand(20, 16, generator=torch.Generator().manual_seed(0)) < 0.8
    exact = road_impute(ramp.expand(2, -1, -1, -1), removed)
    torch.testing.assert_close(exact, ramp.expand(2, -1, -1, -1), atol=1e-8, rtol=0)
    images = ramp.float().expand(2, -1, -1, -1)
    torch.testing.assert_close(road_impute(images, removed), images, atol=1e-3, rtol=0)
    noisy = road_impute(images, removed, noise=0.01, seeds=[0, 1])
    difference = (noisy - images)[removed.expand_as(images)]
    assert 0.005 < float(difference.std()) < 0.02  # the noise, and only the noise
    assert torch.equal(noisy[~removed.expand_as(images)], images[~removed.expand_as(images)])


def test_road_fills_an_image_with_nothing_known_with_zeros() -> None:
    images = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        road_impute(images, torch.ones(1, 1, 6, 6, dtype=torch.bool)), torch.zeros_like(images)
    )


def test_curve_arguments_are_checked() -> None:
    model = make_cnn().eval()
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match=r"unknown substrate 'noise'.*'blur', 'zero', 'mean', 'road'"):
        deletion(model, x, torch.rand(8, 8), substrate="noise")
    with pytest.raises(TypeError, match="substrate must be"):
        deletion(model, x, torch.rand(8, 8), substrate=[0.0])
    with pytest.raises(ValueError, match="n_steps must be at least 1"):
        insertion(model, x, torch.rand(8, 8), n_steps=0)
    with pytest.raises(ValueError, match=r"map is \(4, 4\) but x is 8x8"):
        deletion(model, x, torch.rand(4, 4))
    with pytest.raises(TypeError, match="Explanation or an \\(H, W\\) map"):
        deletion(model, x, [[1.0]])


# ----------------------------------------------------------------------------------------------------------------
# Pointing games and agreement


def peak_map(row: int, col: int, size: int = 10) -> torch.Tensor:
    values = torch.rand(size, size, generator=torch.Generator().manual_seed(0)) * 0.5
    values[row, col] = 1.0
    return values


def test_pointing_game_hits_misses_and_tolerance() -> None:
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:5, 2:5] = True
    assert pointing_game(peak_map(3, 3), mask)
    assert not pointing_game(peak_map(3, 7), mask)  # 3 pixels right of the mask
    assert not pointing_game(peak_map(3, 7), mask, tolerance=2.9)
    assert pointing_game(peak_map(3, 7), mask, tolerance=3)
    assert not pointing_game(peak_map(7, 7), mask, tolerance=3)  # diagonal distance sqrt(18) > 3
    assert pointing_game(peak_map(7, 7), mask, tolerance=4.3)
    assert pointing_game(peak_map(3, 3).numpy(), mask.numpy().astype(int))


def test_pointing_game_needs_every_peak_inside() -> None:
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:5, 2:5] = True
    assert not pointing_game(torch.ones(10, 10), mask)  # a constant map points nowhere
    plateau = peak_map(3, 3)
    plateau[8, 8] = 1.0
    assert not pointing_game(plateau, mask)
    explanation = Explanation(method="x", target=0, attributions=peak_map(2, 4), prediction=0.0)
    assert pointing_game(explanation, mask)


def test_masks_must_be_neither_empty_nor_everything() -> None:
    values = peak_map(3, 3)
    for bad, message in (
        (torch.zeros(10, 10, dtype=torch.bool), "empty"),
        (torch.ones(10, 10), "whole image"),
    ):
        with pytest.raises(ValueError, match=message):
            pointing_game(values, bad)
        with pytest.raises(ValueError, match=message):
            energy_pointing_game(values, bad)
    with pytest.raises(ValueError, match="shape"):
        pointing_game(values, torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        pointing_game(values, torch.full((10, 10), 0.5))
    with pytest.raises(ValueError, match="tolerance must be at least 0"):
        pointing_game(values, values > 0.9, tolerance=-1)


def test_energy_pointing_game() -> None:
    values = torch.tensor([[1.0, 3.0], [-5.0, 0.0]])
    mask = torch.tensor([[True, False], [True, False]])
    assert energy_pointing_game(values, mask) == pytest.approx(0.25)
    assert energy_pointing_game(-values.abs(), mask) == 0.0


def test_agreement_on_superpixels_and_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    segments = grid_segments(8, 8, 2, 4)
    weights = torch.randn(8, generator=generator)
    blocky = superpixel_explanation(weights, segments)
    noisy = weights[segments] + 0.3 * torch.randn(8, 8, generator=generator)
    matrix = agreement([noisy, blocky, None])
    assert matrix.shape == (3, 3) and matrix[0, 0] == pytest.approx(1.0)
    assert float(matrix[0, 1]) == pytest.approx(
        rank_correlation(segment_means(noisy, segments), weights), abs=1e-6
    )
    assert torch.isnan(matrix[2]).all() and torch.isnan(matrix[:, 2]).all()
    pixels = agreement([noisy, blocky], on="pixels")
    assert float(pixels[0, 1]) == pytest.approx(rank_correlation(noisy, weights[segments]), abs=1e-6)
    assert float(agreement([noisy, noisy], segments=segments.numpy())[0, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs superpixels"):
        agreement([noisy, noisy])
    with pytest.raises(ValueError, match="on must be"):
        agreement([noisy], on="regions")
