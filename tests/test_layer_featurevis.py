"""LayerWidget's "what does this channel look for": the optimised image streams in and equals the core's, the
given images that excite the channel most equal top_activating's, and a click or a toggle restarts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import livexai
from livexai import datasets, models
from livexai.widgets._serialize import from_wire

LAYER = "features.conv3"


@pytest.fixture(scope="module")
def data():
    return datasets.shapes(24, seed=0)


def make(data, **options):
    return livexai.LayerWidget(
        models.shapes_cnn(), data.images[0], images=data.images, layer=LAYER, method="activations", **options
    )


def test_the_strongest_channel_is_visualised_as_the_core_does_with_its_top_examples(data) -> None:
    widget = make(data, steps=40)
    partial_steps: list[int] = []
    widget.observe(
        lambda change: (
            change["new"]
            and change["new"]["status"] == "partial"
            and partial_steps.append(change["new"]["step"])
        ),
        names=["featurevis"],
    )
    activations = widget.wait(60)
    fv = widget.featurevis
    channel = int(activations.ranking[0])
    assert fv["status"] == "done" and fv["channel"] == channel and fv["step"] == 40
    model = models.shapes_cnn()
    direct = livexai.feature_visualization(model, LAYER, channel, steps=40, size=64)
    np.testing.assert_allclose(from_wire(fv["image"]), (direct.images[0] * 255).round().numpy(), atol=1)
    assert fv["activation"] == pytest.approx(float(direct.activation[0]), rel=1e-4)
    assert fv["activation"] > 3 * fv["random_activation"]
    top = livexai.top_activating(model, LAYER, channel, data.images, k=8)
    assert fv["top_indices"] == top.indices.tolist()
    np.testing.assert_allclose(fv["top_values"], top.values.numpy(), rtol=1e-4)
    assert from_wire(fv["top"]).shape == (8, 64, 64, 3)
    assert len(set(partial_steps)) >= 5, partial_steps  # the image streams in
    widget.close()


def test_a_clicked_channel_and_the_naive_toggle_restart_the_visualisation(data) -> None:
    widget = make(data, steps=16)
    widget.wait(60)
    widget.set_state({"channel": 3})
    widget.wait(60)
    assert widget.featurevis["channel"] == 3 and widget.featurevis["optimisation"] == "robust"
    robust = from_wire(widget.featurevis["image"])
    widget.set_state({"optimisation": "naive"})
    widget.wait(60)
    fv = widget.featurevis
    assert fv["channel"] == 3 and fv["optimisation"] == "naive" and fv["status"] == "done"
    direct = livexai.feature_visualization(
        models.shapes_cnn(), LAYER, 3, steps=16, size=64, transforms=None, parameterization="pixel"
    )
    np.testing.assert_allclose(from_wire(fv["image"]), (direct.images[0] * 255).round().numpy(), atol=1)
    assert not np.array_equal(robust, from_wire(fv["image"]))
    widget.set_state({"method": "grad_cam"})
    widget.wait(60)
    assert widget.featurevis is None  # only activations have channels
    widget.close()


def test_without_images_only_the_optimised_image_is_shown_and_bad_images_are_named(data) -> None:
    widget = livexai.LayerWidget(
        models.shapes_cnn(), data.images[0], layer=LAYER, method="activations", steps=8
    )
    widget.wait(60)
    assert widget.featurevis["top"] is None and widget.featurevis["image"] is not None
    widget.close()
    with pytest.raises(ValueError, match=r"images must be model-ready images \(N, 3, 64, 64\)"):
        livexai.LayerWidget(models.shapes_cnn(), data.images[0], images=torch.rand(2, 3, 32, 32))
