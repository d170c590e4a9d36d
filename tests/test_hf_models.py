"""Models nobody here wrote: Hugging Face image classifiers built from config objects (random weights, nothing
downloaded), passed directly, in the training mode ``from_config`` leaves them in.

Every method and the image widgets must give maps that are finite and not degenerate, pick a default layer that
is a map over the image and depends on it, and leave the model exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import assert_unchanged, snapshot
from torch import nn

import livexai
from livexai.widgets._runner import Runner

transformers = pytest.importorskip("transformers")

SIZE = 32


def vit() -> nn.Module:
    config = transformers.ViTConfig(
        image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=4,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


def convnext() -> nn.Module:
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=4)
    return transformers.ConvNextForImageClassification(config)


def swin() -> nn.Module:
    config = transformers.SwinConfig(
        image_size=SIZE,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=4,
        num_labels=4,
    )
    return transformers.SwinForImageClassification(config)


def resnet() -> nn.Module:
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    return transformers.ResNetForImageClassification(config)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "vit": vit,
    "convnext": convnext,
    "swin": swin,
    "resnet": resnet,
}
X = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
BACKGROUND = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


def assert_readable(attributions: torch.Tensor, what: str) -> None:
    """A map a person can read: finite, and not one value everywhere."""
    assert bool(torch.isfinite(attributions).all()), f"{what}: non-finite values"
    assert float(attributions.max() - attributions.min()) > 0, f"{what}: the map is constant"


@pytest.mark.parametrize("name", list(MODELS))
def test_the_default_layer_is_a_map_over_the_image_that_depends_on_it(name: str) -> None:
    model = build(name)
    layer = livexai.default_layer(model, X)
    info = {entry.name: entry for entry in livexai.layer_info(model, X)}[layer]
    assert info.kind in ("spatial", "tokens") and info.layout is not None, info
    assert info.layout.grid[0] > 1 and info.layout.grid[1] > 1
    assert all(
        info.kind != "constant"
        for info in livexai.layer_info(model, X)
        if info.name in livexai.layers(model, X)
    )
    result = livexai.grad_cam(model, X, layer=layer)
    assert_readable(result.attributions, f"{name} Grad-CAM at {layer}")
    assert "warning" not in result.params


def test_swin_never_offers_its_position_bias_and_convnext_reads_channels_last() -> None:
    swin_layers = livexai.layers(build("swin"), X)
    assert swin_layers and not any("relative_position_bias" in layer for layer in swin_layers)
    info = {entry.name: entry for entry in livexai.layer_info(build("convnext"), X)}
    pointwise = [entry for name, entry in info.items() if name.endswith("pwconv2")]
    assert pointwise and all(
        entry.layout is not None and entry.layout.kind == "channels_last" for entry in pointwise
    )


def test_a_vit_layer_after_the_class_token_is_read_says_why_its_map_is_empty() -> None:
    model = build("vit")
    result = livexai.grad_cam(model, X, layer="vit.layernorm")
    assert not bool(result.attributions.any())
    assert "zero everywhere" in result.params["warning"] and "earlier layer" in result.params["warning"]


METHODS: dict[str, Callable[[nn.Module], livexai.Explanation]] = {
    "lime": lambda m: livexai.lime(m, X, n_segments=12, n_samples=120),
    "kernel_shap": lambda m: livexai.kernel_shap(m, X, n_segments=8, n_samples=80),
    "gradient_shap": lambda m: livexai.gradient_shap(m, X, background=BACKGROUND, n_samples=8),
    "integrated_gradients": lambda m: livexai.integrated_gradients(m, X, n_steps=8),
    "saliency": lambda m: livexai.saliency(m, X),
    "deep_shap": lambda m: livexai.deep_shap(m, X, background=BACKGROUND),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_method_gives_a_readable_map_and_leaves_the_model_as_it_was(name: str) -> None:
    model = build(name)
    before = snapshot(model)
    for method, run in METHODS.items():
        assert_readable(run(model).attributions, f"{name} {method}")
    activations = livexai.activations(model, X, layer=livexai.default_layer(model, X))
    assert activations.maps.ndim == 3 and activations.maps.shape[1] > 1
    assert_unchanged(before, snapshot(model))


@pytest.mark.parametrize("name", list(MODELS))
def test_deep_shap_sums_exactly_through_attention_norms_and_gelu_with_no_operation_left_out(
    name: str,
) -> None:
    model = build(name)
    explanation = livexai.deep_shap(model, X, background=BACKGROUND)
    assert explanation.params["unsupported"] == []
    assert abs(explanation.params["delta"]) <= 1e-4 * (1 + abs(explanation.prediction))
    assert abs(explanation.prediction - explanation.base_value) > 1e-3


@pytest.mark.parametrize("name", list(MODELS))
def test_the_image_widgets_work_on_the_model_passed_directly(name: str) -> None:
    model = build(name)
    runner = Runner()
    widgets = [
        livexai.LimeWidget(model, X, n_segments=12, n_samples=100, runner=runner),
        livexai.ShapWidget(model, X, background=BACKGROUND, method="gradient", n_samples=8, runner=runner),
        livexai.LayerWidget(model, X, runner=runner),
        livexai.Explorer(model, torch.stack([X, BACKGROUND[0]]), n_segments=8, n_samples=60, runner=runner),
    ]
    for widget in widgets:
        result = widget.wait(120)
        assert widget.status == "idle", f"{type(widget).__name__}: {widget.error}"
        results = result.values() if isinstance(result, dict) else [result]
        for explanation in results:
            assert_readable(explanation.attributions, f"{name} {type(widget).__name__} {explanation.method}")
        widget.close()
    runner.shutdown()
    assert model.training  # from_config leaves the model in training mode; so do the widgets
