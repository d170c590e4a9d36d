"""Model parameter randomisation (Adebayo et al.): known verdicts, the user's model left alone, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, make_cnn, snapshot

from livexai import datasets, models
from livexai.sanity import PASS_BELOW, SanityReport, sanity_check, ssim


def edge_detector(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """A "method" that ignores the model: the gradient magnitude of the image."""
    grey = x.mean(0)
    return F.pad((grey[1:, 1:] - grey[:-1, 1:]).abs() + (grey[1:, 1:] - grey[1:, :-1]).abs(), (1, 0, 1, 0))


@pytest.fixture(scope="module")
def shapes_case() -> tuple[torch.nn.Module, torch.Tensor]:
    images, _, _ = datasets.shapes(2)
    return models.shapes_cnn(), images[0]


@pytest.mark.parametrize("method", ["grad_cam", "saliency"])
def test_randomising_the_shapes_cnn_changes_trustworthy_maps(shapes_case, method: str) -> None:
    model, x = shapes_case
    before = snapshot(model)
    report = sanity_check(model, x, method)
    assert_unchanged(before, snapshot(model))
    assert isinstance(report, SanityReport) and report.passed
    assert report.layers[0] == "classifier" and report.layers[-1] == "features.conv1"
    assert len(report.similarity) == len(report.ssim) == len(report.maps) == len(report.layers)
    assert report.similarity[-1] < PASS_BELOW < 1.0
    assert max(report.similarity[:2]) > report.similarity[-1]  # lower once the whole network is random
    assert all(-1.0 <= value <= 1.0 for value in report.ssim)
    assert report.maps[0].device.type == "cpu" and report.maps[0].shape == x.shape[1:]
    assert "passes" in report.summary


def test_a_method_that_ignores_the_model_fails(shapes_case) -> None:
    model, x = shapes_case
    report = sanity_check(model, x, edge_detector, mode="independent")
    assert not report.passed
    assert report.similarity == pytest.approx([1.0] * len(report.layers))
    assert report.ssim == pytest.approx([1.0] * len(report.layers))
    assert "FAILS" in report.summary and "edge detector" in report.summary


def test_awkward_model_is_bit_identical_in_both_modes() -> None:
    model = make_cnn()  # training mode, batch norm and dropout
    model[0].weight.grad = torch.ones_like(model[0].weight)
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    rng = torch.get_rng_state()
    for mode in ("cascading", "independent"):
        report = sanity_check(model, x, "integrated_gradients", mode=mode, n_steps=8)
        assert report.layers == ["6", "1", "0"]
    assert_unchanged(before, snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is not consumed either


def test_the_seed_fixes_the_randomisation(shapes_case) -> None:
    model, x = shapes_case
    first = sanity_check(model, x, "grad_cam", layer="features.conv3", seed=1)
    again = sanity_check(model, x, "grad_cam", layer="features.conv3", seed=1)
    assert first.similarity == again.similarity
    assert first.original.shape == x.shape[1:]


def test_ssim_of_scaled_maps() -> None:
    a = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    assert ssim(a, 3.0 * a + 1.0) == pytest.approx(1.0)  # min-max scaling makes them equal
    assert ssim(a, 1.0 - a) < 0.0
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, a[:4])


def test_bad_arguments_say_what_is_expected(shapes_case) -> None:
    model, x = shapes_case
    with pytest.raises(
        ValueError, match=r"unknown method 'occlusion'.*'grad_cam'.*'deep_shap'.*'kernel_shap'"
    ):
        sanity_check(model, x, "occlusion")
    with pytest.raises(ValueError, match=r"unknown mode 'random'.*'cascading', 'independent'"):
        sanity_check(model, x, "saliency", mode="random")
    with pytest.raises(ValueError, match="unknown similarity"):
        sanity_check(model, x, "saliency", similarity="pearson")
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        sanity_check(lambda batch: model(batch), x, "saliency")
    with pytest.raises(TypeError, match="expected an Explanation or an"):
        sanity_check(model, x, lambda m, image, target: "a map")


def test_iter_sanity_check_reports_each_step_and_ends_with_sanity_check(shapes_case) -> None:
    from livexai.sanity import iter_sanity_check

    model, x = shapes_case
    reports = list(iter_sanity_check(model, x, "grad_cam"))
    final = sanity_check(model, x, "grad_cam")
    assert [len(report.layers) for report in reports] == list(range(1, len(final.layers) + 1))
    assert all(report.n_layers == len(final.layers) for report in reports)
    assert reports[-1].similarity == pytest.approx(final.similarity)
    assert reports[-1].summary == final.summary and "passes" in final.summary
    assert reports[2].similarity == pytest.approx(final.similarity[:3])  # a partial report: the steps so far
    assert reports[2].summary.startswith(f"grad_cam: 3 of {len(final.layers)} layers randomised so far")
