"""Benchmark networks in plain torch (random weights: timing only) and the inputs they are timed on.

A ResNet-shaped network written here costs the same as torchvision's, without pulling torchvision (which would
replace the CPU build of torch). Every ReLU is its own module and none is in-place, so hooks from every peer
(Captum's layer methods, pytorch-grad-cam's activation hooks) behave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class SmallCNN(nn.Module):
    """Four 3x3 conv blocks, global average pooling, a linear head: ``(N, 3, 64, 64)`` -> ``(N, 10)``.

    The widths of the demo model shipped with livexai (``models.shapes_cnn``), so timings say how the demo feels.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64), num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(widths):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolution: the usual Grad-CAM layer (an 8x8 map at 64x64)."""
        return self.features[-2]


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.downsample = _shortcut(c_in, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.downsample(x))


class Bottleneck(nn.Module):
    """ResNet's 1x1-3x3-1x1 residual block (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu3 = nn.ReLU()
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.relu3(self.bn3(self.conv3(out)) + self.downsample(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """torchvision's ResNet layout (stem, four stages, average pool, fc): ``(N, 3, 224, 224)`` -> ``(N, 1000)``."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], depths: tuple[int, ...], num_classes: int = 1000
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        stages = []
        for i, depth in enumerate(depths):
            width = 64 * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(block(c_in, width, stride=2 if i > 0 and j == 0 else 1))
                c_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))

    @property
    def cam_layer(self) -> nn.Module:
        """The last residual stage: the usual Grad-CAM layer (a 7x7 map at 224x224)."""
        return self.layer4


def resnet18() -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2))


def resnet50() -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3))


@dataclass
class Case:
    """One timed set-up: a model in eval mode on its device and one model-ready input."""

    name: str
    model: nn.Module
    x: torch.Tensor  # (3, S, S), normalised, on the model's device
    image: np.ndarray  # (S, S, 3) float64 in [0, 1], the picture x was made from
    size: int


_BUILDERS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "small": (SmallCNN, 64),
    "resnet18": (resnet18, 224),
    "resnet50": (resnet50, 224),
}
MODEL_NAMES = tuple(_BUILDERS)


def sample_image(size: int) -> np.ndarray:
    """scikit-image's cat photo (ships with the package: offline), centre-cropped and resized: ``(S, S, 3)``."""
    from skimage.data import chelsea
    from skimage.transform import resize

    photo = chelsea()
    h, w = photo.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = photo[top : top + side, left : left + side]
    return resize(crop, (size, size), anti_aliasing=True)


def make_case(name: str, device: str | torch.device = "cpu", seed: int = 0) -> Case:
    """Build model ``name`` (see :data:`MODEL_NAMES`) with seeded random weights, and its input on ``device``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    builder, size = _BUILDERS[name]
    torch.manual_seed(seed)
    model = builder().to(device).eval()
    image = sample_image(size)
    mean = torch.tensor(_MEAN).view(3, 1, 1)
    std = torch.tensor(_STD).view(3, 1, 1)
    # Contiguous NCHW, as a data loader gives it: a permuted HWC array would be channels-last in memory, which
    # changes every convolution's speed (and would differ between methods that copy it and those that don't).
    x = ((torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std).contiguous().to(device)
    return Case(name=name, model=model, x=x, image=image, size=size)


class TabularMLP(nn.Module):
    """A random ReLU MLP on ``n_features`` columns: ``(N, F)`` -> ``(N, 2)`` logits.

    Weights are drawn larger than PyTorch's default (std 1.5/sqrt(fan_in), biases std 0.5) so the network has
    strong feature interactions: with the default init it is nearly additive and every KernelSHAP estimator is
    almost exact, which would measure nothing.
    """

    def __init__(self, n_features: int = 14, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2),
        )
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    layer.weight.copy_(
                        torch.randn(layer.weight.shape, generator=generator) * 1.5 / layer.in_features**0.5
                    )
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
