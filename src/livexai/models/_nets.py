"""Architectures of the demo models, in plain torch (no torchvision).

Input normalisation lives inside each network as buffers, so the tensors from :mod:`livexai.datasets` go in
as-is, explanations are in the units a reader sees, and the buffers travel with the weights file. Every layer is
its own named module (no reused ReLU, no in-place ops), so layer hooks and Grad-CAM layer names are meaningful.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["BasicBlock", "BreastCancerMLP", "DigitsCNN", "ResNet18Like", "ShapesCNN"]


def _conv_block(i: int, c_in: int, c_out: int, pool: bool) -> list[tuple[str, nn.Module]]:
    """``conv{i}`` (3x3, same padding) -> ``bn{i}`` -> ``relu{i}`` [-> ``pool{i}`` 2x2 max-pool]."""
    layers: list[tuple[str, nn.Module]] = [
        (f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)),
        (f"bn{i}", nn.BatchNorm2d(c_out)),
        (f"relu{i}", nn.ReLU()),
    ]
    if pool:
        layers.append((f"pool{i}", nn.MaxPool2d(2)))
    return layers


class _Normalize(nn.Module):
    """``(x - mean) / std`` with ``mean`` and ``std`` as buffers broadcastable to the input."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the statistics (e.g. from training data); ``std`` is floored so constant inputs stay finite."""
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(std.reshape(self.std.shape).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ShapesCNN(nn.Module):
    """Classifier for :func:`livexai.datasets.shapes`: ``(N, 3, S, S)`` in [0, 1] -> ``(N, 4)`` logits.

    Four conv blocks (``features.conv1`` .. ``features.conv4``); the first three halve the resolution, so
    ``features.conv4`` / ``features.relu4`` is an 8x8 map at S=64, the usual Grad-CAM layer. Global average
    pooling lets it run at any size S >= 8, but it is only accurate near the training size S=64.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (8, 16, 32, 64), num_classes: int = 4) -> None:
        super().__init__()
        self.normalize = _Normalize((1, 3, 1, 1))
        chans = (3, *widths)
        blocks = [layer for i in range(4) for layer in _conv_block(i + 1, chans[i], chans[i + 1], pool=i < 3)]
        self.features = nn.Sequential(OrderedDict(blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


class DigitsCNN(nn.Module):
    """Classifier for :func:`livexai.datasets.digits`: ``(N, 1, 8, 8)`` in [0, 1] -> ``(N, 10)`` logits.

    ``features.conv1`` and ``features.conv2`` at 8x8, then a 2x2 pool, ``features.conv3`` at 4x4 (the Grad-CAM
    layer), and a small fully connected head (``classifier.fc1``, ``classifier.fc2``).
    """

    def __init__(
        self, widths: tuple[int, int, int] = (16, 32, 32), hidden: int = 64, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.normalize = _Normalize((1, 1, 1, 1))
        self.features = nn.Sequential(
            OrderedDict(
                _conv_block(1, 1, widths[0], pool=False)
                + _conv_block(2, widths[0], widths[1], pool=True)
                + _conv_block(3, widths[1], widths[2], pool=False)
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(widths[2] * 4 * 4, hidden)),
                    ("relu1", nn.ReLU()),
                    ("dropout", nn.Dropout(0.3)),
                    ("fc2", nn.Linear(hidden, num_classes)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(self.normalize(x)), 1))


class BreastCancerMLP(nn.Module):
    """Classifier for :func:`livexai.datasets.breast_cancer`: raw ``(N, 30)`` rows -> ``(N, 2)`` logits.

    Standardisation (training mean and std per feature) is the ``normalize`` buffer layer, then
    ``net.fc1`` -> ``net.relu1`` -> ``net.fc2`` -> ``net.relu2`` -> ``net.out``.
    """

    def __init__(
        self, n_features: int = 30, hidden: tuple[int, int] = (32, 16), num_classes: int = 2
    ) -> None:
        super().__init__()
        self.normalize = _Normalize((1, n_features))
        self.net = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(n_features, hidden[0])),
                    ("relu1", nn.ReLU()),
                    ("fc2", nn.Linear(hidden[0], hidden[1])),
                    ("relu2", nn.ReLU()),
                    ("out", nn.Linear(hidden[1], num_classes)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and a shortcut (1x1 conv + bn when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + shortcut)


class ResNet18Like(nn.Module):
    """ResNet-18 layout with torchvision's module names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``fc``).

    ``(N, C, H, W)`` -> ``(N, num_classes)``; any H, W >= 32 works (adaptive average pooling at the end).
    Unlike torchvision, each block has its own ``relu1``/``relu2`` modules instead of one reused ReLU, so a hook
    on a ReLU sees one call per forward.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, stride=2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, stride=2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, stride=2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
