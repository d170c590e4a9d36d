"""Every public method leaves the user's model exactly as it found it, whatever state it was in."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import assert_unchanged, hook_count, snapshot
from torch import nn

import livexai


def awkward_model() -> nn.Module:
    """Training mode with one frozen batch norm in eval, dropout, a frozen layer and a stale gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    model.train()
    model[5].eval()
    model[0].weight.requires_grad_(False)
    model[9].weight.grad = torch.full_like(model[9].weight, 0.5)
    return model


X = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
BACKGROUND = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))

METHODS: dict[str, Callable[[nn.Module], object]] = {
    "lime": lambda m: livexai.lime(m, X, n_segments=6, n_samples=64),
    "kernel_shap": lambda m: livexai.kernel_shap(m, X, n_segments=6, n_samples=40),
    "kernel_shap background": lambda m: livexai.kernel_shap(
        m, X, background=BACKGROUND, n_segments=6, n_samples=40
    ),
    "grad_cam": lambda m: livexai.grad_cam(m, X, layer="4"),
    "grad_cam++": lambda m: livexai.grad_cam(m, X, layer="4", plus_plus=True),
    "activations": lambda m: livexai.activations(m, X, layer="4"),
    "layers": lambda m: livexai.layers(m, X),
    "saliency": lambda m: livexai.saliency(m, X, smooth_samples=4),
    "integrated_gradients": lambda m: livexai.integrated_gradients(m, X, n_steps=8),
    "gradient_shap": lambda m: livexai.gradient_shap(m, X, background=BACKGROUND, n_samples=8),
    "deeplift": lambda m: livexai.deeplift(m, X, baseline="blur"),
    "deep_shap": lambda m: livexai.deep_shap(m, X, background=BACKGROUND),
    "feature_visualization": lambda m: livexai.feature_visualization(m, "4", [0, 1], steps=3, size=16),
    "top_activating": lambda m: livexai.top_activating(m, "4", 0, BACKGROUND, k=2),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_model_is_bit_identical_afterwards(name: str) -> None:
    model = awkward_model()
    before = snapshot(model)
    x_before = X.clone()
    METHODS[name](model)
    assert_unchanged(before, snapshot(model))
    assert hook_count(model) == 0
    assert torch.equal(X, x_before)  # the input is never written either
