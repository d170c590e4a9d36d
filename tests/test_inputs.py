"""Input validation: every bad input gets a message saying what was wrong and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from livexai._call import prepare
from livexai._inputs import as_single_input, check_choice, check_float, check_int, display_image


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (np.zeros((3, 8, 8)), TypeError, r"x must be a torch.Tensor .* got ndarray"),
        ([1.0, 2.0], TypeError, "got list"),
        (torch.zeros(2, 3, 8, 8), ValueError, r"batch of 2 inputs\? Explain one input at a time"),
        (torch.zeros(2, 5), ValueError, "batch of 2 inputs"),
        (torch.zeros(1, 1, 3, 8, 8), ValueError, r"shape \(1, 1, 3, 8, 8\); expected an image"),
        (torch.tensor(1.0), ValueError, r"shape \(\); expected"),
        (torch.full((3, 8, 8), float("nan")), ValueError, "NaN or infinite"),
        (torch.zeros(3, 0, 8), ValueError, "empty"),
    ],
)
def test_bad_inputs(x: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        as_single_input(x)


def test_accepted_shapes() -> None:
    assert as_single_input(torch.zeros(3, 8, 8))[0].shape == (1, 3, 8, 8)
    assert as_single_input(torch.zeros(1, 3, 8, 8))[1] == "image"
    assert as_single_input(torch.zeros(5))[0].shape == (1, 5)
    assert as_single_input(torch.zeros(1, 5))[1] == "tabular"


def test_caller_tensor_is_not_modified() -> None:
    x = torch.rand(3, 8, 8)
    original = x.clone()
    prepare(tiny_model(), x, target=1)
    assert torch.equal(x, original)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (3, ValueError, r"target 3 is out of range: the model has 3 outputs \(0..2\)"),
        (-1, ValueError, "out of range"),
        ("cat", TypeError, "target must be an int class index or None"),
        (1.5, TypeError, "target must be an int"),
        (True, TypeError, "target must be an int"),
    ],
)
def test_bad_targets(target: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        prepare(tiny_model(), torch.rand(3, 8, 8), target=target)  # type: ignore[arg-type]


def test_target_none_is_the_top_class_and_tensor_targets_work() -> None:
    model = tiny_model()
    x = torch.rand(3, 8, 8)
    top = int(model.eval()(x[None]).argmax())
    assert prepare(model, x, target=None).target == top
    assert prepare(model, x, target=torch.tensor(2)).target == 2


def test_method_for_images_refuses_rows() -> None:
    with pytest.raises(ValueError, match=r"explains an image \(C, H, W\); got x with shape \(5,\)"):
        prepare(nn.Linear(5, 2), torch.rand(5), target=None, expect="image")


def test_display_image_derived_from_normalised_tensor() -> None:
    x = torch.randn(1, 3, 6, 7) * 2
    picture = display_image(None, x)
    assert picture.shape == (6, 7, 3)
    assert float(picture.min()) == 0.0 and float(picture.max()) == 1.0


def test_display_image_variants() -> None:
    x = torch.zeros(1, 3, 4, 5)
    uint8 = np.full((4, 5, 3), 255, dtype=np.uint8)
    assert torch.allclose(display_image(uint8, x), torch.ones(4, 5, 3))
    grey = np.full((4, 5), 0.5, dtype=np.float32)
    assert display_image(grey, x).shape == (4, 5, 3)
    chw = torch.full((3, 4, 5), 0.25)
    assert torch.allclose(display_image(chw, x), torch.full((4, 5, 3), 0.25))
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    assert display_image(rgba, x).shape == (4, 5, 3)
    assert display_image(None, torch.rand(1, 1, 4, 5)).shape == (4, 5, 3)


def test_display_image_size_mismatch() -> None:
    with pytest.raises(ValueError, match="image is 10x10 but the input is 4x5"):
        display_image(np.zeros((10, 10, 3)), torch.zeros(1, 3, 4, 5))


def test_parameter_checks() -> None:
    assert check_int("n_samples", 10, 1) == 10
    with pytest.raises(ValueError, match="n_segments must be between 2 and 100, got 1"):
        check_int("n_segments", 1, 2, 100)
    with pytest.raises(TypeError, match="must be an integer"):
        check_int("n_samples", 2.5, 1)
    with pytest.raises(ValueError, match="kernel_width must be greater than 0"):
        check_float("kernel_width", 0.0, 0.0, open_low=True)
    with pytest.raises(ValueError, match="baseline must be one of 'blur', 'mean'; got 'x'"):
        check_choice("baseline", "x", ("blur", "mean"))


def test_an_input_found_finite_is_checked_again_after_an_in_place_edit() -> None:
    x = torch.rand(3, 8, 8)
    as_single_input(x)
    as_single_input(x)  # the same unmodified tensor: remembered as finite
    x[0, 0, 0] = float("nan")  # an in-place edit bumps its version counter
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_single_input(x)
    y = torch.rand(2, 3, 8, 8)
    as_single_input(y[0])
    y[0, 1, 2, 3] = float("inf")  # an edit through the base reaches every view of it
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_single_input(y[0])
