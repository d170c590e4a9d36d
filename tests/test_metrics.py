"""Comparison metrics, checked against scipy and hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from livexai.metrics import mass_inside, rank_correlation, segment_means


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
