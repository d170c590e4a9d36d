"""explain_classes (one explanation per class, one shared pass for DeepLIFT/DeepSHAP) and plot_grid (seed 004's
rows-of-images, columns-of-classes picture)."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

import livexai
from livexai.classes import default_classes

matplotlib.use("Agg")


def small_cnn(n_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(6 * 4 * 4, n_classes)).eval()


X = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
BACKGROUND = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("method", ["deep_shap", "deeplift"])
def test_one_shared_pass_gives_what_one_call_per_class_gives(method: str) -> None:
    model = small_cnn()
    options = {"background": BACKGROUND} if method == "deep_shap" else {"baseline": "blur"}
    adapter = livexai.ModelAdapter(model)
    shared = livexai.explain_classes(adapter, X, method, classes=[2, 0], **options)
    assert list(shared) == [2, 0]
    evaluations = adapter.n_evals
    for target, explanation in shared.items():
        alone = getattr(livexai, method)(model, X, target=target, **options)
        assert explanation.target == target and explanation.method == method
        torch.testing.assert_close(explanation.attributions, alone.attributions)
        assert explanation.base_value == pytest.approx(alone.base_value, abs=1e-6)
        assert explanation.prediction == pytest.approx(alone.prediction)
    # the references and the input went through the model once for both classes (plus the prediction)
    n_references = len(BACKGROUND) if method == "deep_shap" else 1
    assert evaluations == 1 + 2 * n_references


def test_other_methods_run_once_per_class() -> None:
    model = small_cnn()
    per_class = livexai.explain_classes(model, X, "saliency", classes=[1, 2])
    for target, explanation in per_class.items():
        torch.testing.assert_close(
            explanation.attributions, livexai.saliency(model, X, target=target).attributions
        )


def test_a_callable_method_is_called_with_each_target() -> None:
    seen: list[int] = []

    def mine(model: nn.Module, x: torch.Tensor, *, target: int) -> livexai.Explanation:
        seen.append(target)
        return livexai.saliency(model, x, target=target)

    livexai.explain_classes(small_cnn(), X, mine, classes=[0, 2])
    assert seen == [0, 2]


def test_default_classes_are_all_of_a_few_or_the_top_five() -> None:
    assert default_classes(torch.tensor([[0.1, 0.5, 0.2]])) == [0, 1, 2]
    scores = torch.arange(12.0)[None]
    assert default_classes(scores) == [11, 10, 9, 8, 7]
    assert list(livexai.explain_classes(small_cnn(4), X, "deep_shap", background=BACKGROUND)) == [0, 1, 2, 3]


def test_bad_classes_and_methods_are_named() -> None:
    model = small_cnn()
    with pytest.raises(ValueError, match="distinct"):
        livexai.explain_classes(model, X, "saliency", classes=[1, 1])
    with pytest.raises(ValueError, match="unknown method 'shapley'"):
        livexai.explain_classes(model, X, "shapley", classes=[1])
    with pytest.raises(ValueError, match=r"target 7 is not an output index: the model has outputs 0\.\.2"):
        livexai.explain_classes(model, X, "deep_shap", classes=[0, 7], background=BACKGROUND)


def test_the_grid_has_a_row_per_input_a_column_per_class_and_one_colour_scale() -> None:
    model = small_cnn()
    rows = [
        livexai.explain_classes(model, x, "deep_shap", classes=[0, 1, 2], background=BACKGROUND)
        for x in (X, BACKGROUND[0])
    ]
    figure = livexai.plot_grid(rows, classes=["cat", "dog", "bird"])
    axes = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["input", "cat", "dog", "bird"]
    maps = [
        image
        for ax in axes
        for image in ax.get_images()
        if image.get_array().ndim == 2 and image.cmap.N == 256
    ]
    limits = {(image.norm.vmin, image.norm.vmax) for image in maps if image.get_cmap().name != "gray"}
    assert len(limits) == 1  # every map on one symmetric scale
    ((low, high),) = limits
    assert low == -high and high > 0
    bold = [ax.xaxis.label.get_fontweight() for ax in axes[1:4]]
    best = max(range(3), key=lambda c: rows[0][c].prediction)
    assert bold[best] == "bold" and bold.count("bold") == 1


def test_the_grid_refuses_what_it_cannot_draw() -> None:
    with pytest.raises(TypeError, match="explain_classes"):
        livexai.plot_grid("not explanations")
    row = livexai.explain_classes(small_cnn(), X, "saliency", classes=[0])
    with pytest.raises(ValueError, match="one display image per row"):
        livexai.plot_grid([row], images=[X, X])
