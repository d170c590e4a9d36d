"""Reduced precision: ``ModelAdapter(model, autocast=...)`` runs forward passes without gradients under autocast."""

from __future__ import annotations

import pytest
import torch
from conftest import SmallResNet, grid_segments, make_cnn

from livexai import ModelAdapter, grad_cam, kernel_shap, lime
from livexai.metrics import rank_correlation


def test_forward_passes_run_under_autocast_and_come_back_in_the_model_dtype() -> None:
    model = make_cnn().eval()
    inputs = torch.rand(100, 3, 16, 16)
    adapter = ModelAdapter(model, autocast=torch.bfloat16)
    scores = adapter.evaluate(100, lambda a, b: inputs[a:b], input_shape=(3, 16, 16))
    with torch.no_grad():
        full = model(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = model(inputs)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, reduced.float(), rtol=0, atol=0)
    assert not torch.equal(scores, full)  # it really ran in bfloat16 ...
    torch.testing.assert_close(scores, full, rtol=0.05, atol=0.02)  # ... and stayed close


def test_probabilities_are_computed_in_full_precision_after_the_model() -> None:
    model = make_cnn().eval()
    x = torch.rand(1, 3, 16, 16)
    probs = ModelAdapter(model, output="probs", autocast=torch.bfloat16).scores(x)
    assert probs.dtype == torch.float32
    assert abs(float(probs.sum()) - 1.0) < 1e-6


@pytest.mark.parametrize("method", [lime, kernel_shap])
def test_perturbation_methods_agree_with_full_precision_and_say_they_used_autocast(method) -> None:
    model = make_cnn(seed=3).eval()
    torch.manual_seed(3)
    x = torch.rand(3, 16, 16)
    segments = grid_segments(16, 16, 3, 3)
    full = method(model, x, target=1, segments=segments, n_samples=300, seed=0)
    reduced = method(
        ModelAdapter(model, autocast=torch.bfloat16), x, target=1, segments=segments, n_samples=300, seed=0
    )
    assert reduced.params["autocast"] == "bfloat16"
    assert "autocast" not in full.params
    assert rank_correlation(reduced.weights, full.weights) > 0.9
    scale = float(full.weights.abs().max())
    assert float((reduced.weights - full.weights).abs().max()) < 0.1 * scale


def test_gradient_passes_stay_in_full_precision(resnet: SmallResNet, image: torch.Tensor) -> None:
    full = grad_cam(resnet, image, target=2, layer="layer2")
    reduced = grad_cam(ModelAdapter(resnet, autocast=torch.bfloat16), image, target=2, layer="layer2")
    torch.testing.assert_close(reduced.attributions, full.attributions, rtol=0, atol=0)


def test_a_reduced_precision_adapter_keeps_its_precision_in_another_output_space() -> None:
    model = make_cnn().eval()
    x = torch.rand(3, 16, 16)
    result = lime(
        ModelAdapter(model, autocast=torch.float16), x, target=0, output="probs", n_samples=64, n_segments=4
    )
    assert result.params["autocast"] == "float16" and result.params["output"] == "probs"


@pytest.mark.parametrize("bad", [torch.float32, torch.float64, "bf16", 16])
def test_autocast_takes_only_the_reduced_float_types(bad: object) -> None:
    with pytest.raises(ValueError, match=r"autocast must be torch\.bfloat16, torch\.float16 or None"):
        ModelAdapter(make_cnn(), autocast=bad)
