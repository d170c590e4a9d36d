"""Shipped demo models: weights load, reach their stated held-out accuracy, and are small; ResNet-18-like net."""

from __future__ import annotations

import pytest
import torch

from livexai import datasets, models
from livexai.models import WEIGHTS_DIR
from livexai.models.train import accuracy, main, train_breast_cancer_mlp

SHIPPED = ("shapes_cnn", "digits_cnn", "breast_cancer_mlp")


@pytest.fixture(scope="module")
def shapes_heldout() -> datasets.Shapes:
    # Training used seeds >= 1000 and reported accuracy on seed 0; seed 7 is a second, independent held-out set.
    return datasets.shapes(1000, seed=7)


@pytest.mark.parametrize("name", SHIPPED)
def test_weights_are_small_and_plain_tensors(name: str) -> None:
    path = WEIGHTS_DIR / f"{name}.pt"
    assert path.is_file()
    assert path.stat().st_size < 1_000_000
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "normalize.mean" in state and "normalize.std" in state  # normalisation ships with the weights


@pytest.mark.parametrize("name", SHIPPED)
def test_builders_return_eval_cpu_modules(name: str) -> None:
    model = getattr(models, name)()
    assert isinstance(model, torch.nn.Module) and not model.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    untrained = getattr(models, name)(pretrained=False)
    assert not untrained.training
    trained_params = dict(model.named_parameters())
    assert any(not torch.equal(p, trained_params[k]) for k, p in untrained.named_parameters())


def test_shapes_cnn_accuracy_and_layer_names(shapes_heldout: datasets.Shapes) -> None:
    model = models.shapes_cnn()
    names = dict(model.named_modules())
    for layer in ("features.conv1", "features.conv2", "features.conv3", "features.conv4", "classifier"):
        assert layer in names
    assert accuracy(model, shapes_heldout.images, shapes_heldout.labels) >= 0.95
    with torch.no_grad():
        assert model(shapes_heldout.images[:2]).shape == (2, 4)


def test_shapes_cnn_looks_at_the_object(shapes_heldout: datasets.Shapes) -> None:
    """Erasing the object (filled with the image's mean background colour) drops accuracy to near chance;
    erasing the background instead keeps most predictions: the evidence is inside the ground-truth mask."""
    images, labels, masks = (t[:400] for t in shapes_heldout)
    m = masks.unsqueeze(1)
    bg_colour = (images * ~m).sum(dim=(2, 3), keepdim=True) / (~m).sum(dim=(2, 3), keepdim=True)
    model = models.shapes_cnn()
    no_object = torch.where(m, bg_colour, images)
    only_object = torch.where(m, images, bg_colour)
    assert accuracy(model, no_object, labels) < 0.5
    assert accuracy(model, only_object, labels) > 0.8


def test_digits_cnn_accuracy() -> None:
    test = datasets.digits("test")
    model = models.digits_cnn()
    assert "features.conv3" in dict(model.named_modules())
    assert accuracy(model, test.images, test.labels) >= 0.95


def test_breast_cancer_mlp_accuracy() -> None:
    test = datasets.breast_cancer("test")
    model = models.breast_cancer_mlp()
    with torch.no_grad():
        assert model(test.x).shape == (len(test.y), 2)
    assert accuracy(model, test.x, test.y) >= 0.93


def test_missing_weights_file_says_how_to_recreate(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python -m livexai\.models\.train digits_cnn"):
        models.digits_cnn()


def test_train_script_writes_loadable_weights(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cheapest trainer end to end: reproducible (same seed -> same weights) and accurate."""
    main(["breast_cancer_mlp", "--out", str(tmp_path)])
    assert "breast_cancer_mlp: held-out accuracy" in capsys.readouterr().out
    state = torch.load(tmp_path / "breast_cancer_mlp.pt", map_location="cpu", weights_only=True)
    model = models.BreastCancerMLP()
    model.load_state_dict(state)
    test = datasets.breast_cancer("test")
    assert accuracy(model, test.x, test.y) >= 0.93
    again, _ = train_breast_cancer_mlp()
    for k, v in again.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_resnet18_like() -> None:
    state = torch.random.get_rng_state()
    model = models.resnet18_like(num_classes=7, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    assert not model.training
    names = dict(model.named_modules())
    for layer in (
        "conv1",
        "bn1",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "layer4.1.conv2",
        "layer2.0.downsample",
        "fc",
    ):
        assert layer in names
    assert 11_000_000 < sum(p.numel() for p in model.parameters()) < 11_500_000  # ResNet-18 size
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and bool(torch.isfinite(out).all())
    same = models.resnet18_like(num_classes=7, seed=3)
    other = models.resnet18_like(num_classes=7, seed=4)
    assert torch.equal(same.conv1.weight, model.conv1.weight)
    assert not torch.equal(other.conv1.weight, model.conv1.weight)
    gray = models.resnet18_like(in_channels=1)
    with torch.no_grad():
        assert gray(torch.rand(1, 1, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError):
        models.resnet18_like(num_classes=0)
