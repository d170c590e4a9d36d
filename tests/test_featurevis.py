"""Feature visualisation and dataset examples: known answers on hand-set filters and the shipped shapes CNN."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import hook_count
from torch import nn

import livexai
from livexai import datasets, models

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def shapes_model() -> nn.Module:
    return models.shapes_cnn()


@pytest.fixture(scope="module")
def shapes_images() -> torch.Tensor:
    return datasets.shapes(48, seed=3).images


def filter_model(weight: torch.Tensor) -> nn.Sequential:
    """One convolution with a hand-set filter ``(1, C, kh, kw)``, then ReLU: layer ``"1"`` is its response."""
    conv = nn.Conv2d(weight.shape[1], 1, tuple(weight.shape[-2:]), bias=False)
    conv.weight.data.copy_(weight)
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_red_filter_gives_a_red_image() -> None:
    model = filter_model(torch.tensor([1.0, -0.5, -0.5]).reshape(1, 3, 1, 1))
    vis = livexai.feature_visualization(model, "0", 0, steps=96, size=32)
    red, green, blue = vis.images.mean(dim=(0, 1, 2))
    assert red > green + 0.15 and red > blue + 0.15
    assert vis.activation[0] > 0.15 and vis.activation[0] >= 10 * vis.random_activation[0].abs()


def test_an_objective_off_everywhere_at_the_start_still_moves() -> None:
    """relu(r - g - b) is zero on the grey start image: without redirected ReLU gradients nothing would move."""
    model = filter_model(torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1))
    vis = livexai.feature_visualization(model, "1", 0, steps=24, size=16, parameterization="pixel")
    assert vis.objective_history[0, 0] == 0 and vis.activation[0] > 0.01


def test_redirection_comes_back_when_an_image_gets_no_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first steps ReLUs are plain, except in a step after one where an image got no gradient at all:
    with no redirected steps at the start, the all-off objective above must still move."""
    monkeypatch.setattr(livexai.featurevis, "_REDIRECT_STEPS", 0)
    model = filter_model(torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1))
    vis = livexai.feature_visualization(model, "1", 0, steps=24, size=16, parameterization="pixel")
    assert vis.objective_history[0, 0] == 0 and vis.activation[0] > 0.01
    assert hook_count(model) == 0


def test_horizontal_stripe_filter_gives_horizontal_stripes() -> None:
    """A filter that is a cosine down the image finds structure whose power lies along the vertical frequencies."""
    wave = torch.cos(torch.arange(6) * 2 * torch.pi / 6)
    model = filter_model(wave.reshape(1, 1, 6, 1).expand(1, 3, 6, 1).contiguous())
    vis = livexai.feature_visualization(model, "0", 0, steps=48, size=32)
    grey = vis.images[0].mean(dim=-1)
    power = torch.fft.fft2(grey - grey.mean()).abs().pow(2)
    vertical, horizontal = power[1:, 0].sum(), power[0, 1:].sum()  # frequencies down vs across the image
    assert vertical > 10 * horizontal


def test_channels_far_above_random_and_dataset_examples(
    shapes_model: nn.Module, shapes_images: torch.Tensor
) -> None:
    vis = livexai.feature_visualization(
        shapes_model, "features.relu4", [0, 5, 9], steps=48, size=64, examples=shapes_images
    )
    assert vis.images.shape == (3, 64, 64, 3) and vis.inputs.shape == (3, 3, 64, 64)
    assert vis.channels == [0, 5, 9] and vis.n_steps == 48 and vis.objective_history.shape == (48, 3)
    assert vis.example_activation is not None
    assert (vis.activation > 2 * vis.example_activation).all()
    assert (vis.activation > 5 * vis.random_activation).all()
    history = vis.objective_history
    assert (history[-8:].mean(0) > 3 * history[:8].mean(0).clamp_min(0.1)).all()  # the objective rises


def test_neuron_and_negative_objectives(shapes_model: nn.Module) -> None:
    up = livexai.feature_visualization(
        shapes_model, "features.conv4", 3, objective="neuron", steps=24, size=32
    )
    down = livexai.feature_visualization(
        shapes_model, "features.conv4", 3, objective="-neuron", steps=24, size=32
    )
    # values are reported in the objective's own sign: both climb above the random image's
    assert up.activation[0] > up.random_activation[0] + 5
    assert down.activation[0] > down.random_activation[0] + 1
    assert torch.equal(up.random_activation, -down.random_activation)
    assert down.objective_history[-4:].mean() > down.objective_history[:4].mean()


def test_class_objective_is_classified_as_that_class(shapes_model: nn.Module) -> None:
    vis = livexai.feature_visualization(shapes_model, None, [0, 1, 2, 3], steps=48, size=64)
    with torch.no_grad():
        probs = torch.softmax(shapes_model(vis.inputs), dim=1)
    assert (probs.diagonal() >= 0.9).all()


def test_naive_version_is_high_frequency_noise(shapes_model: nn.Module) -> None:
    """Without the recipe the image is mostly high frequencies; with it, mostly low ones."""

    def high_share(images: torch.Tensor) -> float:
        grey = images.mean(dim=-1)
        power = torch.fft.fft2(grey - grey.mean(dim=(1, 2), keepdim=True)).abs().pow(2)
        frequency = torch.fft.fftfreq(grey.shape[-1]).abs()
        high = (frequency[:, None] > 0.25) | (frequency[None, :] > 0.25)
        return float(power[:, high].sum() / power.sum())

    args = (shapes_model, "features.relu3", [0, 1])
    robust = livexai.feature_visualization(*args, steps=32, size=32)
    naive = livexai.feature_visualization(*args, steps=32, size=32, transforms=None, parameterization="pixel")
    assert high_share(naive.images) > 2 * high_share(robust.images)


def test_seeded_and_normalisation_mapped_back() -> None:
    model = filter_model(torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    first = livexai.feature_visualization(model, "1", 0, steps=4, size=16, mean=mean, std=std, seed=3)
    again = livexai.feature_visualization(model, "1", 0, steps=4, size=16, mean=mean, std=std, seed=3)
    other = livexai.feature_visualization(model, "1", 0, steps=4, size=16, mean=mean, std=std, seed=4)
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    pixels = first.inputs * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    torch.testing.assert_close(pixels.permute(0, 2, 3, 1), first.images)


class Normalize(nn.Module):
    """Shaped like torchvision's ``transforms.Normalize`` (not installed here): a module with ``mean``, ``std``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]


class Compose:
    """Shaped like torchvision's ``transforms.Compose``: the steps in a ``transforms`` list."""

    def __init__(self, transforms: list[object]) -> None:
        self.transforms = transforms

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.transforms:
            x = step(x)
        return x


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def hugging_face_processor(**kwargs: object) -> object:
    transformers = pytest.importorskip("transformers")
    return transformers.ViTImageProcessor(image_mean=list(MEAN), image_std=list(STD), **kwargs)


@pytest.mark.parametrize(
    "preprocess",
    [
        lambda: Normalize(MEAN, STD),
        lambda: Compose([lambda x: x * 2, Compose([Normalize(MEAN, STD)]), lambda x: x]),
        lambda: nn.Sequential(nn.Identity(), Normalize(MEAN, STD)),
        hugging_face_processor,
    ],
    ids=["normalize", "compose", "sequential", "hugging-face"],
)
def test_normalisation_read_from_preprocess(preprocess) -> None:
    model = filter_model(torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1))
    given = livexai.feature_visualization(model, "1", 0, steps=3, size=16, mean=MEAN, std=STD)
    read = livexai.feature_visualization(model, "1", 0, steps=3, size=16, preprocess=preprocess())
    torch.testing.assert_close(read.inputs, given.inputs)
    both = livexai.feature_visualization(model, "1", 0, steps=3, size=16, preprocess=preprocess(), mean=MEAN)
    torch.testing.assert_close(both.inputs, given.inputs)


def test_hugging_face_processor_without_normalisation_feeds_pixels() -> None:
    model = filter_model(torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1))
    vis = livexai.feature_visualization(
        model, "1", 0, steps=3, size=16, preprocess=hugging_face_processor(do_normalize=False)
    )
    torch.testing.assert_close(vis.inputs.permute(0, 2, 3, 1), vis.images)


@pytest.mark.parametrize(
    ("preprocess", "extra", "message"),
    [
        (Compose([lambda x: x]), {}, "could not read mean and std from preprocess=Compose"),
        (lambda x: x, {}, "or pass mean= and std= instead"),
        (Compose([Normalize(MEAN, STD), Normalize(MEAN, STD)]), {}, "2 normalisation steps"),
        (Normalize(MEAN, STD), {"std": (0.5, 0.5, 0.5)}, "std=(0.5, 0.5, 0.5) disagrees with the std read"),
        (Normalize(MEAN, (0.2, 0.2)), {}, "std must have 1 or 3 values"),
    ],
)
def test_unreadable_or_contradicting_preprocess(preprocess: object, extra: dict, message: str) -> None:
    model = filter_model(torch.ones(1, 3, 1, 1))
    with pytest.raises(ValueError, match=re.escape(message)):
        livexai.feature_visualization(model, "1", 0, steps=1, size=16, preprocess=preprocess, **extra)


def test_progress_true_draws_a_bar_in_place(
    shapes_model: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    vis = livexai.feature_visualization(shapes_model, "features.relu2", 1, steps=12, size=16, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("\rfeature_visualization [") and err.endswith("\n") and err.count("\n") == 1
    last = err.rstrip("\n").split("\r")[-1]
    assert "[" + "#" * 24 + "] 12/12" in last
    assert f"objective {float(vis.objective_history[-1].mean()):.4g}" in last
    with pytest.raises(TypeError, match="progress must be True"):
        livexai.feature_visualization(shapes_model, "features.relu2", 1, steps=1, progress="yes")


def test_progress_gets_partial_images_and_can_cancel(shapes_model: nn.Module) -> None:
    seen: list[livexai.FeatureVis] = []
    livexai.feature_visualization(shapes_model, "features.relu2", 1, steps=16, size=16, progress=seen.append)
    assert [vis.n_steps for vis in seen] == [2, 4, 6, 8, 10, 12, 14]
    assert all(vis.images.shape == (1, 16, 16, 3) for vis in seen)

    def cancel(_vis: livexai.FeatureVis) -> None:
        raise livexai.Cancelled

    with pytest.raises(livexai.Cancelled):
        livexai.feature_visualization(shapes_model, "features.relu2", 1, steps=16, size=16, progress=cancel)
    assert hook_count(shapes_model) == 0


def test_forward_stops_at_the_layer(shapes_model: nn.Module, shapes_images: torch.Tensor) -> None:
    later = []
    handle = shapes_model.features.conv3.register_forward_hook(lambda *_: later.append(1))
    try:
        livexai.feature_visualization(shapes_model, "features.relu2", 0, steps=3, size=16)
        livexai.top_activating(shapes_model, "features.relu2", 0, shapes_images[:8], k=2)
        assert later == []
        livexai.feature_visualization(shapes_model, "features.relu3", 0, steps=3, size=16)
        assert len(later) > 0  # the counting hook does see calls when the layer is after it
    finally:
        handle.remove()
    assert hook_count(shapes_model) == 0


def brute_force_means(
    model: nn.Module, module: nn.Module, images: torch.Tensor, channel: int
) -> torch.Tensor:
    """``(N, h, w)`` the channel's maps on every image, by one plain hooked forward pass."""
    maps = []
    handle = module.register_forward_hook(lambda _m, _i, output: maps.append(output[:, channel]))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return maps[0]


def test_top_activating_is_the_brute_force_top_k(
    shapes_model: nn.Module, shapes_images: torch.Tensor
) -> None:
    images = shapes_images[:23]
    maps = brute_force_means(shapes_model, shapes_model.features.relu3, images, 7)
    means = maps.mean(dim=(1, 2))
    order = torch.argsort(means, descending=True, stable=True)[:5]
    top = livexai.top_activating(shapes_model, "features.relu3", 7, images, k=5, batch_size=4)
    assert torch.equal(top.indices, order)
    torch.testing.assert_close(top.values, means[order])
    assert torch.equal(top.images, images[order])
    flat = maps[order].flatten(1)
    width = maps.shape[-1]
    assert torch.equal(top.locations, torch.stack([flat.argmax(1) // width, flat.argmax(1) % width], dim=1))
    torch.testing.assert_close(top.max_values, flat.amax(1))
    assert top.boxes is not None and top.boxes.shape == (5, 4)
    cell = images.shape[-1] // width  # each cell of the 16x16 map covers 4x4 input pixels
    assert torch.equal(top.boxes[:, :2], top.locations * cell)
    # a DataLoader-like iterable of (images, labels) batches gives the same answer
    batches = [(images[i : i + 6], torch.zeros(len(images[i : i + 6]))) for i in range(0, 23, 6)]
    again = livexai.top_activating(shapes_model, "features.relu3", 7, batches, k=5)
    assert torch.equal(again.indices, top.indices)


def test_top_activating_on_class_logits_has_no_location(
    shapes_model: nn.Module, shapes_images: torch.Tensor
) -> None:
    top = livexai.top_activating(shapes_model, None, 2, shapes_images, k=3)
    with torch.no_grad():
        logits = shapes_model(shapes_images)[:, 2]
    assert torch.equal(top.indices, torch.argsort(logits, descending=True, stable=True)[:3])
    assert top.locations is None and top.boxes is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: livexai.feature_visualization(m, "features.relu9", 0, steps=1), "close matches"),
        (
            lambda m: livexai.feature_visualization(m, "features.relu2", 16, steps=1, size=16),
            "has 16 channels",
        ),
        (lambda m: livexai.feature_visualization(m, None, 4, steps=1, size=16), "has 4 outputs"),
        (lambda m: livexai.feature_visualization(m, None, steps=1), "channel=<class index>"),
        (lambda m: livexai.feature_visualization(m, None, 0, objective="neuron"), "no centre"),
        (lambda m: livexai.feature_visualization(m, "features.relu2", 0, objective="max"), "objective must"),
        (lambda m: livexai.feature_visualization(m, "features.relu2", [], steps=1), "empty list"),
        (
            lambda m: livexai.feature_visualization(models.digits_cnn(), None, 0, steps=1),
            "the model failed on images of 1x128x128",
        ),
        (lambda m: livexai.feature_visualization(m, "features.relu2", 0, mean=(0.5, 0.5)), "1 or 3 values"),
        (
            lambda m: livexai.top_activating(m, "features.relu2", 99, torch.rand(2, 3, 16, 16)),
            "has 16 channels",
        ),
        (lambda m: livexai.top_activating(m, "features.relu2", 0, torch.rand(3, 16, 16)), "(N, C, H, W)"),
    ],
)
def test_clear_errors(shapes_model: nn.Module, call, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(shapes_model)
    assert hook_count(shapes_model) == 0
