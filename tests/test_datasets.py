"""Demo data: the synthetic shapes generator and scikit-learn's bundled sets as tensors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from livexai import datasets
from livexai.datasets import SHAPE_CLASSES, shapes


@pytest.fixture(scope="module")
def batch() -> datasets.Shapes:
    return shapes(300, seed=3)


def test_shapes_types_shapes_and_ranges(batch: datasets.Shapes) -> None:
    images, labels, masks = batch
    assert images.shape == (300, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (300,) and labels.dtype == torch.long
    assert masks.shape == (300, 64, 64) and masks.dtype == torch.bool
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert bool(torch.isfinite(images).all())
    assert SHAPE_CLASSES == ["circle", "square", "triangle", "cross"]
    assert set(labels.tolist()) == {0, 1, 2, 3}
    counts = torch.bincount(labels, minlength=4)
    assert int(counts.min()) > 40  # roughly balanced


def test_shapes_masks_are_non_empty_and_inside_the_image(batch: datasets.Shapes) -> None:
    masks = batch.masks
    area = masks.flatten(1).sum(dim=1)
    assert int(area.min()) >= 100  # never a speck
    assert int(area.max()) <= 0.25 * 64 * 64
    border = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    assert not bool(border.any())


def test_shapes_masks_have_the_labelled_geometry(batch: datasets.Shapes) -> None:
    """pi * (max distance from the centroid)^2 / area: 1 for a disc, pi/2 for a square, ~2.4 for a triangle."""
    _, labels, masks = batch
    size = masks.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    m = masks.float()
    area = m.sum(dim=(1, 2))
    cy, cx = (m * yy).sum(dim=(1, 2)) / area, (m * xx).sum(dim=(1, 2)) / area
    dist2 = (yy - cy.view(-1, 1, 1)) ** 2 + (xx - cx.view(-1, 1, 1)) ** 2
    ratio = math.pi * (dist2 * m).amax(dim=(1, 2)) / area
    expected = {0: (0.9, 1.1), 1: (1.2, 1.65), 2: (1.85, 2.6), 3: (1.4, 1.85)}
    for k, (low, high) in expected.items():
        r = ratio[labels == k]
        assert float(r.min()) > low and float(r.max()) < high, (SHAPE_CLASSES[k], r.min(), r.max())


def test_shapes_object_stands_out_from_its_surroundings(batch: datasets.Shapes) -> None:
    """The object's mean colour differs from the ring of background pixels around it."""
    images, _, masks = batch
    ring = (
        torch.nn.functional.max_pool2d(masks.float().unsqueeze(1), 7, stride=1, padding=3).squeeze(1).bool()
    )
    ring &= ~masks
    inside = (images * masks.unsqueeze(1)).sum(dim=(2, 3)) / masks.sum(dim=(1, 2)).unsqueeze(1)
    around = (images * ring.unsqueeze(1)).sum(dim=(2, 3)) / ring.sum(dim=(1, 2)).unsqueeze(1)
    contrast = (inside - around).norm(dim=1)
    assert float(contrast.median()) > 0.3
    assert float((contrast > 0.1).float().mean()) > 0.95


def test_shapes_background_does_not_depend_on_the_class(batch: datasets.Shapes) -> None:
    """Mean background colour per class is the same up to sampling noise: only the object tells classes apart."""
    images, labels, masks = batch
    bg = (images * ~masks.unsqueeze(1)).sum(dim=(2, 3)) / (~masks).sum(dim=(1, 2)).unsqueeze(1)  # (N, 3)
    means = torch.stack([bg[labels == k].mean(dim=0) for k in range(4)])
    assert float((means - bg.mean(dim=0)).abs().max()) < 0.08


def test_shapes_is_deterministic_and_prefix_stable() -> None:
    a = shapes(20, size=32, seed=5)
    b = shapes(20, size=32, seed=5)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    c = shapes(300, size=32, seed=5)  # spans two internal chunks
    for x, y in zip(a, c, strict=True):
        assert torch.equal(x, y[:20])
    d = shapes(20, size=32, seed=6)
    assert not torch.equal(a.images, d.images)


def test_shapes_sizes_and_empty() -> None:
    imgs, _, masks = shapes(5, size=40, seed=1)
    assert imgs.shape == (5, 3, 40, 40) and masks.shape == (5, 40, 40)
    assert bool(masks.flatten(1).any(dim=1).all())
    empty = shapes(0)
    assert (
        empty.images.shape == (0, 3, 64, 64)
        and empty.labels.shape == (0,)
        and empty.masks.shape == (0, 64, 64)
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n": 2.5}, TypeError),
        ({"n": -1}, ValueError),
        ({"n": 3, "size": 8}, ValueError),
        ({"n": 3, "seed": -1}, ValueError),
        ({"n": True}, TypeError),
    ],
)
def test_shapes_rejects_bad_arguments(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        shapes(**kwargs)


def test_digits_split() -> None:
    from sklearn.datasets import load_digits

    train, test, every = datasets.digits("train"), datasets.digits("test"), datasets.digits("all")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert every.images.shape == (1797, 1, 8, 8)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.long
    assert float(every.images.min()) == 0.0 and float(every.images.max()) == 1.0
    ref = load_digits()
    np.testing.assert_allclose(every.images[:, 0].numpy() * 16, ref.images, atol=1e-5)
    np.testing.assert_array_equal(every.labels.numpy(), ref.target)
    np.testing.assert_array_equal(test.labels.numpy(), ref.target[::5])
    assert torch.equal(test.images, every.images[::5])
    assert set(test.labels.tolist()) == set(range(10))
    assert list("0123456789") == datasets.DIGIT_CLASSES


def test_breast_cancer_split() -> None:
    from sklearn.datasets import load_breast_cancer

    train, test, every = (datasets.breast_cancer(s) for s in ("train", "test", "all"))
    assert train.x.shape == (455, 30) and test.x.shape == (114, 30) and every.x.shape == (569, 30)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.long
    ref = load_breast_cancer()
    np.testing.assert_allclose(every.x.numpy(), ref.data, rtol=1e-6)
    np.testing.assert_array_equal(test.y.numpy(), ref.target[::5])
    keep = np.arange(569) % 5 != 0
    np.testing.assert_array_equal(train.y.numpy(), ref.target[keep])
    assert train.feature_names == tuple(ref.feature_names) and len(train.feature_names) == 30
    assert train.class_names == ("malignant", "benign")


def test_bad_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        datasets.digits("validation")
    with pytest.raises(ValueError, match="split"):
        datasets.breast_cancer("val")


def test_missing_sklearn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.breast_cancer()
