"""The Explanation object: ranking, lime-style masks and plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from livexai import Explanation


def superpixel_explanation() -> Explanation:
    segments = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    weights = torch.tensor([0.5, -0.8, 0.1, 0.0])
    return Explanation(
        method="lime",
        target=1,
        attributions=weights[segments],
        prediction=2.0,
        weights=weights,
        segments=segments,
        image=torch.full((4, 4, 3), 0.5),
    )


def test_top_features_positive_only_and_by_magnitude() -> None:
    explanation = superpixel_explanation()
    assert explanation.top_features(5).tolist() == [0, 2]
    assert explanation.top_features(2, positive_only=False).tolist() == [1, 0]


def test_mask_like_lime_get_image_and_mask() -> None:
    explanation = superpixel_explanation()
    image, mask = explanation.mask(num_features=1, positive_only=True, hide_rest=True)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert np.all(image[mask == 0] == 0.0) and np.all(image[mask == 1] == 0.5)
    _, signed = explanation.mask(num_features=2, positive_only=False)
    assert signed[0, 0] == 1 and signed[0, 3] == -1 and signed[3, 3] == 0
    assert (
        explanation.image is not None and float(explanation.image.min()) == 0.5
    )  # the stored image is untouched


def test_pixel_map_has_no_superpixels() -> None:
    explanation = Explanation(method="grad_cam", target=0, attributions=torch.rand(4, 4), prediction=1.0)
    with pytest.raises(ValueError, match="grad_cam explanation is a pixel map with no superpixels"):
        explanation.top_features(3)
    with pytest.raises(ValueError, match=r"pixel map has no superpixels.*needs an image explained by lime"):
        explanation.mask()


def test_tabular_rank_uses_attributions() -> None:
    explanation = Explanation(
        method="kernel_shap", target=0, attributions=torch.tensor([0.1, -2.0, 1.0]), prediction=0.0
    )
    assert explanation.top_features(3, positive_only=False).tolist() == [1, 2, 0]


def test_plots_return_figures() -> None:
    figure = superpixel_explanation().plot()
    assert len(figure.axes) == 2  # the image and its colour bar
    rows = Explanation(
        method="kernel_shap",
        target=0,
        attributions=torch.tensor([0.1, -2.0]),
        prediction=0.0,
        feature_names=["a", "b"],
    )
    bars = rows.plot()
    assert [label.get_text() for label in bars.axes[0].get_yticklabels()] == ["a", "b"]


def test_results_holding_tensors_compare_by_identity() -> None:
    first = Explanation("fake", 0, torch.zeros(2, 2), 0.0)
    assert first == first and first != Explanation("fake", 0, torch.zeros(2, 2), 0.0)  # no tensor == raised
