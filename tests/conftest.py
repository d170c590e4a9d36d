"""Shared tiny fixture models with known answers, and helpers to check that a method leaves a model alone.

Import the helpers with ``from conftest import make_mlp, ...`` (pytest puts ``tests/`` on the path); other test
files may define their own fixtures. Everything here is small enough for a 2-core CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn


def make_mlp(n_features: int, n_outputs: int = 3, *, seed: int = 0, hidden: int = 32) -> nn.Module:
    """A random two-layer tanh MLP in float64 (so exact comparisons are limited by the method, not by rounding)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(n_features, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_outputs),
    )
    return model.double().eval()


def make_cnn(n_outputs: int = 4, *, seed: int = 0) -> nn.Module:
    """A small CNN with batch norm and dropout (modes that a method must not change), left in training mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(96, n_outputs),
    )


class SegmentLinear(nn.Module):
    """``f(img) = [sum_k c_k * mean over superpixel k of img.sum(channels), -the same]``.

    Linear in the superpixel mask when off superpixels are zero: its Shapley values (and a noise-free LIME fit)
    are ``c_k * mean_k(x)``.
    """

    def __init__(self, segments: torch.Tensor, coefficients: torch.Tensor) -> None:
        super().__init__()
        n_segments = int(segments.max()) + 1
        flat = segments.reshape(-1)
        onehot = torch.zeros(n_segments, flat.numel(), dtype=torch.float64)
        onehot[flat, torch.arange(flat.numel())] = 1.0
        self.register_buffer("averages", onehot / onehot.sum(1, keepdim=True))
        self.register_buffer("coefficients", coefficients.to(torch.float64))

    def segment_means(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` mean over each superpixel of the channel sum."""
        return images.to(torch.float64).sum(1).flatten(1) @ self.averages.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = self.segment_means(images) @ self.coefficients
        return torch.stack([score, -score], dim=1)


class CountingModel(nn.Module):
    """Wraps a model and records how many times it was called and with which batch sizes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.sizes.append(x.shape[0])
        return self.inner(x)

    def reset(self) -> None:
        self.calls = 0
        self.sizes = []


class Block(nn.Module):
    """A ResNet basic block that uses the network's one shared, in-place ReLU twice."""

    def __init__(self, cin: int, cout: int, stride: int, relu: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.relu(out)


class SmallResNet(nn.Module):
    def __init__(self, n_classes: int = 5) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1, self.relu), Block(8, 8, 1, self.relu))
        self.layer2 = nn.Sequential(Block(8, 16, 2, self.relu))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomise_batchnorm(model: nn.Module, *, affine: bool = True) -> nn.Module:
    """Non-trivial running statistics, so eval mode differs from train mode; ``affine`` also scales the weights."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            if affine:
                module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def hook_count(model: nn.Module) -> int:
    """Hooks of every kind on every module of ``model``."""
    return sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )


class Tokens(nn.Module):
    """(N, D, h, w) -> (N, h*w, D), the rearrangement a ViT's patch embedding ends with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.tokens = Tokens()
        self.mixer = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(self.patch(x))
        t = t + self.mixer(t)
        return self.head(t.mean(1))


class Boom(RuntimeError):
    """The error a test model raises mid-forward, to check that no hook is left behind."""


def grid_segments(height: int, width: int, rows: int, cols: int) -> torch.Tensor:
    """``(H, W)`` labels of a ``rows x cols`` grid, built here so tests do not depend on the segmentation module."""
    row_of = torch.arange(height) * rows // height
    col_of = torch.arange(width) * cols // width
    return row_of[:, None] * cols + col_of[None, :]


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that a method could disturb."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def assert_unchanged(before: dict, after: dict) -> None:
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for a, b in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.fixture
def resnet() -> SmallResNet:
    """A small ResNet (shared in-place ReLU, shortcuts) with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    return randomise_batchnorm(SmallResNet())


@pytest.fixture
def image() -> torch.Tensor:
    """A seeded (3, 16, 16) input for the layer and Grad-CAM tests."""
    return torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def single_thread():
    """Tiny tensors run fastest on one thread; on a loaded shared CPU two OpenMP threads were many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser tests save screenshots for a person to look at: ``$LIVEXAI_SCREENSHOTS``, else a tmp dir."""
    folder = Path(os.environ.get("LIVEXAI_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder
