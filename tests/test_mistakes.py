"""The mistakes people make with real models get a clear error or warning, never a silent wrong answer."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from torch import nn

import livexai
from livexai.widgets._runner import Runner


def small_cnn(channels: int = 3, outputs: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, outputs),
    ).eval()


X = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))


class NanOnDarkInputs(nn.Module):
    """Returns NaN for inputs whose mean is low (as a log of a value that reaches 0 would)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = small_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.inner(x)
        dark = x.mean(dim=(1, 2, 3)) < 0.45
        return torch.where(dark[:, None], torch.full_like(scores, float("nan")), scores)


def test_non_finite_scores_on_perturbed_inputs_are_an_error_that_counts_them() -> None:
    with pytest.raises(ValueError, match=r"NaN or infinite scores for \d+ of \d+ inputs"):
        livexai.lime(NanOnDarkInputs(), X, baseline="zero", n_segments=8, n_samples=100)


def test_a_widget_shows_non_finite_scores_as_an_error_and_keeps_working() -> None:
    widget = livexai.LimeWidget(
        NanOnDarkInputs(), X, baseline="zero", n_segments=8, n_samples=100, runner=Runner()
    )
    widget.wait(60)
    assert widget.status == "error" and "NaN or infinite scores" in widget.error
    widget.baseline = "blur"  # blurred regions keep the mean: the model answers
    widget.wait(60)
    assert widget.status == "idle" and widget.explanation is not None


def test_integer_images_are_refused_with_how_to_convert() -> None:
    pixels = (X * 255).round().to(torch.uint8)
    with pytest.raises(TypeError, match=r"uint8 .*x\.float\(\) / 255"):
        livexai.lime(small_cnn(), pixels)


def test_a_function_calling_a_training_module_warns() -> None:
    module = small_cnn().train()
    with pytest.warns(UserWarning, match="training mode"):
        livexai.lime(lambda batch: module(batch), X, n_segments=6, n_samples=40)


def test_hugging_face_style_outputs_are_unwrapped() -> None:
    model = small_cnn()

    class WithLogits(nn.Module):
        def __init__(self, as_dict: bool) -> None:
            super().__init__()
            self.inner, self.as_dict = model, as_dict

        def forward(self, pixel_values: torch.Tensor) -> object:
            logits = self.inner(pixel_values)
            return (
                {"logits": logits}
                if self.as_dict
                else types.SimpleNamespace(logits=logits, hidden_states=None)
            )

    plain = livexai.lime(model, X, n_segments=6, n_samples=60)
    for as_dict in (True, False):
        wrapped = livexai.lime(WithLogits(as_dict), X, n_segments=6, n_samples=60)
        torch.testing.assert_close(wrapped.weights, plain.weights)


class ShiftsItsInput(nn.Module):
    """Changes its input in place, as ``x += 0.5`` inside ``forward`` would."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = small_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x += 0.5
        return self.inner(x)


def test_a_model_that_changes_its_input_never_changes_the_callers() -> None:
    model = ShiftsItsInput()
    x = X.clone()
    result = livexai.lime(model, x, n_segments=6, n_samples=60)
    assert torch.equal(x, X)
    with torch.no_grad():
        expected = float(model.inner(X[None] + 0.5)[0, result.target])
    assert result.prediction == pytest.approx(expected, rel=1e-6)
    livexai.lime(model, x, n_segments=6, n_samples=60)  # a second call (cached f(x)) sees the same input
    assert torch.equal(x, X)


def test_shapes_that_are_not_one_input_say_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"greyscale image as \(1, H, W\)"):
        livexai.lime(small_cnn(channels=3), torch.rand(16, 16))


def test_an_h_by_w_image_is_one_channel_where_the_model_takes_one() -> None:
    model, image = small_cnn(channels=1), torch.rand(16, 16, generator=torch.Generator().manual_seed(2))
    plain = livexai.lime(model, image, n_segments=6, n_samples=60)
    torch.testing.assert_close(
        plain.weights, livexai.lime(model, image[None], n_segments=6, n_samples=60).weights
    )
    assert livexai.grad_cam(model, image, layer="0").attributions.shape == (16, 16)


def test_channels_last_images_are_named_as_such() -> None:
    with pytest.raises(ValueError, match=r"C = 3; got \(16, 16, 3\), which looks like \(H, W, C\)"):
        livexai.lime(small_cnn(), X.permute(1, 2, 0).contiguous())


def test_a_model_on_the_meta_device_is_refused() -> None:
    with torch.device("meta"):
        model = small_cnn()
    with pytest.raises(ValueError, match="meta device"):
        livexai.lime(model, X)


def test_torchscript_modules_are_refused_by_layer_methods_and_work_elsewhere() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit; people still use it
        traced = torch.jit.trace(small_cnn(), X[None])
    with pytest.raises(TypeError, match="TorchScript"):
        livexai.layers(traced, X)
    with pytest.raises(TypeError, match="TorchScript"):
        livexai.grad_cam(traced, X, layer="0")
    assert livexai.lime(traced, X, n_segments=6, n_samples=40).weights.abs().sum() > 0


def test_probabilities_of_one_output_or_of_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="one output"):
        livexai.lime(small_cnn(outputs=1), X, output="probs", n_segments=6, n_samples=40)
    already = nn.Sequential(small_cnn(), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="already returns probabilities"):
        livexai.lime(already, X, output="probs", n_segments=6, n_samples=40)


def test_mask_on_a_tabular_result_says_what_it_needs() -> None:
    model = nn.Sequential(nn.Linear(5, 3)).eval()
    row = torch.rand(5)
    result = livexai.lime(model, row, baseline="zero", n_samples=60)
    with pytest.raises(ValueError, match=r"tabular row has no superpixels.*top_features"):
        result.mask()
